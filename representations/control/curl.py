"""CURL: Contrastive Unsupervised Representations for Reinforcement Learning (Laskin, Srinivas and
Abbeel, ICML 2020; public code MishaLaskin/curl, ``curl_sac.py``).

Instance contrast between two augmentations of the same observations. For a batch of B frame
stacks o_i, the query is the online encoder's embedding of one augmented view and the key the
momentum (EMA) key encoder's embedding of another, independently augmented view:

    q_i = f_q(aug_1(o_i)),   k_j = f_k(aug_2(o_j))   (no gradient through f_k)
    logits_ij = q_i^T W k_j - max_j' q_i^T W k_j'     (W a learned D x D matrix)
    L = mean_i -log( exp(logits_ii) / sum_j exp(logits_ij) )

InfoNCE over the batch with bilinear similarity: cross-entropy with the diagonal as labels, the
other keys of the batch as negatives (log B at uniform logits). Subtracting each row's maximum
is the code's ``compute_logits``; it leaves the cross-entropy and its gradient unchanged. The
key encoder follows the online one by Polyak averaging, theta_k <- (1 - tau) theta_k + tau theta_q
with tau = 0.05 (the paper's momentum m = 0.95, the code's ``encoder_tau``).

Defaults are CURL's (paper Table 3 and ``train.py``): the DMC encoder (``dmc``: SAC-AE's 4 conv
layers, Linear + LayerNorm to 50, no tanh), latent 50, lr 1e-3 (``encoder_lr``), batch 512 (the
paper's; the code's default is 32 and its README's 128), tau 0.05, W initialised uniform in
[0, 1) (``torch.rand``, as the code).

Departures from the paper and the public code:

* Augmentation: DrQ/RAD's random shift (replicate-pad 4 px, random 84-px crop;
  :func:`ssrl.agents.augment.random_shift`, the suite's) for both views, instead of CURL's random
  crop of 100x100 renders to 84x84: the suite's frames are already 84x84 and its encoders are
  fixed-size. The two views of a pair then differ by up to 8 px each way (two independent +-4
  shifts) instead of up to 16 px of a 100-px render.
* Key encoder: the representation's own EMA copy of its encoder (weights held as buffers, so no
  optimiser sees them), updated at every training call of the loss *before* the keys are
  computed. CURL's key encoder is the agent's ``critic_target.encoder``, updated with tau 0.05
  every ``critic_target_update_freq`` = 2 updates (after the critic's step, before the CURL
  step), which also computes the TD targets. Ours is the same average of the same online
  encoder, at every update rather than every second one (so with CURL's tau it trails the
  online encoder by about 20 updates instead of 40), and does not serve the critic; the agent's
  own target encoder (``encoder_tau``) is separate. A loss computed in eval mode or without
  gradient (a validation pass) leaves the key encoder where it is.
* In the joint regime (``ssrl train --method curl --regime joint``) the CURL loss is added to the
  critic's and one Adam step of the critic's optimiser trains the encoder on the sum; CURL's
  code backpropagates the two losses separately and steps the encoder twice per update (the
  critic's optimiser, then ``encoder_optimizer`` on the CURL loss). W gets the agent's
  ``aux_lr`` (1e-3 by default, CURL's ``encoder_lr``).
* On an agent's replay batch (:meth:`Curl.replay_loss`) the queries are the agent's own latents
  of its augmented batch, ``encoder(aug_1(o))``, as in CURL's code, where the anchors are the
  very crops the critic sees (and no extra encoder pass is spent). The agent holds only that
  augmented view, so the keys are the key encoder's embedding of a second random shift of it,
  aug_2(aug_1(o)): the views differ by one +-4 px shift rather than by the difference of two.
* Offline pretraining (``ssrl pretrain curl``) draws frames uniformly from rollouts (with
  replacement, as CURL's replay does) and augments both views itself.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssrl.agents.augment import random_shift

from ..backbones import make_encoder
from ..core import BaseConfig, Need, Representation, register


@dataclasses.dataclass
class CurlConfig(BaseConfig):
    latent_dim: int = 50  # CURL's encoder_feature_dim
    arch: str = "dmc"  # SAC-AE's encoder, as CURL
    lr: float = 1e-3  # CURL's encoder_lr (W's too)
    batch_size: int = 512  # the paper's (Table 3)
    tau: float = 0.05  # key encoder's Polyak rate per update (CURL's encoder_tau; momentum 0.95)
    shift_pad: int = 4  # the random shift's largest shift, px each way (DrQ/RAD's 4)
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"CurlConfig.tau must be in (0, 1], got {self.tau}")
        if self.shift_pad < 0:
            raise ValueError(f"CurlConfig.shift_pad must be >= 0, got {self.shift_pad}")


# -- shared with ATC: the momentum copy and the contrastive loss ------------------------------------


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters are buffers of the same names: in the
    ``state_dict`` (saved, loaded, moved by ``.to``) but not in ``parameters()``, so no optimiser
    steps it and no gradient reaches it; :func:`ema_update` moves it."""
    target = copy.deepcopy(module)
    for sub in target.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach().clone())
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """theta_target <- (1 - tau) theta_target + tau theta_online, for every parameter of
    ``online`` and the buffer of the same name in ``target`` (a :func:`momentum_copy`)."""
    buffers = dict(target.named_buffers())
    names = [name for name, _ in online.named_parameters()]
    torch._foreach_lerp_([buffers[n] for n in names], [p.detach() for p in online.parameters()], tau)


def contrastive_logits(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` logits ``query_i . key_j`` minus each row's maximum (CURL's and ATC's
    normalisation: the cross-entropy is unchanged, the exponentials cannot overflow)."""
    logits = query @ key.T
    return logits - logits.max(dim=1, keepdim=True).values


def contrastive_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over the batch: cross-entropy of each row with its diagonal entry as the label;
    and the accuracy (the fraction of rows whose largest logit is their positive's)."""
    labels = torch.arange(len(logits), device=logits.device)
    accuracy = (logits.detach().argmax(1) == labels).float().mean()
    return F.cross_entropy(logits, labels), accuracy


def last_frames(obs: torch.Tensor, channels: int) -> torch.Tensor:
    """The newest ``channels`` channels of an agent's observations (its frame stack may be
    deeper than the representation's)."""
    if obs.shape[1] < channels:
        raise ValueError(f"the representation stacks {channels} channels; the agent's observations hold {obs.shape[1]}")
    return obs[:, obs.shape[1] - channels :]


def agent_latent(rep: Representation, inputs, obs: torch.Tensor) -> torch.Tensor:
    """``rep.encoder(obs)`` with gradient: the agent's own latents of the batch when its encoder
    is ``rep.encoder`` on the same channels (no extra pass), else a new pass."""
    agent_encoder = getattr(inputs.encoder, "encoder", inputs.encoder)
    same = agent_encoder is rep.encoder and inputs.obs.shape[1] == obs.shape[1]
    if same and inputs.latent is not None and inputs.latent.shape[-1] == rep.latent_dim:
        return inputs.latent
    return rep.encoder(obs)


@register
class Curl(Representation):
    name = "curl"
    needs = Need.FRAMES
    Config = CurlConfig

    def __init__(self, config: CurlConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.key_encoder = momentum_copy(self.encoder)
        self.W = nn.Parameter(torch.rand(config.latent_dim, config.latent_dim))

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        return random_shift(obs, self.config.shift_pad, self.generator)

    def update_key_encoder(self) -> None:
        """One Polyak step of the key encoder toward the online encoder (tau = ``config.tau``)."""
        ema_update(self.key_encoder, self.encoder, self.config.tau)

    def logits(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """``q_i^T W k_j`` minus each row's maximum."""
        return contrastive_logits(query, key @ self.W.T)

    def contrast(self, query: torch.Tensor, key_obs: torch.Tensor):
        """The loss of queries (online embeddings) against the key encoder's embeddings of
        ``key_obs`` (already augmented); the key encoder steps first when training."""
        if self.training and torch.is_grad_enabled():
            self.update_key_encoder()
        with torch.no_grad():
            key = self.key_encoder(key_obs)
        loss, accuracy = contrastive_loss(self.logits(query, key))
        return loss, {"accuracy": accuracy}

    def loss(self, batch):
        obs = batch["obs"]
        return self.contrast(self.encoder(self.augment(obs)), self.augment(obs))

    def replay_loss(self, inputs, rng: np.random.Generator):
        """On an agent's replay batch: the agent's latents of its augmented observations are the
        queries; the keys are the key encoder's embedding of a second shift of them (see the
        module docstring)."""
        obs = last_frames(inputs.obs, self.obs_shape[0])
        return self.contrast(agent_latent(self, inputs, obs), self.augment(obs))
