"""Soft Actor-Critic (Haarnoja et al. 2018), from states, latents or pixels.

Twin Q networks with Polyak-averaged targets, a tanh-Gaussian policy, and the temperature
tuned automatically toward the target entropy -|A|. From pixels it is SAC-AE/DrQ's variant
(see :mod:`ssrl.agents.base`), with random shifts augmenting the observations. There is one conv
encoder, and the *critic's* optimiser trains it: the critic loss (plus an aux objective's loss,
if there is one) is the only gradient that reaches it. The actor reads the encoder's output
*detached*, so the actor loss trains the actor only. Every hyper-parameter is a field of
:class:`SACConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import torch

from .base import AgentConfig, OffPolicyAgent
from .networks import TanhGaussianActor, TwinQ
from .replay import Batch


@dataclasses.dataclass
class SACConfig(AgentConfig):
    """SAC's hyper-parameters (with :class:`~ssrl.agents.base.AgentConfig`'s).

    Defaults for state/latent observations follow SB3 and CleanRL; ``PIXEL_PRESET`` replaces
    some of them for pixels with DrQ's (Kostrikov, Yarats and Fergus, ICLR 2021; the values of
    ``denisyarats/drq`` config.yaml, which SAC-AE's ``denisyarats/pytorch_sac_ae`` shares):
    batch 128, replay 100k, 1000 seed steps, learning rates 1e-3, temperature learning rate 1e-4
    with Adam beta1 0.5, initial temperature 0.1, critic tau 0.01, actor and target updates
    every 2 steps, hidden 1024 x 2, log-std bounds [-10, 2].
    """

    # Adam learning rate of log(alpha), the temperature. SB3's 3e-4; pixels: DrQ's 1e-4.
    alpha_lr: float = 3e-4
    # Adam beta1 of the temperature optimiser. Adam's 0.9; pixels: SAC-AE's and DrQ's 0.5.
    alpha_beta1: float = 0.9
    # Initial temperature alpha. SB3's ent_coef="auto" starts at 1.0; pixels: DrQ's 0.1.
    init_alpha: float = 1.0
    # Entropy the temperature is tuned toward, in nats; None: -|A| (SAC v2, SB3 "auto").
    target_entropy: float | None = None
    # Actor and temperature updates every this many critic updates. SB3's 1; pixels: DrQ's 2.
    actor_update_freq: int = 1
    # Target critic (and target encoder) updates every this many critic updates. SB3's
    # target_update_interval 1; pixels: DrQ's 2.
    target_update_freq: int = 1
    # Range the policy's log standard deviation is squashed into (tanh, then rescaled), as in
    # CleanRL's SAC (-5, 2); pixels: DrQ's (-10, 2).
    log_std_bounds: tuple[float, float] = (-5.0, 2.0)

    PIXEL_PRESET: ClassVar[dict] = dict(
        batch_size=128,
        buffer_size=100_000,
        learning_starts=1000,
        actor_lr=1e-3,
        critic_lr=1e-3,
        alpha_lr=1e-4,
        alpha_beta1=0.5,
        init_alpha=0.1,
        tau=0.01,
        actor_update_freq=2,
        target_update_freq=2,
        hidden_dims=(1024, 1024),
        log_std_bounds=(-10.0, 2.0),
    )
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = AgentConfig.AT_LEAST_ONE + ("actor_update_freq", "target_update_freq")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.log_std_bounds = tuple(self.log_std_bounds)


class SAC(OffPolicyAgent):
    """Soft Actor-Critic. ``SAC(env, **hyperparams)``; see :class:`SACConfig` for the options
    and :class:`~ssrl.agents.base.OffPolicyAgent` for the other arguments.

    >>> agent = SAC(env, batch_size=512)
    >>> agent.learn(100_000)            # env steps
    >>> action, _ = agent.predict(obs)  # deterministic
    >>> agent.save("sac.pt"); SAC.load("sac.pt", env)
    """

    algo = "sac"
    config_cls = SACConfig

    def build_networks(self) -> None:
        c = self.config
        self.actor = TanhGaussianActor(self.feature_dim, self.action_dim, c.hidden_dims, c.log_std_bounds).to(
            self.device
        )
        self.critic = TwinQ(self.feature_dim, self.action_dim, c.hidden_dims).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(torch.tensor(c.init_alpha).log()), device=self.device, requires_grad=True)
        self.target_entropy = -float(self.action_dim) if c.target_entropy is None else float(c.target_entropy)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        # The critic optimiser holds the critic's parameters *and* the pixel encoder's.
        self.critic_optimizer = torch.optim.Adam(self.critic_parameters(self.critic), lr=c.critic_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr, betas=(c.alpha_beta1, 0.999))

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor(h, self.generator, deterministic=deterministic)[0]

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One SAC update; metrics are 0-d tensors (see :meth:`OffPolicyAgent.update`)."""
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        p = self.prepare(batch)  # h = encoder(obs) with gradient, h_next = target encoder(next_obs)
        alpha = self.alpha.detach()

        # Critic: soft Bellman target from the target critics and a fresh next action.
        with torch.no_grad():
            next_action, next_log_prob = self.actor(p.h_next, self.generator)
            next_q = self.critic_target(p.h_next, next_action).min(0).values - alpha * next_log_prob
            target_q = p.reward + p.discount * c.gamma * next_q
        q = self.critic(p.h, p.action)
        critic_loss = (q - target_q).pow(2).mean(1).sum()  # MSE of each Q, summed (SAC-AE, DrQ)
        # The critic optimiser steps the critic *and the encoder*: ``p.h`` carries the gradient
        # of the critic loss (and of the aux loss) back into the conv encoder.
        metrics = self.critic_step(critic_loss, p)
        metrics["q"] = q.detach().mean()

        # Actor and temperature, on the encoder's output detached: no actor gradient reaches it.
        if self.num_updates % c.actor_update_freq == 0:
            h_detached = p.h.detach()
            self.critic.requires_grad_(False)  # no use computing critic weight gradients here
            pi_action, log_prob = self.actor(h_detached, self.generator)
            actor_loss = (alpha * log_prob - self.critic(h_detached, pi_action).min(0).values).mean()
            self.optimizer_step(self.actor_optimizer, actor_loss, "actor loss")
            self.critic.requires_grad_(True)
            alpha_loss = (self.alpha * (-log_prob.detach() - self.target_entropy)).mean()
            self.optimizer_step(self.alpha_optimizer, alpha_loss, "temperature loss")
            metrics.update(actor_loss=actor_loss.detach(), alpha=alpha, entropy=-log_prob.detach().mean())

        # Targets: Polyak averages of the critic and of the encoder.
        if self.num_updates % c.target_update_freq == 0:
            self.update_targets((self.critic_target, self.critic))
        self.num_updates += 1
        return metrics

    def networks(self):
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "log_alpha": _ParameterHolder(self.log_alpha),
        }

    def optimizers(self):
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}


class _ParameterHolder(torch.nn.Module):
    """Lets a bare tensor (log alpha) be saved and loaded like a module's state."""

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        self.tensor = tensor

    def state_dict(self, *args, **kwargs):
        return {"value": self.tensor.detach().clone()}

    def load_state_dict(self, state, strict: bool = True):
        with torch.no_grad():
            self.tensor.copy_(state["value"])
