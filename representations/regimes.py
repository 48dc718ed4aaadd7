"""How a representation serves an agent: the four regimes, through one mechanism.

==========  ===================================  ====================  ==========================
regime      the agent's encoder                  critic trains it      the method's own loss
==========  ===================================  ====================  ==========================
frozen      none: ``EncodedObservation`` turns   no                    no
            images into latents (RL on vectors)
finetune    the pretrained encoder               yes (``encoder_lr``)  no
decoupled   the method's encoder (pretrained     no: the critic and    yes, on the agent's replay
            or freshly initialised)              actor read it         batches; the only thing
                                                 detached              that trains it (ATC)
joint       the method's encoder (pretrained     yes                   yes, added to the critic's
            or freshly initialised)                                    loss (CURL, DBC, DeepMDP)
==========  ===================================  ====================  ==========================

On a goal env with image goals (Push) the goals are always the pretrained encoder's latents:
``frozen`` is RIG, ``decoupled`` is RIG with online fine-tuning (:mod:`ssrl.representations.online`:
the method's loss on the agent's images every K episodes, the replay re-encoded), ``finetune``
gives the agent the frames and a copy of the encoder that its critics train (the goals stay the
frozen encoder's), and ``joint`` is refused there (the method's loss would train an encoder
whose goals it never sees).

In the decoupled regime the agent option ``rl_head`` gives the critic and actor their own
Linear + LayerNorm head on the method's conv trunk (read detached, trained by the critic) in
place of the method's code: ATC's online agents read it so (rlpyt's ``stop_rl_conv_grad``).

In the decoupled and joint regimes the method's objective is the agent's ``aux``
(:class:`RepresentationObjective`): at every update it draws the method's batch with the method's
own ``sample_batch`` from what :func:`replay_data` makes of the agent's replay:

* frames and transitions: :class:`ReplayData`, the agent's replay batch seen through the sampling
  interface of :class:`~ssrl.representations.data.RolloutData`;
* clips (the video methods) or synchronised views (TCN, mfTCN): :class:`ReplayClips`,
  ``CLIP_RUNS`` runs of up to ``CLIP_LENGTH`` consecutive instants (the longest the replay
  holds, if shorter), their starts drawn uniformly from the whole replay
  (``ReplayBuffer.sample_segments``; an episode's first and last ``CLIP_LENGTH - 1`` instants
  are drawn less often than its middle ones), each an episode of a small ``RolloutData``, so the
  method's samplers (high-motion windows, Shuffle & Learn's tuples, TCN's instants and their
  negatives) run on them unchanged. Departure from the methods' rollout data: a
  frame stack at a run's first instants is clamped at the run's start, as at an episode's reset
  (the video methods take single frames by default, so this only matters for stacked ones).

Synchronised views exist when the env renders several cameras (``cameras=[A, B]``, seen through
:class:`~ssrl.envs.AgentCamera`: the agent observes A, the replay keeps B's frames of every
instant, and the runs serve both). A method whose data a replay cannot give (views without a
second camera, grasp triplets, episode contexts, one fixed data set: Exemplar-CNN's surrogate
classes) is refused when the run is built, with what it needs. A method may instead override
:meth:`~ssrl.representations.core.Representation.replay_loss` (DBC and DeepMDP use the agent's own
latents there, saving encoder passes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ssrl.envs.rollouts import DatasetError, Episode
from ssrl.utils import build_config

from .core import Need, Representation, describe_needs, get
from .data import RolloutData
from .objective import AuxInputs

REGIMES: tuple[str, ...] = ("frozen", "finetune", "decoupled", "joint")
# The needs every agent's replay can serve: frame stacks of the agent's camera, transitions, and
# clips (runs of consecutive instants of one episode); synchronised views too when it keeps other
# cameras' frames (ReplayData.require).
REPLAY_SERVES = Need.FRAMES | Need.TRANSITIONS | Need.CLIPS
# The clips an update's objective samples from: CLIP_RUNS runs of CLIP_LENGTH instants. 100
# instants hold Shuffle & Learn's longest tuple at the paper's taus (3 x 25 + 1 = 76 frames) and
# most of a DMC episode at action repeat 8 (126 instants); 8 runs are 800 frames to copy, about
# 4 ms per update on our CPUs (the replay keeps each frame's motion: finding it in the clips
# again took 22 ms; python -m ssrl.benchmarks.input_speed).
CLIP_RUNS, CLIP_LENGTH = 8, 100


def check_regime(regime: str) -> str:
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; use one of {', '.join(REGIMES)}")
    return regime


def fresh_representation(method: str, obs_shape: tuple[int, ...], action_dim: int, **config: Any) -> Representation:
    """An untrained ``method`` for an agent on observations ``obs_shape`` (a ``3k``-channel frame
    stack): its ``frame_stack`` defaults to the observation's ``k`` (unless the method encodes
    single frames by design: ``stacks_env_frames = False``), and methods with an ``action_dim``
    get the env's."""
    cls = get(method)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    defaults = {"frame_stack": obs_shape[0] // 3} if cls.stacks_env_frames else {}
    if "action_dim" in fields:
        defaults["action_dim"] = action_dim
    cfg = build_config(cls.Config, dict(defaults, **config))
    return cls(cfg, (3 * cfg.frame_stack, *obs_shape[1:]))


class ReplayData:
    """A replay batch (uint8 frame stacks ``(B, 3k, H, W)``, actions, rewards, discounts) with
    the sampling interface methods use on rollout data: ``sample_frames``, ``stack``,
    ``transitions`` and ``require``. Every index is a transition with a next frame. ``cameras``:
    those of the agent's replay, the agent's first (the others' frames are served in clips, not
    here)."""

    def __init__(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        discount: np.ndarray,
        cameras: tuple[str, ...] = ("agent",),
    ) -> None:
        self.cameras = list(cameras)
        self.obs, self.next_obs = obs, next_obs
        self.action, self.reward, self.discount = action, reward, discount
        self.frames_per_obs = obs.shape[1] // 3

    @classmethod
    def from_inputs(cls, inputs: AuxInputs) -> ReplayData:
        as_numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731  (free on the CPU)
        return cls(
            as_numpy(inputs.obs),
            as_numpy(inputs.next_obs),
            as_numpy(inputs.action),
            as_numpy(inputs.reward),
            as_numpy(inputs.discount),
        )

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (3, *self.obs.shape[2:])

    def require(self, needs: Need, method: str = "this method") -> None:
        missing = needs & ~(REPLAY_SERVES | (Need.VIEWS if len(self.cameras) > 1 else Need(0)))
        if missing:
            hint = (
                ", and other cameras' views when the env renders them: -o cameras=[A,B]"
                if Need.VIEWS in missing
                else ""
            )
            raise DatasetError(
                f"{method} needs {describe_needs(missing)}, which an agent's replay does not hold (it holds frame "
                f"stacks of the agent's camera, transitions and clips{hint}); use it pretrained and frozen or "
                "fine-tuned instead"
            )

    def require_cameras(self, names, method: str = "this method") -> None:
        """Refuse camera ``names`` the replay lacks (with the agent's camera alone, every name is
        that camera: see :class:`ReplayClips`)."""
        missing = [n for n in names or () if n not in self.cameras and n != "agent"]
        if missing and len(self.cameras) > 1:
            raise DatasetError(f"{method} asks for cameras {missing}; the agent's replay keeps {self.cameras}")

    def sample_frames(
        self, n: int, rng: np.random.Generator, with_next: bool = False, view: str | None = None
    ) -> np.ndarray:
        """``n`` distinct indices when the batch has them (every index has a next frame; the
        agent's one camera is every ``view``)."""
        return rng.permutation(len(self))[:n] if n <= len(self) else rng.integers(0, len(self), n)

    def _last_frames(self, x: np.ndarray, k: int) -> np.ndarray:
        if k > self.frames_per_obs:
            raise ValueError(f"the method stacks {k} frames; the agent's observations hold {self.frames_per_obs}")
        return x[:, x.shape[1] - 3 * k :]

    def stack(self, idx: np.ndarray, camera: str | None = None, k: int = 1, stride: int = 1) -> np.ndarray:
        """The last ``k`` frames of the observations ``idx`` (consecutive agent steps)."""
        if stride != 1:
            raise ValueError("an agent's replay holds frame stacks of consecutive steps only (stride 1)")
        return self._last_frames(self.obs[np.asarray(idx)], k)

    def transitions(self, idx: np.ndarray, camera: str | None = None, k: int = 1) -> dict[str, np.ndarray]:
        idx = np.asarray(idx)
        return {
            "obs": self.stack(idx, camera, k),
            "action": self.action[idx],
            "reward": self.reward[idx],
            "next_obs": self._last_frames(self.next_obs[idx], k),
            "discount": self.discount[idx],
        }


class ReplayClips(RolloutData):
    """Runs of consecutive instants of the agent's replay as the episodes of a
    :class:`~ssrl.representations.data.RolloutData`, so a method's samplers of frames in time run
    on them as on rollouts. Their cameras: the agent's (named as the runs say, else ``"agent"``)
    and the other cameras' views the replay keeps. With the agent's camera alone, every camera
    name is that camera (a pretrained method's own camera name); with views, a name that is none
    of them is refused. There is no physical state (probes never read it). The runs' ``motion``,
    when the replay keeps it per slot, is the agent camera's :meth:`motion` (else it is computed
    from the frames)."""

    def __init__(self, runs: dict[str, Any]) -> None:
        frames = runs["frames"]
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise DatasetError(f"clips are runs of RGB frames (n, length, 3, H, W); the replay gave {frames.shape}")
        views = dict(runs.get("views", {}))
        self.agent_camera = runs.get("camera") or "agent"
        episodes = []
        for i in range(len(frames)):
            steps = len(frames[i]) - 1
            episodes.append(
                Episode(
                    frames={self.agent_camera: frames[i], **{name: v[i] for name, v in views.items()}},
                    action=runs["action"][i],
                    reward=runs["reward"][i],
                    terminated=runs["terminated"][i],
                    truncated=np.zeros(steps, bool),
                    state=np.zeros((steps + 1, 0), np.float32),
                    info={},
                )
            )
        super().__init__(episodes, [self.agent_camera, *views])
        if "motion" in runs:
            self.__dict__["_motion"] = {self.agent_camera: np.asarray(runs["motion"], np.float32).reshape(-1)}

    def _camera(self, name: str | None) -> str:
        if name in self.frames:
            return name
        if name is None or name == "agent" or len(self.cameras) == 1:
            return self.agent_camera
        raise DatasetError(f"the replay's clips hold the cameras {self.cameras}; {name!r} is none of them")

    def view(self, name: str | None = None) -> np.ndarray:
        return self.frames[self._camera(name)]

    def motion(self, camera: str | None = None) -> np.ndarray:
        return super().motion(self._camera(camera))


def replay_data(inputs: AuxInputs, needs: Need, rng: np.random.Generator) -> ReplayData | ReplayClips:
    """What a method with ``needs`` samples its batch from at an agent's update: clips from the
    whole replay if it learns from clips or synchronised views, else the agent's replay batch (see
    the module docstring)."""
    if not needs & (Need.CLIPS | Need.VIEWS):
        return ReplayData.from_inputs(inputs)
    if inputs.segments is None:
        raise DatasetError("this agent's replay cannot serve clips (it holds dict observations, not image stacks)")
    return ReplayClips(inputs.segments(CLIP_RUNS, CLIP_LENGTH, rng))


class RepresentationObjective(nn.Module):
    """A representation's own loss as an agent's ``aux`` objective (the decoupled and joint
    regimes; see the module docstring). The agent's encoder must be ``rep.encoder`` (or a
    :class:`~ssrl.representations.wrappers.StackedFramesEncoder` around it, or the agent's
    ``rl_head`` around that).

    ``parameters()`` are what the aux optimiser steps: every parameter of the representation in
    the decoupled regime (its loss is the only one that trains the encoder), all but the
    encoder's in the joint regime (the critic's optimiser steps the encoder, on the sum of both
    losses). The sampling RNG is part of the state dict, so a resumed run draws the same batches.
    ``cameras``: those the agent's replay keeps, the agent's first (``AgentCamera``'s
    ``agent_camera`` and ``view_names``), for multi-view methods; empty: the agent's alone.
    """

    def __init__(
        self, rep: Representation, regime: str, action_dim: int, seed: int = 0, cameras: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        if check_regime(regime) not in ("decoupled", "joint"):
            raise ValueError(f"the {regime} regime trains no objective on the replay")
        self.rep, self.regime = rep, regime
        self.rng = np.random.default_rng(seed)
        self.generator: torch.Generator | None = None
        shape = rep.obs_shape
        probe = np.zeros((2, *shape), np.uint8)
        actions = np.zeros((2, action_dim), np.float32)
        probe_data = ReplayData(
            probe, probe, actions, np.zeros(2, np.float32), np.ones(2, np.float32), cameras or ("agent",)
        )
        rep.check_data(probe_data)

    def parameters(self, recurse: bool = True):
        encoder = {id(p) for p in self.rep.encoder.parameters()} if self.regime == "joint" else set()
        return (p for p in self.rep.parameters(recurse) if id(p) not in encoder)

    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.rep.generator = self.generator
        return self.rep.replay_loss(inputs, self.rng)

    def get_extra_state(self) -> Any:
        return {"rng": self.rng.bit_generator.state}

    def set_extra_state(self, state: Any) -> None:
        self.rng.bit_generator.state = state["rng"]
