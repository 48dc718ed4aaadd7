"""Online fine-tuning of a latent agent's encoder on its own images: RIG's step 23.

RIG (Nair et al. 2018, Algorithm 1) trains the policy on latents of a frozen beta-VAE, and
"fine-tunes the beta-VAE every K episodes on a mixture of D and R" (D: the pretraining images,
R: the replay). In the suite this is the ``decoupled`` regime of a goal env with image goals:
the method's own loss trains the encoder on the agent's data, and no RL gradient reaches it (the
agent reads latents the env wrapper computed). :class:`OnlineFinetuning` is the trainer hook
that does it, every ``every_episodes`` episodes (run before the next episode starts, so a run
that stops at its budget keeps the encoder its last evaluation used):

1. ``steps`` Adam steps (the method's ``lr``) of the representation's own loss on batches whose
   ``data_fraction`` comes from D (a data folder, when given) and the rest from the replay's
   images (drawn uniformly over every slot held, with the method's own ``sample_batch``);
2. ``rep.after_pretraining(R)``, on the replay's images: a VAE refits its prior there, as
   rlkit's ``refresh_latents`` refits it over the whole buffer, so imagined goals follow the
   encoder;
3. :meth:`~ssrl.agents.replay.ReplayBuffer.refresh`: every slot's observation, achieved-goal and
   desired-goal latents re-encoded from their images (an imagined goal's image is the decoder's
   picture of it, rlkit's ``add_decoded_vae_goals_to_path``), and the stored rewards recomputed
   with them, so the replay holds one reward function, the current encoder's.

The train and evaluation wrappers hold the same encoder module, so both act on the new
latents from the next step on.

Departures from RIG / rlkit: a constant schedule (rlkit's Skew-Fit pushers train 1000 VAE steps
per epoch for the first 10 epochs, then 200 per epoch or every 2nd or 3rd epoch; RIG's paper
gives no K); the replay's frames are drawn uniformly (Skew-Fit skews them; RIG does not).

Exact resume: the hook's state (the representation's weights and prior, its optimiser, its RNG
and the replay's refreshed latents and rewards, which the replay's incremental chunks do not
hold once a refresh rewrote slots saved before it) travels in the agent's checkpoint; each
fine-tuning round seeds torch's generator from the hook's own stream, so the noise a VAE draws
does not depend on the process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ssrl.envs.rollouts import DatasetError
from ssrl.utils import build_config

from .core import Need, Representation, describe_needs


@dataclasses.dataclass
class OnlineConfig:
    """Options of online fine-tuning (``ssrl train --regime-option KEY=VALUE``)."""

    every_episodes: int = 50  # K: fine-tune after every K-th training episode (2,500 env steps on Push)
    steps: int = 200  # gradient steps per fine-tuning round (rlkit's Skew-Fit pushers: 200 after warm-up)
    batch_size: int | None = None  # None: the method's own batch size
    data: str | None = None  # D: an ``ssrl collect`` folder mixed into each batch (the pretraining data)
    data_fraction: float = 0.5  # of each batch from D when ``data`` is given; the rest from the replay
    refresh_batch: int = 512  # images per encoder call when the replay is re-encoded

    def __post_init__(self) -> None:
        for name in ("every_episodes", "steps", "refresh_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"OnlineConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"OnlineConfig.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.data_fraction < 1.0:
            raise ValueError(f"OnlineConfig.data_fraction must be in [0, 1), got {self.data_fraction}")


def _only_frames(needs: Need, method: str) -> None:
    """Refuse a method that needs more of a replay than single frames."""
    missing = needs & ~Need.FRAMES
    if missing:
        raise DatasetError(
            f"{method} needs {describe_needs(missing)}; online fine-tuning on a replay gives single frames only"
        )


class ReplayFrames:
    """The images of one replay entry over every slot held, seen through the sampling interface
    of :class:`~ssrl.representations.data.RolloutData` (single frames only)."""

    cameras = ["agent"]

    def __init__(self, replay, key: str) -> None:
        self.store = replay.store[key]
        self.slots = replay.held_slots() % replay.capacity

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.store.shape[1:])

    def require(self, needs: Need, method: str = "this method") -> None:
        _only_frames(needs, method)

    def sample_frames(
        self, n: int, rng: np.random.Generator, with_next: bool = False, view: str | None = None
    ) -> np.ndarray:
        """Uniform slots (every stored image is a real one, whatever ``view``)."""
        return rng.integers(0, len(self), n)

    def stack(self, idx: np.ndarray, camera: str | None = None, k: int = 1, stride: int = 1) -> np.ndarray:
        if k != 1:
            raise ValueError(f"online fine-tuning trains on single frames; the method stacks {k}")
        return self.store[self.slots[np.asarray(idx)]]


class OnlineFinetuning:
    """Trainer hook: fine-tune ``rep`` on the agent's images and re-encode its replay (see the
    module docstring).

    Args:
        rep: the representation whose encoder the env wrappers hold (in place: they share it).
        sources: ``{latent entry: image entry}`` of the training env's observation
            (:attr:`~ssrl.representations.wrappers.EncodedObservation.image_keys`).
        config: an :class:`OnlineConfig` or a dict of its fields.
        seed: seed of the hook's own random stream.
    """

    name = "online_finetuning"

    def __init__(self, rep: Representation, sources: dict[str, str], config: Any = None, seed: int = 0) -> None:
        if not sources:
            raise ValueError(
                "online fine-tuning needs the images behind the latents: wrap the env with keep_images=True"
            )
        self.config = config if isinstance(config, OnlineConfig) else build_config(OnlineConfig, dict(config or {}))
        _only_frames(rep.needs, rep.name)  # refused now, not K episodes into the run
        self.rep, self.sources = rep, dict(sources)
        self.rng = np.random.default_rng([seed, 23])  # 23: RIG's line; apart from the agent's stream
        self.optimizer = torch.optim.Adam(rep.parameters(), lr=rep.config.lr)
        self.rounds = 0
        self.pending = False  # a round is due before the next episode
        self.last_metrics: dict[str, float] = {}  # the latest round's mean losses (train records carry them)
        self.data = None
        if self.config.data is not None:
            from .data import RolloutData

            self.data = RolloutData(self.config.data)
            rep.check_data(self.data)
        self.batch_size = int(self.config.batch_size or rep.config.batch_size)
        self.n_data = int(round(self.config.data_fraction * self.batch_size)) if self.data is not None else 0
        if self.n_data >= self.batch_size:
            raise ValueError(
                f"OnlineConfig: data_fraction {self.config.data_fraction} of a batch of {self.batch_size} leaves no "
                "replay image in it; lower data_fraction or raise batch_size"
            )
        if self.data is not None and tuple(self.data.frame_shape) != tuple(rep.obs_shape):
            raise ValueError(
                f"OnlineConfig.data {self.config.data} holds {self.data.frame_shape} frames; "
                f"{rep.name} takes {tuple(rep.obs_shape)}"
            )

    @property
    def image_entry(self) -> str:
        """The replay entry the representation trains on: the observations' images."""
        return self.sources["observation"]

    def after_episode(self, agent) -> None:
        """A round is due when ``agent.num_episodes`` (the episode just ended counted) is a
        multiple of K; it runs before the next episode (:meth:`before_episode`), so a run that
        ends here keeps the encoder its last evaluation used."""
        if agent.num_episodes > 0 and agent.num_episodes % self.config.every_episodes == 0:
            self.pending = True

    def before_episode(self, agent) -> dict[str, float] | None:
        """Run a due round; returns its mean losses, or None."""
        if not self.pending:
            return None
        self.pending = False
        return self.finetune(agent.replay)

    def finetune(self, replay) -> dict[str, float]:
        """One round: train, refit what the method fits, re-encode the replay."""
        rep = self.rep
        frames = ReplayFrames(replay, self.image_entry)
        seed = int(self.rng.integers(2**63))
        logs: dict[str, list[float]] = {}
        with torch.random.fork_rng(devices=[rep.device] if rep.device.type == "cuda" else []):
            torch.default_generator.manual_seed(seed)  # (the CPU's only: no CUDA stream is touched)
            if rep.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            rep.train().requires_grad_(True)
            try:
                for _ in range(self.config.steps):
                    batch = rep.sample_batch(frames, self.batch_size - self.n_data, self.rng)
                    if self.n_data:
                        extra = rep.sample_batch(self.data, self.n_data, self.rng)
                        batch = {k: np.concatenate([batch[k], extra[k]]) for k in batch}
                    loss, parts = rep.loss(rep.to_batch(batch))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"online fine-tuning of {rep.name}: the loss became {float(loss)}")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    for key, value in {"loss": loss.detach(), **parts}.items():
                        logs.setdefault(key, []).append(float(value))
            finally:
                rep.eval().requires_grad_(False)
            with torch.no_grad():
                rep.after_pretraining(frames)
        replay.refresh(rep.embed, self.sources, batch_size=self.config.refresh_batch)
        self.rounds += 1
        self.last_metrics = {f"online_{k}": float(np.mean(v)) for k, v in logs.items()}
        return self.last_metrics

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self, replay) -> dict[str, Any]:
        snapshot = replay.snapshot(tuple(self.sources))
        return {
            "rep": self.rep.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "rounds": self.rounds,
            "pending": self.pending,
            "last_metrics": dict(self.last_metrics),
            "replay": {k: torch.from_numpy(np.asarray(v)) for k, v in snapshot.items()},
        }

    def load_state_dict(self, state: dict[str, Any], replay) -> None:
        self.rep.load_state_dict(state["rep"])
        self.rep.eval().requires_grad_(False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.rounds = int(state["rounds"])
        self.pending = bool(state.get("pending", False))  # (checkpoints before rounds were deferred: none)
        self.last_metrics = dict(state["last_metrics"])
        replay.restore({k: v.numpy() for k, v in state["replay"].items()})
