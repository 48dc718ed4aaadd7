"""Ground-truth masks of a data set's frames: which body every pixel shows.

No video data set has this; a simulator does. :class:`BodyMasks` rebuilds the env a data set was
collected in (``meta.json``: env id, options, cameras, image size), puts its physics in each
recorded state (``info["state"]``, stored per frame as ``state``) and renders MuJoCo's
segmentation from the same camera at the same size: a ``(T, H, W)`` int32 array of body ids,
-1 where no geom was drawn. The video pretext methods are judged on these masks (mask tracking,
:mod:`ssrl.representations.pretext.video.judge`).

Replaying is exact: the colour frames rendered from a replayed state equal the recorded ones
(tested), so mask and frame show the same instant. Masks are rendered on demand rather than
stored, so data sets keep their format and their size.

:func:`moving_bodies` says which bodies can move (not welded to the world, or mocap bodies):
the objects whose masks a tracker should follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np


def moving_bodies(model: mujoco.MjModel) -> list[int]:
    """Ids of the bodies that can move: those not welded to the world body (they have a joint
    somewhere up their chain) and mocap bodies."""
    return [b for b in range(1, model.nbody) if model.body_weldid[b] != 0 or model.body_mocapid[b] >= 0]


def body_names(model: mujoco.MjModel, ids: Sequence[int]) -> list[str]:
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(b)) or f"body{b}" for b in ids]


class BodyMasks:
    """Renders the body masks of recorded states (see the module docstring).

    Args:
        meta: a data set's ``meta.json`` (``RolloutData.meta``): ``env_id``, ``env_kwargs``,
            ``cameras`` and ``size``.
        camera: the camera to render (default the data set's first); it must be one of the
            model's named cameras (a free camera leaves no name to rebuild it from).

    ``masks(states)`` returns ``(T, H, W)`` int32 body ids; ``moving`` lists the bodies a tracker
    should follow and ``names`` their names. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, meta: Mapping[str, Any], camera: str | None = None) -> None:
        from ssrl.envs import make
        from ssrl.envs.pixels import state_mode_kwargs

        missing = [k for k in ("env_id", "cameras", "size") if k not in meta]
        if missing:
            raise ValueError(
                f"ground-truth masks need the data set's meta.json (env id, cameras, size); missing {missing}. "
                "Load the data from its folder (RolloutData(path)), not from episodes in memory"
            )
        cameras = list(meta["cameras"])
        camera = camera or cameras[0]
        if camera not in cameras:
            raise ValueError(f"the data set has no camera {camera!r}; it has {cameras}")
        env_kwargs = dict(meta.get("env_kwargs") or {})
        self.env = make(meta["env_id"], **state_mode_kwargs(env_kwargs))
        base = self.env.unwrapped
        if camera not in base.camera_names():
            self.env.close()
            raise ValueError(
                f"camera {camera!r} is not a named camera of {meta['env_id']} ({base.camera_names()}): "
                "masks can be rendered only from the model's own cameras"
            )
        self.base = base
        self.observer = base.make_observer(
            size=tuple(meta["size"]),
            cameras=[camera],
            quality=env_kwargs.get("quality", "fast"),
            distractor=env_kwargs.get("distractor"),
        )
        self.env.reset(seed=0)  # some envs build their scene on the first reset
        self.moving = moving_bodies(base.model)
        self.names = body_names(base.model, self.moving)

    def set_state(self, state: np.ndarray) -> None:
        self.base.set_state(state)

    def masks(self, states: np.ndarray) -> np.ndarray:
        """Body ids ``(T, H, W)`` int32 of the recorded ``states`` ``(T, S)``, -1 for background."""
        states = np.atleast_2d(states)
        out = np.empty((len(states), self.observer.height, self.observer.width), np.int32)
        for i, state in enumerate(states):
            self.set_state(state)
            out[i] = self.observer.renderer.segment(self.base.data)[0]
        return out

    def frames(self, states: np.ndarray) -> np.ndarray:
        """Colour frames ``(T, 3, H, W)`` uint8 of ``states``, rendered again (what collection
        recorded, when no distractor changes the background)."""
        states = np.atleast_2d(states)
        out = np.empty((len(states), 3, self.observer.height, self.observer.width), np.uint8)
        for i, state in enumerate(states):
            self.set_state(state)
            out[i] = self.observer.renderer.render(self.base.data)[0].transpose(2, 0, 1)
        return out

    def close(self) -> None:
        self.observer.close()
        self.env.close()

    def __enter__(self) -> BodyMasks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
