"""O3N, the odd-one-out network (Fernando, Bilen, Gavves and Gould, CVPR 2017).

N + 1 clips of one episode, each ``clip_len`` frames at ``clip_stride``; N play in order and one,
the odd one, has its frames shuffled (a random permutation other than the identity). The network
says which clip is odd:

    L = - 1/B sum_b log softmax_i( s(clip_{b,i}) )[odd_b],     i = 0 .. N,

an (N+1)-way cross-entropy (log(N+1) at uniform scores; chance accuracy 1/(N+1)). Each frame
goes through the one encoder phi; a clip is encoded as the differences of consecutive frame
embeddings, ``[phi(f_2) - phi(f_1), ..., phi(f_T) - phi(f_{T-1})]`` (the paper's "stack of
differences" idea, applied to embeddings), and a shared scorer s (Linear -> ReLU -> Linear to one
number) scores it. The clips' windows are drawn in proportion to their motion, all from one
episode (the first window picks it), so the odd clip shows the same scene as the others.

The paper uses 6 clips of 6 frames; so do the defaults (``n_clips`` counts all N + 1).

``extra_scores``: ``order_acc`` on held-out questions against ``order_chance`` = 1/(N+1), and
the mask tracking of :mod:`.judge`.

Departures: the paper fuses the N+1 branches' activations (concatenation, or its
sum-of-differences fusion) before one (N+1)-way softmax layer; here every clip gets a score from
the same scorer and the softmax runs over the scores, an (N+1)-way classifier that does not
depend on where the odd clip sits in the input. The paper's branches are CaffeNet on dynamic
images or frame differences; ours are the suite's encoder on single frames. No public
implementation exists to compare with (``../shared/reference/ssl_pretext.md``).
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
from .clips import clip_indices, shuffle_not_identity, window_starts


@dataclasses.dataclass
class O3NConfig(VideoConfig):
    n_clips: int = 6  # N + 1, the odd one included
    clip_len: int = 6
    clip_stride: int = 1
    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_clips < 2 or self.clip_len < 2 or self.clip_stride < 1:
            raise ValueError(
                f"O3NConfig needs n_clips >= 2, clip_len >= 2 and clip_stride >= 1; got "
                f"{self.n_clips}, {self.clip_len}, {self.clip_stride}"
            )


@register
class O3N(VideoPretext):
    name = "o3n"
    Config = O3NConfig

    def __init__(self, config: O3NConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.scorer = nn.Sequential(
            nn.Linear((config.clip_len - 1) * config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1)
        )

    @property
    def span(self) -> int:
        return (self.config.clip_len - 1) * self.config.clip_stride + 1

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        check_episode_length(data, self.span, self.name)
        idx = np.empty((batch_size, c.n_clips, c.clip_len), np.int64)
        odd = rng.integers(0, c.n_clips, batch_size)
        for b in range(batch_size):
            first = window_starts(data, 1, self.span, rng, c.camera)
            rest = window_starts(
                data, c.n_clips - 1, self.span, rng, c.camera, episode=int(data.frame_episode[first[0]])
            )
            idx[b] = clip_indices(np.concatenate([first, rest]), c.clip_len, c.clip_stride)
            idx[b, odd[b]] = idx[b, odd[b], shuffle_not_identity(c.clip_len, rng)]
        return {"frames": self.frames(data, idx), "odd": odd}

    def scores(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, N+1, T, C, H, W)`` -> a score per clip ``(B, N+1)``."""
        b, n = frames.shape[:2]
        z = self.embed_frames(frames.flatten(0, 1))  # (B*(N+1), T, L)
        return self.scorer((z[:, 1:] - z[:, :-1]).flatten(1)).reshape(b, n)

    def loss(self, batch):
        scores = self.scores(batch["frames"])
        loss = F.cross_entropy(scores, batch["odd"])
        return loss, {"accuracy": (scores.argmax(1) == batch["odd"]).float().mean().detach()}

    def pretext_scores(self, data) -> dict[str, float]:
        acc = self.held_out_accuracy(data, lambda b: self.scores(b["frames"]).argmax(1) == b["odd"])
        return {"order_acc": acc, "order_chance": 1.0 / self.config.n_clips}
