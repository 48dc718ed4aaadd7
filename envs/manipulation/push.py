"""Pushing from pixels, RIG style: ``ssrl/Push-v0`` and its variants.

The task half of the pushing envs (the scene is :mod:`ssrl.envs.manipulation.scene`), modelled on
multiworld's ``SawyerPushAndReachXYEasyEnv`` used by RIG and Skew-Fit:

* action: 2-D hand displacement in the table plane, ``[-1, 1]`` scaled by ``action_scale``
  (2 cm) from where the hand is, clipped to the hand's workspace; the hand stays at a fixed height
  with its fingers closed; the mocap glides there over ``n_substeps`` physics steps (25 x 2 ms,
  so the hand moves at up to 0.4 m/s);
* Gymnasium goal-env observation: a dict with ``observation``, ``achieved_goal`` and
  ``desired_goal``. State goals are ``[hand_xy, object_xy...]`` (multiworld's 4-D goal for one
  puck). In pixel mode (``from_pixels=True``, the default) ``observation`` is the camera's frame
  stack and both goals are images (``achieved_goal`` is the newest frame); the goal image is
  rendered by putting hand and objects in the goal configuration, rendering, and restoring the
  physics state exactly (multiworld's ``ImageEnv``);
* ``compute_reward(achieved, desired, info)`` is vectorised over leading axes and is what
  ``step`` returns; state rewards: ``dense`` = -||achieved - desired|| (multiworld),
  ``object_dense`` = -distance of the objects only, ``sparse`` = -1 unless every object is within
  ``success_threshold`` of its goal (Fetch); image rewards: ``image_distance`` = -RMS difference of
  the two images in [0, 1] units, ``image_sparse`` = -1 unless that RMS is under
  ``image_threshold``. State goals stay in ``info`` for metrics;
* ``info``: ``hand_distance``, ``puck_distance`` (mean over objects), ``object_distances``,
  ``is_success`` (every object within ``success_threshold``), ``state`` (float32 ground truth),
  ``state_achieved_goal``, ``state_desired_goal``;
* episodes end by truncation after ``max_episode_steps`` (50); ``terminated`` is always False.

Variants: ``ssrl/Push-v0`` (one red cylindrical puck), ``ssrl/PushRandomObject-v0`` (the pushed
object's shape, size and colour change every episode), ``ssrl/PushMultiObject-v0`` (three random
objects, each with its own goal: the CC-VAE setting, where goals must show the episode's objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..distractors import DistractorSpec
from ..pixels import check_count
from ..render import CameraSpec, Quality
from .base import ManipulationEnv
from .scene import (
    FINGER_CLOSED_CTRL,
    PUCK,
    SHAPES,
    CameraDef,
    ObjectSpec,
    Scene,
    check_shapes,
    quat_yaw,
    random_object,
)

PUSH_CAMERA = CameraDef("push", pos=(0.0, -0.36, 0.40), target=(0.0, 0.02, 0.0), fovy=45)
STATE_REWARDS = ("dense", "object_dense", "sparse")
IMAGE_REWARDS = ("image_distance", "image_sparse")
# Colours of the objects when they are not randomised (the first is the classic red puck).
FIXED_COLOURS = ((0.85, 0.15, 0.12, 1), (0.15, 0.45, 0.85, 1), (0.95, 0.80, 0.10, 1), (0.20, 0.70, 0.30, 1))


class PushEnv(ManipulationEnv):
    """Push objects to goal positions on the table (see the module docstring).

    Args:
        n_objects: objects on the table (1-4), each with its own goal.
        randomize_objects: draw each object's shape, size and colour anew every episode (else
            red/blue/yellow/green cylindrical pucks).
        object_shapes: shapes drawn from when randomising.
        reward_type: ``dense``/``object_dense``/``sparse`` (state mode, default ``dense``) or
            ``image_distance``/``image_sparse`` (pixel mode, default ``image_distance``).
        max_episode_steps: truncation (default 50).
        fixed_start: objects always start at the same place (else uniformly in their range).
        from_pixels, size, camera, cameras, frame_stack, quality, distractor, render_mode,
        render_size: as :class:`~ssrl.envs.dmc.DMCEnv` (default camera ``push``, frame stack 1;
        with several cameras the images are concatenated on the channel axis, in order; a
        distractor replaces the table top and the floor unless ``replace_floor=False``).
    """

    default_camera = "push"
    # Stored per step by `ssrl collect` (the goal is fixed per episode; the distances are metrics).
    record_keys = ("state_desired_goal", "hand_distance", "puck_distance", "is_success")
    hand_z = 0.005  # fingertips 5 mm above the table
    pad_friction = (0.3, 0.005, 0.0001)
    hand_low = np.array([-0.20, -0.20])
    hand_high = np.array([0.20, 0.20])
    hand_start = np.array([0.0, 0.17])  # the far side: the arm comes from there
    hand_goal_low = np.array([-0.15, -0.15])
    hand_goal_high = np.array([0.15, 0.15])
    object_low = np.array([-0.12, -0.12])  # start and goal positions of the objects
    object_high = np.array([0.12, 0.12])

    def __init__(
        self,
        *,
        n_objects: int = 1,
        randomize_objects: bool = False,
        object_shapes: Sequence[str] = SHAPES,
        reward_type: str | None = None,
        success_threshold: float = 0.05,
        image_threshold: float = 0.02,
        max_episode_steps: int = 50,
        action_scale: float = 0.02,
        n_substeps: int = 25,
        fixed_start: bool = False,
        from_pixels: bool = True,
        size: int | Sequence[int] = 84,
        camera: CameraSpec | None = None,
        cameras: Sequence[CameraSpec] | None = None,
        frame_stack: int = 1,
        quality: Quality = "fast",
        distractor: str | dict | DistractorSpec | None = None,
        render_mode: str | None = None,
        render_size: int | Sequence[int] | None = None,
    ) -> None:
        self.n_objects = check_count("n_objects", n_objects, 1, len(FIXED_COLOURS))
        self.max_episode_steps = check_count("max_episode_steps", max_episode_steps)
        self.n_substeps = check_count("n_substeps", n_substeps)
        self.randomize_objects = bool(randomize_objects)
        self.object_shapes = check_shapes(object_shapes)
        rewards = IMAGE_REWARDS if from_pixels else STATE_REWARDS
        reward_type = reward_type or rewards[0]
        if reward_type not in rewards:
            mode = "pixel" if from_pixels else "state"
            raise ValueError(
                f"reward_type {reward_type!r} is not one of {rewards} (those of {mode} mode; state distances "
                "are in info['hand_distance'] and info['puck_distance'] in every mode)"
            )
        self.reward_type = reward_type
        self.success_threshold = float(success_threshold)
        self.image_threshold = float(image_threshold)
        self.action_scale = float(action_scale)
        self.fixed_start = bool(fixed_start)
        scene = Scene(self.n_objects, None, [PUSH_CAMERA])
        # The closed fingers are a pusher here: slippery pads, so they shove objects instead of
        # dragging them round or up (the grasping task keeps grippy ones).
        scene.model.geom_friction[scene.pad_geoms] = self.pad_friction
        self.scene = scene
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
        self.metadata = dict(self.metadata, render_fps=int(round(1 / (self.n_substeps * scene.dt))))

        goal_dim = 2 + 2 * self.n_objects
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        if self.from_pixels:
            n_views = len(self.camera_labels)
            h, w = self.size
            frames = gym.spaces.Box(0, 255, (3 * n_views, h, w), np.uint8)
            self.observation_space = gym.spaces.Dict(
                observation=gym.spaces.Box(0, 255, (3 * self.frame_stack * n_views, h, w), np.uint8),
                achieved_goal=frames,
                desired_goal=frames,
            )
        else:
            goal = gym.spaces.Box(-np.inf, np.inf, (goal_dim,), np.float32)
            self.observation_space = gym.spaces.Dict(
                observation=gym.spaces.Box(-np.inf, np.inf, (2 * goal_dim,), np.float32),
                achieved_goal=goal,
                desired_goal=goal,
            )
        self.state_space = gym.spaces.Box(-np.inf, np.inf, scene.ground_truth().shape, np.float32)
        self._goal = np.zeros(goal_dim)
        self._goal_image: np.ndarray | None = None
        self._specs_set: list[ObjectSpec] | None = None
        self._steps = 0

    # -- goals ----------------------------------------------------------------------------------

    @property
    def state_desired_goal(self) -> np.ndarray:
        """The goal as ``[hand_xy, object_xy...]``."""
        return self._goal.copy()

    def state_achieved_goal(self) -> np.ndarray:
        return np.concatenate([self.scene.hand_pos[:2], self.scene.object_pos()[:, :2].ravel()])

    @property
    def object_specs(self) -> list[ObjectSpec]:
        return list(self.scene.specs)

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """The reward of reaching ``achieved_goal`` when ``desired_goal`` was asked, vectorised
        over leading axes (for hindsight relabelling); ``info`` is not used."""
        a = np.asarray(achieved_goal, np.float64)
        d = np.asarray(desired_goal, np.float64)
        if self.reward_type in IMAGE_REWARDS:
            rms = np.sqrt(np.mean(((a - d) / 255.0) ** 2, axis=(-3, -2, -1)))
            if self.reward_type == "image_distance":
                return -rms
            return -(rms >= self.image_threshold).astype(np.float64)
        if self.reward_type == "dense":
            return -np.linalg.norm(a - d, axis=-1)
        if self.reward_type == "object_dense":
            return -np.linalg.norm(a[..., 2:] - d[..., 2:], axis=-1)
        per_object = np.linalg.norm((a[..., 2:] - d[..., 2:]).reshape(*a.shape[:-1], -1, 2), axis=-1)
        return -np.any(per_object >= self.success_threshold, axis=-1).astype(np.float64)

    def set_to_goal(self, goal: Sequence[float]) -> None:
        """Put hand and objects in the goal configuration ``[hand_xy, object_xy...]`` (objects
        keep their yaw), at rest. Used to render goal images; the caller restores the state."""
        goal = np.asarray(goal, float)
        yaw = [self._object_yaw(i) for i in range(self.n_objects)]
        self.scene.teleport_hand((goal[0], goal[1], self.hand_z), 0.0, 0.0)
        for i in range(self.n_objects):
            self.scene.place_object(i, goal[2 + 2 * i : 4 + 2 * i], yaw[i])
        self.scene.forward()

    def render_goal_image(self, goal: Sequence[float] | None = None) -> np.ndarray:
        """The image(s) of the scene in the goal configuration, ``(3 * n_cameras, H, W)``;
        the physics state is restored exactly afterwards."""
        if self._observer is None:
            raise ValueError("goal images need pixel mode (from_pixels=True)")
        saved = self.scene.get_state()
        try:
            self.set_to_goal(self._goal if goal is None else goal)
            frames = self._render_aside(self._observer)
        finally:
            self.scene.set_state(saved)
        return frames.reshape(-1, *frames.shape[2:])

    # -- Gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"goal"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; Push takes 'goal' ([hand_xy, object_xy...])")
        rng = self.np_random
        scene = self.scene
        scene.reset()
        if self.randomize_objects:
            specs = [self._pushable(random_object(rng, self.object_shapes, scale=1.3)) for _ in range(self.n_objects)]
        else:
            specs = [ObjectSpec(PUCK.shape, PUCK.size, FIXED_COLOURS[i]) for i in range(self.n_objects)]
        if specs != self._specs_set:
            for i, spec in enumerate(specs):
                scene.set_object(i, spec)
            scene.commit_objects()
            self._specs_set = specs
        radii = np.array([s.radius for s in specs])
        hand_clearance = 0.04  # keep objects this far from the hand's start (beyond their radius)
        if self.fixed_start:
            starts = self._fixed_starts()
        else:
            starts = self._sample_positions(rng, radii, avoid=[(self.hand_start, hand_clearance)])
        yaws = rng.uniform(-np.pi, np.pi, self.n_objects)
        scene.teleport_hand((*self.hand_start, self.hand_z), 0.0, 0.0)
        scene.set_fingers(FINGER_CLOSED_CTRL)
        for i in range(self.n_objects):
            scene.place_object(i, starts[i], yaws[i])
        if "goal" in options:
            goal = np.asarray(options["goal"], float)
            if goal.shape != self._goal.shape:
                raise ValueError(
                    f"options['goal'] must have shape {self._goal.shape} ([hand_xy, object_xy...]), got {goal.shape}"
                )
        else:
            hand_goal = rng.uniform(self.hand_goal_low, self.hand_goal_high)
            # Goals at least two thresholds from where each object starts, so no episode starts solved.
            object_goals = self._sample_positions(
                rng, radii, avoid=[], away_from=starts, min_move=2 * self.success_threshold
            )
            goal = np.concatenate([hand_goal, object_goals.ravel()])
        self._goal = goal
        scene.forward()
        self._steps = 0
        if self._observer is not None:
            self._goal_image = None
            first = self._observer.reset(scene.data, rng)
            self._goal_image = self.render_goal_image()
            return self._pixel_obs(first), self._info()
        return self._state_obs(), self._info()

    def step(self, action):
        action = self._check_action(action)
        scene = self.scene
        target = np.clip(scene.hand_pos[:2] + self.action_scale * action, self.hand_low, self.hand_high)
        scene.glide((target[0], target[1], self.hand_z), self.n_substeps)
        self._steps += 1
        if self._observer is not None:
            obs = self._pixel_obs(self._observer.step(scene.data))
        else:
            obs = self._state_obs()
        info = self._info()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
        truncated = self._steps >= self.max_episode_steps
        return obs, reward, False, truncated, info

    # -- helpers --------------------------------------------------------------------------------

    def _pixel_obs(self, stacked) -> dict[str, np.ndarray]:
        observation = self._flatten_views(stacked, self.camera_labels)
        n_views = len(self.camera_labels)
        frames_per_view = 3 * self.frame_stack
        newest = [
            observation[v * frames_per_view + frames_per_view - 3 : (v + 1) * frames_per_view] for v in range(n_views)
        ]
        return {
            "observation": observation,
            "achieved_goal": np.concatenate(newest, axis=0),
            "desired_goal": self._goal_image.copy(),
        }

    def _state_obs(self) -> dict[str, np.ndarray]:
        achieved = self.state_achieved_goal()
        velocities = [self.scene.hand_vel[:2]] + [self.scene.object_vel(i)[:2] for i in range(self.n_objects)]
        return {
            "observation": np.concatenate([achieved, *velocities]).astype(np.float32),
            "achieved_goal": achieved.astype(np.float32),
            "desired_goal": self._goal.astype(np.float32),
        }

    def _info(self) -> dict[str, Any]:
        achieved = self.state_achieved_goal()
        goal = self._goal
        distances = np.linalg.norm((achieved[2:] - goal[2:]).reshape(-1, 2), axis=-1)
        return {
            "hand_distance": float(np.linalg.norm(achieved[:2] - goal[:2])),
            "puck_distance": float(distances.mean()),
            "object_distances": distances.astype(np.float32),
            "is_success": bool(np.all(distances < self.success_threshold)),
            "state": self.state(),
            "state_achieved_goal": achieved.astype(np.float32),
            "state_desired_goal": goal.astype(np.float32),
        }

    @staticmethod
    def _pushable(spec: ObjectSpec) -> ObjectSpec:
        """At most 6 cm tall, so the object passes under the palm (7.5 cm up) and meets the pads.
        (Push objects are drawn 1.3 times the grasping sizes: bigger in the 84-pixel images.)"""
        size = list(spec.size)
        if spec.shape in ("box", "ellipsoid"):
            size[2] = min(size[2], 0.03)
        elif spec.shape == "cylinder":
            size[1] = min(size[1], 0.03)
        elif spec.shape in ("sphere", "capsule"):
            size[0] = min(size[0], 0.03)
        return ObjectSpec(spec.shape, tuple(size), spec.rgba)

    def _object_yaw(self, i: int) -> float:
        return quat_yaw(self.scene.object_quat(i))

    def _fixed_starts(self) -> np.ndarray:
        spots = [(0.0, 0.0), (-0.08, 0.06), (0.08, 0.06), (0.0, 0.10)]
        return np.array(spots[: self.n_objects])

    def _sample_positions(self, rng, radii, avoid, away_from=None, min_move=0.0, gap=0.01) -> np.ndarray:
        """Non-overlapping object positions in the object range (rejection sampling)."""
        for _ in range(1000):
            pos = rng.uniform(self.object_low, self.object_high, (self.n_objects, 2))
            ok = all(np.linalg.norm(pos[i] - c) > radii[i] + r for i in range(self.n_objects) for c, r in avoid)
            for i in range(self.n_objects):
                for j in range(i):
                    ok &= np.linalg.norm(pos[i] - pos[j]) > radii[i] + radii[j] + gap
                if away_from is not None:
                    ok &= np.linalg.norm(pos[i] - away_from[i]) >= min_move
            if ok:
                return pos
        raise RuntimeError("could not place the objects without overlap; use fewer or smaller objects")
