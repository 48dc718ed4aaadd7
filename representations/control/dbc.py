"""DBC: Deep Bisimulation for Control (Zhang et al. 2021).

Latent L1 distances are regressed onto the on-policy bisimulation metric (source text, Eq. 4):

    J(phi) = ( ||z_i - z_j||_1 - |r_i - r_j| - gamma W2( P(.|z-bar_i, a_i), P(.|z-bar_j, a_j) ) )^2

for pairs (i, j) of a batch and its random permutation, with z = phi(s), z-bar its stop-gradient
copy, and W2 between the diagonal Gaussians the transition model predicts,
W2 = sqrt(||mu_i - mu_j||_2^2 + ||sigma_i - sigma_j||_2^2). The models are trained alongside:

    J(P, phi) = Gaussian NLL of z-bar_{t+1} under P(.|phi(s_t), a_t)   (mean over dims of
                1/2 ((z' - mu)/sigma)^2 + log sigma; the source writes the squared error of the mean)
    J(R, P, phi) = ( R(z-hat_{t+1}) - r_{t+1} )^2,  z-hat_{t+1} ~ P(.|phi(s_t), a_t)

Total: ``bisim_weight`` J(phi) + J(P, phi) + J(R, P, phi) (DBC's code weighs the bisimulation
term 0.5).

Where we follow the paper (arXiv 2006.10742, Eq. 4) and where DBC's public code
(facebookresearch/deep_bisim4control, ``agent/bisim_agent.py``):

* latent distance: the paper's full L1 norm, one scalar per pair (the code: per-dimension smooth
  L1);
* W2: the paper's single scalar over all dimensions (the code: per dimension);
* targets on stop-gradient latents, as in the paper; only z_i, z_j carry gradient;
* rewards: true batch rewards, |r_i - r_j|, by default (``reward_source="true"``; the code uses
  true rewards too, but through a smooth-L1 of the difference, which is quadratic below 1); the
  paper's |R(z-bar_i) - R(z-bar_j)| with ``reward_source="model"``;
* next-state distributions under the replay actions a_i, as the code (the paper's mean policy
  needs the agent, and offline data has none);
* gamma: the code's discount (0.99) rather than the paper's (1 - c, c) weighting.

Trained jointly with SAC through the agents' ``aux`` hook (``ssrl train --aux dbc``), on the
critic's encoder and the *target* encoder's next latents (the code uses the online encoder's,
detached; the slowly moving target gives the transition model a steadier regression target and
costs no extra encoder pass, since the critic's update computes it anyway), or offline
(``ssrl pretrain dbc``) on collected transitions with its own encoder.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..core import BaseConfig, register
from ..losses import bisimulation_loss, bisimulation_target, w2_gaussian
from .latent_models import LatentObjective, RewardModel, TransitionModel, TransitionRepresentation


@dataclasses.dataclass
class DBCConfig(BaseConfig):
    action_dim: int = 0  # set from the data (or the env) when built
    hidden: int = 512
    gamma: float = 0.99
    bisim_weight: float = 0.5
    reward_source: str = "true"  # or "model"
    probabilistic: bool = True
    lr: float = 1e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_source not in ("true", "model"):
            raise ValueError(f"reward_source must be 'true' or 'model', got {self.reward_source!r}")


class DBCObjective(LatentObjective):
    """DBC's bisimulation, transition and reward losses on latents (usable as an agent's ``aux``)."""

    def __init__(self, config: DBCConfig) -> None:
        super().__init__()
        self.config = config
        self.transition = TransitionModel(config.latent_dim, config.action_dim, config.hidden, config.probabilistic)
        self.reward = RewardModel(config.latent_dim, config.hidden)
        self.generator: torch.Generator | None = None  # permutation and sampling randomness

    def latent_loss(self, z, action, reward, next_z, discount):
        c = self.config
        gen = self.generator
        # Transition and reward models (they also shape phi through z).
        mu, sigma = self.transition(z, action)
        nll = (0.5 * ((next_z - mu) / sigma).pow(2) + sigma.log()).mean()
        eps = torch.randn(mu.shape, generator=gen, device=mu.device) if gen is not None else torch.randn_like(mu)
        pred_reward = self.reward(mu + sigma * eps)
        reward_loss = (pred_reward - reward).pow(2).mean()
        # Bisimulation: pairs (i, perm(i)); targets from stop-gradient latents.
        perm = (
            torch.randperm(len(z), generator=gen, device=z.device)
            if gen is not None
            else torch.randperm(len(z), device=z.device)
        )
        with torch.no_grad():
            z_bar = z.detach()
            mu_bar, sigma_bar = self.transition(z_bar, action)
            if c.reward_source == "model":
                r = self.reward(z_bar)
            else:
                r = reward
            target = bisimulation_target(
                r, r[perm], w2_gaussian(mu_bar, sigma_bar, mu_bar[perm], sigma_bar[perm]), c.gamma
            )
        bisim = bisimulation_loss(z, z[perm], target)
        loss = c.bisim_weight * bisim + nll + reward_loss
        return loss, {"bisim_loss": bisim.detach(), "transition_nll": nll.detach(), "reward_loss": reward_loss.detach()}


@register
class DBC(TransitionRepresentation):
    name = "dbc"
    Config = DBCConfig
    Objective = DBCObjective


@torch.no_grad()
def bisimulation_correlation(
    encode, transitions: dict[str, np.ndarray], pairs: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Do latent distances track behavioural differences? For random pairs of held-out
    transitions: the Pearson and Spearman correlations between ||z_i - z_j||_1 and |r_i - r_j|.

    ``encode`` maps a batch of observations to latents (numpy in, numpy out).
    """
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(seed)
    z = encode(transitions["obs"])
    r = transitions["reward"]
    i = rng.integers(0, len(z), pairs)
    j = rng.integers(0, len(z), pairs)
    keep = i != j
    d = np.abs(z[i[keep]] - z[j[keep]]).sum(1)
    dr = np.abs(r[i[keep]] - r[j[keep]])
    return {"pearson": float(pearsonr(d, dr)[0]), "spearman": float(spearmanr(d, dr)[0]), "pairs": int(keep.sum())}
