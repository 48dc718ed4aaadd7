"""Tracking triplets (Wang and Gupta, "Unsupervised Learning of Visual Representations using
Videos", ICCV 2015).

Patches that move are found in the video itself and followed for ``gap`` frames; a patch x and
its tracked version x+ should embed closer (in cosine distance) than x and a random patch x-:

    D(x1, x2) = 1 - f(x1) . f(x2) / (||f(x1)|| ||f(x2)||),
    L = 1/(B K) sum_i sum_{x- in N_i} max(0, D(x_i, x+_i) - D(x_i, x-) + M),   M = 0.5,

plus weight decay (``weight_decay``, applied by hand so the optimiser stays the suite's). N_i
holds K = ``negatives`` patches of the same batch that are not x_i or x+_i (the other pairs'
patches): drawn at random for the first ``hard_after`` updates, then the K that give the largest
loss (hard negative mining, "after a couple of epochs" in the paper).

Finding and tracking patches (the paper: SURF points moved by improved dense trajectories,
"moving" above 0.5 px of flow, then a KCF tracker over 30 frames). Here, without optical flow:

1. a frame t is drawn from a high-motion window of ``gap + 1`` frames (:mod:`.clips`);
2. its motion map is the largest channel change |f_{t+1} - f_t| per pixel; the patch centre is
   drawn among pixels whose change exceeds ``motion_threshold`` (of 255), in proportion to it,
   or uniformly if none does; the ``patch`` x ``patch`` box is clamped into the frame;
3. the box is followed frame by frame to t + ``gap`` by template matching: in each next frame,
   the shift within +-``search`` pixels that minimises the sum of squared differences to the
   box's current content (the template is updated every frame, as a tracker does). x+ is the
   box in frame t + gap.

The encoder is the suite's with global average pooling (``pool="mean"``), so it is trained on
``patch``-pixel patches at the frames' own scale and used unchanged on whole frames by probes and
RL (the paper resizes patches to 227 px for AlexNet).

``extra_scores``: ``tracking_acc``, the share of held-out triplets (random negatives) with
D(x, x+) < D(x, x-), and the mask tracking of :mod:`.judge` (nearest neighbours in the conv map).

Departures: motion from pixel differences and a template-matching tracker instead of IDT and
KCF; gap 6 frames at the control rate, not 30 video frames; hard negatives chosen per anchor
among the batch's patches (the public Caffe layer, ``rank_hard_loss_layer.cpp``, mixes a hard and
a random share and applies the loss from both the anchor and the positive side; we follow the
source text, from the anchor); Adam instead of SGD.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import make_encoder, min_input_size
from ...core import register
from ..image.patches import crop_patches
from .base import VideoConfig, VideoPretext, check_episode_length
from .clips import window_starts


@dataclasses.dataclass
class TrackingConfig(VideoConfig):
    patch: int = 32  # side of a patch, pixels
    gap: int = 6  # frames between x and its tracked version x+
    search: int = 6  # template matching: +- pixels per frame
    motion_threshold: float = 8.0  # a pixel "moves" if a channel changes by more (of 255)
    margin: float = 0.5  # M
    negatives: int = 4  # K per anchor
    hard_after: int = 500  # updates with random negatives before hard negative mining
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field in ("patch", "gap", "negatives"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        if self.search < 0 or self.hard_after < 0 or self.weight_decay < 0:
            raise ValueError(f"{name}.search, hard_after and weight_decay must be >= 0")


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a_i, b_j)`` for all pairs: ``(N, D), (M, D) -> (N, M)``."""
    return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def ranking_loss(
    anchor: torch.Tensor, positive: torch.Tensor, margin: float, negatives: int, hard: bool, rng: np.random.Generator
) -> torch.Tensor:
    """The source text's loss over a batch of B pairs; the candidates for anchor i are the 2B - 2
    embeddings of the other pairs (see the module docstring)."""
    b = len(anchor)
    if b < 2:
        raise ValueError("the ranking loss needs at least 2 pairs per batch (negatives come from other pairs)")
    everything = torch.cat([anchor, positive])  # (2B, D)
    d_pos = 1.0 - F.cosine_similarity(anchor, positive, dim=-1)  # (B,)
    losses = F.relu(d_pos[:, None] - cosine_distance(anchor, everything) + margin)  # (B, 2B)
    own = torch.zeros(b, 2 * b, dtype=torch.bool, device=anchor.device)
    own[torch.arange(b), torch.arange(b)] = True
    own[torch.arange(b), torch.arange(b) + b] = True
    k = min(negatives, 2 * b - 2)
    if hard:
        chosen = losses.masked_fill(own, -1.0).topk(k, dim=1).values
    else:
        cols = np.stack([rng.choice(np.flatnonzero(~own[i].cpu().numpy()), k, replace=False) for i in range(b)])
        chosen = losses.gather(1, torch.as_tensor(cols, device=anchor.device))
    return chosen.mean()


def moving_patch_corners(
    frame: np.ndarray, following: np.ndarray, patch: int, threshold: float, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left corner of a ``patch`` box centred on a moving pixel of ``frame`` (C, H, W), drawn
    in proportion to the change to ``following`` among pixels above ``threshold``."""
    change = np.abs(following.astype(np.int16) - frame.astype(np.int16)).max(0).astype(np.float64)
    change[change <= threshold] = 0.0
    h, w = change.shape
    total = change.sum()
    pixel = rng.choice(h * w, p=change.ravel() / total) if total > 0 else rng.integers(h * w)
    row, col = divmod(int(pixel), w)
    return int(np.clip(row - patch // 2, 0, h - patch)), int(np.clip(col - patch // 2, 0, w - patch))


def track_box(frames: np.ndarray, top: int, left: int, patch: int, search: int) -> tuple[int, int]:
    """Follow a box through ``frames`` (T, C, H, W) from (top, left) in frames[0]: in each next
    frame the shift within +-``search`` (keeping the box inside) minimising the SSD to the box's
    current content, ties going to the smallest shift (|dy| + |dx|). Returns the box's corner in
    the last frame."""
    _, _, h, w = frames.shape
    f = frames.astype(np.float32)
    dy, dx = np.meshgrid(np.arange(-search, search + 1), np.arange(-search, search + 1), indexing="ij")
    size = np.abs(dy) + np.abs(dx)
    for t in range(1, len(frames)):
        template = f[t - 1, :, top : top + patch, left : left + patch]
        pad = np.pad(f[t], ((0, 0), (search, search), (search, search)), constant_values=np.nan)
        region = pad[:, top : top + patch + 2 * search, left : left + patch + 2 * search]
        windows = np.lib.stride_tricks.sliding_window_view(region, (patch, patch), axis=(1, 2))  # (C, 2s+1, 2s+1, P, P)
        ssd = ((windows - template[:, None, None]) ** 2).sum(axis=(0, 3, 4))
        ssd[~np.isfinite(ssd)] = np.inf  # the box would leave the frame
        best = np.lexsort((size.ravel(), ssd.ravel()))[0]
        top, left = top + int(dy.ravel()[best]), left + int(dx.ravel()[best])
    return top, left


@register
class Tracking(VideoPretext):
    name = "tracking"
    Config = TrackingConfig

    def __init__(self, config: TrackingConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        smallest = min_input_size(config.arch)
        if not smallest <= config.patch <= min(obs_shape[1:]):
            raise ValueError(
                f"tracking: patch={config.patch} must fit the {config.arch!r} encoder (at least {smallest} px) "
                f"and the {obs_shape[1]}x{obs_shape[2]} frames"
            )
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim, pool="mean")
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # for the hard-negative switch

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        check_episode_length(data, c.gap + 1, self.name)
        starts = window_starts(data, batch_size, c.gap + 1, rng, c.camera)
        camera = c.camera or data.cameras[0]
        corners = np.empty((batch_size, 2, 2), np.int64)  # (pair, anchor/positive, top/left)
        for i, s in enumerate(starts):
            clip = data.view(camera)[s : s + c.gap + 1]
            top, left = moving_patch_corners(clip[0], clip[1], c.patch, c.motion_threshold, rng)
            corners[i, 0] = top, left
            corners[i, 1] = track_box(clip, top, left, c.patch, c.search)
        anchor = crop_patches(self.frames(data, starts), corners[:, :1, 0], corners[:, :1, 1], c.patch)[:, 0]
        positive = crop_patches(self.frames(data, starts + c.gap), corners[:, 1:, 0], corners[:, 1:, 1], c.patch)[:, 0]
        return {"anchor": anchor, "positive": positive}

    def loss(self, batch):
        c = self.config
        a, p = self.encoder(batch["anchor"]), self.encoder(batch["positive"])
        hard = int(self.updates) >= c.hard_after
        rng = np.random.default_rng(int(self.updates))  # random negatives, reproducible on resume
        loss = ranking_loss(a, p, c.margin, c.negatives, hard, rng)
        if c.weight_decay:
            loss = loss + 0.5 * c.weight_decay * sum(
                w.pow(2).sum() for n, w in self.encoder.named_parameters() if "weight" in n
            )
        if self.training and torch.is_grad_enabled():
            self.updates += 1
        with torch.no_grad():
            acc = (1.0 - F.cosine_similarity(a, p, dim=-1) < cosine_distance(a, p.roll(1, 0)).diagonal()).float().mean()
        return loss, {"triplet_acc": acc, "hard_negatives": float(hard)}

    def pretext_scores(self, data) -> dict[str, float]:
        def correct(b):
            a, p = self.encoder(b["anchor"]), self.encoder(b["positive"])
            return 1.0 - F.cosine_similarity(a, p, dim=-1) < cosine_distance(a, p.roll(1, 0)).diagonal()

        return {"tracking_acc": self.held_out_accuracy(data, correct), "tracking_chance": 0.5}
