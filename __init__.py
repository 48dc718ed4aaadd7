"""ssrl: robot reinforcement learning from pixels with self-supervised representations.

Importing ``ssrl`` registers the Gymnasium environments (``ssrl/<domain>-<task>-v0`` for every
DeepMind Control task, and the manipulation scenes) and selects headless EGL rendering for
MuJoCo unless ``MUJOCO_GL`` is already set.
"""

import os as _os
import sys as _sys

# MuJoCo fixes its GL backend when it is first imported, so this must run before any import of
# mujoco or dm_control. EGL renders headless (on a GPU where there is one, else Mesa's llvmpipe);
# macOS has no EGL and uses MuJoCo's own default there.
if _sys.platform.startswith("linux"):
    _os.environ.setdefault("MUJOCO_GL", "egl")
    _os.environ.setdefault("PYOPENGL_PLATFORM", _os.environ["MUJOCO_GL"])

__version__ = "0.1.0"

from . import envs  # noqa: E402  (registers the environments)

__all__ = ["envs", "__version__"]
