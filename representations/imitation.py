"""Imitation from a demonstration video with an embedding's reward (TCN, Sermanet et al. 2018).

The agent sees the task from its own camera; the demonstration is a video of the task done
once, from another camera (TCN's claim is that its embedding does not care which). At agent
step t the reward compares the embedding ``w`` of what the agent sees with the embedding ``v_t``
of the time-aligned demonstration frame (the last one once the demo has ended), equation (2)
of the paper::

    r_t = -alpha * ||w - v_t||^2 - beta * sqrt(gamma + ||w - v_t||^2)

(a squared Euclidean term for precision near the demo, a Huber-style term for a gradient far
from it). With ``reward: pixels`` in the demo options (the pixel-distance baseline), the same
formula compares the agent's raw frame with the demo's, ``||w - v||^2`` being the mean squared
pixel difference in [0, 1] units (a mean, not a sum, so the terms stay on the embedding's scale;
:class:`PixelImitationReward`); the agent still observes the embedding. Defaults: alpha = beta
= 1, gamma = 1e-3 (the paper does not give its values; these give both terms a say at distances
around 1). The env's own reward is kept in
``info["task_reward"]``: what the agent reached, judged by the task itself.

:class:`ImitationReward` wraps an env whose observations are already the embedding (the frozen
regime's :class:`~ssrl.representations.wrappers.EncodedObservation`); :func:`demo_embeddings`
embeds one episode of a collected data set at the camera and frame stack the encoder eats.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def tcn_imitation_reward(w, v, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1e-3) -> np.ndarray:
    """``-alpha ||w - v||^2 - beta sqrt(gamma + ||w - v||^2)`` over the last axis."""
    d2 = np.sum((np.asarray(w, np.float64) - np.asarray(v, np.float64)) ** 2, axis=-1)
    return reward_of_squared_distance(d2, alpha, beta, gamma)


def reward_of_squared_distance(d2, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1e-3):
    """The formula from ``d2 = ||w - v||^2``: ``-alpha d2 - beta sqrt(gamma + d2)``."""
    return -alpha * d2 - beta * np.sqrt(gamma + d2)


def demo_embeddings(encode, data, episode: int = 0, camera: str | None = None, frame_stack: int = 1) -> np.ndarray:
    """``encode`` (images -> embeddings, e.g. ``rep.embed``, or the observation wrapper's own
    encoding so that demo and agent go through the same path) of episode ``episode`` of ``data``
    (a :class:`~ssrl.representations.data.RolloutData`) seen from ``camera``: ``(T + 1, D)``,
    each frame stacked with the ``frame_stack - 1`` before it as the env stacks them, the reset
    frame first."""
    if not 0 <= episode < data.num_episodes:
        raise ValueError(f"the demonstration data has episodes 0..{data.num_episodes - 1}, not {episode}")
    start, length = int(data.ep_start[episode]), int(data.ep_len[episode])
    idx = np.arange(start, start + length + 1)
    return np.asarray(encode(data.stack(idx, camera, frame_stack)), np.float32)


def imitate(env: gym.Env, demo: dict) -> ImitationReward:
    """``env`` (encoded by the frozen regime's wrapper) rewarded for imitating ``demo``: a dict
    with ``data`` (an ``ssrl collect`` folder), ``episode`` (default 0), ``camera`` (default the
    data's first) and optionally ``alpha``, ``beta``, ``gamma``. The demo goes through the
    wrapper's own encoding, stacked as the env stacks frames."""
    from .data import RolloutData

    unknown = set(demo) - {"data", "episode", "camera", "alpha", "beta", "gamma", "reward"}
    if unknown or "data" not in demo:
        raise ValueError(f"a demo is data (required), episode, camera, alpha, beta, gamma, reward; got {sorted(demo)}")
    weights = {k: float(demo[k]) for k in ("alpha", "beta", "gamma") if k in demo}
    if demo_reward(demo) == "pixels":
        return _imitate_pixels(env, demo, weights)
    encoded = env
    while not hasattr(encoded, "_encode"):
        if not isinstance(encoded, gym.Wrapper):
            raise ValueError("imitation needs an env encoded by a frozen representation (--encoder CHECKPOINT)")
        encoded = encoded.env
    data = RolloutData(demo["data"])
    frame_stack = encoded.env.observation_space.shape[0] // data.frame_shape[0]
    embeddings = demo_embeddings(encoded._encode, data, int(demo.get("episode", 0)), demo.get("camera"), frame_stack)
    return ImitationReward(env, embeddings, **weights)


DEMO_REWARDS = ("embedding", "pixels")


def demo_reward(demo: dict) -> str:
    """What a demo's reward compares: the embeddings (default) or the raw frames."""
    reward = demo.get("reward", "embedding")
    if reward not in DEMO_REWARDS:
        raise ValueError(f"a demo's reward is one of {list(DEMO_REWARDS)}, got {reward!r}")
    return reward


def _imitate_pixels(env: gym.Env, demo: dict, weights: dict) -> PixelImitationReward:
    from ssrl.utils import is_image_space

    from .data import RolloutData

    if not is_image_space(env.observation_space):
        raise ValueError(
            f"a pixel-distance demo reward compares image observations (uint8 C x H x W); the env gives "
            f"{env.observation_space}"
        )
    data = RolloutData(demo["data"])
    episode = int(demo.get("episode", 0))
    if not 0 <= episode < data.num_episodes:
        raise ValueError(f"the demonstration data has episodes 0..{data.num_episodes - 1}, not {episode}")
    start, length = int(data.ep_start[episode]), int(data.ep_len[episode])
    frame_stack = env.observation_space.shape[0] // data.frame_shape[0]
    frames = data.stack(np.arange(start, start + length + 1), demo.get("camera"), frame_stack)
    return PixelImitationReward(env, frames, **weights)


class ImitationReward(gym.Wrapper):
    """The reward of imitating ``demo`` (embeddings ``(T + 1, D)``, the reset frame's first) in an
    env whose observations are embeddings of the same space (see the module docstring)."""

    def __init__(self, env: gym.Env, demo: np.ndarray, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1e-3):
        super().__init__(env)
        if min(alpha, beta) < 0 or gamma <= 0:
            raise ValueError(f"need alpha, beta >= 0 and gamma > 0, got {alpha}, {beta}, {gamma}")
        self.demo = self._checked(np.asarray(demo), env.observation_space)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self._t = 0

    @staticmethod
    def _checked(demo: np.ndarray, space: gym.Space) -> np.ndarray:
        demo = demo.astype(np.float32)
        if not isinstance(space, gym.spaces.Box) or space.shape != demo.shape[1:] or demo.ndim != 2:
            raise ValueError(
                f"the demo's embeddings {demo.shape} do not match the env's observations {space}: "
                "wrap an env encoded by the same representation (frozen regime)"
            )
        return demo

    def squared_distance(self, obs: np.ndarray, target: np.ndarray) -> float:
        """``||w - v||^2`` of the formula: the squared Euclidean distance of the embeddings."""
        return float(np.sum((np.asarray(obs, np.float64) - target) ** 2))

    def reset(self, **kwargs):
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, task_reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        d2 = self.squared_distance(obs, self.demo[min(self._t, len(self.demo) - 1)])
        info = dict(info, task_reward=float(task_reward))
        reward = reward_of_squared_distance(d2, self.alpha, self.beta, self.gamma)
        return obs, float(reward), terminated, truncated, info


class PixelImitationReward(ImitationReward):
    """The demo reward on raw frames (``demo``: the demo's frame stacks ``(T + 1, C, H, W)``):
    the same formula with ``||w - v||^2`` the mean squared difference of the agent's and the
    time-aligned demo frame's pixels, in [0, 1] units (the pixel-distance baseline; see the
    module docstring)."""

    @staticmethod
    def _checked(demo: np.ndarray, space: gym.Space) -> np.ndarray:
        if demo.shape[1:] != space.shape:
            raise ValueError(f"the demo's frames {demo.shape[1:]} differ from the env's {space.shape}")
        return demo

    def squared_distance(self, obs: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean(((np.asarray(obs, np.float64) - target) / 255.0) ** 2))
