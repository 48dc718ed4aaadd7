"""Latent reward and transition models shared by DeepMDP and DBC, and the plumbing that lets
one objective train either its own encoder (offline, from collected transitions) or an agent's
encoder (jointly, through the agents' ``aux`` hook).

The architectures are those of DBC's public code (facebookresearch/deep_bisim4control): a transition model
Linear(latent + action -> hidden) -> LayerNorm -> ReLU -> mean (and, if probabilistic, a standard
deviation squashed into [1e-4, 10] by a sigmoid); a reward model of the same shape with one
output.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn

from ssrl.utils import build_config

from ..backbones import make_encoder
from ..core import Need, Representation

SIGMA_MIN, SIGMA_MAX = 1e-4, 10.0


class TransitionModel(nn.Module):
    """(z, a) -> next-latent mean (and std if ``probabilistic``)."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 512, probabilistic: bool = True) -> None:
        super().__init__()
        self.probabilistic = probabilistic
        self.trunk = nn.Sequential(nn.Linear(latent_dim + action_dim, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.sigma = nn.Linear(hidden, latent_dim) if probabilistic else None

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([z, action], dim=-1))
        mu = self.mu(h)
        if self.sigma is None:
            return mu, torch.ones_like(mu)
        return mu, SIGMA_MIN + (SIGMA_MAX - SIGMA_MIN) * torch.sigmoid(self.sigma(h))


class RewardModel(nn.Module):
    """x -> scalar reward (x is a latent, or a latent and an action)."""

    def __init__(self, in_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class LatentObjective(nn.Module, abc.ABC):
    """An objective on (z, a, r, z') latents. As an agent's ``aux`` it receives the agent's
    latents (``loss(AuxInputs)``) and only its own models are its parameters."""

    generator: torch.Generator | None = None  # set by an agent to its own (see AuxObjective)

    @abc.abstractmethod
    def latent_loss(
        self, z: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_z: torch.Tensor, discount: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss given encoder latents ``z`` (with gradient) and ``next_z`` (without)."""

    def loss(self, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:class:`~ssrl.representations.objective.AuxObjective`'s loss, on an agent's latents."""
        return self.latent_loss(
            inputs.latent, inputs.action, inputs.reward, inputs.next_latent.detach(), inputs.discount
        )


class TransitionRepresentation(Representation):
    """An encoder trained offline, on collected transitions, by a :class:`LatentObjective`
    (``Objective``): z = phi(s) with gradient, z' = phi(s') without, as DBC's code does."""

    needs = Need.TRANSITIONS
    Objective: ClassVar[type[LatentObjective]]
    # DBC's and DeepMDP's encoders end at LayerNorm (DBC's code), not the SAC-AE tanh.
    joint_agent_options: ClassVar[dict] = {"encoder_tanh": False}

    def __init__(self, config, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.objective = self.Objective(config)

    @classmethod
    def joint_objective(cls, latent_dim: int, action_dim: int, **config):
        """The same objective on an agent's latents (``ssrl train --aux NAME``)."""
        return cls.Objective(build_config(cls.Config, dict(config, latent_dim=latent_dim, action_dim=action_dim)))

    def check_data(self, data) -> None:
        super().check_data(data)
        if data.action.shape[1] != self.config.action_dim:
            raise ValueError(
                f"the data's actions have {data.action.shape[1]} dims, "
                f"the config says action_dim={self.config.action_dim}"
            )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return data.transitions(data.sample_frames(batch_size, rng, with_next=True), k=self.config.frame_stack)

    def loss(self, batch):
        z = self.encoder(batch["obs"])
        with torch.no_grad():
            next_z = self.encoder(batch["next_obs"])
        return self.objective.latent_loss(z, batch["action"], batch["reward"], next_z, batch["discount"])
