"""The physical scene of the manipulation tasks: table, gripper, objects, bin, cameras.

This module is the *scene* half of dm_control's scene/task split: it builds the MuJoCo model and
moves the gripper, and knows nothing of rewards or goals (those live in ``push.py`` and
``grasp.py``).

The static part is ``assets/manipulation_scene.xml`` (table, mocap-driven hand with two position-
controlled fingers, cameras ``front``, ``side``, ``top``). :func:`build_xml` adds the task's parts
to it (``n_objects`` object bodies, optionally a bin, and the task's cameras) and returns the MJCF
that :class:`Scene` compiles.

Objects change shape, size and colour between episodes *without recompiling the model*: each
object body carries one geom per shape (box, cylinder, sphere, capsule, ellipsoid) of which exactly
one is active. :meth:`Scene.set_object` switches the active geom, resizes it (updating the
bounding volumes collision detection uses), recolours it, and sets the body's mass and inertia
from the shape at a fixed density, then :func:`mujoco.mj_setConst` refreshes the derived
constants. Inactive geoms are in visual group 3, which no renderer draws, and collide with
nothing.

The gripper is the Fetch/multiworld design: the hand is a free body welded to a mocap body, so the
policy sets where the hand should be and contacts push back through the weld; the fingers are
slide joints driven by position actuators (closing on an object squeezes it with a force that
grows with the gap between target and contact, capped by the actuator's force range). A lifted
object is held by finger friction only.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import mujoco
import numpy as np

SHAPES: tuple[str, ...] = ("box", "cylinder", "sphere", "capsule", "ellipsoid")
_GEOM_TYPE = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}
HIDDEN_GROUP = 3  # MjvOption draws groups 0-2 only: inactive shapes sit here
ARM_GEOMS = ("wrist", "forearm", "upper_arm")  # drawn only (no contacts): what Scene.hide_arm hides
OBJECT_DENSITY = 400.0  # kg/m^3: light plastic toys (a 5 cm cube weighs 50 g)
PARKED_Z = -0.5  # below the table top, out of every camera: where the goal images put unused objects

# Gripper geometry (must agree with assets/manipulation_scene.xml).
FINGER_RANGE = 0.045  # each finger opens this far from the centre
FINGER_CLOSED_CTRL = -0.01  # closing target beyond contact, so the fingers squeeze
PAD_HALF_WIDTH = 0.018  # half-width of a pad across the closing direction
PAD_HALF_THICKNESS = 0.005  # the base file's pads; a task may make them thinner (Scene's pad_half_thickness)
PAD_HEIGHT = 0.07  # the pads span z in [0, PAD_HEIGHT] of the hand frame


def asset_path(name: str = "manipulation_scene.xml"):
    return importlib.resources.files("ssrl") / "assets" / name


# -- objects ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One object's shape, MuJoCo geom size (half-extents) and colour.

    Resting poses (body frame = world axes up to a yaw): boxes, cylinders and ellipsoids stand on
    their ``z`` half-extent; spheres on their radius; capsules lie along the body's ``x`` axis.
    """

    shape: str
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown object shape {self.shape!r}; use one of {SHAPES}")

    @property
    def half_height(self) -> float:
        """Height of the body origin above the surface it rests on."""
        s = self.size
        return {"box": s[2], "cylinder": s[1], "sphere": s[0], "capsule": s[0], "ellipsoid": s[2]}[self.shape]

    @property
    def half_extents(self) -> tuple[float, float, float]:
        """Half-extents of the axis-aligned box around the object in its body frame."""
        s = self.size
        return {
            "box": (s[0], s[1], s[2]),
            "cylinder": (s[0], s[0], s[1]),
            "sphere": (s[0], s[0], s[0]),
            "capsule": (s[1] + s[0], s[0], s[0]),
            "ellipsoid": (s[0], s[1], s[2]),
        }[self.shape]

    @property
    def radius(self) -> float:
        """Horizontal bounding radius (footprint) at any yaw."""
        ex, ey, _ = self.half_extents
        if self.shape in ("cylinder", "sphere"):
            return ex
        if self.shape == "box":
            return math.hypot(ex, ey)
        return max(ex, ey)  # capsule and ellipsoid: their footprint fits in the larger half-axis

    @property
    def volume(self) -> float:
        s = self.size
        if self.shape == "box":
            return 8 * s[0] * s[1] * s[2]
        if self.shape == "cylinder":
            return math.pi * s[0] ** 2 * 2 * s[1]
        if self.shape == "sphere":
            return 4 / 3 * math.pi * s[0] ** 3
        if self.shape == "capsule":
            return math.pi * s[0] ** 2 * 2 * s[1] + 4 / 3 * math.pi * s[0] ** 3
        return 4 / 3 * math.pi * s[0] * s[1] * s[2]

    def inertia(self, mass: float) -> np.ndarray:
        """Principal moments about the body axes (solid, uniform density)."""
        s = self.size
        if self.shape == "box":
            a, b, c = s
            return mass / 3 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
        if self.shape == "cylinder":
            r, h = s[0], s[1]
            side = mass * (3 * r * r + 4 * h * h) / 12
            return np.array([side, side, mass * r * r / 2])
        if self.shape == "sphere":
            return np.full(3, 0.4 * mass * s[0] ** 2)
        if self.shape == "capsule":  # a cylinder of the capsule's full length, lying along x
            r, h = s[0], s[1] + 0.5 * s[0]
            side = mass * (3 * r * r + 4 * h * h) / 12
            return np.array([mass * r * r / 2, side, side])
        a, b, c = s
        return mass / 5 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])


PUCK = ObjectSpec("cylinder", (0.03, 0.02, 0.0), (0.85, 0.15, 0.12, 1.0))

# Size ranges keep every object graspable at any yaw: its largest horizontal extent stays below
# the gripper's opening (2 * FINGER_RANGE = 9 cm) with room to spare.
_SIZE_RANGES = {
    "box": ((0.014, 0.030), (0.014, 0.022), (0.014, 0.032)),
    "cylinder": ((0.015, 0.030), (0.015, 0.035)),
    "sphere": ((0.018, 0.030),),
    "capsule": ((0.013, 0.020), (0.008, 0.018)),
    "ellipsoid": ((0.020, 0.032), (0.016, 0.026), (0.014, 0.022)),
}


ALL_HUES = (0.0, 1.0)


def random_color(rng: np.random.Generator, hues: tuple[float, float] = ALL_HUES) -> tuple[float, float, float, float]:
    """A saturated, reasonably bright colour, so objects stand out from the table; its hue
    uniform in ``hues`` (see :func:`check_hues`)."""
    import colorsys

    lo, hi = hues
    h = (lo + (hi - lo if hi > lo else 1.0 - lo + hi) * rng.uniform()) % 1.0  # (the whole circle: h = u)
    s = rng.uniform(0.55, 1.0)
    v = rng.uniform(0.55, 1.0)
    return (*colorsys.hsv_to_rgb(h, s, v), 1.0)


def random_object(
    rng: np.random.Generator, shapes: Sequence[str] = SHAPES, scale: float = 1.0, hues: tuple[float, float] = ALL_HUES
) -> ObjectSpec:
    """A random object: uniform shape among ``shapes``, sizes uniform in graspable ranges, hue
    uniform in ``hues``."""
    shape = shapes[int(rng.integers(len(shapes)))]
    size = [scale * rng.uniform(lo, hi) for lo, hi in _SIZE_RANGES[shape]]
    size += [0.0] * (3 - len(size))
    return ObjectSpec(shape, tuple(float(s) for s in size), random_color(rng, hues))


def check_hues(hues: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)``: the arc of the hue circle (fractions of a turn, 0 red, 1/3 green, 2/3 blue)
    that random objects' colours are drawn from; ``lo > hi`` wraps through red (``(0.9, 0.1)``),
    ``(0, 1)`` is every hue. Two disjoint arcs hold colours out of training."""
    hues = tuple(float(h) for h in hues)
    empty = len(hues) == 2 and (hues[0] == hues[1] or hues == (1.0, 0.0))  # arcs of no width
    if len(hues) != 2 or not all(0.0 <= h <= 1.0 for h in hues) or empty:
        raise ValueError(f"object_hues must be two different hues (lo, hi) in [0, 1], got {list(hues)}")
    return hues  # type: ignore[return-value]


def check_shapes(shapes: Sequence[str]) -> tuple[str, ...]:
    shapes = tuple(shapes)
    bad = [s for s in shapes if s not in SHAPES]
    if not shapes or bad:
        raise ValueError(f"object shapes must be a non-empty subset of {SHAPES}, got {list(shapes)}")
    return shapes


# -- model building -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BinSpec:
    """An open box on the table: inner half-size, wall height and thickness, floor thickness."""

    half_size: float = 0.13
    wall_height: float = 0.06
    wall_thickness: float = 0.01
    floor_thickness: float = 0.006

    @property
    def floor_z(self) -> float:
        return self.floor_thickness


@dataclasses.dataclass(frozen=True)
class CameraDef:
    """A camera the task adds: fixed in the world, or mounted on a body (``body``)."""

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float = 45.0
    body: str | None = None


def look_at(pos: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, 0, 1)) -> str:
    """MJCF ``xyaxes`` of a camera at ``pos`` looking at ``target`` (image up close to ``up``)."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    right = np.cross(f, np.asarray(up, float))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, f)
    return " ".join(f"{v:.6f}" for v in (*right, *cam_up))


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def build_xml(
    n_objects: int,
    bin_spec: BinSpec | None = None,
    cameras: Sequence[CameraDef] = (),
    pad_half_thickness: float | None = None,
) -> str:
    """The scene's MJCF: the base file plus objects, bin and task cameras; ``pad_half_thickness``
    replaces the pads' (their inner faces stay at the fingers' joint positions)."""
    root = ET.fromstring(asset_path().read_text())
    world = root.find("worldbody")
    bodies = {b.get("name"): b for b in root.iter("body")}
    if pad_half_thickness is not None:
        t = float(pad_half_thickness)
        if not 0 < t <= PAD_HALF_THICKNESS:
            raise ValueError(f"pad_half_thickness must be in (0, {PAD_HALF_THICKNESS}], got {t}")
        for geom in root.iter("geom"):
            if geom.get("name") in ("left_pad", "right_pad"):
                side = 1 if geom.get("name") == "left_pad" else -1
                geom.set("pos", _fmt((0, side * t, PAD_HEIGHT / 2)))
                geom.set("size", _fmt((PAD_HALF_WIDTH, t, PAD_HEIGHT / 2)))
    if bin_spec is not None:
        b = bin_spec
        body = ET.SubElement(world, "body", name="bin", pos="0 0 0")
        outer = b.half_size + b.wall_thickness
        ET.SubElement(
            body,
            "geom",
            name="bin_floor",
            type="box",
            material="bin",
            pos=_fmt((0, 0, b.floor_thickness / 2)),
            size=_fmt((outer, outer, b.floor_thickness / 2)),
        )
        zc, hz = b.wall_height / 2, b.wall_height / 2
        c = b.half_size + b.wall_thickness / 2
        for name, pos, size in (
            ("bin_wall_px", (c, 0, zc), (b.wall_thickness / 2, outer, hz)),
            ("bin_wall_nx", (-c, 0, zc), (b.wall_thickness / 2, outer, hz)),
            ("bin_wall_py", (0, c, zc), (b.half_size, b.wall_thickness / 2, hz)),
            ("bin_wall_ny", (0, -c, zc), (b.half_size, b.wall_thickness / 2, hz)),
        ):
            ET.SubElement(body, "geom", name=name, type="box", material="bin", pos=_fmt(pos), size=_fmt(size))
    for i in range(n_objects):
        body = ET.SubElement(world, "body", name=f"object{i}", pos=_fmt((0, 0, PARKED_Z - 0.1 * i)))
        ET.SubElement(body, "freejoint", name=f"object{i}")
        # Mass and inertia are set per episode from the active shape (Scene.set_object).
        ET.SubElement(body, "inertial", pos="0 0 0", mass="0.05", diaginertia="1e-5 1e-5 1e-5")
        for shape in SHAPES:
            attrs = dict(
                name=f"object{i}_{shape}",
                type=shape,
                size="0.02 0.02 0.02",
                rgba="0.5 0.5 0.5 1",
                group=str(HIDDEN_GROUP),
                contype="0",
                conaffinity="0",
                density="0",
            )
            attrs["class"] = "object"
            if shape == "capsule":
                attrs["euler"] = "0 1.5707963267948966 0"  # lying along the body's x axis
            ET.SubElement(body, "geom", attrs)
    for cam in cameras:
        parent = world if cam.body is None else bodies[cam.body]
        ET.SubElement(
            parent,
            "camera",
            name=cam.name,
            pos=_fmt(cam.pos),
            xyaxes=look_at(cam.pos, cam.target),
            fovy=f"{cam.fovy:g}",
        )
    return ET.tostring(root, encoding="unicode")


# -- the scene ----------------------------------------------------------------------------------


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def quat_yaw(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def smoothstep(t: np.ndarray) -> np.ndarray:
    """0 -> 1 with zero velocity at both ends (a gentle move profile for the mocap)."""
    return t * t * (3 - 2 * t)


class Scene:
    """The MuJoCo model and data of one manipulation scene, and the gripper's controls.

    Args:
        n_objects: object bodies in the model (each takes one :class:`ObjectSpec` at a time).
        bin_spec: add a bin centred on the origin.
        cameras: task cameras added to the base file's ``front``, ``side`` and ``top``.
        pad_half_thickness: thinner finger pads than the base file's (``PAD_HALF_THICKNESS``).
    """

    def __init__(
        self,
        n_objects: int,
        bin_spec: BinSpec | None = None,
        cameras: Sequence[CameraDef] = (),
        pad_half_thickness: float | None = None,
    ) -> None:
        self.n_objects = n_objects
        self.bin = bin_spec
        self.pad_half_thickness = PAD_HALF_THICKNESS if pad_half_thickness is None else float(pad_half_thickness)
        self.xml = build_xml(n_objects, bin_spec, cameras, pad_half_thickness)
        self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.data = mujoco.MjData(self.model)
        m = self.model
        name2id = lambda kind, name: mujoco.mj_name2id(m, kind, name)  # noqa: E731
        self.hand_body = name2id(mujoco.mjtObj.mjOBJ_BODY, "hand")
        self.mocap_id = m.body_mocapid[name2id(mujoco.mjtObj.mjOBJ_BODY, "mocap")]
        self.arm_mocap_id = m.body_mocapid[name2id(mujoco.mjtObj.mjOBJ_BODY, "arm")]
        hand_joint = name2id(mujoco.mjtObj.mjOBJ_JOINT, "hand")
        self.hand_qpos = slice(m.jnt_qposadr[hand_joint], m.jnt_qposadr[hand_joint] + 7)
        self.hand_qvel = slice(m.jnt_dofadr[hand_joint], m.jnt_dofadr[hand_joint] + 6)
        self.finger_qpos = np.array(
            [m.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, f)] for f in ("left_finger", "right_finger")]
        )
        self.finger_qvel = np.array(
            [m.jnt_dofadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, f)] for f in ("left_finger", "right_finger")]
        )
        self.pad_geoms = np.array([name2id(mujoco.mjtObj.mjOBJ_GEOM, g) for g in ("left_pad", "right_pad")])
        self.gripper_geoms = np.array([i for i in range(m.ngeom) if self._is_gripper_body(m.geom_bodyid[i])])
        self.is_gripper_geom = np.zeros(m.ngeom, bool)
        self.is_gripper_geom[self.gripper_geoms] = True
        self.object_bodies = np.array([name2id(mujoco.mjtObj.mjOBJ_BODY, f"object{i}") for i in range(n_objects)], int)
        self.object_qpos = np.array([m.jnt_qposadr[m.body_jntadr[b]] for b in self.object_bodies], int)
        self.object_qvel = np.array([m.jnt_dofadr[m.body_jntadr[b]] for b in self.object_bodies], int)
        self.object_geoms = np.array(
            [[name2id(mujoco.mjtObj.mjOBJ_GEOM, f"object{i}_{s}") for s in SHAPES] for i in range(n_objects)], int
        ).reshape(n_objects, len(SHAPES))
        self.geom_object = np.full(m.ngeom, -1, int)  # geom id -> object index (or -1)
        for i in range(n_objects):
            self.geom_object[self.object_geoms[i]] = i
        self.specs: list[ObjectSpec | None] = [None] * n_objects
        self._state_spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self._state = np.empty(mujoco.mj_stateSize(m, self._state_spec))
        self.substeps_taken = 0  # physics steps since construction (for benchmarks)

    def _is_gripper_body(self, body: int) -> bool:
        while body > 0:
            if body == self.hand_body:
                return True
            body = self.model.body_parentid[body]
        return False

    def hide_arm(self) -> None:
        """Stop drawing the arm and wrist (drawn-only geoms, so physics is unchanged): the hand
        is then seen as its palm and fingers only."""
        for name in ARM_GEOMS:
            self.model.geom_group[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)] = HIDDEN_GROUP

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        for i in range(self.n_objects):
            self.park_object(i)

    def get_state(self) -> np.ndarray:
        """Everything the next physics step depends on (MuJoCo's integration state)."""
        state = np.empty_like(self._state)
        mujoco.mj_getState(self.model, self.data, state, self._state_spec)
        return state

    def set_state(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self.model, self.data, state, self._state_spec)
        mujoco.mj_forward(self.model, self.data)

    def forward(self) -> None:
        """Recompute positions, contacts and cameras from the state (after a teleport or a
        step). It never changes what the next step computes (tested), so it may be called at
        will; the drawn-only arm is moved onto the hand here."""
        self.data.mocap_pos[self.arm_mocap_id] = self.data.qpos[self.hand_qpos][:3]
        mujoco.mj_forward(self.model, self.data)

    def step(self, n: int = 1, sync: bool = True) -> None:
        """``n`` physics steps; with ``sync`` the kinematics then show the new state (MuJoCo's
        step leaves positions and contacts computed at the start of its last step)."""
        mujoco.mj_step(self.model, self.data, nstep=n)
        self.substeps_taken += n
        if sync:
            self.forward()

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep)

    def ground_truth(self) -> np.ndarray:
        """``[qpos, qvel]`` as float32: hand pose (7) and fingers (2), then each object's pose
        (7), then the velocities in the same order (6 + 2 + 6 per object)."""
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float32)

    # -- gripper ----------------------------------------------------------------------------

    @property
    def hand_pos(self) -> np.ndarray:
        return self.data.qpos[self.hand_qpos][:3].copy()

    @property
    def hand_vel(self) -> np.ndarray:
        return self.data.qvel[self.hand_qvel][:3].copy()

    @property
    def mocap_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self.mocap_id].copy()

    def set_mocap(self, pos: Sequence[float], yaw: float | None = None) -> None:
        self.data.mocap_pos[self.mocap_id] = pos
        if yaw is not None:
            self.data.mocap_quat[self.mocap_id] = yaw_quat(yaw)

    def teleport_hand(
        self, pos: Sequence[float], yaw: float = 0.0, opening: float | Sequence[float] | None = None
    ) -> None:
        """Put hand and mocap at ``pos`` with ``yaw``, at rest (for resets and free-space moves
        where nothing touches the gripper). ``opening`` also sets the fingers' positions and
        targets: one for both, or ``(left, right)`` (the left finger opens along the hand's +y)."""
        self.data.qpos[self.hand_qpos] = [*pos, *yaw_quat(yaw)]
        self.data.qvel[self.hand_qvel] = 0.0
        self.set_mocap(pos, yaw)
        if opening is not None:
            self.data.qpos[self.finger_qpos] = opening
            self.data.qvel[self.finger_qvel] = 0.0
            self.data.ctrl[:2] = opening

    def set_fingers(self, target: float) -> None:
        """Finger position target (0 closed, FINGER_RANGE open; below 0 squeezes)."""
        self.data.ctrl[:2] = target

    def close_fingers(self, duration: float, speed: float, target: float = FINGER_CLOSED_CTRL) -> None:
        """Close the fingers as a gripper does, at ``speed`` m/s: each finger's position target
        moves from where it is to ``target`` at that speed, over ``duration`` seconds of physics
        (the rest of it squeezing). A target set at once (:meth:`set_fingers`) slams the fingers
        shut at over 3 m/s, which flicks objects they strike at an edge out of the bin."""
        start = self.data.ctrl[:2].copy()
        n = max(1, int(round(duration / self.dt)))
        for k in range(1, n + 1):
            self.data.ctrl[:2] = np.maximum(target, start - speed * k * self.dt)
            self.step(sync=False)
        self.forward()

    @property
    def finger_opening(self) -> np.ndarray:
        return self.data.qpos[self.finger_qpos].copy()

    def move_hand(
        self,
        target: Sequence[float],
        duration: float,
        yaw: float | None = None,
        max_force: float | None = None,
        patience: float = 0.1,
    ) -> bool:
        """Drive the mocap from where it is to ``target`` along a smooth straight line in
        ``duration`` seconds of physics (the hand follows through the weld).

        With ``max_force`` the move is guarded, as a robot with a force limit moves among things
        it may bump into: whenever what the gripper touches pushes back along the motion with more
        than ``max_force`` newtons (:meth:`gripper_contact_force`), the mocap stops where the hand
        is and the move waits, going on (from there) if the obstacle gives way, for at most
        ``patience`` seconds of waiting in all; then the hand stays where it is. Without a limit
        the weld pushes as hard as it takes to follow the mocap, 1 kN and more: it drives a light
        object under a finger into and through the bin floor (MuJoCo's soft contacts yield in
        proportion to the mass they hold up) and forces a finger down past a wall's top edge,
        and what is squeezed that way springs out when released. Returns whether the hand got to
        ``target``.
        """
        start = self.mocap_pos
        target = np.asarray(target, float)
        n = max(1, int(round(duration / self.dt)))
        if yaw is not None:
            self.data.mocap_quat[self.mocap_id] = yaw_quat(yaw)
        if max_force is None:
            for s in smoothstep(np.arange(1, n + 1) / n):
                self.data.mocap_pos[self.mocap_id] = start + s * (target - start)
                self.step(sync=False)
            self.forward()
            return True
        length = float(np.linalg.norm(target - start))
        if length == 0:
            self.step(n, sync=True)
            return True
        direction = (target - start) / length
        # Legs of the smooth profile at the move's mean speed: the first from the start, one more
        # from wherever the hand was held each time the obstacle gives way.
        leg_from, leg_steps, k, held = start, n, 0, False
        for _ in range(n + int(round(patience / self.dt))):
            if k == leg_steps and not held:
                break
            # The contact forces of the last step (MuJoCo's step leaves them with its contacts).
            if -self.gripper_contact_force() @ direction > max_force:
                self.data.mocap_pos[self.mocap_id] = self.hand_pos  # stop pushing: hold here
                held = True
            else:
                if held:
                    leg_from, held, k = self.mocap_pos, False, 0
                    leg_steps = max(1, int(round(n * np.linalg.norm(target - leg_from) / length)))
                k += 1
                self.data.mocap_pos[self.mocap_id] = leg_from + smoothstep(k / leg_steps) * (target - leg_from)
            self.step(sync=False)
        arrived = k == leg_steps and not held
        if not arrived:
            self.data.mocap_pos[self.mocap_id] = self.hand_pos  # out of patience: stay here
        self.forward()
        return arrived

    def glide(self, target: Sequence[float], n_steps: int, chunks: int = 5) -> None:
        """Move the mocap to ``target`` at constant speed over ``n_steps`` physics steps, in
        ``chunks`` equal jumps (a smooth drag for the weld, unlike one jump of the whole way,
        which yanks the hand)."""
        start = self.mocap_pos
        target = np.asarray(target, float)
        chunks = max(1, min(chunks, n_steps))
        done = 0
        for k in range(1, chunks + 1):
            self.data.mocap_pos[self.mocap_id] = start + (k / chunks) * (target - start)
            upto = round(k * n_steps / chunks)
            self.step(upto - done, sync=False)
            done = upto
        self.forward()

    # -- objects ----------------------------------------------------------------------------

    def set_object(self, i: int, spec: ObjectSpec) -> None:
        """Give object ``i`` a new shape, size and colour (call :meth:`commit_objects` after)."""
        m = self.model
        for k, shape in enumerate(SHAPES):
            g = self.object_geoms[i, k]
            active = shape == spec.shape
            m.geom_group[g] = 0 if active else HIDDEN_GROUP
            m.geom_contype[g] = m.geom_conaffinity[g] = 1 if active else 0
            if not active:
                continue
            m.geom_size[g] = spec.size
            m.geom_rgba[g] = spec.rgba
            s = spec.size
            aabb = {
                "box": (s[0], s[1], s[2]),
                "cylinder": (s[0], s[0], s[1]),
                "sphere": (s[0],) * 3,
                "capsule": (s[0], s[0], s[0] + s[1]),
                "ellipsoid": (s[0], s[1], s[2]),
            }[shape]
            m.geom_aabb[g] = (0, 0, 0, *aabb)  # in the geom's own frame
            m.geom_rbound[g] = {
                "box": math.sqrt(s[0] ** 2 + s[1] ** 2 + s[2] ** 2),
                "cylinder": math.hypot(s[0], s[1]),
                "sphere": s[0],
                "capsule": s[0] + s[1],
                "ellipsoid": max(s),
            }[shape]
        body = self.object_bodies[i]
        mass = OBJECT_DENSITY * spec.volume
        m.body_mass[body] = mass
        m.body_inertia[body] = spec.inertia(mass)
        m.body_ipos[body] = 0.0
        m.body_iquat[body] = (1, 0, 0, 0)
        self.specs[i] = spec

    def commit_objects(self) -> None:
        """Recompute the model constants that depend on masses (after :meth:`set_object`)."""
        mujoco.mj_setConst(self.model, self.data)

    def object_pos(self, i: int | None = None) -> np.ndarray:
        if i is None:
            return np.stack([self.data.qpos[a : a + 3] for a in self.object_qpos])
        a = self.object_qpos[i]
        return self.data.qpos[a : a + 3].copy()

    def object_quat(self, i: int) -> np.ndarray:
        a = self.object_qpos[i]
        return self.data.qpos[a + 3 : a + 7].copy()

    def object_vel(self, i: int) -> np.ndarray:
        a = self.object_qvel[i]
        return self.data.qvel[a : a + 3].copy()

    def set_object_pose(self, i: int, pos: Sequence[float], quat: Sequence[float] = (1, 0, 0, 0)) -> None:
        a, v = self.object_qpos[i], self.object_qvel[i]
        self.data.qpos[a : a + 3] = pos
        self.data.qpos[a + 3 : a + 7] = quat
        self.data.qvel[v : v + 6] = 0.0

    def place_object(self, i: int, xy: Sequence[float], yaw: float, surface_z: float = 0.0) -> None:
        """Object ``i`` at rest on a surface at ``surface_z``, at ``xy`` turned by ``yaw``."""
        spec = self.specs[i]
        self.set_object_pose(i, (xy[0], xy[1], surface_z + spec.half_height + 1e-4), yaw_quat(yaw))

    def park_object(self, i: int) -> None:
        """Move object ``i`` below the table, out of every camera's view."""
        self.set_object_pose(i, (0.0, 0.0, PARKED_Z - 0.1 * i))

    def touching(self, geoms_a: np.ndarray, geoms_b: np.ndarray) -> bool:
        d = self.data
        for c in range(d.ncon):
            g1, g2 = d.contact.geom1[c], d.contact.geom2[c]
            if (g1 in geoms_a and g2 in geoms_b) or (g2 in geoms_a and g1 in geoms_b):
                return True
        return False

    def gripper_contact_force(self) -> np.ndarray:
        """Net force (world frame, newtons) that contacts with everything else exert on the
        gripper: what a wrist force sensor reads, less gravity and inertia."""
        m, d = self.model, self.data
        total = np.zeros(3)
        if d.ncon == 0:
            return total
        on1 = self.is_gripper_geom[d.contact.geom1]
        wrench = np.zeros(6)
        for c in np.flatnonzero(on1 != self.is_gripper_geom[d.contact.geom2]):
            mujoco.mj_contactForce(m, d, c, wrench)
            # The contact frame's first axis points from geom1 to geom2; the force is geom1's on geom2.
            force = d.contact.frame[c].reshape(3, 3).T @ wrench[:3]
            total += -force if on1[c] else force
        return total

    def objects_touching_gripper(self) -> set[int]:
        """Objects in contact with any gripper geom."""
        d = self.data
        found = set()
        for c in range(d.ncon):
            g1, g2 = d.contact.geom1[c], d.contact.geom2[c]
            if g1 in self.gripper_geoms and self.geom_object[g2] >= 0:
                found.add(int(self.geom_object[g2]))
            elif g2 in self.gripper_geoms and self.geom_object[g1] >= 0:
                found.add(int(self.geom_object[g1]))
        return found
