"""DeepMind Control Suite tasks as Gymnasium envs, from pixels.

``DMCEnv("cheetah", "run")`` steps dm_control's physics directly and renders through the suite's
one renderer (:mod:`ssrl.envs.render`), so a pixel step costs a physics step plus a fast render
instead of dm_control's default render (about 25x slower on a CPU).

Conventions (those of the PlaNet benchmark and of SAC-AE, CURL, DrQ and DBC):

* observation: uint8, channels-first, the last ``frame_stack`` RGB frames (default 3 at 84x84,
  shape ``(9, 84, 84)``); with several cameras, a dict of such stacks keyed by camera name;
  ``from_pixels=False`` gives dm_control's state observation flattened to float32 instead;
* action repeat: PlaNet's per-task value (cartpole 8, finger 2, walker 2, others 4), for state
  observations too (pass ``action_repeat=1`` for the published SAC-State setting, which uses
  none); rewards are summed over the repeats;
* actions in [-1, 1], rescaled to the task's bounds;
* dm_control's 1000-step time limit ends an episode with ``truncated=True``; ``terminated`` is
  only ever True where the task itself ends with discount 0;
* ``info["state"]``: the physical state (qpos, qvel, act) as float32, on reset and every step;
  it never depends on the camera or the background.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from .distractors import DistractorSpec
from .pixels import PixelEnv, check_action, plane_geoms
from .render import CameraSpec, Quality

# PlaNet-benchmark action repeats (CURL Table 3, DrQ appendix Table 2); everything else uses 4.
PLANET_ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2}
DEFAULT_ACTION_REPEAT = 4
PLANET_TASKS = (
    ("cartpole", "swingup"),
    ("reacher", "easy"),
    ("cheetah", "run"),
    ("finger", "spin"),
    ("walker", "walk"),
    ("ball_in_cup", "catch"),
)
# DrQ and DrQ-v2 view the quadruped from its third camera; every other domain from camera 0.
DEFAULT_CAMERA = {"quadruped": 2}


def suite_tasks() -> list[tuple[str, str]]:
    """Every (domain, task) of dm_control's suite."""
    from dm_control import suite

    return list(suite.ALL_TASKS)


def default_action_repeat(domain: str) -> int:
    """PlaNet's action repeat for a domain."""
    return PLANET_ACTION_REPEAT.get(domain, DEFAULT_ACTION_REPEAT)


@contextlib.contextmanager
def _quiet_absl():
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def _check_task(domain: str, task: str) -> None:
    tasks = suite_tasks()
    if (domain, task) in tasks:
        return
    domains = sorted({d for d, _ in tasks})
    if domain not in domains:
        raise ValueError(f"unknown DeepMind Control domain {domain!r}; known domains: {', '.join(domains)}")
    raise ValueError(
        f"unknown task {task!r} for domain {domain!r}; its tasks are: " + ", ".join(t for d, t in tasks if d == domain)
    )


class DMCEnv(PixelEnv):
    """A dm_control suite task with Gymnasium's API, from pixels by default.

    Args:
        domain, task: a suite task, e.g. ``"cartpole", "swingup"``.
        from_pixels: pixels (default) or dm_control's state observation flattened to float32.
        size: image size, ``84`` or ``(height, width)``.
        camera: one camera (id, name or :class:`~ssrl.envs.render.FreeCamera`).
        cameras: several cameras rendered at the same instant; the observation becomes a dict
            keyed by camera name. Give either ``camera`` or ``cameras``.
        frame_stack: frames per observation (default 3 for pixels, 1 for states).
        action_repeat: physics control steps per agent step (default: see module docstring).
        distractor: ``None``, ``"color"``, ``"noise"``, ``"video"``, ``"folder:PATH"`` or a
            :class:`~ssrl.envs.distractors.DistractorSpec`.
        quality: ``"fast"`` (CPU default) or ``"faithful"`` (dm_control's own images).
        render_mode: ``"rgb_array"`` to allow ``env.render()`` (the newest frame of the first
            camera, at ``render_size`` if given, else the observation's size).
        task_kwargs, environment_kwargs: passed to ``dm_control.suite.load``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        from_pixels: bool = True,
        size: int | Sequence[int] = 84,
        camera: CameraSpec | None = None,
        cameras: Sequence[CameraSpec] | None = None,
        frame_stack: int | None = None,
        action_repeat: int | None = None,
        distractor: str | dict | DistractorSpec | None = None,
        quality: Quality = "fast",
        render_mode: str | None = None,
        render_size: int | Sequence[int] | None = None,
        task_kwargs: dict | None = None,
        environment_kwargs: dict | None = None,
    ) -> None:
        _check_task(domain, task)
        if action_repeat is None:
            action_repeat = default_action_repeat(domain)
        if isinstance(action_repeat, bool) or not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat must be a positive integer, got {action_repeat!r}")
        if frame_stack is None:
            frame_stack = 3 if from_pixels else 1

        from dm_control import suite

        self.domain, self.task = domain, task
        self.action_repeat = int(action_repeat)
        with _quiet_absl():  # dm_control's models trip MuJoCo deprecation warnings on load
            self._env = suite.load(
                domain, task, task_kwargs=dict(task_kwargs or {}), environment_kwargs=environment_kwargs
            )
        self._physics = self._env.physics
        self._model = self._physics.model.ptr
        self._data = self._physics.data.ptr

        spec = self._env.action_spec()
        self._action_low = spec.minimum.astype(np.float64)
        self._action_high = spec.maximum.astype(np.float64)
        # Every PlaNet task's actions are already in [-1, 1]: pass them on untouched (the affine map
        # would round a tiny action, e.g. (1e-17 + 1) - 1 == 0 in float64).
        self._unit_actions = bool(np.all(self._action_low == -1.0) and np.all(self._action_high == 1.0))
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)

        self._setup_pixels(
            from_pixels=from_pixels,
            size=size,
            camera=camera,
            cameras=cameras,
            frame_stack=frame_stack,
            quality=quality,
            distractor=distractor,
            render_mode=render_mode,
            render_size=render_size,
        )
        if self._observer is not None:
            self.observation_space = self._observer.observation_space()
        else:
            dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
            self._state_obs = np.zeros((self.frame_stack, dim), np.float32)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.frame_stack * dim,), np.float32)
        self.state_space = gym.spaces.Box(-np.inf, np.inf, self._physics.get_state().shape, np.float32)
        self._max_env_steps = math.inf
        step_limit = self._env._step_limit  # control steps per episode; dm_control keeps it private
        if np.isfinite(step_limit):
            self._max_env_steps = int(round(step_limit))
        self.metadata = dict(
            self.metadata, render_fps=int(round(1.0 / (self._env.control_timestep() * self.action_repeat)))
        )

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # dm_control draws initial states from task._random; reseed it from our generator so
        # that reset(seed=s) fixes the whole episode (shimmy does the same).
        self._env.task._random = np.random.RandomState(int(self.np_random.integers(2**31)))
        time_step = self._env.reset()
        return self._observation(time_step, reset=True), self._info()

    def step(self, action):
        action = self._check_action(action)
        if self._unit_actions:
            scaled = action
        else:
            scaled = self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)
        reward = 0.0
        terminated = truncated = False
        for _ in range(self.action_repeat):
            time_step = self._env.step(scaled)
            reward += time_step.reward or 0.0
            if time_step.last():
                # discount 0 marks a true terminal state; a time limit keeps discount 1.
                terminated = time_step.discount == 0.0
                truncated = not terminated
                break
        return self._observation(time_step, reset=False), float(reward), terminated, truncated, self._info()

    # -- helpers -------------------------------------------------------------------------------

    def default_cameras(self) -> list[CameraSpec]:
        return [DEFAULT_CAMERA.get(self.domain, 0)]

    def replaced_surfaces(self, spec: DistractorSpec) -> list[int]:
        return plane_geoms(self._model) if spec.floor_replaced(self.domain) else []

    @property
    def model(self):
        """MuJoCo's ``MjModel`` of the task."""
        return self._model

    @property
    def data(self):
        """MuJoCo's ``MjData`` of the task."""
        return self._data

    @property
    def physics(self):
        """The dm_control ``Physics`` (for state get/set in tests and data collection)."""
        return self._physics

    @property
    def max_episode_steps(self) -> int | float:
        """Agent steps per episode (dm_control's time limit divided by the action repeat)."""
        return math.ceil(self._max_env_steps / self.action_repeat)

    def state(self) -> np.ndarray:
        return self._physics.get_state().astype(np.float32)

    def set_state(self, state: np.ndarray) -> None:
        """Put the physics in a recorded ``state()`` (positions, cameras and contacts recomputed),
        e.g. to render a data set's frames again or their ground-truth masks."""
        state = np.asarray(state, np.float64).ravel()
        expected = self._physics.get_state().size
        if state.size != expected:
            raise ValueError(f"{self.domain}-{self.task} states have {expected} values, got {state.size}")
        self._physics.set_state(state)
        self._physics.forward()

    def _info(self) -> dict[str, Any]:
        return {"state": self.state()}

    def _check_action(self, action) -> np.ndarray:
        return check_action(action, self.action_space, f"{self.domain}-{self.task}")

    def _observation(self, time_step, reset: bool):
        if self._observer is not None:
            if reset:
                return self._observer.reset(self._data, self.np_random)
            return self._observer.step(self._data)
        flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in time_step.observation.values()])
        if reset:
            self._state_obs[:] = flat
        else:
            self._state_obs[:-1] = self._state_obs[1:]
            self._state_obs[-1] = flat
        return self._state_obs.ravel().copy()
