"""Video colorization (Vondrick, Shrivastava, Fathi, Guadarrama and Murphy, "Tracking Emerges by
Colorizing Videos", ECCV 2018).

A grey target frame is coloured by copying colours from a reference frame of the same episode a
few steps earlier (``1 .. max_gap``), through attention over learned embeddings of the two grey
frames. With f_i the embedding of reference location i, f_j that of target location j and c_i the
quantised colour of reference location i (one-hot over ``n_colours`` clusters):

    c^_j = sum_i A_ij c_i,      A_ij = exp(f_i . f_j / T) / sum_i' exp(f_i' . f_j / T),
    L = - 1/(B h w) sum_{b, j} log c^_j[c_j],

the categorical cross-entropy between the copied distribution and the target's true colour
cluster (T = ``temperature`` = 1 in training, the paper's form; the judge copies masks at
``track_temperature`` = 0.5). The embedding is trained only by this loss:
the network never sees a colour, so to copy the right one it must find where each target
location came from, which is tracking. The same attention copies anything else laid on the
reference frame; that is how the judge (:mod:`.judge`) propagates body masks.

Embeddings: the suite's conv trunk on the grey (CIE L) frame; f is its last feature map (35 x 35
for an 84-pixel frame with the ``dmc`` architecture; ``fast`` gives 7 x 7, too coarse to track
with), and both frames are downsampled by it, as the paper downsamples to keep A small. Colours:
the frame's ab (CIE Lab) averaged over each feature-map cell, quantised to the nearest of
``n_colours`` = 16 k-means centres (the paper's choice), fitted BEFORE training on up to
``kmeans_frames`` frames of the data (lazily on the first ``sample_batch``, with its own seed) and
saved with the model.

The representation: ``self.encoder`` is a :class:`~..image.colour.LabEncoder` (RGB in, L inside)
around the suite's encoder, so probes and RL use it as any other. Its Linear + LayerNorm head is
not trained by colorization (the loss reads the conv map only): frozen, the latent is a fixed
random projection of the trained map; fine-tuned, RL trains the head too.

``extra_scores``: ``colour_acc``, the share of held-out target locations whose most likely
copied colour is the true cluster, against ``colour_chance`` (the most common cluster's share),
and the mask tracking of :mod:`.judge` with this attention copy.

Departures: one reference frame (the paper uses three); the suite's small trunk instead of a
ResNet-18 with 3-D convolutions; our frames' own colour clusters; Adam at the suite's defaults.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import make_encoder
from ...core import register
from ..image import colour
from . import judge
from .base import VideoConfig, VideoPretext, check_episode_length
from .clips import window_starts


@dataclasses.dataclass
class VideoColorizationConfig(VideoConfig):
    n_colours: int = 16
    max_gap: int = 3  # the reference is 1 .. max_gap frames before the target
    temperature: float = 1.0  # T of the attention in training (the paper's softmax)
    # T of the attention when the judge propagates masks: 0.5, the test-time value of a public
    # implementation (wbaek/tracking_via_colorization); T = 1 spreads the copy so that thin
    # bodies fall below the background (tracking on training episodes: 0.14 at T = 1, 0.19 at
    # 0.5, the same at 0.2 and 0.1).
    track_temperature: float = 0.5
    kmeans_frames: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field in ("n_colours", "max_gap", "kmeans_frames"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        if self.temperature <= 0 or self.track_temperature <= 0:
            raise ValueError(
                f"{name}.temperature and track_temperature must be positive, "
                f"got {self.temperature}, {self.track_temperature}"
            )


def kmeans(
    points: torch.Tensor, k: int, iterations: int = 30, seed: int = 0, max_points: int = 100_000
) -> torch.Tensor:
    """``k`` centres of ``(N, D)`` points: k-means++ seeding, then Lloyd's iterations, on at most
    ``max_points`` of them drawn at random. With fewer distinct points than ``k``, repeated
    centres fill the rest."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pts = points.float().cpu()
    if len(pts) > max_points:
        pts = pts[torch.randperm(len(pts), generator=gen)[:max_points]]
    centres = pts[torch.randint(len(pts), (1,), generator=gen)]
    for _ in range(1, k):
        d2 = torch.cdist(pts, centres).min(1).values.pow(2)
        if d2.sum() <= 0:
            centres = torch.cat([centres, centres[:1]])
            continue
        centres = torch.cat([centres, pts[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]])
    for _ in range(iterations):
        assign = torch.cdist(pts, centres).argmin(1)
        for c in range(k):
            members = pts[assign == c]
            if len(members):
                centres[c] = members.mean(0)
    return centres


@register
class VideoColorization(VideoPretext):
    name = "video-colorization"
    Config = VideoColorizationConfig

    def __init__(self, config: VideoColorizationConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        if obs_shape[0] % 3:
            raise ValueError(f"video-colorization takes RGB frame stacks (3k channels), got {obs_shape[0]}")
        trunk = make_encoder(config.arch, obs_shape[0] // 3, obs_shape[1:], config.latent_dim)
        self.encoder = colour.LabEncoder(obs_shape, L=trunk)
        self.feature_size = tuple(trunk.spatial_shape[1:])
        self.register_buffer("centres", torch.zeros(config.n_colours, 2))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # -- colours -------------------------------------------------------------------------------------

    def cell_ab(self, obs: torch.Tensor) -> torch.Tensor:
        """Frame stacks -> the newest frame's ab averaged over feature-map cells ``(B, 2, h, w)``."""
        lab = colour.frames_to_lab(obs[:, -3:])[:, 0]  # (B, 3, H, W)
        return F.adaptive_avg_pool2d(lab[:, 1:], self.feature_size)

    def quantise(self, obs: torch.Tensor) -> torch.Tensor:
        """Frame stacks -> colour cluster per cell ``(B, h, w)``."""
        ab = self.cell_ab(obs).permute(0, 2, 3, 1)
        return torch.cdist(ab.reshape(-1, 2), self.centres).argmin(1).reshape(ab.shape[:3])

    @torch.no_grad()
    def fit_colours(self, data, seed: int = 0) -> None:
        """k-means of the cells' ab over up to ``kmeans_frames`` frames of ``data``."""
        idx = np.arange(len(data))
        if len(idx) > self.config.kmeans_frames:
            idx = np.sort(np.random.default_rng(seed).choice(idx, self.config.kmeans_frames, replace=False))
        frames = data.stack(idx, self.config.camera, 1)
        ab = [
            self.cell_ab(torch.as_tensor(frames[s : s + 256]).to(self.centres.device))
            .permute(0, 2, 3, 1)
            .reshape(-1, 2)
            for s in range(0, len(frames), 256)
        ]
        self.centres.copy_(kmeans(torch.cat(ab), self.config.n_colours, seed=seed).to(self.centres.device))
        self.fitted.fill_(True)

    # -- objective -----------------------------------------------------------------------------------

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        if not bool(self.fitted):
            self.fit_colours(data)
        check_episode_length(data, 2, self.name)
        gap = rng.integers(1, c.max_gap + 1, batch_size)
        ref = np.empty(batch_size, np.int64)
        for g in np.unique(gap):  # windows of gap + 1 frames, by their motion
            rows = np.flatnonzero(gap == g)
            span = int(min(g + 1, data.ep_len.max() + 1))
            ref[rows] = window_starts(data, len(rows), span, rng, c.camera)
        target = ref + np.minimum(gap, data.ep_len[data.frame_episode[ref]] - data.frame_t[ref])
        return {"reference": self.frames(data, ref), "target": self.frames(data, target)}

    def dense_features(self, obs: torch.Tensor) -> torch.Tensor:
        """The grey frame's embedding map f ``(B, D, h, w)``."""
        lab = self.encoder.lab(obs)
        return self.encoder.parts["L"].spatial(self.encoder.group(lab, "L"))

    def propagate(self, ref_features, ref_labels, features):
        return judge.attention_propagate(ref_features, ref_labels, features, self.config.track_temperature)

    def copied(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(copied colour distributions ``(B, K, h, w)``, true target clusters ``(B, h, w)``)."""
        ref_colours = F.one_hot(self.quantise(batch["reference"]), self.config.n_colours).permute(0, 3, 1, 2).float()
        both = self.dense_features(torch.cat([batch["reference"], batch["target"]]))
        ref_f, tgt_f = both.chunk(2)
        return judge.attention_copy(ref_f, ref_colours, tgt_f, self.config.temperature), self.quantise(batch["target"])

    def loss(self, batch):
        probs, target = self.copied(batch)
        loss = F.nll_loss(probs.clamp_min(1e-8).log(), target)
        return loss, {"accuracy": (probs.argmax(1) == target).float().mean().detach()}

    def pretext_scores(self, data) -> dict[str, float]:
        counts = torch.zeros(self.config.n_colours)

        def correct(batch):
            probs, target = self.copied(batch)
            counts.add_(torch.bincount(target.flatten().cpu(), minlength=self.config.n_colours).float())
            return (probs.argmax(1) == target).float().flatten(1).mean(1)

        acc = self.held_out_accuracy(data, correct)
        return {"colour_acc": acc, "colour_chance": float(counts.max() / counts.sum())}
