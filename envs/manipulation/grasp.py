"""Grasping from a bin, grasp2vec style: ``ssrl/Grasp-v0`` and ``ssrl/GraspGoal-v0``.

The task half of the grasping envs (the scene is :mod:`ssrl.envs.manipulation.scene`). A bin on
the table holds ``n_objects`` objects (default 6) whose shapes, sizes and colours are drawn anew
every episode. One env step is one grasp attempt:

* action ``[x, y, yaw]`` in ``[-1, 1]``: the grasp centre, uniform over the bin's inner floor
  (``x, y`` scaled by its half-size), and the gripper's yaw (scaled by pi/2; a parallel gripper is
  symmetric under a half turn);
* the primitive, all of it simulated: the open hand is put above the grasp point, clear of every
  object and wall (a free-space move, the only one not simulated), descends to 6 mm above the bin
  floor, closes its fingers at 0.3 m/s, a gripper's speed (position control, squeezing up to
  12 N), and lifts 45 cm, out of the ``bin`` camera's view, then holds for 50 ms. An object is
  *lifted* if it is then more than 20 cm above the floor: friction between pads and object is all
  that holds it;
* the fingers' opening is fitted to the bin, whose place the robot knows: each finger opens up to
  4.5 cm from the grasp centre, less where its pad would otherwise come down on a wall top or
  outside the bin (2 mm clearance; :meth:`GraspEnv.finger_openings`; the walls are all it knows
  of, not the objects), so a grasp near a wall is tried with a narrower, off-centre opening
  instead of with a finger on the wall. The pads are 6 mm thick (the base scene's are 1 cm), so
  they come down between objects more often;
* the descent is guarded, as a robot's with a force limit: a finger landing on an object (or, for
  a grasp centre within a pad's size of a wall, on the wall) pushes on it with at most 10 N, and
  the hand waits there for it to give way (at most 0.1 s, then the fingers close where the hand
  is). An unlimited push drove light objects into and through the bin floor and fingers past the
  walls' top edges, and what it squeezed sprang out of the bin, onto the table in ``s_post``;
  fingers slammed shut at once (over 3 m/s) likewise flicked objects they struck at an edge out;
* the grasp2vec record of the attempt, in ``info``: ``s_pre`` (the ``bin`` camera before the
  grasp), ``s_post`` (after, the lifted object out of view), ``o`` (the ``object`` camera,
  mounted on the hand and looking between the fingers: the lifted object held up to a camera at a
  fixed pose relative to the gripper), ``object_id`` (the lifted object, ``-1`` for none; if
  several were lifted, the one nearest the grasp centre), ``grasp_success`` and ``lifted`` (a
  mask over the objects). Images are channels-first ``(3, T, T)`` uint8 at ``triplet_size``;
* after the record, a lifted object is put back in the bin at a random free spot, at rest (the
  robot dropping it back, not simulated, which saves the fall and the settling); the hand waits at
  the lift height;
* reward: 1 for a successful grasp, else 0 (``Grasp-v0``); episodes are truncated after
  ``max_attempts`` attempts (10).

Goal-conditioned mode (``ssrl/GraspGoal-v0``, :class:`GraspGoalEnv`): at reset one object
is the goal; ``desired_goal`` is an image of it: with ``goal_view="object"`` (default) the
``object`` camera's view of it held between the fingers (the distribution of ``o``, rendered by
placing it there and restoring the state), with ``goal_view="bin"`` the ``bin`` camera's view of
the bin with that object alone in it. ``achieved_goal`` is the newest ``o`` (zeros before any
lift); with several cameras, ``observation`` concatenates their frames on the channel axis.
Success, reward 1 and ``terminated`` mean the goal object was lifted. In state mode the
goals are one-hot object masks and ``compute_reward`` works on them; in pixel mode it needs the
ids in ``info`` (relabel image goals with a learned embedding, as grasp2vec does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..distractors import DistractorSpec
from ..pixels import check_count, parse_size
from ..render import CameraSpec, Quality, Renderer
from .base import ManipulationEnv
from .scene import (
    ALL_HUES,
    FINGER_CLOSED_CTRL,
    FINGER_RANGE,
    PAD_HALF_WIDTH,
    SHAPES,
    BinSpec,
    CameraDef,
    Scene,
    check_hues,
    check_shapes,
    quat_yaw,
    random_object,
)

BIN_CAMERA = CameraDef("bin", pos=(0.0, -0.34, 0.46), target=(0.0, 0.0, 0.0), fovy=45)
# On the hand, beside the fingers, looking between them along the hand's x axis.
OBJECT_CAMERA = CameraDef("object", pos=(-0.17, 0.0, 0.045), target=(0.0, 0.0, 0.03), fovy=45, body="hand")
MAX_OBJECTS = 15
GOAL_VIEWS = ("object", "bin")


class GraspEnv(ManipulationEnv):
    """Top-down grasps in a bin of random objects (see the module docstring).

    Args:
        n_objects: objects in the bin (1-15, default 6).
        object_shapes: the shapes objects are drawn from.
        object_hues: ``(lo, hi)``, the arc of hues their colours are drawn from (fractions of the
            hue circle; ``lo > hi`` wraps through red; default every hue): two disjoint arcs
            hold colours out of training.
        max_attempts: grasp attempts per episode (truncation).
        goal_conditioned: one object per episode is the goal (``ssrl/GraspGoal-v0``).
        goal_view: ``"object"`` or ``"bin"``: how the goal image shows the goal object.
        triplet_size: size of ``s_pre``, ``s_post``, ``o`` and goal images (default: ``size``).
        record_triplets: render ``s_pre``/``s_post``/``o`` into ``info`` (on by default, in state
            mode too: data collection runs the env on states).
        lift_height: where the hand lifts to (its fingertips, metres above the table).
        action_grid: pixel mode, ``bin`` camera only, no frame stack: the observation is the
            camera's image resampled onto a ``G x G`` grid over the grasp area, so that pixel
            ``(row i, column j)`` shows the table where action ``x = -1 + (2j + 1) / G``,
            ``y = -1 + (2i + 1) / G`` grasps (:meth:`GraspEnv.action_grid_view`; a top-down view
            in action coordinates, for a Q-map over grasp positions). None: the camera image.
        from_pixels, size, camera, cameras, frame_stack, quality, distractor, render_mode,
        render_size: as :class:`~ssrl.envs.dmc.DMCEnv` (default camera ``bin``, frame stack 1).
            A distractor replaces the table top and floor in the observation; the triplet and
            goal images are not composited, so those surfaces show black there.
    """

    default_camera = "bin"
    record_keys = ("s_pre", "s_post", "o", "object_id", "grasp_success")
    grasp_clearance = 0.006  # fingertips above the bin floor at the bottom of the descent
    lift_threshold = 0.20  # an object this far above the bin floor after the lift was lifted
    descend_speed = 0.8  # m/s
    max_press_force = 10.0  # N: the most the descending gripper pushes on what it lands on
    wall_clearance = 0.002  # the open pads keep this far inside the bin's walls (where they can)
    pad_half_thickness = 0.003  # the grasping hand's pads (the base scene's are 0.005)
    finger_speed = 0.3  # m/s, each finger closing: a gripper's speed (a target set at once slams them at 3 m/s)
    close_time = 0.2  # s: closing from fully open takes 0.18 s, then squeezing
    lift_time = 0.35  # s
    hold_time = 0.05  # s
    settle_time = 0.02  # s, after the attempt (and at reset)

    def __init__(
        self,
        *,
        n_objects: int = 6,
        object_shapes: Sequence[str] = SHAPES,
        object_hues: Sequence[float] = ALL_HUES,
        max_attempts: int = 10,
        goal_conditioned: bool = False,
        goal_view: str = "object",
        triplet_size: int | Sequence[int] | None = None,
        record_triplets: bool = True,
        lift_height: float = 0.45,
        bin_half_size: float = 0.13,
        action_grid: int | None = None,
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
        self.n_objects = check_count("n_objects", n_objects, 1, MAX_OBJECTS)
        self.max_attempts = check_count("max_attempts", max_attempts)
        self.object_shapes = check_shapes(object_shapes)
        self.object_hues = check_hues(object_hues)
        if goal_view not in GOAL_VIEWS:
            raise ValueError(f"unknown goal_view {goal_view!r}; use one of {GOAL_VIEWS}")
        if goal_conditioned and not isinstance(self, GraspGoalEnv):
            raise ValueError(
                "goal-conditioned grasping is GraspGoalEnv (ssrl/GraspGoal-v0), the env with compute_reward"
            )
        self.goal_conditioned = bool(goal_conditioned)
        if self.goal_conditioned:  # collected goal-mode data says which object each episode wanted
            self.record_keys = type(self).record_keys + ("goal_id",)
        self.goal_view = goal_view
        self.record_triplets = bool(record_triplets)
        self.lift_height = float(lift_height)
        self.bin = BinSpec(half_size=float(bin_half_size))
        scene = Scene(self.n_objects, self.bin, [BIN_CAMERA, OBJECT_CAMERA], pad_half_thickness=self.pad_half_thickness)
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
        self.metadata = dict(self.metadata, render_fps=2)
        self.triplet_size = parse_size(triplet_size) if triplet_size is not None else self.size
        self._bin_renderer: Renderer | None = None
        self._object_renderer: Renderer | None = None
        if self.record_triplets or (self.goal_conditioned and self.from_pixels):
            self._bin_renderer = Renderer(scene.model, *self.triplet_size, ["bin"], quality)
            self._object_renderer = Renderer(scene.model, *self.triplet_size, ["object"], quality)

        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_grid = None if action_grid is None else check_count("action_grid", action_grid, 2, 256)
        self._grid_sampler: tuple[np.ndarray, ...] | None = None
        if self.action_grid is not None:
            if not self.from_pixels or self.camera_labels != ["bin"] or self.frame_stack != 1:
                raise ValueError("action_grid resamples the bin camera's image: pixel mode, camera bin, frame_stack 1")
            self._grid_sampler = self._action_grid_sampler(self.action_grid)
        state_dim = 3 + 10 * self.n_objects
        if self.from_pixels:
            scene_space = self._observer.observation_space()
            if self.action_grid is not None:
                scene_space = gym.spaces.Box(0, 255, (3, self.action_grid, self.action_grid), np.uint8)
        else:
            scene_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        if self.goal_conditioned:
            if self.from_pixels:
                # Several cameras are concatenated on the channel axis, in order (as in Push):
                # a goal dict holds no nested dicts.
                h, w = self.size if self.action_grid is None else (self.action_grid, self.action_grid)
                scene_space = gym.spaces.Box(0, 255, (3 * self.frame_stack * len(self.camera_labels), h, w), np.uint8)
                goal = gym.spaces.Box(0, 255, (3, *self.triplet_size), np.uint8)
            else:
                goal = gym.spaces.Box(0.0, 1.0, (self.n_objects,), np.float32)
            self.observation_space = gym.spaces.Dict(observation=scene_space, achieved_goal=goal, desired_goal=goal)
        else:
            self.observation_space = scene_space
        self.state_space = gym.spaces.Box(-np.inf, np.inf, scene.ground_truth().shape, np.float32)
        self.goal_id = -1
        self._goal_image: np.ndarray | None = None
        self._last_o: np.ndarray | None = None
        self._lifted = np.zeros(self.n_objects, bool)
        self._pre: np.ndarray | None = None
        self._attempts = 0
        self.attempts_total = 0  # grasp attempts since construction (for benchmarks)

    # -- geometry -------------------------------------------------------------------------------

    # Height above the bin floor at which the action grid samples the camera image: about the
    # middle of an object, so what the grid shows at a cell is what a grasp there closes on.
    grid_height = 0.015

    def project_to_bin_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` -> continuous ``(row, column)`` in the ``bin`` camera's
        observation (pixel centres at integers), by the pinhole model MuJoCo renders with: the
        camera at ``pos`` looks at ``target``, vertical field of view ``fovy``."""
        pos, target = np.asarray(BIN_CAMERA.pos, float), np.asarray(BIN_CAMERA.target, float)
        forward = (target - pos) / np.linalg.norm(target - pos)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        rel = np.asarray(points, float) - pos
        depth = rel @ forward
        h, w = self.size
        focal = (h / 2) / math.tan(math.radians(BIN_CAMERA.fovy) / 2)
        column = w / 2 + focal * (rel @ right) / depth - 0.5
        row = h / 2 - focal * (rel @ up) / depth - 0.5
        return np.stack([row, column], axis=1)

    def _action_grid_sampler(self, g: int) -> tuple[np.ndarray, ...]:
        """Bilinear sampling of the camera image at the grid cells' centres (see ``action_grid``)."""
        centres = -1.0 + (2 * np.arange(g) + 1) / g
        ay, ax = np.meshgrid(centres, centres, indexing="ij")
        hs = self.bin.half_size
        points = np.stack([ax.ravel() * hs, ay.ravel() * hs, np.full(g * g, self.floor_z + self.grid_height)], 1)
        rc = self.project_to_bin_camera(points)
        h, w = self.size
        row, col = np.clip(rc[:, 0], 0, h - 1), np.clip(rc[:, 1], 0, w - 1)
        r0, c0 = np.minimum(row.astype(int), h - 2), np.minimum(col.astype(int), w - 2)
        fr, fc = row - r0, col - c0
        return r0, c0, fr, fc

    def action_grid_view(self, image: np.ndarray) -> np.ndarray:
        """The ``bin`` camera's ``(3, H, W)`` image resampled onto the action grid, ``(3, G, G)``."""
        r0, c0, fr, fc = self._grid_sampler
        im = image.astype(np.float32)
        top = im[:, r0, c0] * (1 - fc) + im[:, r0, c0 + 1] * fc
        bottom = im[:, r0 + 1, c0] * (1 - fc) + im[:, r0 + 1, c0 + 1] * fc
        g = self.action_grid
        return np.rint(top * (1 - fr) + bottom * fr).astype(np.uint8).reshape(3, g, g)

    @property
    def floor_z(self) -> float:
        return self.bin.floor_z

    def action_to_grasp(self, action) -> tuple[float, float, float]:
        """``[x, y, yaw]`` in ``[-1, 1]`` -> grasp centre (metres) and yaw (radians)."""
        a = np.clip(np.asarray(action, float), -1, 1)
        h = self.bin.half_size
        return float(a[0] * h), float(a[1] * h), float(a[2] * math.pi / 2)

    def grasp_to_action(self, x: float, y: float, yaw: float = 0.0) -> np.ndarray:
        """Inverse of :meth:`action_to_grasp` (yaw wrapped into [-pi/2, pi/2))."""
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
        h = self.bin.half_size
        return np.clip(np.array([x / h, y / h, yaw / (math.pi / 2)]), -1, 1).astype(np.float32)

    def object_positions(self) -> np.ndarray:
        return self.scene.object_pos()

    @property
    def object_specs(self):
        return list(self.scene.specs)

    def _home(self) -> tuple[float, float, float]:
        return (0.0, 0.0, self.floor_z + self.lift_height)

    # -- placement ------------------------------------------------------------------------------

    def _free_spot(self, rng, i: int, others: Sequence[int], gap: float = 0.004, tries: int = 200):
        """A spot in the bin where object ``i`` rests without touching ``others``, or None."""
        spec = self.scene.specs[i]
        r = spec.radius
        lim = self.bin.half_size - r - 0.002
        if lim <= 0:
            return None
        centres = [self.scene.object_pos(j)[:2] for j in others]
        radii = [self.scene.specs[j].radius for j in others]
        for _ in range(tries):
            xy = rng.uniform(-lim, lim, 2)
            if all(np.linalg.norm(xy - c) > r + rj + gap for c, rj in zip(centres, radii)):
                return xy
        return None

    def _put_in_bin(self, rng, i: int, others: Sequence[int]) -> bool:
        """Object ``i`` at rest at a free spot; if the bin is too full, dropped from above a random
        spot (returns True then: the scene needs time to settle)."""
        yaw = rng.uniform(-math.pi, math.pi)
        xy = self._free_spot(rng, i, others)
        if xy is not None:
            self.scene.place_object(i, xy, yaw, self.floor_z)
            return False
        lim = self.bin.half_size - self.scene.specs[i].radius
        xy = rng.uniform(-lim, lim, 2)
        tops = [self.scene.object_pos(j)[2] + self.scene.specs[j].half_height for j in others] or [self.floor_z]
        self.scene.place_object(i, xy, yaw, max(tops) + 0.01)
        return True

    # -- the grasp primitive ----------------------------------------------------------------------

    def finger_openings(self, x: float, y: float, yaw: float) -> np.ndarray:
        """How far the (left, right) finger opens for a grasp at ``(x, y, yaw)``: ``FINGER_RANGE``,
        or less where the pad would otherwise reach beyond ``wall_clearance`` inside a wall (on its
        top or outside the bin), 0 where even a closed finger's pad does. The left finger opens
        along the hand's +y axis, ``(-sin yaw, cos yaw)`` in the world."""
        lim = self.bin.half_size - self.wall_clearance
        u = np.array([-math.sin(yaw), math.cos(yaw)])  # closing axis (hand y)
        v = np.array([math.cos(yaw), math.sin(yaw)])  # across the pads (hand x)
        centre = np.array([x, y], float)
        thickness = 2 * self.scene.pad_half_thickness
        openings = np.full(2, FINGER_RANGE)
        for k, side in enumerate((1.0, -1.0)):
            d = side * u  # a pad corner moves along d as its finger opens
            for a in (0.0, thickness):
                for b in (-PAD_HALF_WIDTH, PAD_HALF_WIDTH):
                    corner = centre + side * a * u + b * v  # with the finger closed
                    for axis in range(2):
                        # |corner[axis] + opening * d[axis]| <= lim
                        if abs(d[axis]) > 1e-12:
                            bound = (lim - math.copysign(1.0, d[axis]) * corner[axis]) / abs(d[axis])
                            openings[k] = min(openings[k], bound)
        return np.clip(openings, 0.0, FINGER_RANGE)

    def _approach_height(self) -> float:
        """Fingertip height clear of every object and of the bin's walls."""
        tops = [p[2] + float(np.linalg.norm(s.half_extents)) for p, s in zip(self.scene.object_pos(), self.scene.specs)]
        return max(self.floor_z + self.bin.wall_height, *tops) + 0.02

    def execute_grasp(self, x: float, y: float, yaw: float) -> np.ndarray:
        """Run the primitive; returns the mask of lifted objects. Physics only, no rendering."""
        scene = self.scene
        z_top = self._approach_height()
        z_grasp = self.floor_z + self.grasp_clearance
        # Free space: nothing is touched; the fingers pre-shaped to the walls.
        scene.teleport_hand((x, y, z_top), yaw, self.finger_openings(x, y, yaw))
        scene.forward()
        scene.move_hand(
            (x, y, z_grasp), max(0.04, (z_top - z_grasp) / self.descend_speed), max_force=self.max_press_force
        )
        scene.close_fingers(self.close_time, self.finger_speed, FINGER_CLOSED_CTRL)
        scene.move_hand((x, y, self.floor_z + self.lift_height), self.lift_time)
        scene.step(int(round(self.hold_time / scene.dt)))
        heights = scene.object_pos()[:, 2] - self.floor_z
        self.attempts_total += 1
        return heights > self.lift_threshold

    # -- rendering ------------------------------------------------------------------------------

    def _render_bin(self) -> np.ndarray:
        return self._bin_renderer.render(self.scene.data)[0].transpose(2, 0, 1).copy()

    def _render_object_view(self) -> np.ndarray:
        return self._object_renderer.render(self.scene.data)[0].transpose(2, 0, 1).copy()

    def render_goal_image(self, goal_id: int | None = None) -> np.ndarray:
        """An image of object ``goal_id`` (default: the episode's goal), ``(3, T, T)``: held
        between the fingers in front of the ``object`` camera (``goal_view="object"``) or alone
        in the bin (``"bin"``). The physics state is restored exactly afterwards."""
        i = self.goal_id if goal_id is None else int(goal_id)
        if not 0 <= i < self.n_objects:
            raise ValueError(f"goal_id must be an object index in 0..{self.n_objects - 1}, got {i}")
        if self._bin_renderer is None:
            raise ValueError("goal images need the triplet renderers (record_triplets=True or pixel mode)")
        scene = self.scene
        saved = scene.get_state()
        try:
            if self.goal_view == "bin":
                for j in range(self.n_objects):
                    if j != i:
                        scene.park_object(j)
                scene.forward()
                return self._render_bin()
            spec = scene.specs[i]
            ex, ey, _ = spec.half_extents
            hand = scene.hand_pos
            hand_yaw = quat_yaw(scene.data.qpos[scene.hand_qpos][3:])
            # The object's narrower horizontal side between the pads, its bottom at the
            # fingertips' height less the grasp clearance: how a grasp from the floor holds it.
            body_yaw = hand_yaw + (math.pi / 2 if ex < ey else 0.0)
            scene.data.qpos[scene.finger_qpos] = min(ex, ey)
            scene.place_object(i, hand[:2], body_yaw, hand[2] - self.grasp_clearance)
            scene.forward()
            return self._render_object_view()
        finally:
            scene.set_state(saved)

    # -- Gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"goal_id"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; Grasp takes 'goal_id' (goal mode)")
        rng = self.np_random
        scene = self.scene
        scene.reset()
        for i in range(self.n_objects):
            scene.set_object(i, random_object(rng, self.object_shapes, hues=self.object_hues))
        scene.commit_objects()
        # Bigger objects first: they are the hardest to fit.
        order = np.argsort([-s.radius for s in scene.specs])
        dropped = False
        for k, i in enumerate(order):
            dropped |= self._put_in_bin(rng, int(i), [int(j) for j in order[:k]])
        scene.teleport_hand(self._home(), 0.0, FINGER_RANGE)
        scene.forward()
        scene.step(int(round((0.3 if dropped else self.settle_time) / scene.dt)))
        self._attempts = 0
        self._lifted = np.zeros(self.n_objects, bool)
        self._last_o = None
        if self.goal_conditioned:
            goal_id = options.get("goal_id")
            self.goal_id = int(rng.integers(self.n_objects)) if goal_id is None else int(goal_id)
            if not 0 <= self.goal_id < self.n_objects:
                raise ValueError(f"goal_id must be in 0..{self.n_objects - 1}, got {self.goal_id}")
            if self.from_pixels:
                self._goal_image = self.render_goal_image()
        scene_obs = self._scene_obs(reset=True)
        self._pre = self._render_bin() if self.record_triplets else None
        info = {"state": self.state()}
        if self.goal_conditioned:
            info["goal_id"] = self.goal_id
        return self._observation(scene_obs), info

    def step(self, action):
        action = self._check_action(action)
        x, y, yaw = self.action_to_grasp(action)
        scene = self.scene
        lifted = self.execute_grasp(x, y, yaw)
        ids = np.flatnonzero(lifted)
        if len(ids) == 0:
            object_id = -1
        else:
            d = np.linalg.norm(scene.object_pos()[ids, :2] - (x, y), axis=1)
            object_id = int(ids[np.argmin(d)])
        info: dict[str, Any] = {"object_id": object_id, "grasp_success": bool(len(ids)), "lifted": lifted}
        need_o = self.record_triplets or (self.goal_conditioned and self.from_pixels)
        o = self._render_object_view() if need_o else None
        if self.record_triplets:
            info["s_pre"] = self._pre
            info["s_post"] = self._render_bin()
            info["o"] = o
        # Put lifted objects back in the bin, open the fingers, let the scene settle.
        rng = self.np_random
        scene.set_fingers(FINGER_RANGE)
        resting = [j for j in range(self.n_objects) if not lifted[j]]
        dropped = False
        for j in ids:
            dropped |= self._put_in_bin(rng, int(j), resting)
            resting.append(int(j))
        scene.forward()
        scene.step(int(round((0.3 if dropped else self.settle_time) / scene.dt)))
        self._attempts += 1
        self._lifted = lifted
        if len(ids):
            self._last_o = o
        scene_obs = self._scene_obs(reset=False)
        if self.record_triplets:
            self._pre = self._render_bin()
        info["state"] = self.state()
        truncated = self._attempts >= self.max_attempts
        if self.goal_conditioned:
            info["goal_id"] = self.goal_id
            success = bool(lifted[self.goal_id])
            info["is_success"] = success
            obs = self._observation(scene_obs)
            reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
            return obs, reward, success, truncated, info
        return scene_obs, float(len(ids) > 0), False, truncated, info

    # -- helpers --------------------------------------------------------------------------------

    def _scene_obs(self, reset: bool):
        if self._observer is not None:
            if reset:
                frames = self._observer.reset(self.scene.data, self.np_random)
            else:
                frames = self._observer.step(self.scene.data)
            return frames if self.action_grid is None else self.action_grid_view(frames)
        parts = [self.scene.hand_pos]
        for i, spec in enumerate(self.scene.specs):
            a = self.scene.object_qpos[i]
            parts += [self.scene.data.qpos[a : a + 7], spec.half_extents]
        return np.concatenate(parts).astype(np.float32)

    def _observation(self, scene_obs):
        if not self.goal_conditioned:
            return scene_obs
        if self.from_pixels:
            achieved = self._last_o if self._last_o is not None else np.zeros((3, *self.triplet_size), np.uint8)
            observation = self._flatten_views(scene_obs, self.camera_labels)
            return {
                "observation": observation,
                "achieved_goal": achieved.copy(),
                "desired_goal": self._goal_image.copy(),
            }
        desired = np.zeros(self.n_objects, np.float32)
        desired[self.goal_id] = 1.0
        return {"observation": scene_obs, "achieved_goal": self._lifted.astype(np.float32), "desired_goal": desired}

    def close(self) -> None:
        for r in (self._bin_renderer, self._object_renderer):
            if r is not None:
                r.close()
        self._bin_renderer = self._object_renderer = None
        super().close()


class GraspGoalEnv(GraspEnv):
    """:class:`GraspEnv` in goal-conditioned mode (``ssrl/GraspGoal-v0``): the only grasping env
    with ``compute_reward``, so that Stable-Baselines3's checker (which takes any env with that
    method for a goal env) and HER see a goal env exactly where there is one."""

    def __init__(self, **options) -> None:
        if options.pop("goal_conditioned", True) is not True:
            raise ValueError("GraspGoalEnv is goal-conditioned; use GraspEnv for plain grasping")
        super().__init__(goal_conditioned=True, **options)

    reached_title = "lifted (object camera)"  # what render_reached shows, for goal pictures

    def render_goal(self) -> np.ndarray:
        """The episode's goal image, ``(T, T, 3)`` uint8 (pictures of goals beside what was lifted)."""
        image = self._goal_image if self._goal_image is not None else self.render_goal_image()
        return image.transpose(1, 2, 0).copy()

    def render_reached(self) -> np.ndarray:
        """What the last grasp lifted, seen by the ``object`` camera, ``(T, T, 3)`` uint8; black
        when it lifted nothing."""
        if not self._lifted.any() or self._last_o is None:
            return np.zeros((*self.triplet_size, 3), np.uint8)
        return self._last_o.transpose(1, 2, 0).copy()

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """1 where the goal object was lifted, else 0; vectorised. In state mode the goals are
        object masks and suffice; in pixel mode the ids come from ``info`` (a dict, or a sequence
        of dicts, with ``lifted`` and ``goal_id``): images alone cannot say which object it is."""
        if not self.from_pixels:
            a = np.asarray(achieved_goal, np.float64)
            d = np.asarray(desired_goal, np.float64)
            return (np.sum(a * d, axis=-1) > 0.5).astype(np.float64)
        infos = [info] if isinstance(info, dict) else list(info) if info is not None else []
        if not infos or not all(isinstance(i, dict) and "lifted" in i and "goal_id" in i for i in infos):
            raise ValueError(
                "in pixel mode GraspGoal's compute_reward needs info with 'lifted' and 'goal_id' (one dict per "
                "goal); image goals cannot be compared exactly, relabel them with a learned embedding"
            )
        rewards = np.array([float(np.asarray(i["lifted"])[int(i["goal_id"])]) for i in infos])
        return rewards[0] if isinstance(info, dict) else rewards
