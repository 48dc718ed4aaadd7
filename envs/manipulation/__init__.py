"""Tabletop manipulation scenes of our own: pushing (RIG style) and bin grasping (grasp2vec style).

``register()`` (called by :mod:`ssrl.envs`) registers, under the ``ssrl/`` namespace:

==========================  ===================================================================
id                          what
==========================  ===================================================================
``ssrl/Push-v0``            push a red puck to a goal; 2-D hand action; goal-env dict, image
                            goals in pixel mode; RIG's pusher geometry (layout ``easy``)
``ssrl/PushWide-v0``        the same on the whole table: random starts, the hand anywhere
``ssrl/PushRandomObject-v0`` Push-v0, the object's shape, size and colour new every episode
``ssrl/PushMultiObject-v0`` three random objects on the whole table, each with a goal
``ssrl/PushTask-v0``        Push-v0 with one goal, the same every episode: a single task (no
                            goals in the observation), rewarded by minus the puck's distance
``ssrl/Grasp-v0``           one grasp attempt per step in a bin of 6 random objects; the
                            grasp2vec triplet (s_pre, s_post, o) in ``info``
``ssrl/GraspGoal-v0``       the same, conditioned on an image of the object to lift
==========================  ===================================================================

The physics is in :mod:`.scene`, the tasks in :mod:`.push` and :mod:`.grasp`.
"""

from __future__ import annotations

import gymnasium as gym

from .grasp import GraspEnv, GraspGoalEnv
from .push import PushEnv, PushTaskEnv
from .scene import SHAPES, ObjectSpec, Scene

ENVS: dict[str, tuple[str, dict]] = {
    "ssrl/Push-v0": ("ssrl.envs.manipulation.push:PushEnv", {}),
    "ssrl/PushWide-v0": ("ssrl.envs.manipulation.push:PushEnv", {"layout": "wide"}),
    "ssrl/PushRandomObject-v0": ("ssrl.envs.manipulation.push:PushEnv", {"randomize_objects": True}),
    "ssrl/PushMultiObject-v0": (
        "ssrl.envs.manipulation.push:PushEnv",
        {"n_objects": 3, "randomize_objects": True, "max_episode_steps": 100, "layout": "wide"},
    ),
    "ssrl/PushTask-v0": ("ssrl.envs.manipulation.push:PushTaskEnv", {}),
    "ssrl/Grasp-v0": ("ssrl.envs.manipulation.grasp:GraspEnv", {}),
    "ssrl/GraspGoal-v0": ("ssrl.envs.manipulation.grasp:GraspGoalEnv", {}),
}


def register() -> None:
    """Register the manipulation envs with Gymnasium (idempotent). Episodes end by the envs' own
    truncation (like the DMC envs), so no TimeLimit wrapper is added."""
    for env_id, (entry_point, kwargs) in ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, kwargs=dict(kwargs))


__all__ = ["ENVS", "GraspEnv", "GraspGoalEnv", "ObjectSpec", "PushEnv", "PushTaskEnv", "SHAPES", "Scene", "register"]
