"""Pixel observations shared by every env of the suite: cameras, frame stack, distractors.

An env owns its physics; a :class:`PixelObserver` turns the physics state into the observation:
it renders all requested cameras in one call (same instant), composites a distracting
background where nothing was drawn, and keeps a stack of the last ``frame_stack`` frames per
camera, channels-first and oldest first (the newest frame is ``obs[-3:]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from .distractors import Background, DistractorSpec
from .render import CameraSpec, Quality, Renderer, camera_names, resolve_camera


def parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``84`` or ``(height, width)`` -> ``(height, width)``, both positive."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        height = width = int(size)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        height, width = (int(s) for s in size)
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return height, width


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
        if isinstance(frame_stack, bool) or not isinstance(frame_stack, (int, np.integer)) or frame_stack < 1:
            raise ValueError(f"frame_stack must be a positive integer, got {frame_stack!r}")
        self.height, self.width = size
        self.frame_stack = int(frame_stack)
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
            return gym.spaces.Dict({label: box for label in self.camera_labels})
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
    camera checks, observers over its MuJoCo model, ``render()`` and closing them.

    A subclass provides ``model`` and ``data`` (its ``MjModel`` and ``MjData``),
    ``default_cameras()`` and ``replaced_surfaces(spec)`` (the geoms a distractor hides), and
    sets ``size``, ``render_mode``, ``_cameras``, ``_quality``, ``_render_size``, ``_observer``
    and ``_render_renderer`` in its constructor.
    """

    model: mujoco.MjModel
    data: mujoco.MjData

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
