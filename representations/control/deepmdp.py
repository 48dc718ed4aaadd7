"""DeepMDP (Gelada et al. 2019): a latent space in which reward and transitions can be predicted.

The two losses of the source text, with a latent reward model R-bar and a deterministic latent
transition model P-bar:

    L_R(s, a) = | R(s, a) - R-bar(phi(s), a) |
    L_P(s, a) = D( phi P(s, a), P-bar(. | phi(s), a) )

D is a distance between distributions of next latents. With a deterministic model the
prediction is a point, and:

* ``transition="w1"`` (default): the Wasserstein-1 distance to the observed next latent, which for
  a point mass is the Euclidean norm ||P-bar(phi(s), a) - phi-bar(s')||_2 (DeepMDP's Atari setup);
* ``transition="mmd"``: the Norm-MMD (energy distance) with the squared-distance kernel, whose
  estimator from next-state samples y1, y2 is 2||P-bar - y1||^2 - ||y1 - y2||^2 (as in public
  DeepMDP code). Our data holds one next state per (s, a) and the DMC tasks are deterministic,
  so y2 = y1 and the estimator is 2||P-bar - phi-bar(s')||^2.

phi-bar(s') is the next latent without gradient. DeepMDP's bounds need Lipschitz models, so a
gradient penalty keeps them smooth (``gp_weight``):

    GP = E ||d R-bar / d[phi(s), a]||^2 + E ||J_P-bar[phi(s), a]^T v||^2,   v ~ N(0, I)

the second term an unbiased estimate of the squared Frobenius norm of the transition model's
Jacobian. Total: L = L_R + ``transition_weight`` L_P + ``gp_weight`` GP.

Where we differ from DBC's "DeepMDP" baseline (facebookresearch/deep_bisim4control,
``agent/deepmdp_agent.py``): it uses a Gaussian NLL transition loss, an MSE reward loss and a
pixel decoder; we implement the paper's losses above, without reconstruction.
"""

from __future__ import annotations

import dataclasses

import torch

from ..core import BaseConfig, register
from .latent_models import LatentObjective, RewardModel, TransitionModel, TransitionRepresentation


@dataclasses.dataclass
class DeepMDPConfig(BaseConfig):
    action_dim: int = 0  # set from the data (or the env) when built
    hidden: int = 512
    transition: str = "w1"  # or "mmd"
    transition_weight: float = 1.0
    gp_weight: float = 0.01
    lr: float = 1e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.transition not in ("w1", "mmd"):
            raise ValueError(f"DeepMDP transition distance must be 'w1' or 'mmd', got {self.transition!r}")


class DeepMDPObjective(LatentObjective):
    """The DeepMDP losses on latents (usable as an agent's ``aux``)."""

    def __init__(self, config: DeepMDPConfig) -> None:
        super().__init__()
        self.config = config
        self.transition = TransitionModel(config.latent_dim, config.action_dim, config.hidden, probabilistic=False)
        self.reward = RewardModel(config.latent_dim + config.action_dim, config.hidden)

    def latent_loss(self, z, action, reward, next_z, discount):
        c = self.config
        x = torch.cat([z, action], dim=-1)
        if c.gp_weight > 0 and not x.requires_grad:
            x.requires_grad_(True)  # latents given without gradient (tests); the penalty needs d/dx
        pred_r = self.reward(x)
        pred_next, _ = self.transition(x[:, : z.shape[1]], x[:, z.shape[1] :])
        loss_r = (pred_r - reward).abs().mean()
        if c.transition == "w1":
            loss_p = (pred_next - next_z).norm(dim=-1).mean()
        else:
            loss_p = 2.0 * (pred_next - next_z).pow(2).sum(-1).mean()
        loss = loss_r + c.transition_weight * loss_p
        metrics = {"reward_loss": loss_r.detach(), "transition_loss": loss_p.detach()}
        if c.gp_weight > 0:
            v = torch.randn_like(pred_next)
            g_r = torch.autograd.grad(pred_r.sum(), x, create_graph=True)[0]
            g_p = torch.autograd.grad((pred_next * v).sum(), x, create_graph=True)[0]
            gp = g_r.pow(2).sum(-1).mean() + g_p.pow(2).sum(-1).mean()
            loss = loss + c.gp_weight * gp
            metrics["gradient_penalty"] = gp.detach()
        return loss, metrics


@register
class DeepMDP(TransitionRepresentation):
    name = "deepmdp"
    Config = DeepMDPConfig
    Objective = DeepMDPObjective
