"""What the manipulation envs share with :class:`~ssrl.envs.dmc.DMCEnv`: pixels, cameras, options.

A :class:`ManipulationEnv` owns a :class:`~ssrl.envs.manipulation.scene.Scene` (the physics) and,
in pixel mode, a :class:`~ssrl.envs.pixels.PixelObserver` over it. The options and methods are
those of ``DMCEnv``: ``from_pixels``, ``size``, ``camera``/``cameras``, ``frame_stack``,
``quality``, ``distractor``, ``render_mode``; ``model``, ``data``, ``default_cameras()``,
``make_observer()``, ``action_repeat`` and ``info["state"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np

from ..distractors import DistractorSpec
from ..pixels import PixelEnv, PixelObserver, check_action, parse_size, plane_geoms
from ..render import QUALITIES, CameraSpec, Quality, Renderer
from .scene import Scene

def check_count(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer option in ``[minimum, maximum]``, or a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


class ManipulationEnv(PixelEnv):
    """Base of the tabletop envs: the scene, the pixel observer, and the shared options.

    Subclasses build ``self.scene`` before calling :meth:`_setup_pixels`, and implement
    ``reset``/``step``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}
    action_repeat = 1
    default_camera: str = "front"
    record_keys: tuple[str, ...] = ()

    def _setup_pixels(
        self,
        scene: Scene,
        *,
        from_pixels: bool,
        size: int | Sequence[int],
        camera: CameraSpec | None,
        cameras: Sequence[CameraSpec] | None,
        frame_stack: int,
        quality: Quality,
        distractor: str | dict | DistractorSpec | None,
        render_mode: str | None,
        render_size: int | Sequence[int] | None,
    ) -> None:
        if camera is not None and cameras is not None:
            raise ValueError("give either camera= or cameras=, not both")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; use one of {self.metadata['render_modes']}")
        if quality not in QUALITIES:
            raise ValueError(f"unknown render quality {quality!r}; use one of {QUALITIES}")
        self.frame_stack = check_count("frame_stack", frame_stack)
        self.scene = scene
        self.from_pixels = bool(from_pixels)
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

    # -- cameras and pixels ---------------------------------------------------------------------

    def default_cameras(self) -> list[CameraSpec]:
        return [self.default_camera]

    def replaced_surfaces(self, spec: DistractorSpec) -> list[int]:
        return self.surface_geoms() if spec.replace_floor is not False else []

    def surface_geoms(self) -> list[int]:
        """What a distractor replaces unless ``replace_floor=False``: the floor and the table
        top. The task cameras look down at the table, so the sky alone would leave their images
        unchanged. (The renderer hides these geoms from every camera of the model.)"""
        table = mujoco.mj_name2id(self.scene.model, mujoco.mjtObj.mjOBJ_GEOM, "table_top")
        return plane_geoms(self.scene.model) + [table]

    def _render_aside(self, observer: PixelObserver) -> np.ndarray:
        """Render ``observer``'s cameras now, channels-first ``(n_cameras, 3, H, W)``, without
        touching its frame stack or its latest frames (goal images are rendered this way)."""
        saved = observer._frames.copy()
        try:
            frames = observer._render(self.scene.data).transpose(0, 3, 1, 2).copy()
        finally:
            observer._frames[:] = saved
        return frames

    @staticmethod
    def _flatten_views(obs: np.ndarray | dict[str, np.ndarray], labels: Sequence[str]) -> np.ndarray:
        """A multi-camera observation as one array: the cameras' stacks concatenated on channels."""
        if isinstance(obs, dict):
            return np.concatenate([obs[label] for label in labels], axis=0)
        return obs

    # -- shared API -----------------------------------------------------------------------------

    @property
    def model(self):
        """MuJoCo's ``MjModel`` of the scene."""
        return self.scene.model

    @property
    def data(self):
        """MuJoCo's ``MjData`` of the scene."""
        return self.scene.data

    def state(self) -> np.ndarray:
        """Ground truth: ``[qpos, qvel]`` of gripper and objects, float32 (see Scene.ground_truth)."""
        return self.scene.ground_truth()

    def _check_action(self, action) -> np.ndarray:
        return check_action(action, self.action_space, type(self).__name__)
