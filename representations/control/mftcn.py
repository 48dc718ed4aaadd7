"""mfTCN: multi-frame Time-Contrastive Networks (Dwibedi et al. 2018).

An embedding of a short clip rather than of one frame, so it can hold velocities: the frame at
time t and the previous n-1 frames at stride s (a lookback of (n-1)s+1 frames) go through the
per-frame conv trunk and a 3-D temporal convolution (:class:`~ssrl.representations.backbones.
TemporalEncoder`). Trained with the n-pairs loss

    L = NPair(f(clip_a), f(clip_b)),
    NPair(a, p) = mean_i -log softmax_j(a_i . p_j)[i] + lambda/4 (mean_i ||a_i||^2 + mean_i ||p_i||^2)

sampled as the source text describes: pairs of synchronised clips from two different cameras
(the same timesteps: positives), the pairs drawn from an episode at times far apart, so that
clips across pairs are negatives (:meth:`~ssrl.representations.data.RolloutData.spaced_frames`):
episodes are drawn without replacement; each gives as many pairs as it holds at least
``min_gap`` frames apart (T // min_gap + 1 for T transitions), further episodes fill the batch.
No clip appears twice in a batch, and two clips of one episode end at least ``min_gap`` frames
apart. A batch larger than all episodes hold at that spacing is an error that names the numbers
(lower ``batch_size`` or ``min_gap``, or collect more data). Clips are identified by the frame
they end at (the stack clamps at the episode's first frame, as the env's does at a reset).

The n-pairs loss is Sohn's with the L2 weighting of TensorFlow's ``npairs_loss`` (the positive is
in the softmax's denominator; see :func:`~ssrl.representations.losses.npairs`). mfTCN has no
public code; that of TCN (tensorflow/models' ``research/tcn``) is TensorFlow; we follow the
paper and the source text, not its input pipeline.
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
    reg: float = 0.002  # lambda of the n-pairs L2 penalty (npairs_loss's reg_lambda)
    min_gap: int = 8  # frames between two pairs of one episode in a batch
    views: tuple[str, ...] | None = None
    frame_stack: int = 0  # derived: (n_frames - 1) * stride + 1

    def __post_init__(self) -> None:
        for name in ("n_frames", "stride"):  # checked before frame_stack is derived from them
            if getattr(self, name) < 1:
                raise ValueError(f"MFTCNConfig.{name} must be >= 1, got {getattr(self, name)}")
        self.frame_stack = (self.n_frames - 1) * self.stride + 1
        super().__post_init__()
        if self.min_gap < 1:
            raise ValueError(f"MFTCNConfig.min_gap must be >= 1 frame, got {self.min_gap}")
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

    def check_data(self, data) -> None:
        super().check_data(data)
        data.require_cameras(self.config.views, method=self.name)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        views = list(c.views or data.cameras)
        if len(views) < 2:
            raise ValueError(f"mfTCN needs 2 synchronised cameras, the data has {data.cameras}")
        idx = data.spaced_frames(batch_size, c.min_gap, rng)
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
