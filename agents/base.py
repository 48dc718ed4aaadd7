"""What SAC and TD3 share: observations, the pixel encoder, the replay, acting, checkpoints.

An agent is built from an env (for its spaces) and a config dataclass whose defaults depend on
the observation: vectors (states or frozen-encoder latents) or pixels (a frame stack, encoded by
the suite's conv encoder). Subclasses define the networks and ``update(batch)``; the training
loop lives in :mod:`ssrl.agents.trainer`, the checkpoint files in :mod:`ssrl.agents.checkpoint`.

The pixel path follows SAC-AE, DrQ and DBC: one conv encoder (with a slow EMA copy for targets)
is trained by the critic loss; the actor reads its output detached. Each update encodes the
observations once with gradient and the next observations once without (:meth:`prepare`), and
the actor update reuses the detached critic features: two encoder passes per update, where
SB3's SAC (separate actor and critic CNNs) makes five.

Auxiliary objectives (DBC, DeepMDP, contrastive) plug in through ``aux``, an
:class:`~ssrl.representations.objective.AuxObjective`: ``loss(AuxInputs) -> (loss, metrics)``
is added to the critic loss on the same batch, so its gradient reaches the encoder, and its own
``parameters()`` (reward and transition models) get their own optimiser.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ssrl.representations.backbones import EncoderConfig, encoder_from_config
from ssrl.representations.objective import AuxInputs, AuxObjective
from ssrl.utils import build_config, is_image_space, resolve_device

from . import checkpoint
from .augment import random_shift
from .networks import soft_update
from .replay import GOAL_KEYS, Batch, ReplayBuffer


@dataclasses.dataclass
class AgentConfig:
    """Hyper-parameters SAC and TD3 share; each algorithm's config adds its own.

    Defaults are for state or latent observations and follow Stable-Baselines3 and CleanRL; a
    subclass's ``PIXEL_PRESET`` replaces some for pixels with those of DrQ (Kostrikov, Yarats
    and Fergus, ICLR 2021, ``denisyarats/drq`` config.yaml) and SAC-AE (Yarats et al. 2019,
    ``denisyarats/pytorch_sac_ae``). Steps are agent steps (one ``act`` each, whatever the
    env's action repeat) unless a name says otherwise.
    """

    # Discount factor per agent step. SB3/CleanRL/DrQ all use 0.99.
    gamma: float = 0.99
    # Transitions per gradient update. SB3's 256; pixels: DrQ's and SAC-AE's 128.
    batch_size: int = 256
    # Replay capacity, in transitions. SB3/CleanRL 1e6; pixels: DrQ's 100k.
    buffer_size: int = 1_000_000
    # Agent steps of uniform random actions (and no updates) at the start. CleanRL SAC's 5000;
    # pixels: DrQ's 1000 seed steps.
    learning_starts: int = 5000
    # Gradient updates per agent step after ``learning_starts``. SB3's gradient_steps=1.
    updates_per_step: int = 1
    # Adam learning rate of the actor. SB3/CleanRL 3e-4; pixels: DrQ's 1e-3.
    actor_lr: float = 3e-4
    # Adam learning rate of the critics, and of the pixel encoder (the critic optimiser trains
    # it). SB3's 3e-4; pixels: DrQ's 1e-3.
    critic_lr: float = 3e-4
    # Polyak rate of the target critics (target <- tau * online + (1 - tau) * target, per target
    # update). SB3/CleanRL 0.005; pixels: DrQ's critic_tau 0.01.
    tau: float = 0.005
    # Widths of the hidden layers of the actor and of each critic MLP. SB3's net_arch [256, 256];
    # pixels: DrQ's 1024 x 2.
    hidden_dims: tuple[int, ...] = (256, 256)
    # Goal envs only: fraction of each batch relabelled with hindsight goals ("future"
    # strategy). 0.8 is SB3's HerReplayBuffer default n_sampled_goal=4 (4 of 5).
    her_ratio: float = 0.8
    # Adam learning rate of the aux objective's own models (reward and transition). DBC's
    # decoder_lr 1e-3 (facebookresearch/deep_bisim4control train.py).
    aux_lr: float = 1e-3
    # "fp32", or "bf16": matmuls and convs in bfloat16 (weights, Adam states and losses stay
    # fp32). Ours; fp32 is the reference behaviour.
    precision: str = "fp32"
    # -- pixels only -------------------------------------------------------------------------
    # Conv encoder architecture, a name of ssrl.representations.backbones.ARCHITECTURES. "dmc":
    # the 4-layer conv of SAC-AE, CURL, DrQ and DBC.
    encoder_arch: str = "dmc"
    # Encoder output size (the latent the actor and critics read). SAC-AE/DrQ/DBC's 50.
    feature_dim: int = 50
    # tanh after the encoder's LayerNorm: SAC-AE and DrQ do it, CURL and DBC do not.
    encoder_tanh: bool = True
    # Polyak rate of the target encoder, at each target update. SAC-AE's and CURL's 0.05.
    encoder_tau: float = 0.05
    # Adam learning rate of the encoder in the critic's optimiser; None: critic_lr. Fine-tuning
    # a pretrained encoder (``--regime finetune``) often wants it lower.
    encoder_lr: float | None = None
    # Whether the critic's loss trains the encoder. False is the decoupled regime (ATC): the
    # critic and the actor read the encoder's output detached, and only an aux objective (the
    # representation's own loss on replay batches) trains it.
    critic_trains_encoder: bool = True
    # Observation augmentation of replay batches: "shift" (DrQ's random shift) or None.
    augment: str | None = "shift"
    # Largest shift of "shift", in pixels each way. DrQ's pad 4 (for 84x84 images).
    shift_pad: int = 4

    # Overrides of the defaults for pixel observations (a subclass's; see the class docstring).
    PIXEL_PRESET: ClassVar[dict[str, Any]] = {}
    # Fields that must be at least 1 (checked in __post_init__; subclasses extend it).
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = ("batch_size", "buffer_size", "updates_per_step")

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.augment not in (None, "shift"):
            raise ValueError(f"augment must be None or 'shift', got {self.augment!r}")
        for name in self.AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")


class TrainingDiverged(RuntimeError):
    """A loss or an observation became NaN or infinite."""


@dataclasses.dataclass
class Prepared:
    """A replay batch on the agent's device, with the two encoder passes of an update done.

    On vector observations ``h`` is ``obs`` and ``h_next`` is ``next_obs``.
    """

    obs: torch.Tensor  # (augmented) observations: uint8 images or float vectors
    next_obs: torch.Tensor
    h: torch.Tensor  # encoder(obs), what the critic reads: with gradient unless it must not train the encoder
    h_next: torch.Tensor  # target_encoder(next_obs), without gradient
    action: torch.Tensor  # in [-1, 1], (B, A)
    reward: torch.Tensor  # (B,)
    discount: torch.Tensor  # 0 after a terminal transition, else 1, (B,)
    latent: torch.Tensor | None = None  # encoder(obs) with gradient, for the aux objective


def _protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a Protocol class declares."""
    methods = {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}
    return sorted(methods | set(getattr(protocol, "__annotations__", {})))


class OffPolicyAgent(abc.ABC):
    """Base of :class:`~ssrl.agents.SAC` and :class:`~ssrl.agents.TD3` (see module docstring).

    :param env: the env to train in; its spaces shape the networks. ``None`` with both spaces
        given builds an agent that only acts or updates from its replay.
    :param aux: an auxiliary objective trained jointly with the critic (pixels only).
    :param device: "auto" (the GPU when torch sees one), "cpu", "cuda", ...
    :param seed: seeds torch's global RNG (network initialisation), the agent's torch generator
        (sampling, augmentation, episode seeds) and numpy generator (random actions), and the
        replay's sampler.
    :param observation_space: instead of ``env.observation_space``.
    :param action_space: instead of ``env.action_space`` (a 1-D Box).
    :param frame_stack: frames per observation; by default the env's own ``frame_stack``.
    :param reward_fn: goal envs: ``compute_reward(achieved, desired, info)`` for hindsight
        relabelling; by default the env's.
    :param hyperparams: fields of the algorithm's config (:attr:`config_cls`).
    """

    algo: ClassVar[str] = ""
    config_cls: ClassVar[type[AgentConfig]]

    def __init__(
        self,
        env: gym.Env | None,
        aux: AuxObjective | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        observation_space: gym.Space | None = None,
        action_space: gym.spaces.Box | None = None,
        frame_stack: int | None = None,
        reward_fn: Callable | None = None,
        encoder: nn.Module | None = None,
        **hyperparams: Any,
    ) -> None:
        self.env = env
        self.observation_space = observation_space if observation_space is not None else env.observation_space
        self.action_space = action_space if action_space is not None else env.action_space
        self._check_spaces()
        self.device = resolve_device(device)
        self.seed = int(seed)
        preset = self.config_cls.PIXEL_PRESET if self.pixels else None
        self.config = build_config(self.config_cls, hyperparams, preset=preset)
        self._check_aux(aux)
        self.aux = aux
        self.frame_stack = self._resolve_frame_stack(frame_stack)
        # Action bounds: the networks act in [-1, 1] and actions are rescaled to the space.
        self._low = self.action_space.low.astype(np.float32)
        self._high = self.action_space.high.astype(np.float32)
        self.action_dim = int(self.action_space.shape[0])
        self._seed()
        self._build_encoder(encoder)
        self._build_replay(reward_fn)
        # Loop state, saved in checkpoints so that a resumed run continues the same run.
        self.num_agent_steps = 0
        self.num_env_steps = 0
        self.num_updates = 0
        self.num_episodes = 0
        self.build_networks()
        self._attach_aux()

    # -- construction, in the order __init__ runs it ------------------------------------------

    def _check_spaces(self) -> None:
        """Check the spaces and set ``is_dict`` (a goal env) and ``pixels`` (uint8 CHW images)."""
        obs_space, action_space = self.observation_space, self.action_space
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"{self.algo} needs a 1-D continuous (Box) action space, got {action_space}")
        self.is_dict = isinstance(obs_space, gym.spaces.Dict)
        self.pixels = is_image_space(obs_space)
        if self.is_dict:
            if not all(k in obs_space.spaces for k in ("observation", "desired_goal")):
                raise ValueError("dict observations must hold 'observation' and 'desired_goal' (a goal env)")
            if any(is_image_space(s) for s in obs_space.spaces.values()):
                raise ValueError(
                    "goal envs with image observations: encode them first, e.g. "
                    "ssrl.representations.EncodedObservation(env, encoder), then train on latents"
                )

    def _check_aux(self, aux: AuxObjective | None) -> None:
        """Refuse an ``aux`` that lacks a member of the AuxObjective protocol, or vector observations."""
        if aux is None:
            return
        if not isinstance(aux, AuxObjective):
            missing = [m for m in _protocol_members(AuxObjective) if not hasattr(aux, m)]
            raise TypeError(
                f"aux must implement ssrl.representations.objective.AuxObjective "
                f"({', '.join(_protocol_members(AuxObjective))}); {type(aux).__name__} lacks {', '.join(missing)}"
            )
        if not self.pixels:
            raise ValueError("an auxiliary objective trains the pixel encoder; this agent has vector observations")

    def _resolve_frame_stack(self, frame_stack: int | None) -> int:
        """The frames per observation: as given, else the env's own ``frame_stack``, else 1.

        Only the env's own frame stack counts: a wrapper that changes the observation (an
        encoder, say) hides it.
        """
        if frame_stack is None:
            env = self.env
            own = env is not None and not self.is_dict and env.observation_space == env.unwrapped.observation_space
            frame_stack = getattr(env.unwrapped, "frame_stack", 1) if own else 1
        return int(frame_stack)

    def _seed(self) -> None:
        """Seed torch's global RNG (the network initialisations that follow) and create the
        agent's own generators: ``generator`` (torch, on the device) and ``rng`` (numpy)."""
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)

    def _build_encoder(self, encoder: nn.Module | None) -> None:
        """Pixels: the conv encoder (``encoder`` if given: a representation's, pretrained or not,
        whose architecture then replaces ``encoder_arch``, ``feature_dim`` and ``encoder_tanh``)
        and its EMA target. Set ``feature_dim``, the width of what the actor and critics read
        (the encoder's output, or the flattened vector observation)."""
        self.encoder: nn.Module | None = None
        self.encoder_target: nn.Module | None = None
        space = self.observation_space
        if encoder is not None and not self.pixels:
            raise ValueError("an encoder was given, but this agent's observations are not images")
        if self.pixels:
            c = self.config
            if encoder is None:
                enc_cfg = EncoderConfig(
                    c.encoder_arch, space.shape[0], tuple(space.shape[1:]), c.feature_dim, output_tanh=c.encoder_tanh
                )
                encoder = encoder_from_config(enc_cfg)
            self.encoder = encoder.to(self.device)
            self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
            with torch.no_grad():
                probe = torch.zeros(1, *space.shape, dtype=torch.uint8, device=self.device)
                self.feature_dim = int(self.encoder(probe).shape[-1])
        elif self.is_dict:
            spaces = space.spaces
            self.feature_dim = int(np.prod(spaces["observation"].shape) + np.prod(spaces["desired_goal"].shape))
        else:
            self.feature_dim = int(np.prod(space.shape))

    def _build_replay(self, reward_fn: Callable | None) -> None:
        """The replay buffer, with hindsight relabelling for goal envs that can recompute rewards."""
        obs_space = self.observation_space
        if (
            reward_fn is None
            and self.env is not None
            and self.is_dict
            and all(k in obs_space.spaces for k in GOAL_KEYS)
        ):
            reward_fn = self.env.get_wrapper_attr("compute_reward")
        her_ratio = self.config.her_ratio if self.is_dict and reward_fn is not None else 0.0
        self.replay = ReplayBuffer(
            self.config.buffer_size,
            obs_space,
            self.action_space,
            self.frame_stack,
            reward_fn=reward_fn,
            her_ratio=her_ratio,
            seed=self.seed,
        )
        self.replay_meta: dict | None = None  # which replay save the last checkpoint goes with

    def _attach_aux(self) -> None:
        """Move ``aux`` to the device, hand it the agent's generator (its randomness is part of
        the run's saved state) and give its own parameters an optimiser (``aux_optimizer``)."""
        self.aux_optimizer: torch.optim.Optimizer | None = None
        if self.aux is None:
            return
        self.aux.to(self.device)
        self.aux.generator = self.generator
        aux_params = list(self.aux.parameters())
        if aux_params:
            self.aux_optimizer = torch.optim.Adam(aux_params, lr=self.config.aux_lr)

    # -- what an algorithm defines -------------------------------------------------------------

    @abc.abstractmethod
    def build_networks(self) -> None:
        """Create actor, critics, targets and optimisers (the encoder exists already)."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on a replay batch; returns metrics as 0-d tensors on the device
        (not floats: converting would wait for the device at every update; the trainer converts
        the ones it logs)."""

    @abc.abstractmethod
    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Action in [-1, 1] for features ``h`` (exploration noise included unless deterministic)."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The algorithm's own networks and targets, by name (the encoder is added by
        :meth:`modules`)."""

    def modules(self) -> dict[str, nn.Module]:
        """Everything with weights, by name (checkpoints): the algorithm's networks, and the
        pixel encoder with its target."""
        encoder = {"encoder": self.encoder, "encoder_target": self.encoder_target} if self.pixels else {}
        return dict(self.networks(), **encoder)

    def update_targets(self, *pairs: tuple[nn.Module, nn.Module]) -> None:
        """Polyak-average each ``(target, online)`` pair at ``tau``, and the encoder's target at
        ``encoder_tau`` (pixels)."""
        for target, online in pairs:
            soft_update(target, online, self.config.tau)
        if self.pixels:
            soft_update(self.encoder_target, self.encoder, self.config.encoder_tau)

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser, by name (checkpoints)."""

    # -- observations --------------------------------------------------------------------------

    def obs_to_tensor(self, obs, augment: bool = False) -> torch.Tensor:
        """A batch of observations (numpy) -> network input (a float tensor, or uint8 images)."""
        if self.is_dict:
            parts = [np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in ("observation", "desired_goal")]
            return torch.from_numpy(np.concatenate(parts, axis=1)).to(self.device)
        x = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device, non_blocking=True)
        if self.pixels:
            if augment and self.config.augment == "shift":
                x = random_shift(x, self.config.shift_pad, self.generator)
            return x
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the actor and critics read: ``encoder(x)`` on pixels, ``x`` itself otherwise."""
        return self.encoder(x) if self.pixels else x

    def check_observation(self, obs) -> None:
        """Raise :class:`TrainingDiverged` if a float observation holds a NaN or an infinity."""
        values = obs.values() if isinstance(obs, dict) else (obs,)
        for v in values:
            v = np.asarray(v)
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise TrainingDiverged(
                    f"the env returned a NaN or infinite observation at env step {self.num_env_steps}"
                )

    # -- acting --------------------------------------------------------------------------------

    def _batch_obs(self, obs):
        if isinstance(obs, dict):
            return {k: np.asarray(v)[None] for k, v in obs.items()}
        return np.asarray(obs)[None]

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """An action for one observation, rescaled to the env's action space."""
        h = self.features(self.obs_to_tensor(self._batch_obs(obs)))
        a = self.policy(h, deterministic)[0].cpu().numpy()
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def random_action(self) -> np.ndarray:
        """A uniform random action in the env's action space (from the agent's numpy generator)."""
        return self.rng.uniform(self._low, self._high).astype(np.float32)

    def action_to_unit(self, action: np.ndarray) -> np.ndarray:
        """Env action -> [-1, 1] (what the replay stores and the networks output)."""
        return 2.0 * (np.asarray(action, np.float32) - self._low) / (self._high - self._low) - 1.0

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """Stable-Baselines3's signature: ``(action, None)``."""
        return self.act(obs, deterministic=deterministic), None

    # -- training ------------------------------------------------------------------------------

    def learn(self, env_steps: int, progress: bool = False, **trainer_kwargs) -> OffPolicyAgent:
        """Train for ``env_steps`` more environment steps (agent steps x action repeat)."""
        from .trainer import Trainer

        if self.env is None:
            raise ValueError("this agent has no env: pass one to the constructor or to load()")
        Trainer(self, self.env, progress=progress, **trainer_kwargs).train(self.num_env_steps + env_steps)
        return self

    # -- pieces of an update shared by SAC and TD3 ---------------------------------------------

    def autocast(self):
        """bfloat16 matmuls and convolutions when ``precision="bf16"`` (4x the fp32 matmul rate
        on CPUs with AVX-512 BF16); network outputs are cast back to fp32 for the losses."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    def prepare(self, batch: Batch) -> Prepared:
        """Batch -> tensors, with the two encoder passes of an update: ``h = encoder(obs)``
        with gradient and ``h_next = target_encoder(next_obs)`` without."""
        obs = self.obs_to_tensor(batch.obs, augment=True)
        next_obs = self.obs_to_tensor(batch.next_obs, augment=True)
        action = torch.from_numpy(batch.action).to(self.device)
        reward = torch.from_numpy(batch.reward).to(self.device)
        discount = torch.from_numpy(batch.discount).to(self.device)
        latent = self.features(obs)
        with torch.no_grad():
            h_next = self.encoder_target(next_obs) if self.pixels else next_obs
        # The decoupled regime: the critic reads the latents detached, so its loss never reaches
        # the encoder; the aux objective still gets them with gradient.
        h = latent if self.config.critic_trains_encoder else latent.detach()
        return Prepared(obs, next_obs, h, h_next, action, reward, discount, latent)

    def aux_inputs(self, p: Prepared) -> AuxInputs:
        """What the aux objective receives for the batch ``p`` (observations only on pixels)."""
        return AuxInputs(
            p.latent if p.latent is not None else p.h,
            p.h_next,
            p.action,
            p.reward,
            p.discount,
            p.obs if self.pixels else None,
            p.next_obs if self.pixels else None,
            self.encoder,
        )

    def critic_step(self, critic_loss: torch.Tensor, prepared: Prepared) -> dict[str, torch.Tensor]:
        """Backward the critic loss (plus the auxiliary loss on the same batch) and step their
        optimisers: the critic's, which trains the encoder too, and the aux objective's.

        Refuses to step on a NaN or infinite loss, so the weights stay the last good ones.
        """
        metrics = {"critic_loss": critic_loss.detach()}
        loss = critic_loss
        if self.aux is not None:
            aux_loss, aux_metrics = self.aux.loss(self.aux_inputs(prepared))
            loss = loss + aux_loss
            metrics["aux_loss"] = aux_loss.detach()
            metrics.update({f"aux/{k}": v for k, v in aux_metrics.items()})
        self.check_finite(loss, "critic loss" if self.aux is None else "critic + auxiliary loss")
        self.critic_optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        if self.aux_optimizer is not None:
            self.aux_optimizer.step()
        return metrics

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
        """One gradient step on ``loss``; refuses a NaN or infinite loss (see :meth:`critic_step`)."""
        self.check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def check_finite(self, loss: torch.Tensor, name: str) -> None:
        """Raise :class:`TrainingDiverged` if ``loss`` is NaN or infinite."""
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{name} is {loss.item()} at update {self.num_updates} (env step {self.num_env_steps}); "
                "lower the learning rate or check the observations and rewards"
            )

    def critic_parameters(self, critic: nn.Module) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What the critic's optimiser trains: the critic, and the encoder too (the critic loss
        shapes it) unless ``critic_trains_encoder`` is off; the encoder at ``encoder_lr`` when set."""
        params = list(critic.parameters())
        if not self.pixels or not self.config.critic_trains_encoder:
            return params
        if self.config.encoder_lr is None:
            return params + list(self.encoder.parameters())
        return [{"params": params}, {"params": list(self.encoder.parameters()), "lr": self.config.encoder_lr}]

    # -- checkpoints (the file format: ssrl.agents.checkpoint) ---------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as described in :mod:`ssrl.agents.checkpoint`."""
        state = {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "algo": self.algo,
            "config": dataclasses.asdict(self.config),
            "observation_space": checkpoint.space_to_dict(self.observation_space),
            "action_space": checkpoint.space_to_dict(self.action_space),
            "frame_stack": self.frame_stack,
            "seed": self.seed,
            "modules": {name: m.state_dict() for name, m in self.modules().items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers().items()},
            "counters": {
                "agent_steps": self.num_agent_steps,
                "env_steps": self.num_env_steps,
                "updates": self.num_updates,
                "episodes": self.num_episodes,
            },
            "rng": {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()},
            "replay": self.replay_meta,
        }
        if self.aux is not None:
            state["aux"] = self.aux.state_dict()
            if self.aux_optimizer is not None:
                state["optimizers"]["aux"] = self.aux_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimiser states, counters and RNG states from :meth:`state_dict`."""
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        optimizers = self.optimizers()
        if self.aux_optimizer is not None:
            optimizers["aux"] = self.aux_optimizer
        for name, opt in optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        if self.aux is not None and "aux" in state:
            self.aux.load_state_dict(state["aux"])
        c = state["counters"]
        self.num_agent_steps, self.num_env_steps = c["agent_steps"], c["env_steps"]
        self.num_updates, self.num_episodes = c["updates"], c["episodes"]
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.generator.set_state(state["rng"]["torch"])
        self.replay_meta = state.get("replay")

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write weights, optimiser states, counters and RNG states to ``path`` atomically.

        The replay buffer is saved separately (``replay.save(folder)``), by the trainer.
        """
        return checkpoint.save_agent(self, path)

    @classmethod
    def load(
        cls,
        path: str | pathlib.Path,
        env: gym.Env | None = None,
        device: str | torch.device = "auto",
        aux: AuxObjective | None = None,
        encoder: nn.Module | None = None,
    ) -> OffPolicyAgent:
        """Rebuild an agent from :meth:`save` (``env`` is needed only to train further; ``encoder``
        a module of the architecture it was trained with, when that was given); see
        :func:`ssrl.agents.checkpoint.load_agent`."""
        return checkpoint.load_agent(cls, path, env, device=device, aux=aux, encoder=encoder)
