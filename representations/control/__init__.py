"""The control-based representations of the source text, one file each; importing this package
registers them (``ssrl.representations.names()``)."""

from __future__ import annotations

import gymnasium as gym

from . import ccvae, dbc, deepmdp, grasp2vec, mftcn, tcn, vae  # noqa: F401
from .latent_models import LatentObjective

# Objectives that can train an agent's encoder jointly with its critic (``ssrl train --aux``).
AUX_OBJECTIVES = {"dbc": (dbc.DBCConfig, dbc.DBCObjective), "deepmdp": (deepmdp.DeepMDPConfig, deepmdp.DeepMDPObjective)}


def make_aux_objective(name: str, env: gym.Env, latent_dim: int = 50, **config) -> LatentObjective:
    """An auxiliary objective for an agent whose encoder outputs ``latent_dim`` features."""
    if name not in AUX_OBJECTIVES:
        raise ValueError(f"unknown auxiliary objective {name!r}; use one of {sorted(AUX_OBJECTIVES)}")
    from ..core import build_config

    config_cls, objective_cls = AUX_OBJECTIVES[name]
    config = build_config(config_cls, dict(config, latent_dim=latent_dim, action_dim=int(env.action_space.shape[0])))
    return objective_cls(config)
