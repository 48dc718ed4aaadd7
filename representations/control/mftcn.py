"""mfTCN: multi-frame Time-Contrastive Networks (Dwibedi et al. 2018).

An embedding of a short clip rather than of one frame, so it can hold velocities: the frame at
time t and the previous n-1 frames at stride s (a lookback of (n-1)s+1 frames) go through the
per-frame conv trunk and a 3-D temporal convolution (:class:`~ssrl.representations.backbones.
TemporalEncoder`). Trained with the n-pairs loss

    L = NPair(f(clip_a), f(clip_b)),  NPair(a, p) = mean_i -log softmax_j(a_i . p_j)[i] + lambda (||a_i||^2 + ||p_i||^2)

sampled as the source text describes: pairs of synchronised clips from two different cameras
(the same timesteps: positives), the pairs drawn from an episode at times far apart (at least
``min_gap`` frames when the episode allows), so that clips across pairs are negatives; when one
episode holds fewer such times than the batch needs, further episodes fill it.

The n-pairs loss is Sohn's (the positive is in the softmax's denominator; see
:func:`~ssrl.representations.losses.npairs`). The public TCN/mfTCN code (tensorflow/models'
``research/tcn``) is TensorFlow; we follow the paper and the source text, not its input pipeline.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..backbones import TemporalEncoder
from ..core import BaseConfig, Need, Representation, register
from ..losses import npairs


@dataclasses.dataclass
class MFTCNConfig(BaseConfig):
    n_frames: int = 3
    stride: int = 1
    reg: float = 0.002
    min_gap: int = 8  # frames between the pairs of a batch
    views: tuple[str, ...] | None = None
    frame_stack: int = 0  # derived: (n_frames - 1) * stride + 1

    def __post_init__(self) -> None:
        self.frame_stack = (self.n_frames - 1) * self.stride + 1
        super().__post_init__()
        if self.views is not None:
            self.views = tuple(self.views)


@register
class MFTCN(Representation):
    name = "mftcn"
    needs = Need.CLIPS | Need.VIEWS
    Config = MFTCNConfig

    def __init__(self, config: MFTCNConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = TemporalEncoder(config.arch, config.n_frames, config.stride, obs_shape[1:], config.latent_dim)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        views = list(c.views or data.cameras)
        if len(views) < 2:
            raise ValueError(f"mfTCN needs 2 synchronised cameras, the data has {data.cameras}")
        # An episode gives at most n_frames / min_gap pairs far enough apart; further episodes
        # fill the batch (clips of other episodes are negatives as well).
        parts, need = [], batch_size
        while need > 0:
            ep = rng.integers(data.num_episodes)
            t = _spread_times(data.ep_len[ep] + 1, need, c.min_gap, rng)
            parts.append(data.ep_start[ep] + t)
            need -= len(t)
        idx = np.concatenate(parts)[:batch_size]
        a_view, p_view = rng.choice(len(views), 2, replace=False)
        return {
            "anchor": data.stack(idx, views[a_view], c.frame_stack),
            "positive": data.stack(idx, views[p_view], c.frame_stack),
        }

    def loss(self, batch):
        a, p = self.encoder(batch["anchor"]), self.encoder(batch["positive"])
        loss = npairs(a, p, self.config.reg)
        with torch.no_grad():
            acc = ((a @ p.T).argmax(1) == torch.arange(len(a), device=a.device)).float().mean()
        return loss, {"retrieval_acc": acc}


def _spread_times(n_frames: int, count: int, min_gap: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` distinct times in [0, n_frames), pairwise at least ``min_gap`` apart when
    possible (fewer, farther apart times make better negatives than many close ones)."""
    count = max(2, min(count, n_frames // max(min_gap, 1)))
    slots = np.sort(rng.choice(n_frames - (count - 1) * (min_gap - 1), count, replace=False))
    return slots + np.arange(count) * (min_gap - 1)
