"""Shuffle & Learn (Misra, Zitnick and Hebert, ECCV 2016): is this triplet of frames in order?

Five frames a < b < c < d < e of one episode, from a high-motion window (:mod:`.clips`), give a
positive tuple (b, c, d) and two negatives (b, a, d) and (b, e, d). ``tau_max = |b - d|`` bounds
how far apart the positive's frames are (larger is harder) and ``tau_min = min(|a - b|, |d - e|)``
how close a negative's odd frame may come (smaller is harder). Each frame goes through the one
encoder phi; a classifier g on the concatenation says "in order" (1) or not (0):

    L = - 1/N sum_n [ y_n log sigma_1 + (1 - y_n) log sigma_0 ],
    sigma = softmax(g([phi(f_1), phi(f_2), phi(f_3)])),

a 2-way cross-entropy (log 2 = 0.693 at uniform logits). As in the paper, a tuple played
backwards, (d, c, b), is also in order: every tuple is reversed with probability 1/2, so the
direction of time cannot be the cue. ``negative_fraction`` of the tuples are negatives, each
(b, a, d) or (b, e, d) with equal chance; at the default 0.5 chance accuracy is 0.5.

Windows: the paper samples from windows of high optical-flow magnitude with tau_max = 60 and
tau_min = 15 frames of 30 fps video (2 s and 0.5 s). Our frames come at the control rate
(cartpole: 12.5 Hz with its action repeat of 8), so the defaults keep the paper's durations:
tau_max = 25 and tau_min = 6 frames (2 s and 0.48 s on cartpole); tuples are drawn in proportion
to the pixel change of their window, and a negative's odd frame is at most tau_max from its
neighbour (a tuple longer than the episode is drawn again: on Push's 50-step episodes, which
come at another rate, that cuts the longest tuples, up to 76 frames, short). Until 2026-12 the defaults were 10
and 3 frames (0.8 s and 0.24 s); on cartpole (24 sticky-random episodes, 1,000 steps, batch 32,
the ``fast`` encoder, seeds 0 and 1) the paper's durations gave a better linear probe of the
state on held-out episodes, R^2 0.325 and 0.319 against 0.228 and 0.227, from a harder task
(held-out order accuracy 0.746 and 0.744 against 0.809 and 0.803).

``extra_scores``: ``order_acc`` on held-out tuples against ``order_chance``, and the mask
tracking of :mod:`.judge` (nearest neighbours in the encoder's conv features).

Departures: the suite's encoder (single frames, the last conv map flattened to ``latent_dim``)
instead of CaffeNet's fc7; g is Linear(3 latent_dim, ``hidden``) -> ReLU -> Linear(hidden, 2)
instead of one fc8 layer; the paper's ratio of positives to negatives is a config field here
(``negative_fraction``); motion from pixel differences, not optical flow; Adam. The public code
(imisra/shuffle-tuple, Caffe) ships UCF101 tuples; google-research's ``tcc/algos/sal.py`` (TF)
reverses tuples at random as we do. A published PyTorch port computes its loss on detached
embeddings, so its encoder never learns; a test here checks the encoder's gradient.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import make_encoder
from ...core import register
from .base import VideoConfig, VideoPretext
from .clips import order_tuples


@dataclasses.dataclass
class ShuffleLearnConfig(VideoConfig):
    tau_max: int = 25  # |b - d| <= tau_max frames (and the odd frame within tau_max); 2 s at 12.5 Hz
    tau_min: int = 6  # min(|a - b|, |d - e|) >= tau_min frames; 0.5 s at 12.5 Hz
    negative_fraction: float = 0.5
    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.tau_min <= self.tau_max or self.tau_max < 2:
            raise ValueError(
                f"ShuffleLearnConfig needs 1 <= tau_min <= tau_max, tau_max >= 2; got {self.tau_min}, {self.tau_max}"
            )
        if not 0.0 < self.negative_fraction < 1.0:
            raise ValueError(f"ShuffleLearnConfig.negative_fraction must be in (0, 1), got {self.negative_fraction}")


def make_tuples(five: np.ndarray, negative: np.ndarray, odd_first: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Frames (a, b, c, d, e) per row -> the 3 frames shown: (b, c, d) for a positive, (b, a, d)
    or (b, e, d) for a negative (``odd_first``: a), each reversed where ``reverse``."""
    a, b, c, d, e = five.T
    middle = np.where(negative, np.where(odd_first, a, e), c)
    tuples = np.stack([b, middle, d], axis=1)
    return np.where(reverse[:, None], tuples[:, ::-1], tuples)


@register
class ShuffleLearn(VideoPretext):
    name = "shuffle-learn"
    Config = ShuffleLearnConfig

    def __init__(self, config: ShuffleLearnConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.head = nn.Sequential(
            nn.Linear(3 * config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 2)
        )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        five = order_tuples(data, batch_size, rng, c.tau_max, c.tau_min, c.camera)
        negative = rng.random(batch_size) < c.negative_fraction
        tuples = make_tuples(five, negative, rng.random(batch_size) < 0.5, rng.random(batch_size) < 0.5)
        return {"frames": self.frames(data, tuples), "label": (~negative).astype(np.int64)}

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed_frames(frames).flatten(1))

    def loss(self, batch):
        logits = self.logits(batch["frames"])
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"accuracy": (logits.argmax(1) == batch["label"]).float().mean().detach()}

    def pretext_scores(self, data) -> dict[str, float]:
        acc = self.held_out_accuracy(data, lambda b: self.logits(b["frames"]).argmax(1) == b["label"])
        frac = self.config.negative_fraction
        return {"order_acc": acc, "order_chance": max(frac, 1.0 - frac)}
