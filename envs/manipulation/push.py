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
  ``step`` returns; state rewards: ``sparse`` (the default) = -1 unless every object is within
  ``success_threshold`` of its goal (Fetch), ``dense`` = -||achieved - desired|| (multiworld's),
  ``object_dense`` = -distance of the objects only; image rewards: ``image_distance`` = -RMS
  difference of the two images in [0, 1] units, ``image_sparse`` = -1 unless that RMS is under
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

import dataclasses
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from ..distractors import DistractorSpec
from ..pixels import check_count, check_flag
from ..render import CameraSpec, Quality
from .base import ManipulationEnv
from .scene import (
    ALL_HUES,
    FINGER_CLOSED_CTRL,
    PUCK,
    SHAPES,
    CameraDef,
    ObjectSpec,
    Scene,
    check_hues,
    check_shapes,
    quat_yaw,
    random_object,
)

PUSH_CAMERA = CameraDef("push", pos=(0.0, -0.36, 0.40), target=(0.0, 0.02, 0.0), fovy=45)


@dataclasses.dataclass(frozen=True)
class PushLayout:
    """Where the hand may go and where objects start and are asked to go (table-plane metres).

    Args:
        hand_low, hand_high: the box the hand is clipped to (and hand goals are drawn from).
        hand_start: where the hand starts every episode.
        start_low, start_high: the box object starts are drawn from (unless ``fixed_starts``).
        goal_low, goal_high: the box object goals are drawn from.
        fixed_starts: object start positions used when starts are fixed (one per object slot).
        always_fixed: objects always start at ``fixed_starts`` (else only with ``fixed_start``).
        min_move: object goals lie at least this many ``success_threshold`` from the start.
    """

    hand_low: tuple[float, float]
    hand_high: tuple[float, float]
    hand_start: tuple[float, float]
    start_low: tuple[float, float]
    start_high: tuple[float, float]
    goal_low: tuple[float, float]
    goal_high: tuple[float, float]
    fixed_starts: tuple[tuple[float, float], ...]
    always_fixed: bool
    min_move: float


LAYOUTS: dict[str, PushLayout] = {
    # multiworld's SawyerPushNIPSEasy (RIG's and Skew-Fit's pusher): the puck always starts in
    # the middle, the hand is confined to a 20 x 14 cm box around it (multiworld's 20 x 10 cm
    # mocap box, deepened so the hand can start clear of bigger random objects), and puck goals
    # are drawn from a 30 x 20 cm box around the start (multiworld's exactly). Random actions
    # move the puck in most episodes, so hindsight relabelling sees pushes from the start.
    "easy": PushLayout(
        hand_low=(-0.10, -0.06),
        hand_high=(0.10, 0.08),
        hand_start=(0.0, 0.08),
        start_low=(0.0, 0.0),
        start_high=(0.0, 0.0),
        goal_low=(-0.15, -0.10),
        goal_high=(0.15, 0.10),
        fixed_starts=((0.0, 0.0),),
        always_fixed=True,
        min_move=1.0,
    ),
    # The whole table: objects start anywhere in a 24 cm square, the hand anywhere in a 40 cm
    # one, goals at least two thresholds from the start. Random actions touch the puck in about
    # 7% of episodes, which is why state SAC + HER did not learn it in 40k steps.
    "wide": PushLayout(
        hand_low=(-0.20, -0.20),
        hand_high=(0.20, 0.20),
        hand_start=(0.0, 0.17),
        start_low=(-0.12, -0.12),
        start_high=(0.12, 0.12),
        goal_low=(-0.12, -0.12),
        goal_high=(0.12, 0.12),
        fixed_starts=((0.0, 0.0), (-0.08, 0.06), (0.08, 0.06), (0.0, 0.10)),
        always_fixed=False,
        min_move=2.0,
    ),
}


def weighted_goal_distance(achieved, desired, hand_weight: float = 1.0) -> np.ndarray:
    """``||[w (hand - hand_g), objects - objects_g]||`` over the last axis of state goals
    ``[hand_xy, object_xy...]`` (vectorised; the inputs are not changed): minus the ``dense``
    reward, multiworld's with ``w = 1``."""
    diff = np.asarray(achieved, np.float64) - np.asarray(desired, np.float64)
    diff[..., :2] *= hand_weight
    return np.linalg.norm(diff, axis=-1)


STATE_REWARDS = ("sparse", "dense", "object_dense")
IMAGE_REWARDS = ("image_distance", "image_sparse")


def image_rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS difference of (..., C, H, W) images over their pixels, in units of the full range
    (images in [0, 255]): ``sqrt(mean(((a - b) / 255)^2))``. On uint8 images the squared
    differences are summed in integers: exact, and much cheaper than float64 arithmetic, which
    matters because the image rewards are recomputed for every relabelled row of every batch."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        diff = a.astype(np.int32) - b
        squares = (diff * diff).reshape(*diff.shape[:-3], -1).sum(-1, dtype=np.int64)
        return np.sqrt(squares / (255.0**2 * np.prod(diff.shape[-3:])))
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    return np.sqrt(np.mean(diff**2, axis=(-3, -2, -1)))


HAND_RADIUS = 0.022  # the closed fingers seen from above: 3.6 x 2 cm (PushExpert's hand_radius)
# A goal image must show each goal object: at least this fraction of it in view of the task
# camera (before, 5 of 40 Push goals had the puck more than 70% behind the hand).
MIN_GOAL_VISIBILITY = 0.9
# Colours of the objects when they are not randomised (the first is the classic red puck).
FIXED_COLOURS = ((0.85, 0.15, 0.12, 1), (0.15, 0.45, 0.85, 1), (0.95, 0.80, 0.10, 1), (0.20, 0.70, 0.30, 1))


class PushEnv(ManipulationEnv):
    """Push objects to goal positions on the table (see the module docstring).

    Args:
        n_objects: objects on the table (1-4), each with its own goal.
        randomize_objects: draw each object's shape, size and colour anew every episode (else
            red/blue/yellow/green cylindrical pucks).
        object_shapes: shapes drawn from when randomising.
        object_hues: ``(lo, hi)``, the arc of hues colours are drawn from when randomising
            (fractions of the hue circle; ``lo > hi`` wraps through red; default every hue): two
            disjoint arcs hold colours out of training.
        reward_type: ``sparse``/``dense``/``object_dense`` (state mode, default ``sparse``, as
            Fetch's: SAC with HER's settings learns it fastest) or ``image_distance``/
            ``image_sparse`` (pixel mode, default ``image_distance``).
        hand_weight: ``dense`` pays ``-||[w (h - h_g), p - p_g]||`` with ``w = hand_weight``
            (default 1: multiworld's state reward). A latent reward weighs hand and puck as its
            encoder does (RIG's VAE pays about 7.5 times more per cm of hand error); this option
            puts such a weighting on the state oracle, to ask what weighting still lets it push.
        max_episode_steps: truncation (default 50).
        layout: a name of :data:`LAYOUTS`: ``"easy"`` (one object; RIG's pusher geometry, the
            default for one object) or ``"wide"`` (the whole table, any number of objects; the
            default for several).
        fixed_start: objects always start at the same place (else uniformly in their range;
            ``easy`` starts are always fixed).
        start_like_goal: every episode starts in a configuration drawn as goals are (objects in
            the goal box, the hand where a hand goal would be): RIG's VAE data, which rlkit
            renders after multiworld's ``set_to_goal`` resets, so the objects are spread over the
            goal space instead of starting in the middle. For collecting pretraining data.
        draw_arm: draw the arm and wrist above the hand (default). ``False`` shows the hand as
            its palm and fingers only (a hand move then changes about two thirds of the pixels),
            to ask whether a learned reward's preference for the hand comes from its footprint
            (for RIG's VAE it did not: README). Physics is the same either way (drawn only).
        from_pixels, size, camera, cameras, frame_stack, quality, distractor, render_mode,
        render_size: as :class:`~ssrl.envs.dmc.DMCEnv` (default camera ``push``, frame stack 1;
        with several cameras the images are concatenated on the channel axis, in order; a
        distractor replaces the table top and the floor unless ``replace_floor=False``).
    """

    default_camera = "push"
    # Stored per step by `ssrl collect` (the goal is fixed per episode; the distances are metrics).
    record_keys = ("state_desired_goal", "hand_distance", "puck_distance", "is_success")
    # Evaluations report these info values at each episode's last step (RIG's final distances).
    final_metrics = ("puck_distance", "hand_distance")
    hand_z = 0.005  # fingertips 5 mm above the table
    pad_friction = (0.3, 0.005, 0.0001)

    def __init__(
        self,
        *,
        n_objects: int = 1,
        randomize_objects: bool = False,
        object_shapes: Sequence[str] = SHAPES,
        object_hues: Sequence[float] = ALL_HUES,
        reward_type: str | None = None,
        hand_weight: float = 1.0,
        success_threshold: float = 0.05,
        image_threshold: float = 0.02,
        max_episode_steps: int = 50,
        layout: str | None = None,
        action_scale: float = 0.02,
        n_substeps: int = 25,
        fixed_start: bool = False,
        start_like_goal: bool = False,
        draw_arm: bool = True,
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
        self.object_hues = check_hues(object_hues)
        rewards = IMAGE_REWARDS if from_pixels else STATE_REWARDS
        reward_type = reward_type or rewards[0]
        if reward_type not in rewards:
            mode = "pixel" if from_pixels else "state"
            raise ValueError(
                f"reward_type {reward_type!r} is not one of {rewards} (those of {mode} mode; state distances "
                "are in info['hand_distance'] and info['puck_distance'] in every mode)"
            )
        self.reward_type = reward_type
        if isinstance(hand_weight, bool) or not (
            isinstance(hand_weight, (int, float)) and np.isfinite(hand_weight) and hand_weight >= 0
        ):
            raise ValueError(f"hand_weight must be a finite number >= 0, got {hand_weight!r}")
        if hand_weight != 1.0 and reward_type != "dense":
            raise ValueError(f"hand_weight weighs the hand in the 'dense' reward; reward_type is {reward_type!r}")
        self.hand_weight = float(hand_weight)
        self.success_threshold = float(success_threshold)
        self.image_threshold = float(image_threshold)
        self.action_scale = float(action_scale)
        layout = layout or ("easy" if self.n_objects == 1 else "wide")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; use one of {sorted(LAYOUTS)}")
        if layout == "easy" and self.n_objects != 1:
            raise ValueError(f"layout 'easy' has one object (RIG's pusher); use layout='wide' for {self.n_objects}")
        self.layout = layout
        geometry = LAYOUTS[layout]
        self.geometry = geometry
        self.hand_low, self.hand_high = np.array(geometry.hand_low), np.array(geometry.hand_high)
        self.hand_start = np.array(geometry.hand_start)
        self.start_like_goal = check_flag("start_like_goal", start_like_goal)
        self.fixed_start = (bool(fixed_start) or geometry.always_fixed) and not self.start_like_goal
        scene = Scene(self.n_objects, None, [PUSH_CAMERA])
        # The closed fingers are a pusher here: slippery pads, so they shove objects instead of
        # dragging them round or up (the grasping task keeps grippy ones).
        scene.model.geom_friction[scene.pad_geoms] = self.pad_friction
        self.draw_arm = check_flag("draw_arm", draw_arm)
        if not self.draw_arm:
            scene.hide_arm()
        self.scene = scene
        self._task_camera_id = mujoco.mj_name2id(scene.model, mujoco.mjtObj.mjOBJ_CAMERA, PUSH_CAMERA.name)
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

    def state_observation(self) -> dict[str, np.ndarray]:
        """What state mode observes, in either mode (the state oracle's input beside a pixel
        agent's): ``observation`` ``[hand_xy, object_xy..., hand_vel_xy, object_vel_xy...]``,
        ``achieved_goal`` and ``desired_goal`` ``[hand_xy, object_xy...]`` (float32)."""
        return self._state_obs()

    @property
    def object_specs(self) -> list[ObjectSpec]:
        return list(self.scene.specs)

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """The reward of reaching ``achieved_goal`` when ``desired_goal`` was asked, vectorised
        over leading axes (for hindsight relabelling); ``info`` is not used."""
        if self.reward_type in IMAGE_REWARDS:
            rms = image_rms(achieved_goal, desired_goal)
            if self.reward_type == "image_distance":
                return -rms
            return -(rms >= self.image_threshold).astype(np.float64)
        a = np.asarray(achieved_goal, np.float64)
        d = np.asarray(desired_goal, np.float64)
        if self.reward_type == "dense":
            return -weighted_goal_distance(a, d, self.hand_weight)
        if self.reward_type == "object_dense":
            return -np.linalg.norm(a[..., 2:] - d[..., 2:], axis=-1)
        per_object = np.linalg.norm((a[..., 2:] - d[..., 2:]).reshape(*a.shape[:-1], -1, 2), axis=-1)
        return -np.any(per_object >= self.success_threshold, axis=-1).astype(np.float64)

    @property
    def can_imagine_goals(self) -> bool:
        """State mode offers :meth:`sample_goals` (for relabelling; multiworld's env goals)."""
        return not self.from_pixels

    def sample_goals(self, n: int, rng: np.random.Generator, like: np.ndarray | None = None) -> np.ndarray:
        """``n`` state goals ``[hand_xy, object_xy...]`` from the goal boxes (float32), for
        relabelling with goals the env might ask (rlkit's "env goals"; the oracle's counterpart
        of RIG's imagined goals; ``like`` is not used). State mode only: image goals need a
        render each."""
        if self.from_pixels:
            raise AttributeError("Push samples goals in state mode only (image goals need a render each)")
        geometry = self.geometry
        hand = rng.uniform(self.hand_low, self.hand_high, (n, 2))
        objects = rng.uniform(geometry.goal_low, geometry.goal_high, (n, self.n_objects, 2))
        return np.concatenate([hand, objects.reshape(n, -1)], axis=1).astype(np.float32)

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

    def render_goal(self) -> np.ndarray:
        """What :meth:`render` shows, ``(H, W, 3)`` uint8, with the scene in the goal
        configuration (the physics state is restored exactly): the goal beside what an agent
        reached, in state mode too."""
        if self._render_size is None and self._observer is not None:
            return self.render_goal_image()[:3].transpose(1, 2, 0).copy()
        saved = self.scene.get_state()
        try:
            self.set_to_goal(self._goal)
            return np.array(self.render())
        finally:
            self.scene.set_state(saved)

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
            draw = lambda: random_object(rng, self.object_shapes, scale=1.3, hues=self.object_hues)  # noqa: E731
            specs = [self._pushable(draw()) for _ in range(self.n_objects)]
        else:
            specs = [ObjectSpec(PUCK.shape, PUCK.size, FIXED_COLOURS[i]) for i in range(self.n_objects)]
        if specs != self._specs_set:
            for i, spec in enumerate(specs):
                scene.set_object(i, spec)
            scene.commit_objects()
            self._specs_set = specs
        radii = np.array([s.radius for s in specs])
        geometry = self.geometry
        hand_clearance = 0.04  # keep objects this far from the hand's start (beyond their radius)
        hand_start = self.hand_start
        if self.start_like_goal:  # RIG's VAE data: a configuration drawn as goals are
            starts = self._sample_positions(rng, radii, geometry.goal_low, geometry.goal_high, avoid=[])
            hand_start = self._sample_hand_goal(rng, starts, radii)
        elif self.fixed_start:
            starts = np.array(geometry.fixed_starts[: self.n_objects])
        else:
            starts = self._sample_positions(
                rng, radii, geometry.start_low, geometry.start_high, avoid=[(self.hand_start, hand_clearance)]
            )
        yaws = rng.uniform(-np.pi, np.pi, self.n_objects)
        scene.teleport_hand((*hand_start, self.hand_z), 0.0, 0.0)
        scene.set_fingers(FINGER_CLOSED_CTRL)
        for i in range(self.n_objects):
            scene.place_object(i, starts[i], yaws[i])
        scene.forward()
        if "goal" in options:
            goal = np.asarray(options["goal"], float)
            if goal.shape != self._goal.shape:
                raise ValueError(
                    f"options['goal'] must have shape {self._goal.shape} ([hand_xy, object_xy...]), got {goal.shape}"
                )
        else:
            # Object goals far enough from the starts that no episode starts solved.
            object_goals = self._sample_positions(
                rng,
                radii,
                geometry.goal_low,
                geometry.goal_high,
                avoid=[],
                away_from=starts,
                min_move=geometry.min_move * self.success_threshold,
            )
            goal = np.concatenate([self._sample_hand_goal(rng, object_goals, radii), object_goals.ravel()])
        self._goal = goal
        scene.forward()
        self._steps = 0
        if self._observer is not None:
            self._goal_image = None
            first = self._observer.reset(scene.data, rng)
            self._goal_image = self.render_goal_image()
            return self._observe(self._pixel_obs(first)), self._info()
        return self._observe(self._state_obs()), self._info()

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
        reward = self._step_reward(obs, info)
        truncated = self._steps >= self.max_episode_steps
        return self._observe(obs), reward, False, truncated, info

    def _step_reward(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> float:
        return float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))

    def _observe(self, obs: dict[str, np.ndarray]):
        """What reset and step return: the goal env's dict (a single task returns less)."""
        return obs

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

    def _sample_positions(self, rng, radii, low, high, avoid, away_from=None, min_move=0.0, gap=0.01) -> np.ndarray:
        """Non-overlapping object positions in the box ``[low, high]`` (rejection sampling)."""
        for _ in range(1000):
            pos = rng.uniform(low, high, (self.n_objects, 2))
            ok = all(np.linalg.norm(pos[i] - c) > radii[i] + r for i in range(self.n_objects) for c, r in avoid)
            for i in range(self.n_objects):
                for j in range(i):
                    ok &= np.linalg.norm(pos[i] - pos[j]) > radii[i] + radii[j] + gap
                if away_from is not None:
                    ok &= np.linalg.norm(pos[i] - away_from[i]) >= min_move
            if ok:
                return pos
        raise RuntimeError("could not place the objects without overlap; use fewer or smaller objects")

    def _sample_hand_goal(self, rng, object_goals: np.ndarray, radii: np.ndarray) -> np.ndarray:
        """A hand goal in the hand box that leaves every goal object in plain sight: clear of it
        on the table and hiding at most ``1 - MIN_GOAL_VISIBILITY`` of it from the task camera
        (:meth:`goal_visibility`), so a goal image shows what it asks for. The same in state and
        pixel mode (rays, not renders). The most visible of 200 draws if none qualifies."""
        best, best_seen = None, -1.0
        for _ in range(200):
            hand = rng.uniform(self.hand_low, self.hand_high)
            clear = all(np.linalg.norm(hand - g) > r + HAND_RADIUS + 0.01 for g, r in zip(object_goals, radii))
            if not clear:
                continue
            seen = float(self.goal_visibility(np.concatenate([hand, object_goals.ravel()])).min())
            if seen >= MIN_GOAL_VISIBILITY:
                return hand
            if seen > best_seen:
                best, best_seen = hand, seen
        return best if best is not None else rng.uniform(self.hand_low, self.hand_high)

    def goal_visibility(self, goal: Sequence[float]) -> np.ndarray:
        """Per object, the fraction of probe points inside it that the task camera (``push``)
        sees in the goal configuration ``goal``: rays from the camera to 9 points spread through
        the object, counted when the first geom they hit is the object's. The physics state is
        restored exactly."""
        scene = self.scene
        saved = scene.get_state()
        try:
            self.set_to_goal(goal)
            camera = scene.data.cam_xpos[self._task_camera_id].copy()
            seen = np.zeros(self.n_objects)
            hit = np.zeros(1, np.int32)
            for i, spec in enumerate(scene.specs[: self.n_objects]):
                centre = scene.object_pos(i)
                r, h = 0.5 * spec.radius, 0.5 * spec.half_height
                offsets = [(0, 0, h)] + [
                    (r * np.cos(a), r * np.sin(a), h * (k % 2)) for k, a in enumerate(np.arange(8) * np.pi / 4)
                ]
                for offset in offsets:
                    mujoco.mj_ray(scene.model, scene.data, camera, centre + offset - camera, None, 1, -1, hit)
                    seen[i] += hit[0] >= 0 and scene.geom_object[hit[0]] == i
            return seen / 9
        finally:
            scene.set_state(saved)


class PushTaskEnv(PushEnv):
    """Push the puck to one goal, the same in every episode: a single task, not a goal env
    (``ssrl/PushTask-v0``; what imitating one demonstration needs, as TCN does).

    Args:
        goal: ``[hand_xy, object_xy...]`` asked in every episode. The default pushes the puck
            9.4 cm from its fixed start towards the camera and to the right, the hand ending
            behind it.
        **kwargs: as :class:`PushEnv`.

    The observation is what a goal env's ``observation`` entry is (frames, or the state vector),
    without goals; the reward, in every mode, is minus the objects' mean distance to their goals
    (``info["puck_distance"]``, what success is judged on); ``info`` is the goal env's. There is
    no ``compute_reward`` (nothing to relabel), so Gymnasium's and SB3's checkers see a plain env.
    """

    DEFAULT_GOAL = (0.05, -0.04, 0.05, -0.08)

    def __init__(self, *, goal: Sequence[float] = DEFAULT_GOAL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        goal_dim = 2 + 2 * self.n_objects
        try:
            task_goal = np.asarray(goal, float)
        except (TypeError, ValueError):
            task_goal = np.zeros(0)
        if task_goal.shape != (goal_dim,) or not np.all(np.isfinite(task_goal)):
            raise ValueError(f"goal must be {goal_dim} finite numbers [hand_xy, object_xy...], got {goal!r}")
        self.task_goal = task_goal
        self.observation_space = self.observation_space["observation"]

    @property
    def compute_reward(self):  # a single task: nothing to relabel, so not a goal env (hasattr is False)
        raise AttributeError("a single task (ssrl/PushTask-v0) has no compute_reward; use ssrl/Push-v0 for goals")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        options.setdefault("goal", self.task_goal)
        return super().reset(seed=seed, options=options)

    def _step_reward(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> float:
        return -info["puck_distance"]

    def _observe(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return obs["observation"]
