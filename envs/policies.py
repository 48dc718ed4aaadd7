"""Scripted policies for data collection.

A policy is called as ``policy(obs, info) -> action`` and re-seeded with ``policy.reset(seed)``
at each episode, so a collection is reproducible. ``make_policy(name, env)`` builds one by name
(``ssrl collect --policy NAME``); envs may add policies of their own with :func:`register`.

Each policy says which envs it serves (env classes, or a predicate on the unwrapped env): the
random ones any env with a box action space, ``push_*`` the pushing envs, ``*_grasp`` the grasping
envs (``goal_grasp`` only goal-conditioned ones). ``policies_for(env)`` lists those that fit an
env, and ``make_policy`` refuses one that does not, naming the ones that do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from .dmc import DMCEnv
from .manipulation.grasp import GraspEnv
from .manipulation.push import PushEnv


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


class StickyRandomPolicy(RandomPolicy):
    """Uniform random actions, each held for a random 1-10 agent steps.

    Independent random actions mostly cancel out, so a pendulum or a cart barely leaves its
    start (cartpole's pole stays near the bottom); holding them makes the motions large and the
    states varied, which is what representation learning and probes need from exploration data.
    """

    def __init__(self, env: gym.Env, max_hold: int = 10) -> None:
        super().__init__(env)
        self.max_hold = max_hold
        self._action, self._left = None, 0

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self._action, self._left = None, 0

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        if self._left <= 0:
            self._action = super().__call__(obs, info)
            self._left = int(self.rng.integers(1, self.max_hold + 1))
        self._left -= 1
        return self._action


def has_box_actions(env: gym.Env) -> bool:
    """Any env with a box action space (what the random policies draw from)."""
    return isinstance(env.action_space, gym.spaces.Box)


@dataclasses.dataclass(frozen=True)
class PolicyEntry:
    """A registered policy: how to build it and which envs it serves."""

    factory: Callable[[gym.Env], Policy]
    serves: Callable[[gym.Env], bool]  # called with the unwrapped env
    envs: str  # the envs it serves, in words (for error messages)


POLICIES: dict[str, PolicyEntry] = {}


def register(
    name: str,
    factory: Callable[[gym.Env], Policy],
    serves: type | tuple[type, ...] | Callable[[gym.Env], bool] = has_box_actions,
    envs: str | None = None,
) -> None:
    """Register policy ``name``: ``factory(env)`` builds it; ``serves`` is the env class(es) it
    works in, or a predicate on the unwrapped env; ``envs`` describes them (default: the class
    names, or the predicate's docstring)."""
    if isinstance(serves, (type, tuple)):
        classes = serves if isinstance(serves, tuple) else (serves,)
        envs = envs or " or ".join(c.__name__ for c in classes)
        predicate: Callable[[gym.Env], bool] = lambda env: isinstance(env, classes)  # noqa: E731
    else:
        predicate = serves
        envs = envs or (serves.__doc__ or serves.__name__).strip().splitlines()[0].rstrip(".")
    POLICIES[name] = PolicyEntry(factory, predicate, envs)


def _env_name(env: gym.Env) -> str:
    base = env.unwrapped
    spec = getattr(base, "spec", None) or getattr(env, "spec", None)
    kind = type(base).__name__
    if isinstance(base, DMCEnv):
        kind = f"{kind} {base.domain}-{base.task}"
    return f"{spec.id} ({kind})" if spec is not None else kind


def policies_for(env: gym.Env) -> list[str]:
    """The names of the policies that serve ``env`` (wrapped or not), sorted."""
    base = env.unwrapped
    return sorted(name for name, entry in POLICIES.items() if entry.serves(base))


class MixturePolicy:
    """``mix:A+B+...``: episode by episode, the policies in turn (the episode reset with seed s
    is run by policy ``s mod n``), so a data set holds, say, random and expert episodes in equal
    shares and any episode can be recorded again alone (``collect --workers``)."""

    def __init__(self, spec: str, env: gym.Env) -> None:
        names = [n for n in spec.removeprefix("mix:").split("+") if n]
        if len(names) < 2:
            raise ValueError(
                f"a mixture names two or more policies joined by '+', e.g. mix:random+push_expert; got {spec!r}"
            )
        self.policies = [make_policy(n, env) for n in names]
        self.current = self.policies[0]

    def reset(self, seed: int) -> None:
        self.current = self.policies[seed % len(self.policies)]
        self.current.reset(seed)

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        return self.current(obs, info)


# Policies named by a prefix and an argument, built by a factory named by its import path (the
# agents layer sits above this one, so it is imported only when such a policy is asked for).
PREFIXED: dict[str, str] = {
    "agent:": "ssrl.agents.policy:AgentPolicy.from_spec",
    "mix:": "ssrl.envs.policies:MixturePolicy",
}


def make_policy(name: str, env: gym.Env) -> Policy:
    """Build policy ``name`` for ``env``; a ValueError names the valid choices for an unknown
    name, and the policies that fit ``env`` for one that does not serve it. ``agent:RUN_DIR``
    (optionally ``@EPSILON``) rolls out the agent of an ``ssrl train`` run
    (:mod:`ssrl.agents.policy`); ``mix:A+B`` alternates policies episode by episode
    (:class:`MixturePolicy`)."""
    for prefix, target in PREFIXED.items():
        if name.startswith(prefix):
            import importlib

            module, _, attr = target.partition(":")
            factory: Any = importlib.import_module(module)
            for part in attr.split("."):
                factory = getattr(factory, part)
            return factory(name, env)
    if name not in POLICIES:
        raise ValueError(
            f"unknown policy {name!r}; known policies: {', '.join(sorted(POLICIES))} "
            f"(for {_env_name(env)}: {', '.join(policies_for(env)) or 'none'}), or agent:RUN_DIR[@EPSILON] "
            "for the agent of an ssrl train run, or mix:A+B for policies in turn"
        )
    entry = POLICIES[name]
    if not entry.serves(env.unwrapped):
        raise ValueError(
            f"policy {name!r} serves {entry.envs}, not {_env_name(env)}; "
            f"policies for it: {', '.join(policies_for(env)) or 'none'}"
        )
    return entry.factory(env)


register("random", RandomPolicy)
register("sticky_random", StickyRandomPolicy)


# -- manipulation (ssrl/Push-*, ssrl/Grasp*) ------------------------------------------------------


class PushExpert:
    """Pushes every object to its goal, one after the other, then moves the hand to its goal.

    For the object being pushed (direction ``u`` from object to goal): once the hand is behind
    the object on the line to the goal, it pushes along that line (aiming up to 3 cm past the
    contact point, so it slows down near the goal); otherwise it heads for the point behind the
    object. Its way there and to the hand goal goes round any object in the way by orbiting it
    (a 45-degree step at a time, always in the direction of the shorter arc, so it cannot dither).
    Reads the ground truth from the env (``scene`` and ``state_desired_goal``); ``noise`` adds
    Gaussian action noise for more varied demonstrations.
    """

    hand_radius = 0.022  # the closed fingers seen from above: 3.6 x 2 cm
    done_tolerance = 0.02  # an object this close to its goal is left alone

    def __init__(self, env: gym.Env, noise: float = 0.0) -> None:
        self.env = env.unwrapped
        self.noise = float(noise)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.current: int | None = None

    def _choose(self, centres, goals, radii) -> int | None:
        """The object to push: the current one until it is done; else the first one not at its
        goal whose goal spot no other object covers (else the first one not at its goal)."""
        todo = [i for i in range(len(centres)) if np.linalg.norm(goals[i] - centres[i]) >= self.done_tolerance]
        if self.current in todo:
            return self.current
        for i in todo:
            if all(np.linalg.norm(goals[i] - centres[j]) > radii[i] + radii[j] for j in range(len(centres)) if j != i):
                return i
        return todo[0] if todo else None

    def target(self) -> np.ndarray:
        """Where the hand should go next (xy)."""
        env = self.env
        hand = env.scene.hand_pos[:2]
        goal = env.state_desired_goal
        centres = [env.scene.object_pos(i)[:2] for i in range(env.n_objects)]
        goals = [goal[2 + 2 * i : 4 + 2 * i] for i in range(env.n_objects)]
        radii = [env.scene.specs[i].radius for i in range(env.n_objects)]
        obstacles = [(c, r + self.hand_radius) for c, r in zip(centres, radii)]
        self.current = i = self._choose(centres, goals, radii)
        if i is not None:
            p, contact = obstacles[i]
            g = goals[i]
            dist = float(np.linalg.norm(g - p))
            u = (g - p) / dist
            v = hand - p
            along = float(v @ u)
            lateral = float(np.linalg.norm(v - along * u))
            if along < -0.6 * contact and lateral < 0.3 * contact:
                # Behind and on the line: push through the object towards the goal.
                return p - u * (contact - min(dist, 0.03))
            return self._route(hand, p - u * (contact + 0.01), obstacles)
        return self._route(hand, goal[:2], obstacles)

    @staticmethod
    def _route(hand: np.ndarray, dest: np.ndarray, obstacles) -> np.ndarray:
        """``dest``, or a step round the nearest object on the straight way there."""
        blocking = [
            (float(np.linalg.norm(c - hand)), c, r) for c, r in obstacles if PushExpert._blocked(hand, dest, c, r)
        ]
        if not blocking:
            return dest
        _, c, r = min(blocking, key=lambda b: b[0])
        radius = r + 0.025
        a_hand = math.atan2(hand[1] - c[1], hand[0] - c[0])
        a_dest = math.atan2(dest[1] - c[1], dest[0] - c[0])
        turn = (a_dest - a_hand + math.pi) % (2 * math.pi) - math.pi
        a = a_hand + math.copysign(min(abs(turn), math.pi / 4), turn)
        return c + radius * np.array([math.cos(a), math.sin(a)])

    @staticmethod
    def _blocked(a: np.ndarray, b: np.ndarray, centre: np.ndarray, radius: float) -> bool:
        """Does the segment a-b pass within ``radius`` of ``centre``?"""
        ab = b - a
        t = np.clip(((centre - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        return float(np.linalg.norm(a + t * ab - centre)) < radius

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        env = self.env
        delta = (self.target() - env.scene.hand_pos[:2]) / env.action_scale
        if self.noise:
            delta = delta + self.rng.normal(0.0, self.noise, 2)
        return np.clip(delta, -1.0, 1.0).astype(np.float32)


class PushExplore:
    """Exploration for pushing data (RIG's VAE needs images where the objects moved): the hand
    heads for random waypoints, half of them through a random object, with action noise."""

    def __init__(self, env: gym.Env, noise: float = 0.3) -> None:
        self.env = env.unwrapped
        self.noise = float(noise)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.waypoint: np.ndarray | None = None
        self.left = 0

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        env, rng = self.env, self.rng
        if self.waypoint is None or self.left <= 0:
            if rng.uniform() < 0.5:
                p = env.scene.object_pos(int(rng.integers(env.n_objects)))[:2]
                self.waypoint = p + rng.uniform(-0.06, 0.06, 2)
            else:
                self.waypoint = rng.uniform(env.hand_low, env.hand_high)
            self.left = int(rng.integers(5, 16))
        self.left -= 1
        delta = (self.waypoint - env.scene.hand_pos[:2]) / env.action_scale + rng.normal(0.0, self.noise, 2)
        return np.clip(delta, -1.0, 1.0).astype(np.float32)


class RandomGrasp(RandomPolicy):
    """Grasps uniform over the bin floor with a uniform yaw (grasp2vec's random grasping)."""


class CentredGrasp:
    """Grasps at the centre of a random object in the bin, at a random yaw (``target="goal"``:
    always the goal object of ``ssrl/GraspGoal-v0``, an oracle for goal-conditioned grasping)."""

    def __init__(self, env: gym.Env, target: str = "random") -> None:
        self.env = env.unwrapped
        self.target = target
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        env = self.env
        if self.target == "goal":
            i = env.goal_id
        else:
            i = int(self.rng.integers(env.n_objects))
        x, y, _ = env.object_positions()[i]
        return env.grasp_to_action(x, y, self.rng.uniform(-np.pi / 2, np.pi / 2))


def is_goal_grasp(env: gym.Env) -> bool:
    """GraspGoalEnv (ssrl/GraspGoal-v0)."""
    return isinstance(env, GraspEnv) and env.goal_conditioned


register("push_expert", PushExpert, PushEnv)
register("push_explore", PushExplore, PushEnv)
register("random_grasp", RandomGrasp, GraspEnv)
register("centred_grasp", CentredGrasp, GraspEnv)
register("goal_grasp", lambda env: CentredGrasp(env, target="goal"), is_goal_grasp)
