"""Twin Delayed DDPG (Fujimoto et al. 2018), from states, latents or pixels.

Clipped double Q-learning, target policy smoothing (clipped Gaussian noise on the target
action) and a delayed actor with delayed target updates. From pixels, the encoder is trained by
the critic as in :mod:`ssrl.agents.base`. Every hyper-parameter is a field of :class:`TD3Config`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import torch

from .base import AgentConfig, OffPolicyAgent
from .networks import DeterministicActor, TwinQ, soft_update
from .replay import Batch


@dataclasses.dataclass
class TD3Config(AgentConfig):
    """Defaults from the TD3 paper and CleanRL; ``PIXEL_PRESET`` follows DrQ-style pixel SAC."""

    policy_delay: int = 2  # actor and target updates every `policy_delay` critic updates
    policy_noise: float = 0.2  # target policy smoothing, in units of the [-1, 1] action range
    noise_clip: float = 0.5
    exploration_noise: float = 0.1

    PIXEL_PRESET: ClassVar[dict] = dict(
        batch_size=128, buffer_size=100_000, learning_starts=1000, actor_lr=1e-3, critic_lr=1e-3, tau=0.01,
        hidden_dims=(1024, 1024),
    )
    POSITIVE: ClassVar[tuple[str, ...]] = AgentConfig.POSITIVE + ("policy_delay",)


class TD3(OffPolicyAgent):
    """TD3. ``TD3(env, **hyperparams)``; see :class:`TD3Config` for the options."""

    algo = "td3"
    config_cls = TD3Config

    def build_networks(self) -> None:
        c = self.config
        self.actor = DeterministicActor(self.feature_dim, self.action_dim, c.hidden_dims).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinQ(self.feature_dim, self.action_dim, c.hidden_dims).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic_parameters(self.critic), lr=c.critic_lr)

    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action = self.actor(h)
        if deterministic:
            return action
        noise = torch.randn(action.shape, generator=self.generator, device=action.device) * self.config.exploration_noise
        return (action + noise).clamp(-1.0, 1.0)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        with self.autocast():
            return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        obs, next_obs, h, h_next, action, reward, discount = self.prepare(batch)
        with torch.no_grad():
            target_action = self.actor_target(h_next)
            noise = torch.randn(target_action.shape, generator=self.generator, device=target_action.device)
            noise = (noise * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (target_action + noise).clamp(-1.0, 1.0)
            target_q = reward + discount * c.gamma * self.critic_target(h_next, next_action).min(0).values
        q = self.critic(h, action)
        critic_loss = (q - target_q).pow(2).mean(1).sum()
        metrics = self.critic_step(critic_loss, self.aux_inputs(obs, next_obs, h, h_next, action, reward, discount))
        metrics["q"] = q.detach().mean()

        if self.num_updates % c.policy_delay == 0:
            h_detached = h.detach()
            self.critic.requires_grad_(False)
            actor_loss = -self.critic(h_detached, self.actor(h_detached))[0].mean()  # Q1, as in the paper
            self.optimizer_step(self.actor_optimizer, actor_loss, "actor loss")
            self.critic.requires_grad_(True)
            metrics["actor_loss"] = actor_loss.detach()
            soft_update(self.actor_target, self.actor, c.tau)
            soft_update(self.critic_target, self.critic, c.tau)
            if self.pixels:
                soft_update(self.encoder_target, self.encoder, c.encoder_tau)
        self.num_updates += 1
        return metrics

    def modules(self):
        modules = {"actor": self.actor, "actor_target": self.actor_target, "critic": self.critic,
                   "critic_target": self.critic_target}
        if self.pixels:
            modules.update(encoder=self.encoder, encoder_target=self.encoder_target)
        return modules

    def optimizers(self):
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
