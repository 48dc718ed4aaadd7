"""What the manipulation envs share with :class:`~ssrl.envs.dmc.DMCEnv`: pixels, cameras, options.

A :class:`ManipulationEnv` owns a :class:`~ssrl.envs.manipulation.scene.Scene` (the physics) and,
in pixel mode, a :class:`~ssrl.envs.pixels.PixelObserver` over it. The options and methods are
those of ``DMCEnv``, set up by the same method: ``from_pixels`` and the
:data:`~ssrl.envs.pixels.PIXEL_OPTIONS` (``size``, ``camera``/``cameras``, ``frame_stack``,
``quality``, ``distractor``, ``render_mode``, ``render_size``); ``model``, ``data``,
``default_cameras()``, ``make_observer()``, ``action_repeat`` and ``info["state"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from ..distractors import DistractorSpec
from ..pixels import PixelEnv, PixelObserver, check_action, plane_geoms
from ..render import CameraSpec
from .scene import Scene


class ManipulationEnv(PixelEnv):
    """Base of the tabletop envs: the scene, the pixel observer, and the shared options.

    Subclasses set ``self.scene`` (the physics), then call
    :meth:`~ssrl.envs.pixels.PixelEnv._setup_pixels` with their pixel options, and implement
    ``reset``/``step``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}
    action_repeat = 1
    default_camera: str = "front"
    record_keys: tuple[str, ...] = ()
    scene: Scene

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

    def set_state(self, state: np.ndarray) -> None:
        """Put the scene in a recorded ``state()`` (``[qpos, qvel]``; the drawn arm follows the
        hand), e.g. to render a data set's frames again or their ground-truth masks. Mocap
        targets and goals are not part of the state and stay as they are."""
        model, data = self.scene.model, self.scene.data
        state = np.asarray(state, np.float64).ravel()
        if state.size != model.nq + model.nv:
            raise ValueError(f"{type(self).__name__} states have {model.nq + model.nv} values, got {state.size}")
        data.qpos[:], data.qvel[:] = state[: model.nq], state[model.nq :]
        self.scene.forward()

    def _check_action(self, action) -> np.ndarray:
        return check_action(action, self.action_space, type(self).__name__)
