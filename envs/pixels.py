"""Pixel observations shared by every env of the suite: cameras, frame stack, distractors.

An env owns its physics; a :class:`PixelObserver` turns the physics state into the observation:
it renders all requested cameras in one call (same instant), composites a distracting
background where nothing was drawn, and keeps a stack of the last ``frame_stack`` frames per
camera, channels-first and oldest first (the newest frame is ``obs[-3:]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from .distractors import Background, DistractorSpec
from .render import QUALITIES, CameraSpec, Quality, Renderer, camera_names, resolve_camera

# The options that say how an env draws its images (the pixel observation, and ``render()``):
# none of them changes the physics, the actions, the rewards or the ground-truth state.
# ``frame_stack`` also stacks DMC's state observations, whose default stack is 1.
PIXEL_OPTIONS: tuple[str, ...] = (
    "size",
    "camera",
    "cameras",
    "frame_stack",
    "quality",
    "distractor",
    "render_mode",
    "render_size",
)


# Options of some envs that only reshape their pixel observation (GraspEnv's action_grid): no
# meaning in state mode, so the state form drops them too.
PIXEL_VIEW_OPTIONS: tuple[str, ...] = ("action_grid",)


def state_mode_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """An env's options for its state-observation form: ``env_kwargs`` without
    :data:`PIXEL_OPTIONS` and :data:`PIXEL_VIEW_OPTIONS`, with ``from_pixels=False`` (a copy;
    the argument is unchanged).

    What runs an env only for its states (data collection renders its frames with an observer of
    its own; state-based RL reads no pixels) asks for this, its cheapest form."""
    kwargs = {k: v for k, v in env_kwargs.items() if k not in PIXEL_OPTIONS + PIXEL_VIEW_OPTIONS}
    kwargs["from_pixels"] = False
    return kwargs


# The largest image side an env renders: beyond it a frame stack alone takes gigabytes (a typo
# like size=100000 asked numpy for 28 GiB before it was refused by name).
MAX_IMAGE_SIDE = 4096


def parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``84`` or ``(height, width)`` -> ``(height, width)``, both in [1, MAX_IMAGE_SIDE]."""
    whole = (int, np.integer)
    if isinstance(size, whole) and not isinstance(size, bool):
        height = width = int(size)
    elif (
        isinstance(size, Sequence)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(s, whole) and not isinstance(s, bool) for s in size)
    ):
        height, width = (int(s) for s in size)
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    if max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(f"image size must be at most {MAX_IMAGE_SIDE} pixels a side, got {size!r}")
    return height, width


def check_count(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer option in ``[minimum, maximum]``, or a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """A true/false option (Python or NumPy bool), or a ValueError that says so (``1`` and
    ``"no"`` are refused: a YAML or ``-o`` typo should not silently mean something)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_action(action, space: gym.spaces.Box, env_name: str) -> np.ndarray:
    """An action as float64 clipped to [-1, 1], or a ValueError naming the expected shape or the
    non-finite entries (every env of the suite acts in [-1, 1])."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != space.shape:
        raise ValueError(f"action of shape {action.shape} for {env_name}, which takes shape {space.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action contains NaN or inf: {action}")
    return np.clip(action, -1.0, 1.0)


def plane_geoms(model: mujoco.MjModel) -> list[int]:
    """Ids of the plane geoms (floors): what the distractor mode may hide."""
    return [i for i in range(model.ngeom) if model.geom_type[i] == mujoco.mjtGeom.mjGEOM_PLANE]


class PixelObserver:
    """Renders, composites and stacks frames for one env.

    Args:
        model: the env's ``MjModel`` (the renderer may adjust its visual settings).
        size: ``(height, width)``.
        cameras: one or more camera specs; with more than one the observation is a dict keyed
            by camera name.
        frame_stack: frames per observation (>= 1).
        quality: ``"fast"`` or ``"faithful"`` rendering.
        distractor: background replacement, or ``None``.
        floor_geoms: geoms hidden (replaced by the background) when the distractor asks for it.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        size: tuple[int, int],
        cameras: Sequence[CameraSpec],
        frame_stack: int,
        quality: Quality = "fast",
        distractor: DistractorSpec | None = None,
        floor_geoms: Sequence[int] = (),
    ) -> None:
        self.height, self.width = size
        self.frame_stack = check_count("frame_stack", frame_stack)
        self.renderer = Renderer(
            model, self.height, self.width, cameras, quality, hidden_geoms=floor_geoms if distractor else ()
        )
        labels = self.renderer.camera_labels
        if len(set(labels)) != len(labels):
            raise ValueError(f"cameras must be distinct, got {labels}")
        self.camera_labels = labels
        self.background: Background | None = distractor.build(self.height, self.width) if distractor else None
        self._frames = np.empty((len(labels), self.height, self.width, 3), np.uint8)
        self._stack = np.zeros((len(labels), 3 * self.frame_stack, self.height, self.width), np.uint8)

    @property
    def multi_view(self) -> bool:
        return len(self.camera_labels) > 1

    def observation_space(self) -> gym.Space:
        box = gym.spaces.Box(0, 255, (3 * self.frame_stack, self.height, self.width), np.uint8)
        if self.multi_view:
            return gym.spaces.Dict(dict.fromkeys(self.camera_labels, box))
        return box

    def _render(self, data: mujoco.MjData) -> np.ndarray:
        """Render all cameras into ``self._frames`` (n, H, W, 3) with the background composited."""
        if self.background is None:
            return self.renderer.render(data, out=self._frames)
        frames, mask = self.renderer.render(data, out=self._frames, depth=True)
        backdrop = self.background.next_frame()
        for i in range(len(frames)):
            frames[i][mask[i]] = backdrop[mask[i]]
        return frames

    def reset(self, data: mujoco.MjData, rng: np.random.Generator) -> np.ndarray | dict[str, np.ndarray]:
        """Start a new episode: new background, stack filled with copies of the first frame."""
        if self.background is not None:
            self.background.reset(rng)
        frames = self._render(data).transpose(0, 3, 1, 2)
        self._stack[:] = np.tile(frames, (1, self.frame_stack, 1, 1))
        return self._observation()

    def step(self, data: mujoco.MjData) -> np.ndarray | dict[str, np.ndarray]:
        frames = self._render(data).transpose(0, 3, 1, 2)
        self._stack[:, :-3] = self._stack[:, 3:]
        self._stack[:, -3:] = frames
        return self._observation()

    def latest_frames(self) -> np.ndarray:
        """The newest frame of every camera, (n_cameras, H, W, 3)."""
        return self._frames.copy()

    def _observation(self) -> np.ndarray | dict[str, np.ndarray]:
        if self.multi_view:
            return {label: self._stack[i].copy() for i, label in enumerate(self.camera_labels)}
        return self._stack[0].copy()

    def close(self) -> None:
        self.renderer.close()


class PixelEnv(gym.Env):
    """What every env of the suite shares around its pixels (DMC tasks and our scenes alike):
    the pixel options and their checks, observers over its MuJoCo model, ``render()`` and
    closing them.

    A subclass provides ``model`` and ``data`` (its ``MjModel`` and ``MjData``),
    ``default_cameras()`` and ``replaced_surfaces(spec)`` (the geoms a distractor hides), and
    calls :meth:`_setup_pixels` with the :data:`PIXEL_OPTIONS` and ``from_pixels`` it was given,
    once ``model`` is available and before it builds its observation space.
    """

    model: mujoco.MjModel
    data: mujoco.MjData

    def _setup_pixels(
        self,
        *,
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
        """Check the pixel options and set the env up with them: ``from_pixels``, ``size``,
        ``frame_stack``, ``distractor`` (a :class:`DistractorSpec` or None), ``render_mode``,
        ``camera_labels`` and, in pixel mode, the observer of its observation (``_observer``).

        Every option is checked in state mode too (``render()`` and data collection use the
        cameras and the quality there); a distractor is refused in state mode."""
        if camera is not None and cameras is not None:
            raise ValueError("give either camera= or cameras=, not both")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; use one of {self.metadata['render_modes']}")
        if quality not in QUALITIES:
            raise ValueError(f"unknown render quality {quality!r}; use one of {QUALITIES}")
        self.from_pixels = check_flag("from_pixels", from_pixels)
        self.frame_stack = check_count("frame_stack", frame_stack)
        self.size = parse_size(size)
        self.render_mode = render_mode
        self.distractor = DistractorSpec.parse(distractor)
        if self.distractor is not None and not self.from_pixels:
            raise ValueError("a distractor applies to pixel observations only (from_pixels=True)")
        if cameras is None:
            cameras = self.default_cameras() if camera is None else [camera]
        self._cameras = list(cameras)
        self.check_cameras(self._cameras)
        self._quality = quality
        self._render_size = parse_size(render_size) if render_size is not None else None
        self._render_renderer: Renderer | None = None
        self._observer: PixelObserver | None = None
        if self.from_pixels:
            self._observer = self.make_observer(self.size, self._cameras, self.frame_stack, quality, self.distractor)
        self.camera_labels = self._observer.camera_labels if self._observer else []

    def camera_names(self) -> list[str]:
        """The cameras of this env's model, by name."""
        return camera_names(self.model)

    def check_cameras(self, cameras: Sequence[CameraSpec]) -> None:
        """Raise a ValueError naming the model's cameras for any camera it does not have."""
        if len(cameras) == 0:
            raise ValueError(f"at least one camera is needed; this scene has cameras {self.camera_names()}")
        for cam in cameras:
            resolve_camera(self.model, cam)

    def make_observer(
        self,
        size: int | Sequence[int] = 84,
        cameras: Sequence[CameraSpec] | None = None,
        frame_stack: int = 1,
        quality: Quality = "fast",
        distractor: str | dict | DistractorSpec | None = None,
    ) -> PixelObserver:
        """A pixel observer over this env's physics (the env's own observation uses one; data
        collection makes another with the cameras it records)."""
        spec = DistractorSpec.parse(distractor)
        cameras = list(cameras) if cameras else self.default_cameras()
        self.check_cameras(cameras)
        floors = self.replaced_surfaces(spec) if spec else ()
        return PixelObserver(self.model, parse_size(size), cameras, frame_stack, quality, spec, floors)

    def render(self):
        if self.render_mode is None:
            raise ValueError('render() needs render_mode="rgb_array" at construction')
        if self._render_size is None and self._observer is not None:
            return self._observer.latest_frames()[0]
        if self._render_renderer is None:
            size = self._render_size or self.size
            self._render_renderer = Renderer(self.model, *size, self._cameras[:1], self._quality)
        return self._render_renderer.render(self.data)[0]

    def close(self) -> None:
        if self._observer is not None:
            self._observer.close()
            self._observer = None
        if self._render_renderer is not None:
            self._render_renderer.close()
            self._render_renderer = None
        super().close()


class AgentCamera(gym.Wrapper):
    """A pixel env rendering several cameras (``cameras=[A, B, ...]``), seen by an agent through
    the first: the observation is camera A's frame stack, and each step's ``info["views"]``
    holds the newest frame ``(3, H, W)`` of every other camera, rendered at the same instant
    (so a replay can keep them for multi-view objectives such as TCN's; the agent never reads
    them). ``agent_camera``, ``view_names`` and ``view_shapes`` say what it gives;
    ``keep_views=False`` gives no views (the other cameras are still rendered: the env draws
    them in one call) and empty ``view_names`` and ``view_shapes``, for agents whose replay has
    no use for them."""

    def __init__(self, env: gym.Env, keep_views: bool = True) -> None:
        labels = list(getattr(env.unwrapped, "camera_labels", []))
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or len(labels) < 2 or set(space.spaces) != set(labels):
            raise ValueError(
                f"AgentCamera needs a pixel env of at least 2 cameras (its observation a dict of them, e.g. "
                f"cameras=[fixed, lookatcart]); this one observes {space} with cameras {labels}"
            )
        super().__init__(env)
        self.agent_camera, self._others = labels[0], tuple(labels[1:])
        self.observation_space = space[self.agent_camera]
        # The observation is one of the env's own frame stacks (what sets an agent's frame_stack).
        self.frame_stack_space = self.observation_space
        self._shapes = {name: (3, *space[name].shape[1:]) for name in self._others}
        self.keep_views = bool(keep_views)

    @property
    def view_names(self) -> tuple[str, ...]:
        return self._others if self.keep_views else ()

    @property
    def view_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes) if self.keep_views else {}

    def _split(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        if self.keep_views:
            info = dict(info, views={name: obs[name][-3:] for name in self._others})
        return obs[self.agent_camera], info

    def reset(self, **kwargs):
        return self._split(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info


def is_multi_camera(env: gym.Env) -> bool:
    """Whether ``env`` observes several cameras as a dict of frame stacks (what
    :class:`AgentCamera` takes)."""
    labels = getattr(env.unwrapped, "camera_labels", [])
    space = env.observation_space
    return isinstance(space, gym.spaces.Dict) and len(labels) > 1 and set(space.spaces) == set(labels)
