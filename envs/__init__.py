"""Gymnasium environments of ssrl: DeepMind Control from pixels and our manipulation scenes.

All of them render through one renderer (:mod:`ssrl.envs.render`), take the same pixel options
(:data:`PIXEL_OPTIONS`, set up by :mod:`ssrl.envs.pixels`; :func:`state_mode_kwargs` gives an
env's options for its state observations) and report the ground-truth physical state in
``info["state"]``.
"""

from __future__ import annotations

import gymnasium as gym

from .distractors import DistractorSpec
from .dmc import PLANET_TASKS, DMCEnv, default_action_repeat, suite_tasks
from .pixels import PIXEL_OPTIONS, AgentCamera, is_multi_camera, state_mode_kwargs
from .render import FreeCamera, Renderer

NAMESPACE = "ssrl"


def dmc_id(domain: str, task: str) -> str:
    """The Gymnasium id of a suite task, e.g. ``ssrl/cartpole-swingup-v0``."""
    return f"{NAMESPACE}/{domain}-{task}-v0"


def make_dmc(domain: str, task: str, **options) -> DMCEnv:
    """Any DeepMind Control suite task from pixels; ``options`` are those of :class:`DMCEnv`."""
    return DMCEnv(domain, task, **options)


def check_env_id(env_id: str) -> None:
    """Raise a ValueError naming the registered families if ``env_id`` is not an env id
    Gymnasium resolves ("module:Id" ids import their module in ``gym.make``, so pass here)."""
    if ":" in env_id:
        return
    try:
        gym.spec(env_id)  # also what gym.make accepts beyond exact ids (a missing version)
    except gym.error.Error:
        from ssrl.envs.manipulation import ENVS as SCENES

        raise ValueError(
            f"unknown env id {env_id!r}; ssrl registers ssrl/DOMAIN-TASK-v0 for every DeepMind Control task "
            f"(e.g. ssrl/cartpole-swingup-v0) and the scenes {', '.join(SCENES)}"
        ) from None


def make(env_id: str, **options) -> gym.Env:
    """``gym.make(env_id, **options)`` with the options checked first: an option the env does
    not take (a typo like ``from_pixel``) is a ValueError naming the valid ones, where
    Gymnasium would raise a TypeError from inside the env's constructor."""
    import inspect

    check_env_id(env_id)
    if env_id in gym.registry:
        spec = gym.spec(env_id)
        entry = spec.entry_point
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            entry = getattr(__import__(module, fromlist=[name]), name)
        params = inspect.signature(entry).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            valid = sorted(set(params) - {"self"})
            unknown = sorted(set(options) - set(params) - {"render_mode"})
            if unknown:
                raise ValueError(f"{env_id} takes no option {unknown}; its options: {', '.join(valid)}")
    return gym.make(env_id, **options)


def _register() -> None:
    for domain, task in suite_tasks():
        env_id = dmc_id(domain, task)
        if env_id not in gym.registry:
            # No max_episode_steps: dm_control's own time limit ends episodes (as truncations).
            gym.register(env_id, entry_point="ssrl.envs.dmc:DMCEnv", kwargs={"domain": domain, "task": task})


_register()

from .manipulation import register as _register_manipulation  # noqa: E402

_register_manipulation()

__all__ = [
    "AgentCamera",
    "DMCEnv",
    "DistractorSpec",
    "FreeCamera",
    "PIXEL_OPTIONS",
    "PLANET_TASKS",
    "Renderer",
    "check_env_id",
    "default_action_repeat",
    "dmc_id",
    "is_multi_camera",
    "make",
    "make_dmc",
    "state_mode_kwargs",
]
