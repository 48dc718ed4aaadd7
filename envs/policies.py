"""Scripted policies for data collection.

A policy is called as ``policy(obs, info) -> action`` and re-seeded with ``policy.reset(seed)``
at each episode, so a collection is reproducible. ``make_policy(name, env)`` builds one by name
(``ssrl collect --policy NAME``); envs may add policies of their own with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class Policy(Protocol):
    def reset(self, seed: int) -> None: ...

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions over the action space (the exploration policy of RIG's data)."""

    def __init__(self, env: gym.Env) -> None:
        self.space = env.action_space
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        low, high = self.space.low, self.space.high
        return self.rng.uniform(low, high).astype(self.space.dtype)


POLICIES: dict[str, Callable[[gym.Env], Policy]] = {"random": RandomPolicy}


def register(name: str, factory: Callable[[gym.Env], Policy]) -> None:
    POLICIES[name] = factory


def make_policy(name: str, env: gym.Env) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(sorted(POLICIES))}")
    return POLICIES[name](env)
