"""The ``Representation`` base class, the registry, and checkpoints.

A representation is an encoder plus the self-supervised objective that trains it:

* ``encoder``: observation -> latent vector; the only part used downstream (probes, the
  ``EncodedObservation`` wrapper, RL);
* ``loss(batch) -> (loss, metrics)``: the objective, on a batch drawn by ``sample_batch``;
* ``needs``: what data the objective eats (frames, synchronised views, clips, transitions,
  grasp triplets), checked against a data set before training starts.

A pretext method (rotation, jigsaw, ...) is just another representation whose head is thrown
away after pretraining: every method leaves behind an encoder of the same backbone family
(:mod:`ssrl.representations.backbones`), so all can be compared on the same task.

Checkpoints are a ``.pt`` file (weights, config, input shape, and for resuming the optimiser,
step and RNG states) plus the same config as JSON beside it, both written atomically.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import importlib
import pathlib
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ssrl.utils import atomic_path, build_config, read_torch_file, write_json

FORMAT = 1
_REGISTRY: dict[str, type[Representation]] = {}


class Need(enum.Flag):
    """What batches an objective consumes (a data set must be able to provide them)."""

    FRAMES = enum.auto()  # single observations (frame stacks)
    VIEWS = enum.auto()  # the same instant from two or more synchronised cameras
    CLIPS = enum.auto()  # runs of consecutive frames
    TRANSITIONS = enum.auto()  # (s, a, r, s')
    GRASPS = enum.auto()  # grasp2vec triplets (pre, post, object image)
    CONTEXT = enum.auto()  # the first frame of each observation's episode (CC-VAE)
    DATASET = enum.auto()  # one data set for the whole training (Exemplar-CNN's classes index its frames)


# How refusals name needs that are not one word.
_NEED_WORDS = {Need.DATASET: "one fixed data set (its surrogate classes are patches of that set's frames)"}


def describe_needs(needs: Need) -> str:
    """``needs`` in words, for refusals ("views, context")."""
    return ", ".join(_NEED_WORDS.get(n, n.name.lower()) for n in Need if n in needs)


@dataclasses.dataclass
class BaseConfig:
    """Fields every method has. ``frame_stack`` is the number of frames the encoder takes (its
    input has 3 x frame_stack channels, like the env's observations)."""

    latent_dim: int = 50
    arch: str = "dmc"
    frame_stack: int = 3
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("latent_dim", "frame_stack", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__qualname__}.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"{type(self).__qualname__}.lr must be positive, got {self.lr}")


class Representation(nn.Module, abc.ABC):
    """Base class: subclasses set ``name``, ``needs``, ``Config`` and implement ``loss`` and
    ``sample_batch``; ``self.encoder`` maps observations (uint8 or [0,1] images, channels-first)
    to ``(B, latent_dim)``.

    The drivers (``ssrl pretrain``, ``probe``, ``train`` and ``bench``) never ask for a method by
    name: what a method needs or adds, it says through this class. The hooks below have defaults
    that suit most methods; a method overrides only what it does differently.

    * ``needs``: the batches the objective eats; checked against a data set before training.
    * ``example_env``: the env whose rollouts suit the method when a driver must choose one
      (benchmarks, examples): a DMC task by default; grasp2vec needs our Grasp scene.
    * :meth:`after_pretraining`: runs once pretraining ends (the VAEs fit their prior there).
    * :meth:`extra_scores`: scores beside the probe's (grasp2vec's retrieval accuracy).
    * :meth:`pictures`: PNGs a person would rather look at than read (colorizations,
      in-paintings, samples), written by ``ssrl bench`` beside a cell's probe scores.
    * :meth:`replay_loss`: the loss on an agent's replay batch (the decoupled and joint regimes
      of :mod:`ssrl.representations.regimes`); by default the method's own ``sample_batch``
      draws from the replay batch (or, for a method of clips, from runs of the replay).
    * ``stacks_env_frames``: whether a fresh instance for an agent encodes the env's whole frame
      stack (most methods) or the frames one by one (the video methods, whose order tasks a
      stack would give away).
    * :meth:`goal_sampler` and :meth:`observation_wrapper`: how the frozen regime wraps an env
      (latents of the encoder; on a goal env, the latent reward and, for a method with a prior,
      RIG's imagined goals).
    """

    name: ClassVar[str]
    needs: ClassVar[Need]
    Config: ClassVar[type]
    example_env: ClassVar[str] = "ssrl/cartpole-swingup-v0"
    stacks_env_frames: ClassVar[bool] = True

    def __init__(self, config: Any, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.encoder: nn.Module
        self.generator: torch.Generator | None = None  # the agent's, while it trains this representation
        # Ids of the episodes pretraining used (``ssrl.representations.pretrain.episode_ids``):
        # saved with the model, so probes can keep to episodes the encoder never saw.
        self.trained_on: list[str] | None = None

    # -- what a method defines ---------------------------------------------------------------------

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on one batch (tensors on this module's device)."""

    @abc.abstractmethod
    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw a batch for :meth:`loss` from a :class:`~ssrl.representations.data.RolloutData`."""

    def check_data(self, data) -> None:
        """Raise a clear error if ``data`` cannot provide what this method needs."""
        data.require(self.needs, method=self.name)

    # -- hooks the drivers call (defaults do nothing) ---------------------------------------------

    def after_pretraining(self, data) -> None:
        """Runs once after the last pretraining step, in eval mode and without gradient, on the
        training data; whatever it sets on the module is saved with the model."""

    def extra_scores(self, data) -> dict[str, float]:
        """Method-specific scores on held-out ``data``, reported beside the probe's (named so
        that larger is better unless the name says otherwise, e.g. ``alignment_error``)."""
        return {}

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """Write pictures of what the method does on held-out ``data`` into ``folder``; returns
        the paths (none by default)."""
        return []

    def replay_loss(self, inputs, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective on an agent's replay batch (:class:`~ssrl.representations.objective.AuxInputs`),
        when this representation's encoder is the agent's: by default :meth:`sample_batch` draws
        as many examples as the agent's batch holds from :func:`~ssrl.representations.regimes.replay_data`
        (the replay batch, or clips from the replay), so the method samples as it does from
        rollouts. ``self.generator`` is the agent's torch generator here."""
        from .regimes import replay_data

        data = replay_data(inputs, self.needs, rng)
        return self.loss(self.to_batch(self.sample_batch(data, len(inputs.action), rng)))

    def goal_sampler(self):
        """``sample_goals(n, rng, like) -> (n, latent_dim)`` latent goals this method can imagine
        (a VAE's prior: RIG), or None; ``like`` (may be None): latents of the episodes the goals
        are for (a CC-VAE keeps their context)."""
        return None

    def goal_decoder(self):
        """``decode(z) -> uint8 (n, C, H, W)`` images of latent goals (a VAE's decoder), or None:
        how an imagined goal gets an image that a replay can re-encode later (RIG's online
        fine-tuning)."""
        return None

    def goal_embedding(self) -> nn.Module:
        """Images -> the vectors instance grasping compares a goal with what was lifted (by their
        dot product, :class:`~ssrl.representations.grasping.EmbeddedGraspGoals`). By default the
        encoder's output scaled to unit length, so the reward is the cosine similarity of the two
        images' embeddings (how an autoencoder's features serve as a grasp reward, grasp2vec's
        baseline); grasp2vec gives its object tower ``phi_o`` instead."""
        from .grasping import UnitLength

        return UnitLength(self.encoder)

    def observation_wrapper(
        self,
        env,
        *,
        explore: bool,
        keep_images: bool = False,
        reward: str = "latent_distance",
        observe_frames: bool = False,
    ):
        """``env`` seen through this frozen encoder (the frozen regime of ``ssrl train``): an
        :class:`~ssrl.representations.wrappers.EncodedObservation`; on ``ssrl/GraspGoal-v0``
        instance grasping by :meth:`goal_embedding` (:func:`~ssrl.representations.grasping.
        instance_grasping`). On a goal env with image goals
        the reward is the latent distance, and a method with a :meth:`goal_sampler` offers
        imagined goals for relabelling and, when ``explore`` (the training env, not the
        evaluation one), pursues one imagined goal per episode (RIG). ``keep_images``: the
        observation also carries the images behind the latents (for a replay that re-encodes
        them when this encoder is fine-tuned online). ``reward="env"``: the env's own reward on
        those images instead of the latent one (they are then kept). ``observe_frames``: only the
        goals are encoded, the observation stays the image (the ``finetune`` regime: the agent's
        copy of this encoder reads it)."""
        from .grasping import instance_grasping, is_instance_grasping
        from .wrappers import EncodedObservation

        if is_instance_grasping(env):
            if keep_images or observe_frames:
                raise ValueError("instance grasping keeps no images behind its goals (no online fine-tuning)")
            return instance_grasping(env, self.goal_embedding(), reward)
        if reward in ("cosine", "any"):
            raise ValueError(
                f"the goal reward {reward!r} is instance grasping's (ssrl/GraspGoal-v0); on "
                f"{env.spec.id if env.spec else 'this env'} use 'latent' (the representation's reward) or 'env'"
            )
        keep_images = keep_images or reward == "env"

        sampler = self.goal_sampler()
        spaces = getattr(env.observation_space, "spaces", {})
        if sampler is not None and not {"achieved_goal", "desired_goal"} <= set(spaces):
            sampler = None  # not a goal env: nothing to imagine
        imagine = explore and sampler is not None
        decode = self.goal_decoder() if keep_images and imagine else None
        if keep_images and imagine and decode is None:
            raise ValueError(f"{self.name} cannot draw its imagined goals as images, which keep_images needs")
        return EncodedObservation(
            env,
            self.encoder,
            reward=reward,
            goal_sampler=sampler,
            imagine_goals=imagine,
            keep_images=keep_images,
            decode_goals=decode,
            observe_frames=observe_frames,
        )

    # -- shared ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode inside the block; the previous mode comes back after it (errors included)."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def map_batches(self, fn, *arrays, batch_size: int = 256) -> np.ndarray:
        """``fn(*tensors)`` over batches of ``arrays`` (moved to the device), in eval mode and
        without gradient; the outputs concatenated as float32 numpy."""
        out = []
        with self.evaluating():
            for start in range(0, len(arrays[0]), batch_size):
                tensors = [torch.as_tensor(np.asarray(a[start : start + batch_size])).to(self.device) for a in arrays]
                out.append(fn(*tensors).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    def embed(self, obs: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Encode observations in batches (eval mode, no gradient); returns float32 numpy."""
        return self.map_batches(self.encoder, obs, batch_size=batch_size)

    def to_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v).to(self.device) for k, v in arrays.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "config": dataclasses.asdict(self.config),
            "obs_shape": list(self.obs_shape),
            "trained_on": self.trained_on,
        }

    def save(self, path: str | pathlib.Path, extra: dict[str, Any] | None = None) -> pathlib.Path:
        """Write ``path`` (.pt) and ``path`` with .json (the config), atomically."""
        path = pathlib.Path(path)
        state = dict(self.describe(), state_dict=self.state_dict(), **(extra or {}))
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)
        write_json(path.with_suffix(".json"), self.describe())
        return path


# The suite's own methods, by the module that registers each: ``names()`` lists them without
# importing any, and ``get(name)`` imports a method's module on first use.
BUILTIN = {
    "tcn": "ssrl.representations.control.tcn",
    "mftcn": "ssrl.representations.control.mftcn",
    "grasp2vec": "ssrl.representations.control.grasp2vec",
    "beta-vae": "ssrl.representations.control.vae",
    "cc-vae": "ssrl.representations.control.ccvae",
    "deepmdp": "ssrl.representations.control.deepmdp",
    "dbc": "ssrl.representations.control.dbc",
    "curl": "ssrl.representations.control.curl",
    "atc": "ssrl.representations.control.atc",
    "rotation": "ssrl.representations.pretext.image.rotation",
    "exemplar": "ssrl.representations.pretext.image.exemplar",
    "relative-position": "ssrl.representations.pretext.image.relative_position",
    "jigsaw": "ssrl.representations.pretext.image.jigsaw",
    "colorization": "ssrl.representations.pretext.image.colorization",
    "split-brain": "ssrl.representations.pretext.image.split_brain",
    "denoising-ae": "ssrl.representations.pretext.image.denoising_ae",
    "context-encoder": "ssrl.representations.pretext.image.context_encoder",
    "bigan": "ssrl.representations.pretext.image.bigan",
    "counting": "ssrl.representations.pretext.image.counting",
    "cpc": "ssrl.representations.pretext.image.cpc",
    "tracking": "ssrl.representations.pretext.video.tracking",
    "shuffle-learn": "ssrl.representations.pretext.video.shuffle_learn",
    "o3n": "ssrl.representations.pretext.video.o3n",
    "arrow-of-time": "ssrl.representations.pretext.video.arrow_of_time",
    "video-colorization": "ssrl.representations.pretext.video.video_colorization",
}


def register(cls: type[Representation]) -> type[Representation]:
    """Class decorator adding a representation to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"representation name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Registered method names (the built-in ones and any registered since)."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def get(name: str) -> type[Representation]:
    """The class of method ``name``, importing its module on first use."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown representation {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def make(name: str, obs_shape: tuple[int, ...], **config: Any) -> Representation:
    """``make("tcn", (9, 84, 84), latent_dim=32)``: a method with its config checked by name."""
    cls = get(name)
    return cls(build_config(cls.Config, config), obs_shape)


def checkpoint_file(path: str | pathlib.Path) -> pathlib.Path:
    """The file a representation checkpoint ``path`` names: a ``model.pt``, or the one in the
    ``ssrl pretrain`` folder ``path``."""
    path = pathlib.Path(path)
    return path / "model.pt" if path.is_dir() and (path / "model.pt").is_file() else path


def read_checkpoint(path: str | pathlib.Path) -> dict[str, Any]:
    """A representation checkpoint's contents; ``path`` is a ``model.pt`` or the ``ssrl pretrain``
    folder holding one."""
    return read_torch_file(
        checkpoint_file(path), "representation checkpoint", FORMAT, required=("name", "config", "state_dict")
    )


def load_representation(path: str | pathlib.Path, device: str | torch.device = "cpu") -> Representation:
    """Rebuild a representation (weights included) from a checkpoint written by ``save``."""
    state = read_checkpoint(path)
    rep = make(state["name"], tuple(state["obs_shape"]), **state["config"])
    rep.load_state_dict(state["state_dict"])
    rep.trained_on = state.get("trained_on")
    return rep.to(device).eval()
