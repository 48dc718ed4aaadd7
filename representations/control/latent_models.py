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
    """An objective on (z, a, r, z') latents: of its representation's own encoder offline, or of
    an agent's encoder in the decoupled and joint regimes (``replay_loss``)."""

    generator: torch.Generator | None = None  # its sampling randomness: an agent's while it trains one

    @abc.abstractmethod
    def latent_loss(
        self, z: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_z: torch.Tensor, discount: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss given encoder latents ``z`` (with gradient) and ``next_z`` (without)."""


class TransitionRepresentation(Representation):
    """An encoder trained offline, on collected transitions, by a :class:`LatentObjective`
    (``Objective``): z = phi(s) with gradient, z' = phi(s') without, as DBC's code does."""

    needs = Need.TRANSITIONS
    Objective: ClassVar[type[LatentObjective]]

    def __init__(self, config, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.objective = self.Objective(config)

    def check_data(self, data) -> None:
        super().check_data(data)
        if data.action.shape[1] != self.config.action_dim:
            raise ValueError(
                f"the data's actions have {data.action.shape[1]} dims, "
                f"the config says action_dim={self.config.action_dim}"
            )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return data.transitions(data.sample_frames(batch_size, rng, with_next=True), k=self.config.frame_stack)

    def replay_loss(self, inputs, rng: np.random.Generator):
        """On an agent's replay: the agent's latents of the batch (its encoder is this one) and
        its target encoder's next latents, as DBC's agent does; no extra encoder pass."""
        self.objective.generator = self.generator
        return self.objective.latent_loss(
            inputs.latent, inputs.action, inputs.reward, inputs.next_latent.detach(), inputs.discount
        )

    def loss(self, batch):
        z = self.encoder(batch["obs"])
        with torch.no_grad():
            next_z = self.encoder(batch["next_obs"])
        return self.objective.latent_loss(z, batch["action"], batch["reward"], next_z, batch["discount"])
