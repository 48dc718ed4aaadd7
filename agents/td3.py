"""Twin Delayed DDPG (Fujimoto et al. 2018), from states, latents or pixels.

Clipped double Q-learning, target policy smoothing (clipped Gaussian noise on the target
action) and a delayed actor with delayed target updates. From pixels, as in SAC
(:mod:`ssrl.agents.sac`), the critic's optimiser trains the conv encoder and the actor reads it
detached; with its own head (``actor_head``) the *target* actor reads the target encoder's conv
trunk, as SAC-AE's TD3 (``denisyarats/pytorch_sac_ae`` td3.py), whose target actor is a Polyak
copy of an actor whose convolutions are tied to the critic's. Every hyper-parameter is a field
of :class:`TD3Config`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import torch

from .base import DRQ, HER, LEGACY, SAC_AE, AgentConfig, OffPolicyAgent
from .networks import DeterministicActor
from .replay import Batch


@dataclasses.dataclass
class TD3Config(AgentConfig):
    """TD3's hyper-parameters (with :class:`~ssrl.agents.base.AgentConfig`'s).

    Defaults from the TD3 paper, SB3 and CleanRL. DrQ and SAC-AE are SAC agents; on pixels
    ``PIXEL_PRESETS`` take their values for what the two algorithms share
    (:data:`~ssrl.agents.base.DRQ`, :data:`~ssrl.agents.base.SAC_AE`,
    :data:`~ssrl.agents.base.LEGACY`): ``"drq"`` (the default) is DrQ's recipe on TD3, which
    the paper says combines with any model-free algorithm (batch 512, replay 100k, 1000 seed
    steps, learning rates 1e-3, one tau 0.01 for the whole critic target, hidden 1024 x 2, K = M
    = 2 random shifts, the actor's own head); ``"sac-ae"`` SAC-AE's shared values (batch 128,
    replay 1e6, tau 0.01 and encoder tau 0.05, no augmentation, the actor's own head);
    ``"legacy"`` this suite's earlier TD3 pixel preset (batch 128, replay 100k, encoder tau
    0.05, K = M = 1, the actor on the critic's encoder output); ``"none"`` the config's own
    defaults, as on vectors (SAC's docstring says when). The TD3 fields keep the TD3
    paper's values in all three (its d = 2 is DrQ's and SAC-AE's update frequency too).
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

    PIXEL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"drq": DRQ, "sac-ae": SAC_AE, "legacy": LEGACY, "none": {}}
    GOAL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"her": HER, "none": {}}
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = AgentConfig.AT_LEAST_ONE + ("policy_delay",)
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = AgentConfig.NON_NEGATIVE + (
        "policy_noise",
        "noise_clip",
        "exploration_noise",
    )


class TD3(OffPolicyAgent):
    """TD3. ``TD3(env, **hyperparams)``; see :class:`TD3Config` for the options and
    :class:`~ssrl.agents.base.OffPolicyAgent` for the other arguments."""

    algo = "td3"
    config_cls = TD3Config
    next_actor_encoder = "target"  # the target actor reads the target encoder (see the module docstring)

    def build_networks(self) -> None:
        c = self.config
        self.actor = DeterministicActor(
            self.feature_dim, self.action_dim, c.hidden_dims, head=self.make_actor_head()
        ).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = self.make_critic()
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
        p = self.prepare(batch)  # M observation views with gradient, K next views without (see prepare)

        # Critic: clipped double-Q targets with smoothed target actions, one per next view,
        # averaged (DrQ's K); the loss is averaged over the observation views (M).
        with torch.no_grad():
            targets = []
            for h_next, actor_next in zip(p.h_nexts, p.actor_nexts):
                target_action = self.actor_target(actor_next)
                noise = torch.randn(target_action.shape, generator=self.generator, device=target_action.device)
                noise = (noise * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
                next_action = (target_action + noise).clamp(-1.0, 1.0)
                targets.append(p.reward + p.discount * c.gamma * self.critic_target(h_next, next_action).min(0).values)
            target_q = self.average(targets)
        critic_loss, q, model_loss = self.critic_loss(p, target_q)
        metrics = self.critic_step(critic_loss, p, model_loss)  # steps the critic and the encoder
        metrics["q"] = q.detach().mean()

        # Delayed actor (on the first view, no gradient into the encoder) and target updates.
        if self.num_updates % c.policy_delay == 0:
            actor_in, h_critic = self.actor_update_inputs(p)
            self.critic.requires_grad_(False)
            actor_loss = -self.critic(h_critic, self.actor(actor_in))[0].mean()  # Q1, as in the paper
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
