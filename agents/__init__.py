"""Agents: SAC and TD3 of our own, from states, latents or pixels, with one training loop.

``SAC(env, **hyperparams)`` / ``TD3(env, ...)`` (and ``QMap``, a grasp Q-map for one-grasp
bandit episodes), ``.learn(env_steps)``, ``.predict(obs)``,
``.save(path)``, ``SAC.load(path, env)``: the surface of Stable-Baselines3. See
:mod:`ssrl.agents.base` for the pixel path and the ``aux`` hook, :mod:`ssrl.agents.trainer` for
runs with evaluation, logs, checkpoints and resume, :mod:`ssrl.agents.checkpoint` for the
checkpoint files.
"""

from ssrl.representations.objective import AuxInputs, AuxObjective

from .base import AgentConfig, OffPolicyAgent, Prepared, TrainingDiverged, resolve_precision
from .checkpoint import read_checkpoint
from .qmap import QMap, QMapConfig
from .replay import Batch, ReplayBuffer
from .sac import SAC, SACConfig
from .td3 import TD3, TD3Config
from .trainer import Trainer, evaluate

ALGOS = {"sac": SAC, "td3": TD3, "qmap": QMap}

__all__ = [
    "ALGOS",
    "AgentConfig",
    "AuxInputs",
    "AuxObjective",
    "Batch",
    "OffPolicyAgent",
    "Prepared",
    "QMap",
    "QMapConfig",
    "ReplayBuffer",
    "SAC",
    "SACConfig",
    "TD3",
    "TD3Config",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "read_checkpoint",
    "resolve_precision",
]
