"""Arrow of time (Wei, Lim, Zisserman and Freeman, CVPR 2018): is this clip playing forwards?

A clip of ``clip_len`` frames at ``clip_stride`` from a high-motion window (:mod:`.clips`) is
shown forwards (y = 1) or reversed (y = 0), each with probability 1/2. Each frame goes through
the one encoder phi; the frames' embeddings are concatenated in the order shown (as T-CAM
concatenates the conv features of its T groups) and a classifier g gives one logit:

    L = - 1/N sum_n [ y_n log sigmoid(g_n) + (1 - y_n) log(1 - sigmoid(g_n)) ],
    g_n = g([phi(f_1), ..., phi(f_T)]),

binary cross-entropy (log 2 at a zero logit; chance accuracy 0.5).

Artificial cues. The paper removes two that tell the direction without the content: black
frame borders, whose compression artefacts change over time, and camera motion (zoom, vertical
drift), removed by stabilising the video. Our renders have neither: frames are lossless renders
with no borders, and the default cameras are fixed (a tracking camera such as cartpole's
``lookatcart`` would move with the cart; collect with a fixed one). What remains are the cues
of the physics itself, which are the content here, not an artefact: friction and joint damping
take energy out of free motion, gravity accelerates a falling pole downwards, and contacts stop
objects abruptly but never start them; a random-action agent injects energy at random, which
masks some of these. What the classifier learns from is measured, not assumed: the closing
notes report held-out accuracy (``order_acc``) against chance.

``extra_scores``: ``order_acc`` on held-out clips against ``order_chance`` = 0.5, and the mask
tracking of :mod:`.judge`.

Departures: T-CAM takes groups of optical-flow frames through a VGG-16 and pools a temporal
class activation map; ours takes RGB frames through the suite's encoder and g is
Linear(T latent_dim, ``hidden``) -> ReLU -> Linear(hidden, 1). Defaults: 4 frames (T-CAM uses
10 flow frames per group). No public implementation exists to compare with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import make_encoder
from ...core import register
from .base import VideoConfig, VideoPretext, check_episode_length
from .clips import clip_indices, window_starts


@dataclasses.dataclass
class ArrowOfTimeConfig(VideoConfig):
    clip_len: int = 4
    clip_stride: int = 1
    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_len < 2 or self.clip_stride < 1:
            raise ValueError(
                f"ArrowOfTimeConfig needs clip_len >= 2, clip_stride >= 1; got {self.clip_len}, {self.clip_stride}"
            )


@register
class ArrowOfTime(VideoPretext):
    name = "arrow-of-time"
    Config = ArrowOfTimeConfig

    def __init__(self, config: ArrowOfTimeConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.head = nn.Sequential(
            nn.Linear(config.clip_len * config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1)
        )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        span = (c.clip_len - 1) * c.clip_stride + 1
        check_episode_length(data, span, self.name)
        idx = clip_indices(window_starts(data, batch_size, span, rng, c.camera), c.clip_len, c.clip_stride)
        forward = rng.random(batch_size) < 0.5
        idx = np.where(forward[:, None], idx, idx[:, ::-1])
        return {"frames": self.frames(data, idx), "forward": forward.astype(np.float32)}

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed_frames(frames).flatten(1)).squeeze(1)

    def loss(self, batch):
        logits = self.logits(batch["frames"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["forward"])
        return loss, {"accuracy": ((logits > 0).float() == batch["forward"]).float().mean().detach()}

    def pretext_scores(self, data) -> dict[str, float]:
        acc = self.held_out_accuracy(data, lambda b: (self.logits(b["frames"]) > 0).float() == b["forward"])
        return {"order_acc": acc, "order_chance": 0.5}
