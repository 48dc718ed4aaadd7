"""TCN: Time-Contrastive Networks (Sermanet et al. 2018).

Multi-view (the default): the same instant seen from two synchronised cameras should embed
together, other instants apart, even from the same camera. With the triplet loss

    L = mean_i max(0, ||f(a_i) - f(p_i)||^2 - ||f(a_i) - f(n_i)||^2 + margin)

the anchor a_i and positive p_i are frame stacks at time t_i from two different cameras (drawn
for each row among all the cameras, so with three or more a batch may leave one out), and the
negative n_i is the anchor's camera at another time of the same episode, more than
``negative_margin`` frames away (the farthest frame if the episode is too short). Embeddings
are L2-normalised inside the triplet loss, as in the TCN code (margin 0.2).

With ``loss="npairs"`` the B (anchor, positive) pairs of a batch come from B distinct instants
of one episode and every other positive is a negative (the TCN "pouring" configuration). No
normalisation; the L2 penalty is that of TensorFlow's ``npairs_loss``, which the TCN code calls:
lambda/4 (mean ||f(a)||^2 + mean ||f(p)||^2) with lambda = ``reg`` (see
:func:`~ssrl.representations.losses.npairs`).

Single-view (``single_view=True``): the positive is the same camera within ``positive_window``
frames of the anchor, the negative further than ``negative_margin`` frames.

``alignment_error`` measures how well two views line up in embedding space: for every instant
of view i, the nearest instant of view j in embedding distance, and the mean |t_i - t_nn|
divided by the number of instants (0 is perfect alignment; random is about 1/3). Departure from the paper:
time is counted on the episode's motion clock (:func:`motion_clock`), so frames in which the
picture did not change count as one instant; on episodes that never rest it is the
paper's measure.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones import make_encoder
from ..core import BaseConfig, Need, Representation, register
from ..losses import npairs, triplet


@dataclasses.dataclass
class TCNConfig(BaseConfig):
    loss: str = "triplet"  # or "npairs"
    margin: float = 0.2
    reg: float = 0.002  # lambda of the n-pairs L2 penalty (npairs_loss's reg_lambda)
    single_view: bool = False
    views: tuple[str, ...] | None = None  # cameras to pair (default: all of the data's)
    positive_window: int = 2  # single view: |t_p - t_a| <= window
    negative_margin: int = 8  # |t_n - t_a| > margin frames

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("triplet", "npairs"):
            raise ValueError(f"TCN loss must be 'triplet' or 'npairs', got {self.loss!r}")
        if self.views is not None:
            self.views = tuple(self.views)


@register
class TCN(Representation):
    name = "tcn"
    needs = Need.FRAMES | Need.VIEWS
    Config = TCNConfig

    def __init__(self, config: TCNConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        if config.single_view:
            # Frames of one camera, with others of the same episode near and far in time: on an
            # agent's replay, from its clips (runs of consecutive instants).
            self.needs = Need.FRAMES | Need.CLIPS

    def check_data(self, data) -> None:
        method = "single-view TCN" if self.config.single_view else "multi-view TCN"
        data.require(self.needs, method=method)
        data.require_cameras(self.config.views, method=method)

    def extra_scores(self, data) -> dict[str, float]:
        """The alignment error across two views of held-out episodes (needs 2 cameras)."""
        return {"alignment_error": alignment_error(self, data)} if len(data.cameras) > 1 else {}

    def _views(self, data) -> list[str]:
        views = list(self.config.views or data.cameras)
        if not self.config.single_view and len(views) < 2:
            raise ValueError(
                f"multi-view TCN needs at least 2 cameras, the data has {data.cameras}; "
                "collect with --cameras a,b or use single_view=True"
            )
        return views

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c, k = self.config, self.config.frame_stack
        views = self._views(data)
        if c.loss == "npairs":
            # B distinct instants of one episode: every other pair is a hard, same-scene negative.
            ep = rng.integers(data.num_episodes)
            n_frames = data.ep_len[ep] + 1
            t = rng.choice(n_frames, size=min(batch_size, n_frames), replace=False)
            idx = data.ep_start[ep] + t
        else:
            idx = data.sample_frames(batch_size, rng)
        b = len(idx)
        if c.single_view:
            view = views[0]
            anchor = data.stack(idx, view, k)
            positive = data.stack(self._offset(data, idx, 1, c.positive_window, rng), view, k)
            negative = data.stack(self._offset(data, idx, c.negative_margin + 1, None, rng), view, k)
            return {"anchor": anchor, "positive": positive, "negative": negative}
        pairs = np.array([rng.choice(len(views), 2, replace=False) for _ in range(b)])
        anchor = np.empty((b, *self.obs_shape), np.uint8)
        positive = np.empty_like(anchor)
        negative = np.empty_like(anchor)
        neg_idx = self._offset(data, idx, c.negative_margin + 1, None, rng)
        for v in range(len(views)):
            rows = pairs[:, 0] == v
            anchor[rows] = data.stack(idx[rows], views[v], k)
            negative[rows] = data.stack(neg_idx[rows], views[v], k)
            rows = pairs[:, 1] == v
            positive[rows] = data.stack(idx[rows], views[v], k)
        batch = {"anchor": anchor, "positive": positive}
        if c.loss == "triplet":
            batch["negative"] = negative
        return batch

    @staticmethod
    def _offset(data, idx, min_gap: int, max_gap: int | None, rng) -> np.ndarray:
        """Another frame of the same episode, ``min_gap <= |dt| <= max_gap`` frames away when the
        episode allows (else the farthest frame)."""
        ep = data.frame_episode[idx]
        start, n = data.ep_start[ep], data.ep_len[ep] + 1
        t = idx - start
        out = np.empty_like(idx)
        for i in range(len(idx)):
            candidates = np.arange(n[i])
            gap = np.abs(candidates - t[i])
            ok = (gap >= min_gap) & (gap <= (max_gap if max_gap is not None else n[i]))
            if not ok.any():
                ok = gap == gap.max()
            out[i] = start[i] + rng.choice(candidates[ok])
        return out

    def loss(self, batch):
        c = self.config
        a, p = self.encoder(batch["anchor"]), self.encoder(batch["positive"])
        if c.loss == "npairs":
            loss = npairs(a, p, c.reg)
            with torch.no_grad():
                acc = ((a @ p.T).argmax(1) == torch.arange(len(a), device=a.device)).float().mean()
            return loss, {"retrieval_acc": acc}
        n = self.encoder(batch["negative"])
        a, p, n = (F.normalize(x, dim=-1) for x in (a, p, n))
        loss = triplet(a, p, n, c.margin)
        with torch.no_grad():
            ok = ((a - p).pow(2).sum(-1) < (a - n).pow(2).sum(-1)).float().mean()
        return loss, {"triplet_acc": ok}


def motion_clock(change: np.ndarray, tol: float = 0.1 / 255) -> np.ndarray:
    """Per frame of an episode, the number of earlier steps in which the picture changed: a clock
    that stops while nothing visibly moves, so the frames of a still stretch count as one instant.
    ``change[t]``: how much frame t differs from frame t - 1 (``change[0]`` is ignored), e.g. the
    largest of :meth:`RolloutData.motion` (the mean absolute pixel change, in [0, 1]) over the
    episode's views; a step moves the clock when its change exceeds ``tol`` (0.1 on the 0-255
    scale). (A Push demonstration is done after 14 of its 50 steps; its frames then change by at
    most 0.023 / 255, against at least 0.57 / 255 while it moves. Frame by frame, its 36
    identical frames, matched among themselves at random, made up almost all of TCN's alignment
    error. The simulator's state is no judge of this: its velocities keep jittering at rest.)"""
    moved = np.asarray(change)[1:] > tol
    return np.concatenate([[0], np.cumsum(moved)])


def view_alignment_error(za: np.ndarray, zb: np.ndarray, clock: np.ndarray | None = None) -> float:
    """TCN's alignment error (Sermanet et al. 2018, section 5.1) between two views of one episode
    on ``clock`` (:func:`motion_clock`; None: every frame its own instant, ``c(t) = t``, the
    paper's form). Each of the episode's N instants is represented by its first frame in both
    views; for instant i of view a, ``n(i)`` is the instant of view b nearest in embedding space,
    and the error is the mean of ``|i - n(i)| / N``. 0: the views align; about 1/3: an embedding
    that ignores time."""
    c = np.arange(len(za)) if clock is None else np.asarray(clock)
    first = np.unique(c, return_index=True)[1]  # one frame per instant, in time order
    za, zb = np.asarray(za, np.float64)[first], np.asarray(zb, np.float64)[first]
    d = (za * za).sum(1)[:, None] + (zb * zb).sum(1)[None, :] - 2 * za @ zb.T
    instants = np.arange(len(first))
    return float(np.abs(d.argmin(1) - instants).mean() / len(first))


def alignment_error(rep: Representation, data, views: tuple[str, str] | None = None, max_episodes: int = 10) -> float:
    """:func:`view_alignment_error` between two cameras, on the :func:`motion_clock` of each
    episode (a step moves it when either camera's picture changes), averaged over the first
    ``max_episodes`` episodes of ``data``."""
    views = views or tuple(data.cameras[:2])
    k = rep.obs_shape[0] // 3
    errors = []
    for ep in range(min(data.num_episodes, max_episodes)):
        idx = data.ep_start[ep] + np.arange(data.ep_len[ep] + 1)
        clock = motion_clock(np.max([data.motion(view)[idx] for view in views], axis=0))
        instants = idx[np.unique(clock, return_index=True)[1]]  # embed each instant's first frame only
        za, zb = (rep.embed(data.stack(instants, view, k)) for view in views)
        errors.append(view_alignment_error(za, zb))
    return float(np.mean(errors))
