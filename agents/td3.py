"""Twin Delayed DDPG (Fujimoto et al. 2018), from states, latents or pixels.

Clipped double Q-learning, target policy smoothing (clipped Gaussian noise on the target
action) and a delayed actor with delayed target updates. From pixels, as in SAC
(:mod:`ssrl.agents.sac`), the critic's optimiser trains the conv encoder and the actor reads its
output detached. Every hyper-parameter is a field of :class:`TD3Config`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import torch

from .base import AgentConfig, OffPolicyAgent
from .networks import DeterministicActor, TwinQ
from .replay import Batch


@dataclasses.dataclass
class TD3Config(AgentConfig):
    """TD3's hyper-parameters (with :class:`~ssrl.agents.base.AgentConfig`'s).

    Defaults from the TD3 paper, SB3 and CleanRL; ``PIXEL_PRESET`` borrows DrQ's pixel SAC values
    (Kostrikov, Yarats and Fergus, ICLR 2021) for what the two algorithms share: batch 128,
    replay 100k, 1000 seed steps, learning rates 1e-3, tau 0.01, hidden 1024 x 2.
    """

    # Actor and target updates every this many critic updates. The paper's d = 2 (SB3's and
    # CleanRL's policy_delay / policy_frequency).
    policy_delay: int = 2
    # Std of the Gaussian noise on the target action (target policy smoothing), in units of the
    # [-1, 1] action range. The paper's 0.2.
    policy_noise: float = 0.2
    # That noise is clipped to [-noise_clip, noise_clip], same units. The paper's 0.5.
    noise_clip: float = 0.5
    # Std of the Gaussian exploration noise added to the actor's action when acting, same units.
    # The paper's and CleanRL's 0.1.
    exploration_noise: float = 0.1

    PIXEL_PRESET: ClassVar[dict] = dict(
        batch_size=128,
        buffer_size=100_000,
        learning_starts=1000,
        actor_lr=1e-3,
        critic_lr=1e-3,
        tau=0.01,
        hidden_dims=(1024, 1024),
    )
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = AgentConfig.AT_LEAST_ONE + ("policy_delay",)


class TD3(OffPolicyAgent):
    """TD3. ``TD3(env, **hyperparams)``; see :class:`TD3Config` for the options and
    :class:`~ssrl.agents.base.OffPolicyAgent` for the other arguments."""

    algo = "td3"
    config_cls = TD3Config

    def build_networks(self) -> None:
        c = self.config
        self.actor = DeterministicActor(self.feature_dim, self.action_dim, c.hidden_dims).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinQ(self.feature_dim, self.action_dim, c.hidden_dims).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        # The critic optimiser holds the critic's parameters *and* the pixel encoder's.
        self.critic_optimizer = torch.optim.Adam(self.critic_parameters(self.critic), lr=c.critic_lr)

    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action = self.actor(h)
        if deterministic:
            return action
        noise = (
            torch.randn(action.shape, generator=self.generator, device=action.device) * self.config.exploration_noise
        )
        return (action + noise).clamp(-1.0, 1.0)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One TD3 update; metrics are 0-d tensors (see :meth:`OffPolicyAgent.update`)."""
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        p = self.prepare(batch)  # h = encoder(obs) with gradient, h_next = target encoder(next_obs)

        # Critic: clipped double-Q target with a smoothed target action.
        with torch.no_grad():
            target_action = self.actor_target(p.h_next)
            noise = torch.randn(target_action.shape, generator=self.generator, device=target_action.device)
            noise = (noise * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (target_action + noise).clamp(-1.0, 1.0)
            target_q = p.reward + p.discount * c.gamma * self.critic_target(p.h_next, next_action).min(0).values
        q = self.critic(p.h, p.action)
        critic_loss = (q - target_q).pow(2).mean(1).sum()
        metrics = self.critic_step(critic_loss, p)  # steps the critic and the encoder
        metrics["q"] = q.detach().mean()

        # Delayed actor (on the encoder's output detached) and target updates.
        if self.num_updates % c.policy_delay == 0:
            h_detached = p.h.detach()
            self.critic.requires_grad_(False)
            actor_loss = -self.critic(h_detached, self.actor(h_detached))[0].mean()  # Q1, as in the paper
            self.optimizer_step(self.actor_optimizer, actor_loss, "actor loss")
            self.critic.requires_grad_(True)
            metrics["actor_loss"] = actor_loss.detach()
            self.update_targets((self.actor_target, self.actor), (self.critic_target, self.critic))
        self.num_updates += 1
        return metrics

    def networks(self):
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
        }

    def optimizers(self):
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
