"""What SAC and TD3 share: observations, the pixel encoder, the replay, acting, checkpoints.

An agent is built from an env (for its spaces) and a config dataclass whose defaults depend on
the observation: vectors (states or frozen-encoder latents) or pixels (a frame stack, encoded by
the suite's conv encoder). On pixels a named preset (``pixel_preset``, a config field) replaces
some defaults: ``"drq"`` (the default: DrQ's values and update, exactly), ``"sac-ae"`` (SAC-AE's),
``"legacy"`` (this suite's earlier pixel preset) or ``"none"`` (the defaults, as on vectors);
see :data:`DRQ`, :data:`SAC_AE`, :data:`LEGACY` and each algorithm's ``PIXEL_PRESETS``.
Subclasses define the networks and ``update(batch)``; the training loop lives in
:mod:`ssrl.agents.trainer`, the checkpoint files in :mod:`ssrl.agents.checkpoint`.

The pixel path follows SAC-AE (Yarats et al. 2019, ``denisyarats/pytorch_sac_ae``) and DrQ
(Kostrikov, Yarats and Fergus, ICLR 2021, ``denisyarats/drq``): one conv encoder, with an EMA
copy for targets, is trained by the critic's loss only. With ``actor_head`` (both codes) the actor
has its own Linear + LayerNorm (+ tanh) head on the encoder's *conv* output read detached (the
convolutions are shared, the fc/LayerNorm heads are not), SAC's next actions for the target
come from the online convolutions (TD3's target actor reads the target encoder's), and the
actor's update encodes the observations anew after the critic's step, as both codes do; an
adopted encoder (``encoder=``) is a black box, so the head then reads its output. Without it
(``"legacy"``) the actor reads the critic's encoder output detached, from before the critic's
step, and the next actions read the target encoder's output.

DrQ's regularisation (``target_augmentations`` K, ``critic_augmentations`` M): each update
augments the observations M times and the next observations K times independently; the target
is the mean of the K targets, the critic loss the mean of the M losses (:meth:`prepare`,
:meth:`OffPolicyAgent.critic_loss`). Encoder passes per update: M with gradient and K without
(the target encoder), plus, with an actor head, K more without gradient in SAC (the next actions
read the online convolutions) and one every actor update; the legacy preset makes two.

A goal env whose ``observation`` is an image and whose goals are vectors (grasp2vec's instance
grasping: the bin image, goals embedded by the object tower) is a pixel agent too: the conv
encoder reads the image, the desired goal is appended to its output (a :class:`GoalImage` is the
network input), and with ``actor_head`` the actor's head reads those features, not the trunk.
Both presets apply, the pixel one first, then the goal one.

Auxiliary objectives (DBC, DeepMDP, contrastive) plug in through ``aux``, an
:class:`~ssrl.representations.objective.AuxObjective`: ``loss(AuxInputs) -> (loss, metrics)``
is added to the critic loss on the same batch (its first augmented view), so its gradient
reaches the encoder, and its own ``parameters()`` (reward and transition models) get their own
optimiser.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ssrl.representations.backbones import EncoderConfig, encoder_from_config
from ssrl.representations.objective import AuxInputs, AuxObjective
from ssrl.utils import PRECISIONS, autocast, build_config, is_image_space, resolve_device, resolve_precision

from . import checkpoint
from .augment import random_shift
from .networks import ActorHead, RLHeadEncoder, RunningNormalizer, TwinQ, soft_update
from .replay import GOAL_KEYS, Batch, ReplayBuffer

CONV_INITS = ("delta-orthogonal", "orthogonal")


@dataclasses.dataclass
class AgentConfig:
    """Hyper-parameters SAC and TD3 share; each algorithm's config adds its own.

    Defaults are for state or latent observations and follow Stable-Baselines3 and CleanRL. On
    pixels the preset named by ``pixel_preset`` (an entry of the subclass's ``PIXEL_PRESETS``)
    replaces some of them first, and the values given replace the preset's. Steps are agent steps
    (one ``act`` each, whatever the env's action repeat) unless a name says otherwise.
    """

    # Discount factor per agent step. SB3/CleanRL/DrQ/SAC-AE all use 0.99.
    gamma: float = 0.99
    # Transitions per gradient update. SB3's 256; pixel presets: DrQ's 512, SAC-AE's 128.
    batch_size: int = 256
    # Replay capacity, in transitions. SB3/CleanRL 1e6; pixel presets: DrQ's 100k, SAC-AE's 1e6.
    buffer_size: int = 1_000_000
    # Agent steps of uniform random actions (and no updates) at the start. CleanRL SAC's 5000;
    # pixel presets: DrQ's num_seed_steps and SAC-AE's init_steps, 1000.
    learning_starts: int = 5000
    # Gradient updates per agent step after ``learning_starts``. SB3's gradient_steps=1.
    updates_per_step: int = 1
    # Adam learning rate of the actor. SB3/CleanRL 3e-4; pixel presets 1e-3.
    actor_lr: float = 3e-4
    # Adam learning rate of the critics, and of the pixel encoder (the critic optimiser trains
    # it). SB3's 3e-4; pixel presets 1e-3.
    critic_lr: float = 3e-4
    # Polyak rate of the target critics (target <- tau * online + (1 - tau) * target, per target
    # update). SB3/CleanRL 0.005; pixel presets: critic_tau 0.01 (DrQ, SAC-AE).
    tau: float = 0.005
    # Widths of the hidden layers of the actor and of each critic MLP. SB3's net_arch [256, 256];
    # pixel presets: 1024 x 2 (DrQ, SAC-AE).
    hidden_dims: tuple[int, ...] = (256, 256)
    # A LayerNorm after each hidden layer's Linear in the critics (Linear -> LayerNorm -> ReLU),
    # as DroQ (Hiraoka et al. 2022) and RLPD (Ball et al. 2023) do: it bounds the features Q
    # is linear in, which keeps Q estimates from running away at high update ratios. Off by
    # default (SB3, CleanRL, DrQ and SAC-AE have none). The actor is unchanged.
    critic_layer_norm: bool = False
    # Widths of the critics' hidden layers where they differ from the actor's; None: hidden_dims.
    # Ours (SB3 splits them the same way, net_arch=dict(pi=..., qf=...)).
    critic_hidden_dims: tuple[int, ...] | None = None
    # Vector observations only: the weight lambda of an auxiliary loss on the critics' features
    # (0: off, the default everywhere). Each critic's last hidden layer phi_i(s, g, a) also
    # predicts, through its own linear head, how the standardised observation the critics read
    # changes over the transition (their goal entries excluded):
    #     L_model = sum_i mean_{batch, entries} (W_i phi_i(s, g, a) + b_i - (s' - s))^2,
    # and the critics' optimiser minimises L_Q + lambda L_model. The features Q is linear in must
    # then carry what the action does to the observation, a signal TD targets give only slowly
    # (on Push, critics reading a VAE's latents learn far more slowly than critics reading the
    # true state; README, RIG). Ours; it is DeepMDP's and SPR's latent-model idea applied to the
    # critics' own hidden layer instead of an encoder's output.
    critic_model_weight: float = 0.0
    # Goal envs only: fraction of each batch relabelled with hindsight goals ("future"
    # strategy). 0.8 is SB3's HerReplayBuffer default n_sampled_goal=4 (4 of 5).
    her_ratio: float = 0.8
    # Vector observations (and goals) standardised by running statistics of the replay batches
    # the agent trains on, clipped to +-5 (HER's normaliser, openai/baselines). Positions in
    # metres differ by centimetres, which an unnormalised MLP barely resolves. Ours; off by
    # default (SB3 and CleanRL do not normalise). Ignored on pixels.
    normalize_obs: bool = False
    # -- goal envs only ------------------------------------------------------------------------
    # The goal preset (a name of the algorithm's GOAL_PRESETS) applied on goal envs before the
    # values given: "her" (the default: HER's recipe, openai/baselines her: gamma 0.98, learning
    # rates 1e-3, the running normaliser, relabelling 4 of 5) or "none" (the defaults above).
    # Ignored elsewhere.
    goal_preset: str = "her"
    # Goal envs that imagine goals (``sample_goals(n, rng, like)``, e.g. a beta-VAE's prior in RIG):
    # fraction of each batch relabelled with imagined goals. 0 by default; RIG's pusher
    # (rlkit v0.1.2 examples/rig/pusher) used 0.5 with her_ratio 0.4 (and 0.1 rollout goals).
    imagined_goal_ratio: float = 0.0
    # Vector goal envs: the (observation, goal) entries the critics read in place of the actor's
    # ("observation", "desired_goal"): an asymmetric actor-critic (Pinto et al. 2018), whose
    # critics see privileged simulator state while the actor reads only what it acts on at test
    # time. The goal entry must be the desired half of the env's ``reward_keys``, so hindsight
    # relabelling rewrites it with the same instant's achieved value it rewards against; the
    # observation entry must not depend on the goal (relabelling leaves it as stored). None
    # (the default, as everywhere else): the critics read what the actor reads.
    critic_keys: tuple[str, str] | None = None
    # Multiplies every reward the agent learns from (its critics' targets, and an aux objective's
    # reward model), as rlkit's SACTrainer reward_scale and the SAC paper's reward scale. 1 (SB3
    # and CleanRL have none). A latent distance (RIG) runs 20-50 times a state distance in metres,
    # and SAC's temperature starts alike whatever the scale: on Push, an agent observing the true
    # state but rewarded by a 32-latent VAE's distance left the puck 9.3 and 7.0 cm from its goal
    # at 100k env steps (seeds 0, 1), and 4.5 and 5.4 cm with reward_scale=0.02 (README, RIG).
    reward_scale: float = 1.0
    # Adam learning rate of the aux objective's own models (reward and transition). DBC's
    # decoder_lr 1e-3 (facebookresearch/deep_bisim4control train.py).
    aux_lr: float = 1e-3
    # "fp32"; "bf16": matmuls and convs in bfloat16 (weights, Adam states and losses stay fp32);
    # "auto": bf16 where the hardware has native bfloat16 (resolve_precision), else fp32. The
    # agent stores the resolved value, so a checkpoint resumes in the precision it ran in.
    # Ours. The default is "auto": state SAC on cartpole-swingup reached 847.7 +- 6.7 at 100k in
    # fp32 and 848.5 +- 9.8 in bf16 over 10 seeds each (README, Agents), at about 2x the speed.
    precision: str = "auto"
    # -- pixels only -------------------------------------------------------------------------
    # The pixel preset (a name of the algorithm's PIXEL_PRESETS): "drq" (DrQ exactly), "sac-ae"
    # (SAC-AE's values), "legacy" (this suite's earlier preset: DrQ's sizes with SAC-AE's
    # temperature optimiser and encoder tau, K = M = 1, the actor on the critic's head) or "none"
    # (the defaults, as on vectors). Ignored on vector observations.
    pixel_preset: str = "drq"
    # Conv encoder architecture, a name of ssrl.representations.backbones.ARCHITECTURES. "dmc":
    # the 4-layer conv of SAC-AE, CURL, DrQ and DBC.
    encoder_arch: str = "dmc"
    # How the encoder's feature map becomes a vector: None (the architecture's own: flatten for
    # dmc and fast, as the published encoders), "mean" or "keypoints" (a spatial softmax, Levine
    # et al. 2016's feature points); see ssrl.representations.backbones.POOLING. Ours.
    encoder_pool: str | None = None
    # Encoder output size (the latent the critics, and the actor's own head, produce).
    # SAC-AE/DrQ/DBC's 50.
    feature_dim: int = 50
    # tanh after the encoder's LayerNorm (and the actor head's): SAC-AE and DrQ do it, CURL and
    # DBC do not.
    encoder_tanh: bool = True
    # Initialisation of the convolutions of an encoder the agent builds: "delta-orthogonal"
    # (SAC-AE's weight_init, the suite's backbones' own) or "orthogonal" (DrQ's utils.weight_init:
    # orthogonal with ReLU gain over the whole kernel). Linear layers are orthogonal in both.
    conv_init: str = "delta-orthogonal"
    # Polyak rate of the target encoder, at each target update. SAC-AE's and CURL's encoder_tau
    # 0.05; None: ``tau``, i.e. the whole critic target, encoder included, is one EMA (DrQ has no
    # encoder tau: it soft-updates the whole critic at critic_tau).
    encoder_tau: float | None = 0.05
    # Adam learning rate of the encoder in the critic's optimiser; None: critic_lr. Fine-tuning
    # a pretrained encoder (``--regime finetune``) often wants it lower.
    encoder_lr: float | None = None
    # Whether the critic's loss trains the encoder. False is the decoupled regime (ATC): the
    # critic and the actor read the encoder's output detached, and only an aux objective (the
    # representation's own loss on replay batches) trains it.
    critic_trains_encoder: bool = True
    # With critic_trains_encoder off (the decoupled regime): the critic and the actor read the
    # encoder's conv trunk detached through the agent's own Linear + LayerNorm (+ tanh) head of
    # feature_dim, which the critic trains (ssrl.agents.networks.RLHeadEncoder), as ATC's online
    # agents (rlpyt's stop_rl_conv_grad: the RL gradient stops at the conv layers). False: they
    # read the method's own code (its compressor, trained by its loss alone).
    rl_head: bool = False
    # Observation augmentation of replay batches: "shift" (DrQ's random shift) or None.
    augment: str | None = "shift"
    # Largest shift of "shift", in pixels each way. DrQ's image_pad 4 (for 84x84 images).
    shift_pad: int = 4
    # K: independently augmented copies of each next observation; the critic's target is the
    # mean of the K targets (DrQ's K = 2). 1: one target, as in SAC-AE and RAD.
    target_augmentations: int = 1
    # M: independently augmented copies of each observation; the critic's loss is the mean of
    # the M losses (DrQ's M = 2). 1: one loss.
    critic_augmentations: int = 1
    # The actor's own Linear + LayerNorm (+ tanh) head (ssrl.agents.networks.ActorHead) on the
    # encoder's conv output read detached, as SAC-AE's and DrQ's actors (convolutions tied to the
    # critic's, their own fc/LayerNorm); on an adopted encoder it reads the encoder's output.
    # False: the actor reads the critic's encoder output detached (the legacy preset).
    actor_head: bool = False

    # Pixel presets by name: field values applied before the user's (a subclass's; see above).
    PIXEL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Goal presets by name, the same way on goal envs.
    GOAL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Fields that must be at least 1 (checked in __post_init__; subclasses extend it).
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = (
        "batch_size",
        "buffer_size",
        "updates_per_step",
        "target_augmentations",
        "critic_augmentations",
    )

    # Fields that must be positive, non-negative, or in an interval (low, high, low included,
    # high included); None is allowed where the field's type allows it. Checked in __post_init__
    # so a mistyped value (gamma=2, a negative learning rate) fails before a run starts.
    # Learning rates may be 0: that freezes what the optimiser trains (tests and ablations do).
    POSITIVE: ClassVar[tuple[str, ...]] = ("reward_scale",)
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = (
        "learning_starts",
        "shift_pad",
        "actor_lr",
        "critic_lr",
        "aux_lr",
        "encoder_lr",
        "critic_model_weight",
    )
    IN_RANGE: ClassVar[dict[str, tuple[float, float, bool, bool]]] = {
        "gamma": (0.0, 1.0, False, True),
        "tau": (0.0, 1.0, False, True),
        "encoder_tau": (0.0, 1.0, False, True),
        "her_ratio": (0.0, 1.0, True, False),
        "imagined_goal_ratio": (0.0, 1.0, True, False),
    }

    @classmethod
    def _preset(cls, kind: str, presets: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
        if name not in presets:
            valid = ", ".join(sorted(presets))
            raise ValueError(f"unknown {kind} {name!r} for {cls.__name__}; valid presets: {valid}")
        return dict(presets[name])

    @classmethod
    def pixel_preset_values(cls, name: str) -> dict[str, Any]:
        """The field values of the pixel preset ``name``.

        :raises ValueError: no such preset; the message names the valid ones.
        """
        return cls._preset("pixel_preset", cls.PIXEL_PRESETS, name)

    @classmethod
    def goal_preset_values(cls, name: str) -> dict[str, Any]:
        """The field values of the goal preset ``name``.

        :raises ValueError: no such preset; the message names the valid ones.
        """
        return cls._preset("goal_preset", cls.GOAL_PRESETS, name)

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        if self.critic_hidden_dims is not None:
            self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        if self.critic_keys is not None:  # its type (two names) is checked by build_config
            self.critic_keys = tuple(self.critic_keys)
        if self.PIXEL_PRESETS:
            self.pixel_preset_values(self.pixel_preset)
        if self.GOAL_PRESETS:
            self.goal_preset_values(self.goal_preset)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {self.precision!r}")
        if self.augment not in (None, "shift"):
            raise ValueError(f"augment must be None or 'shift', got {self.augment!r}")
        if self.conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be one of {', '.join(map(repr, CONV_INITS))}, got {self.conv_init!r}")
        where = type(self).__name__
        if self.rl_head and self.critic_trains_encoder:
            raise ValueError(
                f"{where}.rl_head reads the encoder's trunk detached, so it needs critic_trains_encoder=False "
                "(the decoupled regime)"
            )
        for name in self.AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        for name in self.POSITIVE:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{where}.{name} must be positive, got {value}")
        for name in self.NON_NEGATIVE:
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise ValueError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        for name, (low, high, low_in, high_in) in self.IN_RANGE.items():
            value = getattr(self, name)
            if value is None:
                continue
            above = value >= low if low_in else value > low
            below = value <= high if high_in else value < high
            if not (above and below):
                interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
                raise ValueError(f"{where}.{name} must be in {interval}, got {value}")
        for name in ("hidden_dims", "critic_hidden_dims"):
            widths = getattr(self, name)
            if widths is not None and (not widths or any(h < 1 for h in widths)):
                raise ValueError(f"{where}.{name} must be one or more positive widths, got {widths}")

    @property
    def critic_widths(self) -> tuple[int, ...]:
        """The critics' hidden widths: ``critic_hidden_dims``, or the actor's ``hidden_dims``."""
        return self.hidden_dims if self.critic_hidden_dims is None else self.critic_hidden_dims


# -- pixel presets: the values SAC and TD3 share (each algorithm adds its own) ----------------

# DrQ: Kostrikov, Yarats and Fergus, "Image Augmentation Is All You Need", ICLR 2021, and its
# code, denisyarats/drq (config.yaml, drq.py, replay_buffer.py, utils.py).
DRQ: dict[str, Any] = dict(
    gamma=0.99,  # config.yaml discount: 0.99
    # The paper's batch. config.yaml's default is 128, with "IMPORTANT: please use a batch size
    # of 512 to reproduce the results in the paper"; the README's reproduction command passes
    # batch_size=512.
    batch_size=512,
    buffer_size=100_000,  # config.yaml replay_buffer_capacity: 100000
    learning_starts=1000,  # config.yaml num_seed_steps: 1000
    actor_lr=1e-3,  # config.yaml lr: 1e-3, one rate for actor, critic (+ encoder) and temperature
    critic_lr=1e-3,  # same lr; drq.py: Adam(critic.parameters(), lr=lr), default betas (0.9, 0.999)
    encoder_lr=None,  # drq.py: the encoder is in the critic's optimiser, at its lr
    tau=0.01,  # config.yaml critic_tau: 0.01
    encoder_tau=None,  # drq.py: soft_update_params(critic, critic_target, critic_tau), encoder included
    hidden_dims=(1024, 1024),  # config.yaml critic/actor hidden_dim: 1024, hidden_depth: 2
    encoder_arch="dmc",  # drq.py Encoder: conv3x3(32, s2) + 3 conv3x3(32, s1), fc, LayerNorm
    feature_dim=50,  # config.yaml encoder feature_dim: 50
    encoder_tanh=True,  # drq.py Encoder: output_logits = False, so tanh after the LayerNorm
    conv_init="orthogonal",  # drq.py: self.apply(utils.weight_init), orthogonal convs with ReLU gain
    augment="shift",  # replay_buffer.py: ReplicationPad2d(image_pad) + kornia RandomCrop(84)
    shift_pad=4,  # config.yaml image_pad: 4
    target_augmentations=2,  # K = 2: paper Alg. 1 (DrQ on SAC); drq.py update_critic averages 2 targets
    critic_augmentations=2,  # M = 2: paper Alg. 1; drq.py update_critic, losses on obs and obs_aug
    actor_head=True,  # drq.py Actor: own Encoder, convs tied to the critic's, detach_encoder=True
)

# SAC-AE: Yarats et al., "Improving Sample Efficiency in Model-Free Reinforcement Learning from
# Images", 2019; denisyarats/pytorch_sac_ae (train.py defaults, sac_ae.py), its SAC without the
# decoder (the repository's pixel SAC baseline).
SAC_AE: dict[str, Any] = dict(
    gamma=0.99,  # train.py --discount 0.99
    batch_size=128,  # train.py --batch_size 128
    buffer_size=1_000_000,  # train.py --replay_buffer_capacity 1000000
    learning_starts=1000,  # train.py --init_steps 1000
    actor_lr=1e-3,  # train.py --actor_lr 1e-3 (--actor_beta 0.9: Adam's default beta1)
    critic_lr=1e-3,  # train.py --critic_lr 1e-3 (--critic_beta 0.9); the critic's optimiser holds the encoder
    encoder_lr=None,  # sac_ae.py: Adam(critic.parameters(), lr=critic_lr), encoder included
    tau=0.01,  # train.py --critic_tau 0.01
    encoder_tau=0.05,  # train.py --encoder_tau 0.05
    hidden_dims=(1024, 1024),  # train.py --hidden_dim 1024; sac_ae.py: two hidden layers
    encoder_arch="dmc",  # encoder.py PixelEncoder, --num_layers 4, --num_filters 32
    feature_dim=50,  # train.py --encoder_feature_dim 50
    encoder_tanh=True,  # encoder.py: fc -> LayerNorm -> tanh
    conv_init="delta-orthogonal",  # sac_ae.py weight_init: delta-orthogonal convolutions
    augment=None,  # SAC-AE does not augment observations
    shift_pad=4,  # (unused: no augmentation)
    target_augmentations=1,  # one target
    critic_augmentations=1,  # one loss
    actor_head=True,  # sac_ae.py Actor: own encoder, copy_conv_weights_from(critic.encoder), detach_encoder=True
)

# This suite's earlier pixel preset, kept so that its runs can be repeated and resumed: DrQ's
# config.yaml sizes (batch 128) with SAC-AE's encoder tau (and, in SAC, SAC-AE's temperature
# optimiser), one augmentation (K = M = 1) and the actor reading the critic's encoder output
# detached. Checkpoints written before presets existed load with it.
LEGACY: dict[str, Any] = dict(
    gamma=0.99,
    batch_size=128,
    buffer_size=100_000,
    learning_starts=1000,
    actor_lr=1e-3,
    critic_lr=1e-3,
    encoder_lr=None,
    tau=0.01,
    encoder_tau=0.05,
    hidden_dims=(1024, 1024),
    encoder_arch="dmc",
    feature_dim=50,
    encoder_tanh=True,
    conv_init="delta-orthogonal",
    augment="shift",
    shift_pad=4,
    target_augmentations=1,
    critic_augmentations=1,
    actor_head=False,
)


# HER: Andrychowicz et al. 2017 and openai/baselines her (her/experiment/config.py DEFAULT_PARAMS),
# on goal envs. On Push (state) it took SAC from 0% success at 30k env steps to 65% at 15k.
HER: dict[str, Any] = dict(
    gamma=0.98,  # config.py: gamma = 1 - 1/T with T = 50 steps: 0.98
    actor_lr=1e-3,  # config.py pi_lr: 0.001
    critic_lr=1e-3,  # config.py Q_lr: 0.001
    normalize_obs=True,  # config.py norm_eps 0.01, norm_clip 5 (her/normalizer.py)
    her_ratio=0.8,  # config.py replay_k: 4, so 4 of 5 relabelled ("future")
)


class TrainingDiverged(RuntimeError):
    """A loss or an observation became NaN or infinite."""


class GoalImage(NamedTuple):
    """Network input of pixels with a goal vector: uint8 images (B, C, H, W) and goals (B, D)."""

    image: torch.Tensor
    goal: torch.Tensor


@dataclasses.dataclass
class Prepared:
    """A replay batch on the agent's device, with the encoder passes of an update done.

    The single-view fields are the first augmented view (what the aux objective and the actor
    use); the list fields hold every view: ``hs`` the M views of the observations (``hs[0]`` is
    ``h``), ``h_nexts`` and ``actor_nexts`` the K views of the next observations. On vector
    observations ``h`` is ``obs`` and ``h_next`` is ``next_obs``, unless ``critic_keys`` give the
    critics their own entries: then ``h`` and ``h_next`` are those, and ``obs`` what the actor reads.
    """

    obs: torch.Tensor  # (augmented) observations: uint8 images or float vectors
    next_obs: torch.Tensor
    # encoder(obs) (or critic_keys' entries), what the critic reads: with gradient unless it must
    # not train the encoder
    h: torch.Tensor
    h_next: torch.Tensor  # target_encoder(next_obs), without gradient
    action: torch.Tensor  # in [-1, 1], (B, A)
    reward: torch.Tensor  # (B,)
    discount: torch.Tensor  # 0 after a terminal transition, else 1, (B,)
    latent: torch.Tensor | None = None  # encoder(obs) with gradient, for the aux objective
    hs: list[torch.Tensor] = dataclasses.field(default_factory=list)  # critic features of the M views
    h_nexts: list[torch.Tensor] = dataclasses.field(default_factory=list)  # target features of the K views
    # What the actor (SAC) or the target actor (TD3) reads for each of the K next views, no gradient.
    actor_nexts: list[torch.Tensor] = dataclasses.field(default_factory=list)
    # target_encoder(next_obs) for the aux objective when it differs from h_next (rl_head: the
    # method's code, not the agent's head), without gradient.
    latent_next: torch.Tensor | None = None


def _wrapper_attr(env: gym.Env, name: str) -> Any:
    """``env``'s attribute ``name``, looked up through its wrappers, or None."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return None


def _protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a Protocol class declares."""
    methods = {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}
    return sorted(methods | set(getattr(protocol, "__annotations__", {})))


class OffPolicyAgent(abc.ABC):
    """Base of :class:`~ssrl.agents.SAC` and :class:`~ssrl.agents.TD3` (see module docstring).

    :param env: the env to train in; its spaces shape the networks. ``None`` with both spaces
        given builds an agent that only acts or updates from its replay.
    :param aux: an auxiliary objective trained jointly with the critic (pixels only).
    :param device: "auto" (the GPU when torch sees one), "cpu", "cuda", ...
    :param seed: seeds torch's global RNG (network initialisation), the agent's torch generator
        (sampling, augmentation, episode seeds) and numpy generator (random actions), and the
        replay's sampler.
    :param observation_space: instead of ``env.observation_space``.
    :param action_space: instead of ``env.action_space`` (a 1-D Box).
    :param frame_stack: frames per observation; by default the env's own ``frame_stack``.
    :param reward_fn: goal envs: ``compute_reward(achieved, desired, info)`` for hindsight
        relabelling; by default the env's.
    :param hyperparams: fields of the algorithm's config (:attr:`config_cls`).
    """

    algo: ClassVar[str] = ""
    config_cls: ClassVar[type[AgentConfig]]

    def __init__(
        self,
        env: gym.Env | None,
        aux: AuxObjective | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        observation_space: gym.Space | None = None,
        action_space: gym.spaces.Box | None = None,
        frame_stack: int | None = None,
        reward_fn: Callable | None = None,
        encoder: nn.Module | None = None,
        **hyperparams: Any,
    ) -> None:
        self.env = env
        self.observation_space = observation_space if observation_space is not None else env.observation_space
        self.action_space = action_space if action_space is not None else env.action_space
        self._check_spaces()
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.config = self._build_config(hyperparams)
        self._check_critic_keys()
        self._check_aux(aux)
        self.aux = aux
        self.frame_stack = self._resolve_frame_stack(frame_stack)
        # Action bounds: the networks act in [-1, 1] and actions are rescaled to the space.
        self._low = self.action_space.low.astype(np.float32)
        self._high = self.action_space.high.astype(np.float32)
        self.action_dim = int(self.action_space.shape[0])
        self._seed()
        self._build_encoder(encoder)
        self._build_replay(reward_fn)
        # Loop state, saved in checkpoints so that a resumed run continues the same run.
        self.num_agent_steps = 0
        self.num_env_steps = 0
        self.num_updates = 0
        self.num_episodes = 0
        # The return of the last finished training episode: the trainer's "train" records carry
        # it, so a resumed run must know it before its first episode ends.
        self.last_episode_return = math.nan
        self.build_networks()
        self._attach_aux()

    # -- construction, in the order __init__ runs it ------------------------------------------

    def _build_config(self, hyperparams: dict[str, Any]) -> AgentConfig:
        """The config: on pixels the preset ``pixel_preset`` names, on goal envs the one
        ``goal_preset`` names (the default if none is given), then the values given;
        ``precision`` resolved for the device ("auto")."""
        preset: dict[str, Any] = {}
        defaults = {f.name: f.default for f in dataclasses.fields(self.config_cls)}
        if self.pixels:
            preset.update(
                self.config_cls.pixel_preset_values(hyperparams.get("pixel_preset", defaults["pixel_preset"]))
            )
        if self.is_dict:  # pixels with vector goals take both, the goal recipe last
            preset.update(self.config_cls.goal_preset_values(hyperparams.get("goal_preset", defaults["goal_preset"])))
        config = build_config(self.config_cls, hyperparams, preset=preset or None)
        config.precision = resolve_precision(config.precision, self.device)
        return config

    def _check_spaces(self) -> None:
        """Check the spaces and set ``is_dict`` (a goal env) and ``pixels`` (uint8 CHW images)."""
        obs_space, action_space = self.observation_space, self.action_space
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"{self.algo} needs a 1-D continuous (Box) action space, got {action_space}")
        self.is_dict = isinstance(obs_space, gym.spaces.Dict)
        self.pixels = is_image_space(obs_space)
        # Entries of a goal dict the agent keeps in its replay but never reads: the images behind
        # latent entries (EncodedObservation(keep_images=True)), for a replay that re-encodes them.
        self.side_keys: tuple[str, ...] = ()
        # Pixels with vector goals (an image observation, goals embedded by a representation, as
        # in grasp2vec's instance grasping): the conv encoder reads the image and the goal vector
        # is appended to its output; inputs are then GoalImage pairs.
        self.goal_dim = 0
        if self.is_dict:
            spaces = obs_space.spaces
            if not all(k in spaces for k in ("observation", "desired_goal")):
                raise ValueError("dict observations must hold 'observation' and 'desired_goal' (a goal env)")
            read = [k for k in (*GOAL_KEYS, "observation") if k in spaces]
            images = [k for k in read if is_image_space(spaces[k])]
            if images == ["observation"]:
                self.pixels = True
                self.goal_dim = int(np.prod(spaces["desired_goal"].shape))
            elif images:
                raise ValueError(
                    "goal envs with image goals: encode them first, e.g. "
                    "ssrl.representations.EncodedObservation(env, encoder), then train on latents"
                )
            self.side_keys = tuple(k for k in spaces if k not in read)

    def _check_critic_keys(self) -> None:
        """An asymmetric critic (``critic_keys``) reads two vector entries of a vector goal env's
        observation; they are then sampled with every batch, no longer side entries."""
        keys = self.config.critic_keys
        if keys is None:
            return
        spaces = self.observation_space.spaces if self.is_dict else {}
        if not self.is_dict or self.pixels:
            raise ValueError("critic_keys (an asymmetric critic) needs a goal env with vector observations")
        for key in keys:
            space = spaces.get(key)
            if space is None:
                raise ValueError(f"critic_keys entry {key!r} is not in the observation; its entries: {sorted(spaces)}")
            if not isinstance(space, gym.spaces.Box) or is_image_space(space):
                raise ValueError(f"critic_keys entry {key!r} must be a vector Box, got {space}")
        self.side_keys = tuple(k for k in self.side_keys if k not in keys)

    def _check_aux(self, aux: AuxObjective | None) -> None:
        """Refuse an ``aux`` that lacks a member of the AuxObjective protocol, or vector observations."""
        if aux is None:
            return
        if not isinstance(aux, AuxObjective):
            missing = [m for m in _protocol_members(AuxObjective) if not hasattr(aux, m)]
            raise TypeError(
                f"aux must implement ssrl.representations.objective.AuxObjective "
                f"({', '.join(_protocol_members(AuxObjective))}); {type(aux).__name__} lacks {', '.join(missing)}"
            )
        if not self.pixels:
            raise ValueError("an auxiliary objective trains the pixel encoder; this agent has vector observations")
        if self.goal_dim:
            raise ValueError("an auxiliary objective reads image batches; this agent's are images with goal vectors")

    def _resolve_frame_stack(self, frame_stack: int | None) -> int:
        """The frames per observation: as given, else the env's own ``frame_stack``, else 1.

        Only the env's own frame stack counts: a wrapper that changes the observation (an
        encoder, say) hides it. A wrapper that picks one of the env's own stacks says so with its
        ``frame_stack_space`` (:class:`~ssrl.envs.AgentCamera`: the first camera of several).
        """
        if frame_stack is None:
            env = self.env
            own = (
                env is not None
                and not self.is_dict
                and (
                    env.observation_space == env.unwrapped.observation_space
                    or env.observation_space == _wrapper_attr(env, "frame_stack_space")
                )
            )
            frame_stack = getattr(env.unwrapped, "frame_stack", 1) if own else 1
        return int(frame_stack)

    def _seed(self) -> None:
        """Seed torch's global RNG (the network initialisations that follow) and create the
        agent's own generators: ``generator`` (torch, on the device) and ``rng`` (numpy)."""
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)

    def _build_encoder(self, encoder: nn.Module | None) -> None:
        """Pixels: the conv encoder (``encoder`` if given: a representation's, pretrained or not,
        whose architecture then replaces ``encoder_arch``, ``feature_dim``, ``encoder_tanh`` and
        ``conv_init``; with ``rl_head`` it is wrapped in an :class:`RLHeadEncoder` whose head has
        ``feature_dim`` outputs and ``encoder_tanh``) and its EMA target. Set ``feature_dim``, the
        width of what the actor and the critics read (the encoder's output, or the flattened vector
        observation), ``critic_dim`` (the critics' own, ``feature_dim`` unless ``critic_keys``) and
        the normalisers, and ``split_encoder``: whether the actor's own head reads the encoder's
        conv trunk (an encoder the agent built or an ``rl_head``, with ``actor_head``) rather
        than its output."""
        self.encoder: nn.Module | None = None
        self.encoder_target: nn.Module | None = None
        self.split_encoder = False
        self.rl_head = False  # the encoder is an RLHeadEncoder (see AgentConfig.rl_head)
        space = self.observation_space["observation"] if self.goal_dim else self.observation_space
        if encoder is not None and not self.pixels:
            raise ValueError("an encoder was given, but this agent's observations are not images")
        if self.pixels:
            c = self.config
            if encoder is None:
                enc_cfg = EncoderConfig(
                    c.encoder_arch,
                    space.shape[0],
                    tuple(space.shape[1:]),
                    c.feature_dim,
                    output_tanh=c.encoder_tanh,
                    pool=c.encoder_pool,
                )
                encoder = encoder_from_config(enc_cfg)
                if c.conv_init == "orthogonal":
                    _orthogonal_convs(encoder)
                # With goal vectors the actor's head reads the features (image and goal), not the trunk.
                self.split_encoder = c.actor_head and not self.goal_dim
            elif c.rl_head:
                if self.goal_dim:
                    raise ValueError("rl_head is not supported on goal envs (image observation, vector goals)")
                encoder = RLHeadEncoder(encoder, c.feature_dim, c.encoder_tanh)
                self.split_encoder = c.actor_head  # the actor's own head reads the trunk, as the critic's
            if c.rl_head and not isinstance(encoder, RLHeadEncoder):
                raise ValueError(
                    "rl_head reads a representation's conv trunk in the decoupled regime; this agent builds its own "
                    "encoder (use ssrl train --method NAME --regime decoupled, or rl_head=False)"
                )
            self.encoder = encoder.to(self.device)
            self.rl_head = isinstance(self.encoder, RLHeadEncoder)
            self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
            with torch.no_grad():
                probe = torch.zeros(1, *space.shape, dtype=torch.uint8, device=self.device)
                self.feature_dim = int(self.encoder(probe).shape[-1]) + self.goal_dim
        elif self.is_dict:
            spaces = space.spaces
            self.feature_dim = int(np.prod(spaces["observation"].shape) + np.prod(spaces["desired_goal"].shape))
        else:
            self.feature_dim = int(np.prod(space.shape))
        # What the critics read: the same features, or the entries critic_keys names.
        keys = self.config.critic_keys
        self.critic_dim = self.feature_dim
        if keys is not None:
            self.critic_dim = sum(int(np.prod(self.observation_space[k].shape)) for k in keys)
        # The critics' observation: the leading entries of what they read, before any goal
        # (critic_model_weight's head predicts its change).
        self.critic_obs_dim = self.feature_dim
        if self.is_dict and not self.pixels:
            self.critic_obs_dim = int(np.prod(self.observation_space[keys[0] if keys else "observation"].shape))
        if self.config.critic_model_weight > 0 and self.pixels:
            raise ValueError(
                "critic_model_weight models a vector observation's change; on pixels give the encoder an aux "
                "objective instead (ssrl train --method NAME --regime joint)"
            )
        self.obs_normalizer: RunningNormalizer | None = None
        self.critic_normalizer: RunningNormalizer | None = None
        if self.config.normalize_obs and not self.pixels:
            self.obs_normalizer = RunningNormalizer(self.feature_dim).to(self.device)
            if keys is not None:
                self.critic_normalizer = RunningNormalizer(self.critic_dim).to(self.device)

    def _build_replay(self, reward_fn: Callable | None) -> None:
        """The replay buffer, with hindsight relabelling for goal envs that can recompute rewards."""
        obs_space = self.observation_space
        if (
            reward_fn is None
            and self.env is not None
            and self.is_dict
            and all(k in obs_space.spaces for k in GOAL_KEYS)
        ):
            reward_fn = self.env.get_wrapper_attr("compute_reward")
        her_ratio = self.config.her_ratio if self.is_dict and reward_fn is not None else 0.0
        # Imagined goals are drawn from the env; an agent loaded without one (to act, not to
        # train) relabels none.
        goal_sampler, imagined = None, self.config.imagined_goal_ratio if self.env is not None else 0.0
        if imagined:
            try:
                if self.env.get_wrapper_attr("can_imagine_goals"):
                    goal_sampler = self.env.get_wrapper_attr("sample_goals")
            except AttributeError:
                goal_sampler = None
            if goal_sampler is None:
                raise ValueError(
                    f"imagined_goal_ratio={imagined} needs an env that imagines goals (sample_goals(n, rng)): "
                    "a goal env encoded by a representation with a prior, e.g. ssrl train --encoder BETA_VAE.pt"
                )
        # A reward on other entries than the goals (the env's, on the images behind latent goals).
        reward_keys, goal_images = GOAL_KEYS, None
        if self.is_dict and reward_fn is not None and self.env is not None:
            try:
                reward_keys = tuple(self.env.get_wrapper_attr("reward_keys"))
                goal_images = self.env.get_wrapper_attr("decode_goals")
            except AttributeError:
                pass
        critic_goal = self.config.critic_keys[1] if self.config.critic_keys else None
        if critic_goal is not None and (her_ratio or imagined) and critic_goal != reward_keys[1]:
            raise ValueError(
                f"critic_keys' goal {critic_goal!r} is not relabelled: relabelled rows are rewarded against "
                f"{reward_keys[1]!r} (the env's reward_keys {reward_keys}), so the critics must read that goal"
            )
        # Other cameras' frames an env seen through AgentCamera gives in info["views"].
        views, agent_camera = None, None
        if self.env is not None and self.pixels and not self.is_dict:
            views = _wrapper_attr(self.env, "view_shapes")
            agent_camera = _wrapper_attr(self.env, "agent_camera")
        self.replay = ReplayBuffer(
            self.config.buffer_size,
            obs_space,
            self.action_space,
            self.frame_stack,
            reward_fn=reward_fn,
            her_ratio=her_ratio,
            goal_sampler=goal_sampler,
            imagined_ratio=imagined,
            seed=self.seed,
            side_keys=self.side_keys,
            reward_keys=reward_keys,
            goal_images=goal_images,
            views=views,
            agent_camera=agent_camera,
        )
        self.replay_meta: dict | None = None  # which replay save the last checkpoint goes with
        self.hook_state: dict[str, Any] = {}  # the trainer's hooks' states, saved with the agent

    def _attach_aux(self) -> None:
        """Move ``aux`` to the device, hand it the agent's generator (its randomness is part of
        the run's saved state) and give its own parameters an optimiser (``aux_optimizer``)."""
        self.aux_optimizer: torch.optim.Optimizer | None = None
        if self.aux is None:
            return
        self.aux.to(self.device)
        self.aux.generator = self.generator
        aux_params = list(self.aux.parameters())
        if aux_params:
            self.aux_optimizer = torch.optim.Adam(aux_params, lr=self.config.aux_lr)

    def make_actor_head(self) -> ActorHead | None:
        """The actor's own head (``actor_head``, pixels), or None: on an encoder the agent built
        it reads the conv trunk's feature map, on an adopted encoder that encoder's output; it
        outputs ``feature_dim`` values, like the critic's encoder."""
        if not (self.pixels and self.config.actor_head):
            return None
        if self.split_encoder:
            in_dim, pool = self.encoder.fc.in_features, self.encoder.pool
        else:
            in_dim, pool = self.feature_dim, "flatten"
        return ActorHead(in_dim, self.feature_dim, self.config.encoder_tanh, pool).to(self.device)

    # -- what an algorithm defines -------------------------------------------------------------

    @abc.abstractmethod
    def build_networks(self) -> None:
        """Create actor, critics, targets and optimisers (the encoder exists already)."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on a replay batch; returns metrics as 0-d tensors on the device
        (not floats: converting would wait for the device at every update; the trainer converts
        the ones it logs)."""

    @abc.abstractmethod
    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Action in [-1, 1] for features ``h`` (exploration noise included unless deterministic)."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The algorithm's own networks and targets, by name (the encoder is added by
        :meth:`modules`)."""

    def modules(self) -> dict[str, nn.Module]:
        """Everything with weights, by name (checkpoints): the algorithm's networks, and the
        pixel encoder with its target."""
        encoder = {"encoder": self.encoder, "encoder_target": self.encoder_target} if self.pixels else {}
        if self.obs_normalizer is not None:
            encoder["obs_normalizer"] = self.obs_normalizer
        if self.critic_normalizer is not None:
            encoder["critic_normalizer"] = self.critic_normalizer
        return dict(self.networks(), **encoder)

    def update_targets(self, *pairs: tuple[nn.Module, nn.Module]) -> None:
        """Polyak-average each ``(target, online)`` pair at ``tau``, and the encoder's target at
        ``encoder_tau`` (pixels; None: at ``tau``, the whole critic target one EMA as in DrQ)."""
        c = self.config
        for target, online in pairs:
            soft_update(target, online, c.tau)
        if self.pixels:
            soft_update(self.encoder_target, self.encoder, c.tau if c.encoder_tau is None else c.encoder_tau)

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser, by name (checkpoints)."""

    # -- observations --------------------------------------------------------------------------

    def obs_to_tensor(self, obs, augment: bool = False, update_stats: bool = False) -> torch.Tensor:
        """A batch of observations (numpy) -> network input (a float tensor, standardised with
        ``normalize_obs``, or uint8 images); ``update_stats``: the normaliser counts this batch
        first (replay batches the agent trains on). The actor's input, and the critics' unless
        ``critic_keys`` name their own (:meth:`critic_tensor`)."""
        if self.pixels:
            if self.goal_dim:
                image = torch.from_numpy(np.ascontiguousarray(obs["observation"])).to(self.device, non_blocking=True)
                goal = np.asarray(obs["desired_goal"], np.float32).reshape(len(image), -1)
                x = GoalImage(image, torch.from_numpy(goal).to(self.device))
            else:
                x = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device, non_blocking=True)
            return self.augment(x) if augment else x
        return self._normalized(self._vector_input(obs), self.obs_normalizer, update_stats)

    def critic_tensor(self, obs, update_stats: bool = False) -> torch.Tensor:
        """The asymmetric critics' input (``critic_keys``) of a batch of observations, standardised
        by their own normaliser with ``normalize_obs``."""
        if self.config.critic_keys is None:
            raise ValueError("critic_tensor serves an asymmetric critic; this agent's critics read obs_to_tensor")
        return self._normalized(self._vector_input(obs, self.config.critic_keys), self.critic_normalizer, update_stats)

    @staticmethod
    def _normalized(x: torch.Tensor, normalizer: RunningNormalizer | None, update_stats: bool) -> torch.Tensor:
        if normalizer is None:
            return x
        if update_stats:
            normalizer.update(x)
        return normalizer(x)

    def _vector_input(self, obs, keys: tuple[str, str] = ("observation", "desired_goal")) -> torch.Tensor:
        """Vector observations as one float tensor (a goal env's: the entries ``keys``, by default
        [observation, desired_goal])."""
        if self.is_dict:
            parts = [np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in keys]
            return torch.from_numpy(np.concatenate(parts, axis=1)).to(self.device)
        return torch.from_numpy(np.ascontiguousarray(obs)).to(self.device, non_blocking=True).float()

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """One independently augmented view of network input ``x`` (pixels with ``augment``)."""
        if self.pixels and self.config.augment == "shift":
            if isinstance(x, GoalImage):
                return x._replace(image=random_shift(x.image, self.config.shift_pad, self.generator))
            return random_shift(x, self.config.shift_pad, self.generator)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the critics read (unless ``critic_keys`` give them their own entries):
        ``encoder(x)`` on pixels (with a goal vector appended), ``x`` itself otherwise."""
        return self._apply_encoder(self.encoder, x) if self.pixels else x

    @staticmethod
    def _apply_encoder(encoder: nn.Module, x) -> torch.Tensor:
        """``encoder(x)``, or ``[encoder(image), goal]`` for a :class:`GoalImage`."""
        if isinstance(x, GoalImage):
            h = encoder(x.image)
            return torch.cat([h, x.goal.to(h.dtype)], dim=-1)
        return encoder(x)

    def actor_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the actor reads for network input ``x``: the conv trunk's feature map (which its
        own head maps to features) on an encoder the agent built with ``actor_head``, else
        :meth:`features` (an adopted encoder's output, or the critic's features when the actor
        has no head, or the vector itself)."""
        return self.encoder.trunk(x) if self.split_encoder else self.features(x)

    def encode(self, x: torch.Tensor, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features(x), actor_input(x))`` from one pass of the encoder (its EMA target if
        ``target``): the trunk's output serves both the critic's head and the actor's."""
        if not self.pixels:
            return x, x
        encoder = self.encoder_target if target else self.encoder
        if self.split_encoder:
            z = encoder.trunk(x)
            return encoder.head(z), z
        h = self._apply_encoder(encoder, x)
        return h, h

    def check_observation(self, obs) -> None:
        """Raise :class:`TrainingDiverged` if a float observation holds a NaN or an infinity."""
        values = obs.values() if isinstance(obs, dict) else (obs,)
        for v in values:
            v = np.asarray(v)
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise TrainingDiverged(
                    f"the env returned a NaN or infinite observation at env step {self.num_env_steps}"
                )

    # -- acting --------------------------------------------------------------------------------

    def _batch_obs(self, obs):
        if isinstance(obs, dict):
            return {k: np.asarray(v)[None] for k, v in obs.items()}
        return np.asarray(obs)[None]

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """An action for one observation, rescaled to the env's action space."""
        h = self.actor_input(self.obs_to_tensor(self._batch_obs(obs)))
        a = self.policy(h, deterministic)[0].cpu().numpy()
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def random_action(self) -> np.ndarray:
        """A uniform random action in the env's action space (from the agent's numpy generator)."""
        return self.rng.uniform(self._low, self._high).astype(np.float32)

    def action_to_unit(self, action: np.ndarray) -> np.ndarray:
        """Env action -> [-1, 1] (what the replay stores and the networks output)."""
        return 2.0 * (np.asarray(action, np.float32) - self._low) / (self._high - self._low) - 1.0

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """Stable-Baselines3's signature: ``(action, None)``."""
        return self.act(obs, deterministic=deterministic), None

    # -- training ------------------------------------------------------------------------------

    def learn(self, env_steps: int, progress: bool = False, **trainer_kwargs) -> OffPolicyAgent:
        """Train for ``env_steps`` more environment steps (agent steps x action repeat)."""
        from .trainer import Trainer

        if self.env is None:
            raise ValueError("this agent has no env: pass one to the constructor or to load()")
        Trainer(self, self.env, progress=progress, **trainer_kwargs).train(self.num_env_steps + env_steps)
        return self

    # -- pieces of an update shared by SAC and TD3 ---------------------------------------------

    def autocast(self):
        """bfloat16 matmuls and convolutions when ``precision="bf16"`` (4x the fp32 matmul rate
        on CPUs with AVX-512 BF16); network outputs are cast back to fp32 for the losses."""
        return autocast(self.device, self.config.precision)

    # Which encoder the actor's input for the next observations comes from, when the actor has
    # its own head: "online" (SAC: SAC-AE's and DrQ's actor(next_obs), its convolutions tied to
    # the online critic's) or "target" (TD3: the target actor, whose convolutions are the target's).
    next_actor_encoder: ClassVar[str] = "online"

    def prepare(self, batch: Batch) -> Prepared:
        """Batch -> tensors, with the encoder passes of the critic's update.

        The observations are augmented ``critic_augmentations`` (M) times and the next
        observations ``target_augmentations`` (K) times, each view independently (M views first,
        then K, from the agent's generator). Each observation view is encoded with gradient
        (``hs``), each next view by the target encoder without (``h_nexts``); ``actor_nexts``
        is what the actor reads for each next view: without an actor head the target encoder's
        output (legacy), with one the online trunk (SAC) or the target trunk (TD3).
        """
        c = self.config
        obs = self.obs_to_tensor(batch.obs, update_stats=True)
        next_obs = self.obs_to_tensor(batch.next_obs)
        views = [self.augment(obs) for _ in range(c.critic_augmentations)]
        next_views = [self.augment(next_obs) for _ in range(c.target_augmentations)]
        action = torch.from_numpy(batch.action).to(self.device)
        reward = c.reward_scale * torch.from_numpy(batch.reward).to(self.device)
        discount = torch.from_numpy(batch.discount).to(self.device)
        latent_next = None
        if self.rl_head:  # the critic reads its own head on the detached trunk; the aux the method's code
            hs, latents = map(list, zip(*(self.encoder.split(x)[:2] for x in views)))
        else:
            latents = [self.encode(x)[0] for x in views]
            # The decoupled regime: the critic reads the latents detached, so its loss never
            # reaches the encoder; the aux objective still gets them (the first view's) with gradient.
            hs = latents if c.critic_trains_encoder else [h.detach() for h in latents]
        own_head = self.pixels and c.actor_head
        h_nexts, actor_nexts = [], []
        if c.critic_keys is not None:  # vector observations only (_check_critic_keys)
            # The critics read their own entries, the next ones once for all K views (vectors are
            # not augmented); the actor reads the views themselves.
            hs = [self.critic_tensor(batch.obs, update_stats=True)]
            h_nexts, actor_nexts = [self.critic_tensor(batch.next_obs)] * len(next_views), list(next_views)
        else:
            with torch.no_grad():
                for x in next_views:
                    if self.rl_head:
                        h_next, code_next, z_next = self.encoder_target.split(x)
                        latent_next = code_next if latent_next is None else latent_next
                    else:
                        h_next, z_next = self.encode(x, target=True)
                    h_nexts.append(h_next)
                    if not own_head:
                        actor_nexts.append(h_next)
                    elif self.next_actor_encoder == "target":
                        actor_nexts.append(z_next)
                    else:
                        actor_nexts.append(self.actor_input(x))
        return Prepared(
            views[0],
            next_views[0],
            hs[0],
            h_nexts[0],
            action,
            reward,
            discount,
            latents[0],
            hs=hs,
            h_nexts=h_nexts,
            actor_nexts=actor_nexts,
            latent_next=latent_next,
        )

    @staticmethod
    def average(values: list[torch.Tensor]) -> torch.Tensor:
        """The mean of equally shaped tensors (the one itself when there is one)."""
        return values[0] if len(values) == 1 else torch.stack(values).mean(0)

    def critic_loss(
        self, p: Prepared, target_q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(loss, q, model_loss)``: for each of the M observation views, the MSE of each Q
        against ``target_q`` summed over the two Qs (SAC-AE, DrQ: ``mse(Q1) + mse(Q2)``); the
        loss is the mean over the views (the paper's 1/M; drq.py sums its two, a factor 2 that
        Adam's scale invariance all but cancels), ``q`` the first view's Q values, (2, B).
        ``model_loss``: :meth:`critic_model_loss` from the same pass through the critics (vector
        observations: one view) when ``critic_model_weight`` is on, else None."""
        losses, first_q, model_loss = [], None, None
        for h in p.hs:
            if model_loss is None and self.critic.model is not None:
                q, change = self.critic.q_and_change(h, p.action)
                model_loss = self._change_error(change, p)
            else:
                q = self.critic(h, p.action)
            first_q = q if first_q is None else first_q
            losses.append((q - target_q).pow(2).mean(1).sum())
        return self.average(losses), first_q, model_loss

    def actor_update_inputs(self, p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actor input, critic features)`` of the first observation view for the actor's
        loss, neither with a gradient path into the encoder.

        With an actor head the view is encoded again, after the critic's step, as SAC-AE's and
        DrQ's actor updates do (``actor(obs, detach_encoder=True)``, ``critic(obs, action,
        detach_encoder=True)`` run the encoder anew); without one the critic's features from
        before its step, detached (legacy).
        """
        if self.config.critic_keys is not None:  # vector observations: the actor reads p.obs itself
            return p.obs, p.h.detach()
        if not (self.pixels and self.config.actor_head):
            h = p.h.detach()
            return h, h
        with torch.no_grad():
            h, z = self.encode(p.obs)
        return z, h

    def aux_inputs(self, p: Prepared) -> AuxInputs:
        """What the aux objective receives for the batch ``p`` (observations only on pixels)."""
        return AuxInputs(
            p.latent if p.latent is not None else p.h,
            p.latent_next if p.latent_next is not None else p.h_next,
            p.action,
            p.reward,
            p.discount,
            p.obs if self.pixels else None,
            p.next_obs if self.pixels else None,
            self.encoder.source if self.rl_head else self.encoder,  # the method's encoder, not the agent's head
            self.replay.sample_segments if self.pixels and not self.replay.is_dict else None,
        )

    def make_critic(self) -> TwinQ:
        """The twin critics on ``critic_dim`` features, ``critic_widths`` wide, with the model
        head of ``critic_model_weight`` when it is on."""
        c = self.config
        model_dim = self.critic_obs_dim if c.critic_model_weight > 0 else 0
        return TwinQ(self.critic_dim, self.action_dim, c.critic_widths, c.critic_layer_norm, model_dim).to(self.device)

    def critic_model_loss(self, p: Prepared) -> torch.Tensor:
        """``critic_model_weight``'s L_model on the batch ``p``: each critic's prediction of the
        change of the standardised observation it reads (its first ``critic_obs_dim`` entries),
        squared error averaged over batch and entries, summed over the two critics."""
        return self._change_error(self.critic.q_and_change(p.h, p.action)[1], p)

    def _change_error(self, change: torch.Tensor, p: Prepared) -> torch.Tensor:
        """L_model of the critics' predicted changes ``change``, (2, B, critic_obs_dim)."""
        d = self.critic_obs_dim
        actual = (p.h_next[:, :d] - p.h[:, :d]).detach().float()
        return (change - actual).pow(2).mean((1, 2)).sum()

    def critic_step(
        self, critic_loss: torch.Tensor, prepared: Prepared, model_loss: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Backward the critic loss (plus ``critic_model_weight`` times the critics' model loss
        ``model_loss``, and the aux objective's loss, on the same batch) and step their
        optimisers: the critic's, which trains the encoder too, and the aux objective's.

        Refuses to step on a NaN or infinite loss, so the weights stay the last good ones.
        """
        metrics = {"critic_loss": critic_loss.detach()}
        loss = critic_loss
        if model_loss is not None:
            loss = loss + self.config.critic_model_weight * model_loss
            metrics["critic_model_loss"] = model_loss.detach()
        if self.aux is not None:
            aux_loss, aux_metrics = self.aux.loss(self.aux_inputs(prepared))
            loss = loss + aux_loss
            metrics["aux_loss"] = aux_loss.detach()
            metrics.update({f"aux/{k}": v for k, v in aux_metrics.items()})
        self.check_finite(loss, "critic loss" if self.aux is None else "critic + auxiliary loss")
        self.critic_optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        if self.aux_optimizer is not None:
            self.aux_optimizer.step()
        return metrics

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
        """One gradient step on ``loss``; refuses a NaN or infinite loss (see :meth:`critic_step`)."""
        self.check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def check_finite(self, loss: torch.Tensor, name: str) -> None:
        """Raise :class:`TrainingDiverged` if ``loss`` is NaN or infinite."""
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{name} is {loss.item()} at update {self.num_updates} (env step {self.num_env_steps}); "
                "lower the learning rate or check the observations and rewards"
            )

    def critic_parameters(self, critic: nn.Module) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What the critic's optimiser trains: the critic, and the encoder too (the critic loss
        shapes it) unless ``critic_trains_encoder`` is off; the encoder at ``encoder_lr`` when set.
        With ``rl_head`` the agent's own head on the trunk, never the trunk."""
        params = list(critic.parameters())
        if self.rl_head:  # the agent's own head on the trunk: the critic trains it, never the trunk
            return params + list(self.encoder.head.parameters())
        if not self.pixels or not self.config.critic_trains_encoder:
            return params
        if self.config.encoder_lr is None:
            return params + list(self.encoder.parameters())
        return [{"params": params}, {"params": list(self.encoder.parameters()), "lr": self.config.encoder_lr}]

    # -- checkpoints (the file format: ssrl.agents.checkpoint) ---------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as described in :mod:`ssrl.agents.checkpoint`."""
        state = {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "algo": self.algo,
            "config": dataclasses.asdict(self.config),
            "observation_space": checkpoint.space_to_dict(self.observation_space),
            "action_space": checkpoint.space_to_dict(self.action_space),
            "frame_stack": self.frame_stack,
            "seed": self.seed,
            "modules": {name: m.state_dict() for name, m in self.modules().items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers().items()},
            "counters": {
                "agent_steps": self.num_agent_steps,
                "env_steps": self.num_env_steps,
                "updates": self.num_updates,
                "episodes": self.num_episodes,
                "last_episode_return": self.last_episode_return,
            },
            "rng": {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()},
            "replay": self.replay_meta,
        }
        if self.hook_state:  # the trainer's hooks (RIG's online fine-tuning)
            state["hooks"] = self.hook_state
        if self.aux is not None:
            state["aux"] = self.aux.state_dict()
            if self.aux_optimizer is not None:
                state["optimizers"]["aux"] = self.aux_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimiser states, counters and RNG states from :meth:`state_dict`."""
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        optimizers = self.optimizers()
        if self.aux_optimizer is not None:
            optimizers["aux"] = self.aux_optimizer
        for name, opt in optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        if self.aux is not None and "aux" in state:
            self.aux.load_state_dict(state["aux"])
        c = state["counters"]
        self.num_agent_steps, self.num_env_steps = c["agent_steps"], c["env_steps"]
        self.num_updates, self.num_episodes = c["updates"], c["episodes"]
        self.last_episode_return = c.get("last_episode_return", math.nan)  # absent before 2026-12
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.generator.set_state(state["rng"]["torch"])
        self.replay_meta = state.get("replay")
        self.hook_state = state.get("hooks", {})

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write weights, optimiser states, counters and RNG states to ``path`` atomically.

        The replay buffer is saved separately (``replay.save(folder)``), by the trainer.
        """
        return checkpoint.save_agent(self, path)

    @classmethod
    def load(
        cls,
        path: str | pathlib.Path,
        env: gym.Env | None = None,
        device: str | torch.device = "auto",
        aux: AuxObjective | None = None,
        encoder: nn.Module | None = None,
    ) -> OffPolicyAgent:
        """Rebuild an agent from :meth:`save` (``env`` is needed only to train further; ``encoder``
        a module of the architecture it was trained with, when that was given); see
        :func:`ssrl.agents.checkpoint.load_agent`."""
        return checkpoint.load_agent(cls, path, env, device=device, aux=aux, encoder=encoder)

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        env: gym.Env | None = None,
        device: str | torch.device = "auto",
        encoder: nn.Module | None = None,
    ) -> OffPolicyAgent:
        """:meth:`load` from a checkpoint dict already read (``checkpoint.read_checkpoint``)."""
        return checkpoint.agent_from_state(cls, state, env, device=device, encoder=encoder)


def _orthogonal_convs(encoder: nn.Module) -> None:
    """DrQ's initialisation of convolutions (``denisyarats/drq`` utils.weight_init): orthogonal
    over the whole flattened kernel with ReLU gain, zero bias. (Linear layers are orthogonal with
    zero bias in the suite's encoders already, as there.)"""
    gain = nn.init.calculate_gain("relu")
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d):
            weight = torch.empty(m.weight.shape)  # contiguous: the trunk's weights are channels-last
            nn.init.orthogonal_(weight, gain)
            with torch.no_grad():
                m.weight.copy_(weight)
                if m.bias is not None:
                    m.bias.zero_()
