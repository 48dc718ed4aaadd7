"""ATC: Augmented Temporal Contrast (Stooke, Lee, Abbeel and Laskin, "Decoupling Representation
Learning from Reinforcement Learning", ICML 2021; public code astooke/rlpyt, ``rlpyt/ul``:
``algos/ul_for_rl/augmented_temporal_contrast.py``, ``models/ul/atc_models.py``,
``models/ul/encoders.py``, ``algos/rl_with_ul/sac_with_ul.py``).

The anchor is an observation o_t, the positive the observation ``delta_t`` steps later in the
same episode, o_{t+k}; both are augmented (random shift) and the other positives of the batch are
the negatives:

    c_i = g(f(aug(o_t)))                  online conv encoder f, linear global compressor g
    p_i = c_i + h(c_i)                    residual predictor, h an MLP (one hidden layer of 512)
    cbar_j = g'(f'(aug(o_{t+k})))         momentum (EMA) target encoder and compressor, no gradient
    logits_ij = p_i^T W cbar_j - max_j' p_i^T W cbar_j'    (W learned, no bias)
    L = mean_i -log( exp(logits_ii) / sum_j exp(logits_ij) )

InfoNCE with the diagonal as labels (log B at uniform logits); the row maximum is subtracted as in
rlpyt's ``ContrastModel`` (the cross-entropy is unchanged). The target weights follow the online
ones, theta' <- (1 - tau) theta' + tau theta with tau = 0.01 at every update
(``target_update_tau``, ``target_update_interval`` 1).

In the suite's encoder (:mod:`ssrl.representations.backbones`) the conv trunk is ATC's f and its
Linear head, from the flattened conv features to ``latent_dim``, is ATC's linear global
compressor g (rlpyt's ``EncoderModel.head``, an ``MlpModel`` with no hidden layer); so the code
c is the encoder's output, the target encoder and compressor are one momentum copy of the whole
encoder, and predictor and W are discarded after pretraining. h is rlpyt's ``anchor_mlp``
(Linear -> ReLU -> Linear, torch's default initialisation), W its ``Linear(bias=False)``:
logits = W(p) . cbar, i.e. the paper's p W cbar with W transposed.

Defaults are ATC's DMControl values (``ul_for_rl/configs/dmcontrol/dmc_atc.py``): ``delta_t`` 1,
code size 128 (``latent_size``), predictor hidden 512, batch 256, lr 1e-3, tau 0.01, random shift
pad 4, and ATC's encoder: 4 conv layers of 32 filters, kernels 3, strides (2, 2, 2, 1), which is
the suite's ``fast`` architecture.

Pairs: from rollouts, anchors are drawn uniformly among the frames that have a frame ``delta_t``
steps later in the same episode (:meth:`RolloutData.sample_frames_ahead`), so no pair crosses an
episode's end; rlpyt draws any time step and masks the pairs that cross one out of the
cross-entropy (``IGNORE_INDEX``), which leaves fewer pairs in such a batch.

On an agent's replay (``ssrl train --method atc --regime decoupled``, ATC's online setting, where
only ATC trains the encoder) the replay batch holds each observation's next one only, so there
``delta_t`` must be 1 (ATC's DMControl value; rlpyt's online ATC also uses the next
observation): another value is refused when the run is built. :meth:`Atc.replay_loss` takes the
agent's batch as it is, anchors its augmented observations (their codes are the agent's own
latents, no extra encoder pass) and positives its augmented next observations, with no second
shift: rlpyt's ``ul_use_rl_samples=True`` path ("samples were already augmented in the RL loss").

Departures from the paper and the public code:

* The code has a LayerNorm after the compressor (the suite's encoder head). ATC's RL agents
  read the conv layers only and train their own Linear + LayerNorm (50) on top (rlpyt's
  ``stop_rl_conv_grad`` stops the RL gradient at the conv layers): that is the agent option
  ``rl_head=True`` (:class:`ssrl.agents.networks.RLHeadEncoder`). Without it the critic and
  actor read ATC's code itself, detached, which ATC alone trains.
* The suite's initialisation (orthogonal Linear, delta-orthogonal conv), not Kaiming-normal.
* Pretraining uses the suite's driver: a constant learning rate and no gradient clipping
  (dmc_atc.py anneals the rate by a cosine after 1000 warm-up updates and clips the gradient norm
  at 10); online, the agent's aux optimiser (``aux_lr`` 1e-3, ATC's ``ul_learning_rate``) does
  not clip either.
* The target steps at each training call of the loss, before the positives are encoded (rlpyt
  steps it after each optimiser step: the same sequence of targets); a loss computed in eval mode
  or without gradient leaves it where it is.
* The augmentation is the suite's random shift (:func:`ssrl.agents.augment.random_shift`:
  replicate-pad 4 px and crop back, the same operation as rlpyt's ``random_shift`` with
  ``prob=1``), drawn from the agent's generator online.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ssrl.agents.augment import random_shift
from ssrl.envs.rollouts import DatasetError

from ..backbones import make_encoder
from ..core import BaseConfig, Need, Representation, register
from .curl import agent_latent, contrastive_logits, contrastive_loss, ema_update, last_frames, momentum_copy


@dataclasses.dataclass
class AtcConfig(BaseConfig):
    latent_dim: int = 128  # the code c (ATC's latent_size for DMControl)
    arch: str = "fast"  # ATC's encoder: strides (2, 2, 2, 1)
    lr: float = 1e-3
    batch_size: int = 256  # dmc_atc.py's batch_B
    delta_t: int = 1  # steps from anchor to positive (ATC's DMControl value)
    hidden: int = 512  # the residual predictor's hidden width (anchor_hidden_sizes)
    tau: float = 0.01  # target encoder's Polyak rate per update (target_update_tau)
    shift_pad: int = 4  # the random shift's largest shift, px each way
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta_t < 1:
            raise ValueError(f"AtcConfig.delta_t must be >= 1 step, got {self.delta_t}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"AtcConfig.tau must be in (0, 1], got {self.tau}")
        if self.hidden < 1 or self.shift_pad < 0:
            raise ValueError(f"AtcConfig: hidden must be >= 1 and shift_pad >= 0, got {self.hidden}, {self.shift_pad}")


@register
class Atc(Representation):
    name = "atc"
    needs = Need.TRANSITIONS
    Config = AtcConfig

    def __init__(self, config: AtcConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        d = config.latent_dim
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], d)  # f and the compressor g
        self.target_encoder = momentum_copy(self.encoder)
        self.predictor = nn.Sequential(nn.Linear(d, config.hidden), nn.ReLU(), nn.Linear(config.hidden, d))
        self.W = nn.Linear(d, d, bias=False)

    def check_data(self, data) -> None:
        from ..regimes import ReplayData

        super().check_data(data)
        k = self.config.delta_t
        if isinstance(data, ReplayData) and k != 1:
            raise DatasetError(
                f"atc with delta_t={k} needs observations {k} steps apart; an agent's replay batch holds each "
                "observation's next one only: set delta_t=1 (ATC's DMControl value) to train it on the replay, "
                f"or pretrain it on rollouts (ssrl pretrain atc --set delta_t={k}) and use it frozen or fine-tuned"
            )
        if not isinstance(data, ReplayData) and int(data.ep_len.max()) < k:
            longest = int(data.ep_len.max())
            raise DatasetError(f"atc with delta_t={k} needs episodes of at least {k} steps; the longest has {longest}")

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c, k, d = self.config.camera, self.config.frame_stack, self.config.delta_t
        idx = data.sample_frames_ahead(batch_size, rng, d)
        return {"anchor": data.stack(idx, c, k), "positive": data.stack(idx + d, c, k)}

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        return random_shift(obs, self.config.shift_pad, self.generator)

    def update_target(self) -> None:
        """One Polyak step of the target encoder (and compressor) toward the online one."""
        ema_update(self.target_encoder, self.encoder, self.config.tau)

    def predict(self, code: torch.Tensor) -> torch.Tensor:
        """The residual predictor: p = c + h(c)."""
        return code + self.predictor(code)

    def logits(self, prediction: torch.Tensor, target_code: torch.Tensor) -> torch.Tensor:
        """``W(p_i) . cbar_j`` minus each row's maximum."""
        return contrastive_logits(self.W(prediction), target_code)

    def contrast(self, code: torch.Tensor, positive_obs: torch.Tensor):
        """The loss of anchor codes (online, with gradient) against the target's codes of
        ``positive_obs`` (already augmented); the target steps first when training."""
        if self.training and torch.is_grad_enabled():
            self.update_target()
        with torch.no_grad():
            target_code = self.target_encoder(positive_obs)
        loss, accuracy = contrastive_loss(self.logits(self.predict(code), target_code))
        return loss, {"accuracy": accuracy}

    def loss(self, batch):
        return self.contrast(self.encoder(self.augment(batch["anchor"])), self.augment(batch["positive"]))

    def replay_loss(self, inputs, rng: np.random.Generator):
        """On an agent's replay batch: anchors its augmented observations (their codes are the
        agent's latents), positives its augmented next observations (``delta_t`` = 1)."""
        if self.config.delta_t != 1:
            raise DatasetError(
                f"atc with delta_t={self.config.delta_t} cannot train on an agent's replay (next observations only)"
            )
        obs = last_frames(inputs.obs, self.obs_shape[0])
        return self.contrast(agent_latent(self, inputs, obs), last_frames(inputs.next_obs, self.obs_shape[0]))
