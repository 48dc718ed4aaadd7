"""What the video pretext methods share: the config fields, the per-frame encoder, the judge.

Every video method here learns from frames in time, yet leaves behind an encoder of single RGB
frames (``frame_stack = 1`` by default): the order methods must tell the order from what each
frame shows, which a stack of frames would give away, and under an env's frame stack the frozen
and fine-tuned regimes encode each frame and concatenate the latents
(:class:`~ssrl.representations.wrappers.StackedFramesEncoder`).

:class:`VideoPretext` adds to :class:`~ssrl.representations.Representation`:

* ``dense_features(obs)``: the feature map the judge propagates masks with (the encoder's last
  conv map by default);
* ``propagate(ref_features, ref_labels, features)``: nearest neighbours by default
  (:func:`.judge.nearest_propagate`); video colorization uses its own attention copy;
* ``extra_scores``: the mask-tracking scores of :mod:`.judge` on held-out episodes (when the
  data carries its ``meta.json``), plus ``pretext_scores`` (each method's held-out pretext
  accuracy and its chance level);
* ``pictures``: ``tracking.png``, propagated masks beside the truth and the copied first mask.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch

from ...core import BaseConfig, Need, Representation
from . import judge


@dataclasses.dataclass
class VideoConfig(BaseConfig):
    frame_stack: int = 1  # the encoder sees single frames (see the module docstring)
    camera: str | None = None  # the data's camera to train on (default its first)
    track_clips: int = 8  # held-out clips the tracking judge scores
    # k of the nearest-neighbour propagation: 1 gave the best tracking on the training episodes
    # of cartpole (k = 3 and 10 average thin bodies such as the pole away into the background).
    track_neighbours: int = 1
    eval_questions: int = 512  # held-out questions (tuples, clips, pairs) pretext_scores asks

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("track_clips", "track_neighbours", "eval_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__qualname__}.{name} must be >= 1, got {getattr(self, name)}")


def check_episode_length(data, span: int, method: str) -> None:
    """Refuse data whose episodes are all shorter than ``span`` frames, naming the numbers."""
    longest = int(data.ep_len.max()) + 1
    if longest < span:
        raise ValueError(
            f"{method} samples windows of {span} frames; the longest episode has {longest}. "
            "Collect longer episodes or shorten the method's windows"
        )


class VideoPretext(Representation):
    """Base of the video pretext methods (see the module docstring)."""

    needs = Need.CLIPS
    stacks_env_frames = False  # single frames, also for an agent's fresh encoder (module docstring)
    horizons = (10, 30)

    def frames(self, data, idx: np.ndarray) -> np.ndarray:
        """The encoder's inputs at frame indices ``idx`` of any shape: ``(*idx.shape, C, H, W)``."""
        idx = np.asarray(idx)
        x = data.stack(idx.ravel(), self.config.camera, self.config.frame_stack)
        return x.reshape(*idx.shape, *x.shape[1:])

    def embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, latent_dim)``: every frame through the one encoder."""
        return self.encoder(x.flatten(0, 1)).reshape(*x.shape[:2], -1)

    @torch.no_grad()
    def held_out_accuracy(self, data, correct) -> float:
        """Mean of ``correct(batch) -> (B,) bool`` over ``eval_questions`` questions drawn from
        ``data`` with a fixed seed (so trained and untrained encoders get the same questions)."""
        rng = np.random.default_rng(0)
        hits, asked = 0.0, 0
        with self.evaluating():
            while asked < self.config.eval_questions:
                n = min(64, self.config.eval_questions - asked)
                batch = self.to_batch(self.sample_batch(data, n, rng))
                hits += float(correct(batch).float().sum())
                asked += n
        return hits / asked

    def dense_features(self, obs: torch.Tensor) -> torch.Tensor:
        """Frame stacks -> the encoder's last conv feature map ``(N, D, h, w)``."""
        return self.encoder.spatial(obs)

    def propagate(self, ref_features: torch.Tensor, ref_labels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return judge.nearest_propagate(ref_features, ref_labels, features, self.config.track_neighbours)

    def pretext_scores(self, data) -> dict[str, float]:
        """The method's own task on held-out ``data``: its accuracy and chance level."""
        return {}

    def _track(self, data):
        def features(obs: np.ndarray) -> torch.Tensor:
            with self.evaluating():
                x = torch.as_tensor(obs).to(self.device)
                return torch.cat([self.dense_features(x[i : i + 64]) for i in range(0, len(x), 64)])

        return judge.track(
            features,
            self.propagate,
            data,
            stack=self.config.frame_stack,
            camera=self.config.camera,
            horizons=self.horizons,
            n_clips=self.config.track_clips,
        )

    def extra_scores(self, data) -> dict[str, float]:
        """Mask tracking (``track_iou10``, ``track_iou30``; the ``copy_iou`` baselines) when the
        data has its meta.json, and the method's own held-out accuracy (``pretext_scores``)."""
        scores = dict(self.pretext_scores(data))
        if "env_id" in data.meta:
            scores.update(self._track(data)[0])
        return scores

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``tracking.png``: for three held-out clips, the true masks of the moving bodies, the
        masks this encoder propagates from the clip's first frame, and that first mask copied,
        at 0, 5, 10, 20 and 30 frames."""
        if "env_id" not in data.meta:
            return []
        scores, clips = self._track(data)
        return [write_tracking_figure(clips[:3], folder / "tracking.png", self.name, scores)]


def write_tracking_figure(clips, path: pathlib.Path, method: str, scores: dict[str, float]) -> pathlib.Path:
    """Rows of truth / method / copied masks per clip, with labelled rows and columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssrl.utils import atomic_path

    offsets = (0, 5, 10, 20, 30)
    rows = judge.tracking_rows(clips, offsets)
    cols = max(len(r) for r in rows) if rows else 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 1.9 * len(rows)), squeeze=False)
    kinds = ("truth", method, "copy first")
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row):
                ax.imshow(row[c])
            else:
                ax.axis("off")
            if r == 0 and c < len(row):
                ax.set_title(f"t0 + {offsets[c]}", fontsize=9)
            if c == 0:
                clip = clips[r // 3]
                label = kinds[r % 3] + (f"\n({', '.join(clip.bodies)})" if r % 3 == 0 else "")
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        f"{method}: masks propagated from t0 (IoU@10 {scores.get('track_iou10', float('nan')):.2f}, "
        f"copying t0's mask {scores.get('copy_iou10', float('nan')):.2f}; a perfect tracker on this "
        f"feature grid {scores.get('track_ceiling', float('nan')):.2f})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title above the columns
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
