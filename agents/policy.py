"""A trained agent as a data-collection policy: ``ssrl collect --policy agent:RUN_DIR[@EPSILON]``.

Representation quality depends on the data it is pretrained on (ATC pretrained on expert
demonstrations; random actions barely move cartpole's pole or Push's puck). This policy rolls out
the agent of an ``ssrl train`` run folder: its deterministic action (the mean of SAC's policy,
TD3's actor), and with probability ``EPSILON`` a uniform random action instead, drawn from a
generator re-seeded at every episode, so a collection stays reproducible and its episode ``i``
depends only on the seed, whichever process records it.

The agent must have been trained on the state observations of the env being collected (collect
runs the env on states and renders the cameras with a separate observer): a pixel agent, or one
trained on another env or with other observations, is refused with the reason.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import gymnasium as gym
import numpy as np

from ssrl.utils import file_fingerprint

PREFIX = "agent:"


def parse_spec(spec: str) -> tuple[pathlib.Path, float]:
    """``"agent:RUN_DIR"`` or ``"agent:RUN_DIR@EPSILON"`` -> (run folder, epsilon)."""
    if not spec.startswith(PREFIX):
        raise ValueError(f"an agent policy is written {PREFIX}RUN_DIR[@EPSILON], got {spec!r}")
    body = spec[len(PREFIX) :]
    path, sep, eps = body.rpartition("@")
    try:
        epsilon = float(eps) if sep else 0.0
    except ValueError:  # an '@' inside the folder's name: no epsilon given
        sep = ""
    if not sep:
        path, epsilon = body, 0.0
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"{spec!r}: epsilon must be in [0, 1], got {epsilon}")
    if not path:
        raise ValueError(f"{spec!r}: name the run folder of an ssrl train run after {PREFIX!r}")
    return pathlib.Path(path), epsilon


class AgentPolicy:
    """The agent of the ``ssrl train`` run in ``run_dir`` acting in ``env`` (see the module
    docstring); ``epsilon``: probability of a uniform random action at each step."""

    def __init__(self, run_dir: str | pathlib.Path, env: gym.Env, epsilon: float = 0.0) -> None:
        from . import ALGOS

        run_dir = pathlib.Path(run_dir)
        run_json, checkpoint = run_dir / "run.json", run_dir / "checkpoint" / "agent.pt"
        if not run_json.is_file() or not checkpoint.is_file():
            raise ValueError(f"{run_dir} is not an ssrl train run with a checkpoint (run.json, checkpoint/agent.pt)")
        run = json.loads(run_json.read_text())
        env_id = getattr(env.unwrapped.spec, "id", None) or getattr(env.spec, "id", None)
        if run.get("env_id") != env_id:
            raise ValueError(f"{run_dir} trained an agent on {run.get('env_id')}, not on {env_id}")
        if run.get("encoder") or run.get("method") or run.get("demo"):
            raise ValueError(f"{run_dir} trained on a representation's latents; an agent policy needs a state agent")
        from ssrl.envs import make
        from ssrl.envs.pixels import state_mode_kwargs

        trained_env = make(run["env_id"], **state_mode_kwargs(run.get("env_kwargs") or {}))
        repeats = (getattr(trained_env.unwrapped, "action_repeat", 1), getattr(env.unwrapped, "action_repeat", 1))
        trained_env.close()
        if repeats[0] != repeats[1]:
            raise ValueError(
                f"{run_dir} trained its agent at action repeat {repeats[0]}; this env acts at {repeats[1]}"
            )
        self.agent = ALGOS[run["algo"]].load(checkpoint, device="cpu")
        _check_same_observations(self.agent.observation_space, env.observation_space, run_dir)
        self.space = env.action_space
        self.epsilon = float(epsilon)
        self.rng = np.random.default_rng(0)

    @classmethod
    def from_spec(cls, spec: str, env: gym.Env) -> AgentPolicy:
        run_dir, epsilon = parse_spec(spec)
        return cls(run_dir, env, epsilon)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            return self.rng.uniform(self.space.low, self.space.high).astype(self.space.dtype)
        return np.asarray(self.agent.act(obs, deterministic=True), self.space.dtype)


def agent_fingerprints(policy: str) -> dict[str, str]:
    """For each ``agent:RUN_DIR`` in ``policy`` (alone or in a ``mix:``), the first 16 hex digits
    of its checkpoint's SHA-256 (``"missing"`` without one): what a data set collected by the
    policy depends on beyond its name, so a retrained or continued agent gets new data instead of
    the old agent's (the bench's data keys hash this)."""
    names = policy.removeprefix("mix:").split("+") if policy.startswith("mix:") else [policy]
    out = {}
    for name in names:
        if name.startswith(PREFIX):
            checkpoint = parse_spec(name)[0] / "checkpoint" / "agent.pt"
            out[name] = file_fingerprint(checkpoint) if checkpoint.is_file() else "missing"
    return out


def _check_same_observations(trained: gym.Space, given: gym.Space, run_dir: pathlib.Path) -> None:
    def shapes(space: gym.Space) -> Any:
        if isinstance(space, gym.spaces.Dict):
            return {k: shapes(s) for k, s in space.spaces.items()}
        return tuple(space.shape)

    if shapes(trained) != shapes(given):
        pixels = not isinstance(trained, gym.spaces.Dict) and len(trained.shape) == 3
        hint = " (a pixel agent: collect runs the env on states)" if pixels else ""
        raise ValueError(
            f"{run_dir} trained an agent on observations {shapes(trained)}; "
            f"the env gives {shapes(given)} on states{hint}"
        )
