"""Soft Actor-Critic (Haarnoja et al. 2018), from states, latents or pixels.

Twin Q networks with Polyak-averaged targets, a tanh-Gaussian policy, and the temperature
tuned automatically toward the target entropy -|A|. From pixels it is DrQ's algorithm by default
(``pixel_preset="drq"``: K = 2 target and M = 2 loss augmentations of random shifts, the actor's
own head on the detached conv features), or SAC-AE's SAC (``"sac-ae"``), or this suite's
earlier pixel SAC (``"legacy"``); see :mod:`ssrl.agents.base`. There is one conv encoder, and
the *critic's* optimiser trains it: the critic loss (plus an aux objective's loss, if there is
one) is the only gradient that reaches it. The actor reads it *detached*, so the actor loss
trains the actor (and its head) only. Every hyper-parameter is a field of :class:`SACConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import torch

from .base import DRQ, HER, LEGACY, SAC_AE, AgentConfig, OffPolicyAgent
from .networks import TanhGaussianActor
from .replay import Batch


@dataclasses.dataclass
class SACConfig(AgentConfig):
    """SAC's hyper-parameters (with :class:`~ssrl.agents.base.AgentConfig`'s).

    Defaults for state/latent observations follow SB3 and CleanRL. On pixels ``PIXEL_PRESETS``
    replaces some of them first, by ``pixel_preset``:

    ``"drq"`` (the default)
        DrQ exactly (Kostrikov, Yarats and Fergus, ICLR 2021; ``denisyarats/drq`` config.yaml and
        drq.py): batch 512 (the paper's; config.yaml's default is 128), replay 100k, 1000 seed
        steps, one learning rate 1e-3 with Adam's default betas for actor, critic (and encoder)
        and temperature, initial temperature 0.1, critic tau 0.01 for the whole critic target
        encoder included, actor and target updates every 2 steps, hidden 1024 x 2, log-std
        bounds [-10, 2], K = M = 2 random-shift augmentations, the actor's own head.
    ``"sac-ae"``
        SAC-AE's SAC (Yarats et al. 2019; ``denisyarats/pytorch_sac_ae`` train.py): batch 128,
        replay 1e6, 1000 initial steps, learning rates 1e-3, temperature learning rate 1e-4 with
        Adam beta1 0.5, initial temperature 0.1, critic tau 0.01 and encoder tau 0.05, actor and
        target updates every 2 steps, hidden 1024 x 2, log-std bounds [-10, 2], no augmentation,
        the actor's own head.
    ``"legacy"``
        This suite's earlier pixel preset: DrQ's config.yaml sizes (batch 128) with SAC-AE's
        temperature optimiser (1e-4, beta1 0.5) and encoder tau 0.05, one augmentation
        (K = M = 1), the actor on the critic's encoder output detached.
    ``"none"``
        The defaults above, as on vectors (hidden 256 x 2, batch 256, 5000 random steps, SB3's
        rates), with the field defaults of the pixel-only fields (one random shift, K = M = 1):
        the latent agent given pixels, e.g. when the critics fine-tune a pretrained encoder on
        a goal env whose latent-agent rows it is compared with.
    """

    # Adam learning rate of log(alpha), the temperature. SB3's 3e-4; pixel presets: DrQ's 1e-3
    # (its one lr), SAC-AE's 1e-4.
    alpha_lr: float = 3e-4
    # Adam beta1 of the temperature optimiser. Adam's 0.9 (DrQ's too); SAC-AE's alpha_beta 0.5.
    alpha_beta1: float = 0.9
    # Initial temperature alpha. SB3's ent_coef="auto" starts at 1.0; pixel presets: DrQ's and
    # SAC-AE's init_temperature 0.1.
    init_alpha: float = 1.0
    # Entropy the temperature is tuned toward, in nats; None: -|A| (SAC v2, SB3 "auto", DrQ, SAC-AE).
    target_entropy: float | None = None
    # Actor and temperature updates every this many critic updates. SB3's 1; pixel presets 2
    # (DrQ's actor_update_frequency, SAC-AE's actor_update_freq).
    actor_update_freq: int = 1
    # Target critic (and target encoder) updates every this many critic updates. SB3's
    # target_update_interval 1; pixel presets 2 (DrQ's critic_target_update_frequency, SAC-AE's
    # critic_target_update_freq).
    target_update_freq: int = 1
    # Range the policy's log standard deviation is squashed into (tanh, then rescaled), as in
    # CleanRL's SAC (-5, 2); pixel presets: DrQ's log_std_bounds and SAC-AE's actor_log_std_min/max
    # (-10, 2).
    log_std_bounds: tuple[float, float] = (-5.0, 2.0)

    POSITIVE: ClassVar[tuple[str, ...]] = AgentConfig.POSITIVE + ("init_alpha",)
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = AgentConfig.NON_NEGATIVE + ("alpha_lr",)
    IN_RANGE: ClassVar[dict[str, tuple[float, float, bool, bool]]] = dict(
        AgentConfig.IN_RANGE, alpha_beta1=(0.0, 1.0, True, False)
    )

    # HER's recipe on goal envs (see AgentConfig.goal_preset), with the temperature at the same
    # learning rate as the networks (ours: baselines' HER is DDPG and has no temperature).
    GOAL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"her": dict(HER, alpha_lr=1e-3), "none": {}}

    PIXEL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "drq": dict(
            DRQ,
            alpha_lr=1e-3,  # drq.py: log_alpha_optimizer = Adam([log_alpha], lr=lr), lr 1e-3
            alpha_beta1=0.9,  # drq.py: Adam's default betas (0.9, 0.999)
            init_alpha=0.1,  # config.yaml init_temperature: 0.1
            target_entropy=None,  # drq.py: target_entropy = -|A|
            actor_update_freq=2,  # config.yaml actor_update_frequency: 2
            target_update_freq=2,  # config.yaml critic_target_update_frequency: 2
            log_std_bounds=(-10.0, 2.0),  # config.yaml actor log_std_bounds: [-10, 2]
        ),
        "sac-ae": dict(
            SAC_AE,
            alpha_lr=1e-4,  # train.py --alpha_lr 1e-4
            alpha_beta1=0.5,  # train.py --alpha_beta 0.5
            init_alpha=0.1,  # train.py --init_temperature 0.1
            target_entropy=None,  # sac_ae.py: target_entropy = -|A|
            actor_update_freq=2,  # train.py --actor_update_freq 2
            target_update_freq=2,  # train.py --critic_target_update_freq 2
            log_std_bounds=(-10.0, 2.0),  # train.py --actor_log_std_min -10, --actor_log_std_max 2
        ),
        "legacy": dict(
            LEGACY,
            alpha_lr=1e-4,
            alpha_beta1=0.5,
            init_alpha=0.1,
            target_entropy=None,
            actor_update_freq=2,
            target_update_freq=2,
            log_std_bounds=(-10.0, 2.0),
        ),
        "none": {},
    }
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = AgentConfig.AT_LEAST_ONE + ("actor_update_freq", "target_update_freq")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.log_std_bounds = tuple(self.log_std_bounds)
        low, high = self.log_std_bounds
        if not low < high:
            raise ValueError(f"SACConfig.log_std_bounds must be (low, high) with low < high, got {self.log_std_bounds}")


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
        self.actor = TanhGaussianActor(
            self.feature_dim, self.action_dim, c.hidden_dims, c.log_std_bounds, head=self.make_actor_head()
        ).to(self.device)
        self.critic = self.make_critic()
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(torch.tensor(c.init_alpha).log()), device=self.device, requires_grad=True)
        self.target_entropy = -float(self.action_dim) if c.target_entropy is None else float(c.target_entropy)
        # The actor optimiser holds the actor's own head, never the encoder.
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
        p = self.prepare(batch)  # M observation views with gradient, K next views without (see prepare)
        alpha = self.alpha.detach()

        # Critic: soft Bellman targets from the target critics and fresh next actions, one per
        # next view, averaged (DrQ's K); the loss is averaged over the observation views (M).
        with torch.no_grad():
            targets = []
            for h_next, actor_next in zip(p.h_nexts, p.actor_nexts):
                next_action, next_log_prob = self.actor(actor_next, self.generator)
                next_q = self.critic_target(h_next, next_action).min(0).values - alpha * next_log_prob
                targets.append(p.reward + p.discount * c.gamma * next_q)
            target_q = self.average(targets)
        critic_loss, q, model_loss = self.critic_loss(p, target_q)  # MSE of each Q, summed (SAC-AE, DrQ)
        # The critic optimiser steps the critic *and the encoder*: ``p.hs`` carry the gradient
        # of the critic loss (and ``p.latent`` that of the aux loss) back into the conv encoder.
        metrics = self.critic_step(critic_loss, p, model_loss)
        metrics["q"] = q.detach().mean()

        # Actor and temperature, on the first view: no actor gradient reaches the encoder.
        if self.num_updates % c.actor_update_freq == 0:
            actor_in, h_critic = self.actor_update_inputs(p)
            self.critic.requires_grad_(False)  # no use computing critic weight gradients here
            pi_action, log_prob = self.actor(actor_in, self.generator)
            actor_loss = (alpha * log_prob - self.critic(h_critic, pi_action).min(0).values).mean()
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
