"""Gymnasium observation wrappers that put a frozen encoder between the env and the agent.

``EncodedObservation(env, encoder)`` turns image observations into float32 latent vectors, so
any agent for vector observations (ours, or Stable-Baselines3's ``MlpPolicy``) trains on them
unchanged. On a goal env's dict observation it encodes the image entries (observation, achieved
and desired goal) and redefines ``compute_reward`` in latent space, as RIG does:
``r = -||e(achieved) - e(desired)||_2`` (or a sparse ``-(distance > epsilon)``), so hindsight
relabelling works on latents. ``step`` returns that same latent reward, not the env's image
reward: the agent learns from one reward function, whether a transition is replayed as it came
or relabelled. With a ``goal_sampler`` (a representation's prior: RIG's imagined goals) the
wrapper offers ``sample_goals(n, rng)`` for relabelling, and with ``imagine_goals=True`` every
episode's desired goal is one such sample (RIG's exploration); the env's own goal stays in
``info`` (``state_desired_goal``) for metrics.

With ``keep_images=True`` (RIG's online fine-tuning, :mod:`ssrl.representations.online`) the
dict also carries the images the latents came from, under ``image_observation`` and
``image_desired_goal`` (and ``image_achieved_goal`` when the achieved goal is not the
observation's own frame), so a replay can re-encode what it holds after the encoder changes;
an imagined goal's image is the decoder's picture of it (rlkit stores decoded goals the same
way), so a goal once imagined is re-encoded like any other.

With ``observe_frames=True`` (the ``finetune`` regime on a goal env with image goals) only the
goals are encoded: the observation stays the env's image, for an agent whose own copy of the
encoder reads it and is trained by its critics, while goals and rewards stay this frozen
encoder's, so the reward is one function of stored latents however the agent's copy changes.

``reward="env"`` (with ``keep_images``) keeps the env's own reward instead, evaluated on those
images: the agent still sees latents, but is rewarded by, e.g., Push's pixel distance (RIG's
ablation of its latent reward). ``reward_keys`` names the entries any reward is computed from
(the latents, or the images), so a replay relabels and rewards with the same function.

An encoder takes the env's frame stack as it is when their channels match; when the env stacks
k frames and the encoder eats one (e.g. grasp2vec or a single-frame VAE), each frame is encoded
and the k latents are concatenated; in a dict, entries of other shapes (a goal env's
single-frame goal images beside a stacked observation) are encoded each by their own shape.
``EncodedVectorObservation`` does the same for a Gymnasium vector env, encoding all sub-envs'
observations in one batch.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from gymnasium.vector import VectorObservationWrapper

from ssrl.utils import is_image_space

IMAGE_GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
IMAGE_PREFIX = "image_"  # keep_images: the image a latent entry came from, under this prefix


def image_key(key: str) -> str:
    """The entry holding the image of latent entry ``key`` (``keep_images``)."""
    return IMAGE_PREFIX + key


def encoder_input_shape(encoder: nn.Module) -> tuple[int, ...]:
    shape = getattr(encoder, "input_shape", None)
    if shape is None:
        raise ValueError("the encoder must declare its input_shape (C, H, W); encoders of ssrl.representations do")
    return tuple(shape)


class StackedFramesEncoder(nn.Module):
    """An encoder over the env's observations: the encoder itself when their channels match;
    when the env stacks k times the encoder's channels (an encoder of single frames under a
    3-frame stack), each chunk is encoded and the k latents are concatenated, oldest first.

    A module, so an agent can train it (fine-tuning); the wrapped encoder's weights are shared.
    """

    def __init__(self, encoder: nn.Module, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        c_in, *hw = encoder_input_shape(encoder)
        c, *obs_hw = obs_shape
        if tuple(obs_hw) != tuple(hw):
            raise ValueError(f"the encoder takes {hw[0]}x{hw[1]} images, the env gives {obs_hw[0]}x{obs_hw[1]}")
        if c % c_in:
            raise ValueError(f"the env gives {c} channels, not a multiple of the encoder's {c_in}")
        self.chunks, self.c_in = c // c_in, c_in
        self.input_shape = tuple(obs_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        if self.chunks > 1:
            if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
                x = x.reshape(b * self.chunks, self.c_in, *x.shape[2:])
            else:  # a channels-last batch (a shifted one): one copy into channels-last chunk images
                h, w = x.shape[2:]
                chunks = x.permute(0, 2, 3, 1).reshape(b, h, w, self.chunks, self.c_in).permute(0, 3, 1, 2, 4)
                x = chunks.reshape(b * self.chunks, h, w, self.c_in).permute(0, 3, 1, 2)
        return self.encoder(x).reshape(b, -1)


class _Encoding:
    """Encode batches of numpy images with a frozen encoder (see :class:`StackedFramesEncoder`)."""

    def __init__(self, encoder: nn.Module, obs_shape: tuple[int, ...]) -> None:
        self.module = StackedFramesEncoder(encoder.eval().requires_grad_(False), obs_shape)
        self.device = next(encoder.parameters()).device
        with torch.no_grad():
            probe = torch.zeros(1, *obs_shape, dtype=torch.uint8, device=self.device)
            self.latent_dim = int(self.module(probe).shape[-1])

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(images)).to(self.device)
        return self.module(x).float().cpu().numpy()


class _DictEncoding:
    """Encode a dict's image entries: ``{key: (n, C, H, W)}`` -> ``{key: (n, D_key)}``, one
    encoder call per image shape. Entries may differ in shape: a frame-stacked observation beside
    single-frame goals (Push with ``frame_stack=2``) gives the k latents of the one and one latent
    of the others."""

    def __init__(self, encoder: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
        self.groups: dict[tuple[int, ...], list[str]] = {}
        for key, shape in shapes.items():
            self.groups.setdefault(tuple(shape), []).append(key)
        self.encodings = {shape: _Encoding(encoder, shape) for shape in self.groups}
        self.latent_dims = {key: self.encodings[tuple(shape)].latent_dim for key, shape in shapes.items()}

    def __call__(self, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for shape, keys in self.groups.items():
            n = len(images[keys[0]])
            latents = self.encodings[shape](np.concatenate([images[k] for k in keys]))  # (keys * n, D)
            out.update((key, latents[i * n : (i + 1) * n]) for i, key in enumerate(keys))
        return out


def _encoded_space(space: gym.Space, encoder: nn.Module, who: str, skip: tuple[str, ...] = ()):
    """(image keys or None, the encoding, the latent observation space) for one env's space;
    a dict's entries named in ``skip`` stay as they are."""
    if isinstance(space, gym.spaces.Dict):
        keys = [k for k, s in space.spaces.items() if is_image_space(s) and k not in skip]
        if not keys:
            raise ValueError("the dict observation holds no image entry to encode")
        encode = _DictEncoding(encoder, {k: space.spaces[k].shape for k in keys})
        spaces = dict(space.spaces)
        for key in keys:
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, (encode.latent_dims[key],), np.float32)
        return keys, encode, gym.spaces.Dict(spaces)
    if is_image_space(space):
        encode = _Encoding(encoder, space.shape)
        return None, encode, gym.spaces.Box(-np.inf, np.inf, (encode.latent_dim,), np.float32)
    raise ValueError(f"{who} needs image observations (uint8 C x H x W) or a dict of them, got {space}")


class _LatentGoalReward:
    """RIG's reward on latents for goal envs: -||z_achieved - z_desired|| (or sparse)."""

    reward_type: str
    epsilon: float

    def compute_reward(self, achieved_goal, desired_goal, info):
        """Vectorised over leading dimensions."""
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1)
        if self.reward_type == "latent_sparse":
            return -(distance > self.epsilon).astype(np.float32)
        return -distance.astype(np.float32)


GOAL_REWARDS = ("latent_distance", "latent_sparse", "env")


def _check_reward(reward: str, choices: tuple[str, ...] = GOAL_REWARDS[:2]) -> None:
    if reward not in choices:
        raise ValueError(f"reward must be one of {list(choices)}, got {reward!r}")


class EncodedObservation(_LatentGoalReward, gym.ObservationWrapper):
    """Observations -> latents of a frozen encoder (see the module docstring).

    Args:
        env: an env with image observations (a Box of uint8 (C, H, W)) or a goal env whose dict
            entries are such images.
        encoder: the encoder (``representation.encoder``); it is put in eval mode and frozen.
        reward: for goal envs, ``"latent_distance"`` (dense, RIG), ``"latent_sparse"``, or
            ``"env"``: the env's own ``compute_reward`` on the images (needs ``keep_images``).
        epsilon: the success distance of ``"latent_sparse"``.
        goal_sampler: goal envs: ``sample_goals(n, rng, like) -> (n, latent_dim)`` latent goals (a
            representation's :meth:`~ssrl.representations.core.Representation.goal_sampler`).
        imagine_goals: goal envs: pursue one ``goal_sampler`` goal per episode instead of the
            env's (RIG's exploration; evaluation uses the env's goals).
        keep_images: goal envs: also return the images the latents came from (see the module
            docstring); imagined goals then need ``decode_goals(z) -> uint8 images``.
        decode_goals: latents -> uint8 ``(n, C, H, W)`` images (a VAE's decoder).
        observe_frames: goal envs: encode the goals only and leave the observation the env's
            image (an agent that encodes it itself; see the module docstring).
    """

    def __init__(
        self,
        env: gym.Env,
        encoder: nn.Module,
        reward: str = "latent_distance",
        epsilon: float = 1.0,
        goal_sampler=None,
        imagine_goals: bool = False,
        keep_images: bool = False,
        decode_goals=None,
        observe_frames: bool = False,
    ) -> None:
        gym.ObservationWrapper.__init__(self, env)
        if observe_frames and keep_images:
            raise ValueError(
                "observe_frames leaves the observation an image for an agent that encodes it itself; keep_images "
                "keeps images for re-encoding latent observations: use one or the other"
            )
        _check_reward(reward, GOAL_REWARDS)
        if reward == "env" and not keep_images:
            raise ValueError("reward='env' is computed on the images behind the latents: it needs keep_images=True")
        self.reward_type, self.epsilon = reward, float(epsilon)
        self.observe_frames = bool(observe_frames)
        self.keys, self._encode, self.observation_space = _encoded_space(
            env.observation_space, encoder, "EncodedObservation", ("observation",) if observe_frames else ()
        )
        if observe_frames and not (
            self.keys is not None
            and {"achieved_goal", "desired_goal"} <= set(self.keys)
            and is_image_space(self.observation_space["observation"])
        ):
            raise ValueError("observe_frames needs a goal env whose observation and goals are images")
        self.reward_keys: tuple[str, str] = ("achieved_goal", "desired_goal")  # what compute_reward compares
        self.goal_env = self.keys is not None and {"achieved_goal", "desired_goal"} <= set(self.keys)
        if reward == "env" and not self.goal_env:
            raise ValueError("reward='env' (the env's reward on images) needs a goal env whose goals are images")
        if (goal_sampler is not None or imagine_goals) and not self.goal_env:
            raise ValueError("imagined goals need a goal env whose achieved and desired goals are images")
        if imagine_goals and goal_sampler is None:
            raise ValueError("imagine_goals=True needs a goal_sampler (a representation with a prior)")
        self._goal_sampler = goal_sampler
        self.imagine_goals = bool(imagine_goals)
        self._imagined: np.ndarray | None = None
        self._imagined_image: np.ndarray | None = None
        self.image_keys: dict[str, str] = {}  # latent entry -> the entry holding its image
        if keep_images:
            self._keep_images(env.observation_space, decode_goals)

    def _keep_images(self, raw_space: gym.Space, decode_goals) -> None:
        if not self.goal_env:
            raise ValueError("keep_images needs a goal env whose observation and goals are images")
        if self.imagine_goals and decode_goals is None:
            raise ValueError("keep_images with imagined goals needs decode_goals (their images come from a decoder)")
        self._decode_goals = decode_goals
        spaces = raw_space.spaces
        # The achieved goal is usually the observation's newest frame (Push with one camera and
        # no frame stack): then its image is not stored twice.
        self._achieved_is_observation = spaces["achieved_goal"] == spaces["observation"]
        self.image_keys = {"observation": image_key("observation"), "desired_goal": image_key("desired_goal")}
        self.image_keys["achieved_goal"] = (
            image_key("observation") if self._achieved_is_observation else image_key("achieved_goal")
        )
        extra = {name: spaces[key] for key, name in self.image_keys.items()}
        self.observation_space = gym.spaces.Dict({**self.observation_space.spaces, **extra})
        if self.reward_type == "env":
            self.reward_keys = (self.image_keys["achieved_goal"], self.image_keys["desired_goal"])

    @property
    def decode_goals(self):
        """``decode(z) -> uint8 images`` of latent goals, or None (``keep_images`` with imagined goals)."""
        return getattr(self, "_decode_goals", None)

    def compute_reward(self, achieved_goal, desired_goal, info):
        """The reward of ``achieved_goal`` for ``desired_goal``, vectorised: of latents (RIG), or
        with ``reward="env"`` of the images behind them, by the env's own ``compute_reward``."""
        if self.reward_type == "env":
            return np.asarray(self.env.unwrapped.compute_reward(achieved_goal, desired_goal, info), np.float32)
        return _LatentGoalReward.compute_reward(self, achieved_goal, desired_goal, info)

    @property
    def can_imagine_goals(self) -> bool:
        """Whether :meth:`sample_goals` works (a ``goal_sampler`` was given)."""
        return self._goal_sampler is not None

    def sample_goals(self, n: int, rng: np.random.Generator, like: np.ndarray | None = None) -> np.ndarray:
        """``n`` imagined latent goals, float32 ``(n, latent_dim)``; ``like``: latents whose
        episode-specific part a conditioned sampler keeps (CC-RIG's context)."""
        if self._goal_sampler is None:
            raise AttributeError("this EncodedObservation has no goal_sampler: it cannot imagine goals")
        return np.asarray(self._goal_sampler(n, rng, like), np.float32)

    def reset(self, *, seed=None, options=None):
        raw, info = self.env.reset(seed=seed, options=options)
        return self._start_episode(raw), info

    def _start_episode(self, raw):
        """The first observation; with ``imagine_goals``, the episode's imagined goal drawn from
        the env's generator (so a seeded reset repeats it), like the first latent."""
        self._imagined = self._imagined_image = None
        obs = self.observation(raw)
        if self.imagine_goals:
            latent = obs["achieved_goal" if self.observe_frames else "observation"]  # (the frame's latent)
            self._imagined = self.sample_goals(1, self.env.unwrapped.np_random, latent[None])[0]
            obs["desired_goal"] = self._imagined.copy()
            if self.image_keys:
                self._imagined_image = np.asarray(self._decode_goals(self._imagined[None])[0], np.uint8)
                obs[self.image_keys["desired_goal"]] = self._imagined_image.copy()
        return obs

    def step(self, action):
        raw, reward, terminated, truncated, info = self.env.step(action)
        obs = self.observation(raw)
        if self.goal_env:  # one reward function, the one relabelled rows get (on reward_keys)
            achieved, desired = self.reward_keys
            reward = float(self.compute_reward(obs[achieved], obs[desired], info))
        return obs, reward, terminated, truncated, info

    def observation(self, observation):
        if self.keys is None:
            return self._encode(observation[None])[0]
        out = dict(observation)
        latents = self._encode({k: observation[k][None] for k in self.keys})
        out.update((key, z[0]) for key, z in latents.items())
        for key, name in self.image_keys.items():
            out.setdefault(name, observation[key])  # (one entry when the achieved goal is the observation)
        if (
            self.image_keys
            and self._achieved_is_observation
            and not np.array_equal(observation["achieved_goal"], observation["observation"])
        ):
            raise ValueError(
                "keep_images: this env's achieved-goal image differs from its observation although their spaces "
                "are the same; the wrapper stores one image for both"
            )
        if self._imagined is not None:
            out["desired_goal"] = self._imagined.copy()
            if self._imagined_image is not None:
                out[self.image_keys["desired_goal"]] = self._imagined_image.copy()
        return out


class EncodedVectorObservation(_LatentGoalReward, VectorObservationWrapper):
    """:class:`EncodedObservation` for a Gymnasium vector env: one encoder call per step for all
    sub-envs (and, on goal dicts, all their image entries)."""

    def __init__(
        self, env: gym.vector.VectorEnv, encoder: nn.Module, reward: str = "latent_distance", epsilon: float = 1.0
    ) -> None:
        VectorObservationWrapper.__init__(self, env)
        _check_reward(reward)
        self.reward_type, self.epsilon = reward, float(epsilon)
        self.keys, self._encode, self.single_observation_space = _encoded_space(
            env.single_observation_space, encoder, "EncodedVectorObservation"
        )
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self.goal_env = self.keys is not None and {"achieved_goal", "desired_goal"} <= set(self.keys)

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = super().step(actions)
        if self.goal_env:  # one reward function: the latent one (see the module docstring)
            rewards = self.compute_reward(obs["achieved_goal"], obs["desired_goal"], infos)
        return obs, rewards, terminated, truncated, infos

    def observations(self, observations):
        if self.keys is None:
            return self._encode(observations)
        return {**observations, **self._encode({k: observations[k] for k in self.keys})}
