"""The simulator as judge: mask tracking scored against MuJoCo's ground-truth masks.

Video pretext methods claim to learn correspondence: that a point of one frame can be found in
another. Here that claim is measured. For a clip of held-out frames t0 .. t0+H, the label map of
frame t0 (one label per *moving* body covering at least ``min_pixels`` = 20 pixels of it,
:func:`ssrl.envs.segmentation.moving_bodies`, and label 0 for everything else: a fingertip of a
few pixels is below what a feature map resolves) is propagated to every later frame from frame t0 alone, with the
method's dense features (the conv feature map of its encoder):

* ``attention`` (video colorization's own copy, Vondrick et al. 2018): the label distribution at
  target location j is ``sum_i A_ij y_i``, ``A_ij = softmax_i(f_i . f_j / T)`` over the reference
  locations i;
* ``nearest`` (every other method): the mean label distribution of the ``k`` reference locations
  whose features are nearest (Euclidean) to f_j.

Labels enter at the feature map's resolution as the area-averaged one-hot map of the reference
frame, and leave by bilinear upsampling to the frame size and an argmax. Each frame is scored by
the IoU of each tracked body's predicted and true masks, averaged over the bodies (a body absent
from both prediction and truth in that frame is skipped); ``iou@n`` averages frames t0+1 ..
t0+n, then clips. Three baselines come with it: copying frame t0's mask unchanged (``copy``);
nearest neighbours in raw colour (``pixels``: each location's RGB, frames average-pooled by 2,
k = 1), what a tracker gets for free in a rendered scene of flat colours; and the same method's
random-init encoder (the ``_random`` row of ``ssrl bench``'s probe table).

The masks are rendered by replaying the recorded states (:class:`~ssrl.envs.segmentation.
BodyMasks`), so the data set must have been loaded from its folder (its ``meta.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Colours of labels 1, 2, ... in pictures (label 0, "everything else", is left as it is).
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)])


def label_map(mask: np.ndarray, bodies: Sequence[int]) -> np.ndarray:
    """Body ids -> labels: ``k + 1`` where the pixel shows ``bodies[k]``, 0 elsewhere."""
    out = np.zeros(mask.shape, np.int64)
    for k, body in enumerate(bodies):
        out[mask == body] = k + 1
    return out


def iou_per_label(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """IoU of labels 1..n_labels between two label maps; NaN where both lack the label."""
    out = np.full(n_labels, np.nan)
    for k in range(1, n_labels + 1):
        p, t = pred == k, truth == k
        union = np.logical_or(p, t).sum()
        if union:
            out[k - 1] = np.logical_and(p, t).sum() / union
    return out


def frame_scores(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """Per frame of ``(T, H, W)`` label maps, the mean IoU over the labels present in either
    (NaN for a frame where none is)."""
    scores = np.full(len(pred), np.nan)
    for t in range(len(pred)):
        ious = iou_per_label(pred[t], truth[t], n_labels)
        if np.isfinite(ious).any():
            scores[t] = np.nanmean(ious)
    return scores


def soft_labels(labels: np.ndarray, n_labels: int, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` labels 0..n_labels -> ``(n_labels + 1, h, w)`` area-averaged one-hot map."""
    onehot = F.one_hot(torch.as_tensor(labels), n_labels + 1).permute(2, 0, 1).float()
    return F.adaptive_avg_pool2d(onehot[None], size)[0]


def attention_copy(
    ref_features: torch.Tensor, ref_values: torch.Tensor, features: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Video colorization's copy over a batch of (reference, target) pairs: ``(B, D, h, w)``
    reference features, ``(B, L, h, w)`` reference distributions (colours or labels), ``(B, D,
    h, w)`` target features -> ``(B, L, h, w)``: each target location j gets
    ``sum_i softmax_i(f_i . f_j / T) y_i`` over the reference locations i."""
    b, d = ref_features.shape[:2]
    logits = torch.einsum("bdi,bdj->bij", ref_features.reshape(b, d, -1), features.reshape(b, d, -1)) / temperature
    weights = torch.softmax(logits, dim=1)  # over reference locations i
    out = torch.einsum("bli,bij->blj", ref_values.reshape(b, ref_values.shape[1], -1), weights)
    return out.reshape(b, -1, *features.shape[-2:])


def attention_propagate(
    ref_features: torch.Tensor, ref_labels: torch.Tensor, features: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """:func:`attention_copy` from one reference to many targets: ``(D, h, w)`` reference
    features and ``(L, h, w)`` label distributions, ``(T, D, h, w)`` target features -> ``(T, L,
    h, w)``."""
    n = len(features)
    return attention_copy(
        ref_features.expand(n, *ref_features.shape), ref_labels.expand(n, *ref_labels.shape), features, temperature
    )


def nearest_propagate(
    ref_features: torch.Tensor, ref_labels: torch.Tensor, features: torch.Tensor, k: int = 10
) -> torch.Tensor:
    """Nearest neighbours: each target location takes the mean label distribution of the ``k``
    reference locations nearest in Euclidean distance. Shapes as
    :func:`attention_propagate`. Euclidean, not cosine: a conv map's ReLU features of a dark or
    single-channel input point the same way wherever they differ only in magnitude."""
    d, h, w = ref_features.shape
    ref = ref_features.reshape(d, h * w).T  # (ref, D)
    tgt = features.reshape(len(features), d, -1).transpose(1, 2)  # (T, target, D)
    dist = torch.cdist(tgt, ref[None].expand(len(features), -1, -1))  # (T, target, ref)
    top = dist.topk(min(k, h * w), dim=2, largest=False).indices.transpose(1, 2)  # (T, k, target)
    labels = ref_labels.reshape(len(ref_labels), -1)  # (L, ref)
    out = labels[:, top].mean(2)  # (L, T, target)
    return out.permute(1, 0, 2).reshape(len(features), len(ref_labels), *features.shape[-2:])


def upsample_argmax(probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(T, L, h, w)`` label distributions -> ``(T, H, W)`` labels (bilinear, then argmax)."""
    up = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    return up.argmax(1).cpu().numpy()


@dataclasses.dataclass
class TrackedClip:
    """One judged clip: frames t0..t0+H (``frames[0]`` is the reference), the tracked bodies'
    names, and the label maps: truth, the method's and the copied first mask."""

    frames: np.ndarray  # (H+1, 3, H, W) uint8, the newest frame of each stack
    bodies: list[str]
    truth: np.ndarray  # (H+1, H, W)
    predicted: np.ndarray
    copied: np.ndarray


def pick_clips(data, n_clips: int, horizon: int, seed: int = 0) -> list[tuple[int, int]]:
    """(episode, t0) of ``n_clips`` candidate clips, spread over the episodes (each used in
    turn), t0 uniform among the times that leave ``horizon`` frames after it (0 if the episode is
    shorter)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_clips):
        ep = int(i % data.num_episodes)
        last = int(data.ep_len[ep]) - horizon
        clips.append((ep, int(rng.integers(0, last + 1)) if last > 0 else 0))
    return clips


def track(
    features: Callable[[np.ndarray], torch.Tensor],
    propagate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    data,
    stack: int = 1,
    camera: str | None = None,
    horizons: Sequence[int] = (10, 30),
    n_clips: int = 8,
    min_pixels: int = 20,
    seed: int = 0,
) -> tuple[dict[str, float], list[TrackedClip]]:
    """Judge ``features`` (frame stacks ``(N, 3*stack, H, W)`` uint8 -> feature maps ``(N, D, h, w)``)
    with the ``propagate`` rule on held-out ``data`` (see the module docstring).

    Returns the scores ``track_iou<n>``, ``copy_iou<n>`` and ``pixels_iou<n>`` for each horizon n,
    ``track_ceiling`` (the IoU of each clip's first labels taken down to the feature map's grid
    and back up: what a perfect tracker with these feature maps would score; near 0 when the
    bodies are smaller than a feature cell, as under the ``fast`` encoder's 7x7 map at 84 px) and
    ``track_clips`` (the clips judged), and the judged clips for pictures.
    """
    from ssrl.envs.segmentation import BodyMasks

    camera = camera or data.cameras[0]
    horizon = max(horizons)
    clips: list[TrackedClip] = []
    per_frame: dict[str, list[np.ndarray]] = {"track": [], "copy": [], "pixels": []}
    ceiling: list[np.ndarray] = []
    with BodyMasks(data.meta, camera) as renderer:
        # Candidates in a fixed order; a clip whose first frame shows no moving body (it left
        # the view) is passed over, until n_clips are judged or 4 n_clips were tried.
        for ep, t0 in pick_clips(data, 4 * n_clips, horizon, seed):
            if len(clips) == n_clips:
                break
            start = int(data.ep_start[ep]) + t0
            idx = np.arange(start, start + min(horizon, int(data.ep_len[ep]) - t0) + 1)
            masks = renderer.masks(data.state[idx])
            visible = [b for b in renderer.moving if (masks[0] == b).sum() >= min_pixels]
            if not visible or len(idx) < 2:
                continue
            truth = label_map(masks, visible)
            obs = data.stack(idx, camera, stack)
            with torch.no_grad():
                feats = features(obs)
                ref = soft_labels(truth[0], len(visible), tuple(feats.shape[-2:])).to(feats.device)
                probs = propagate(feats[0], ref, feats[1:])
            predicted = np.concatenate([truth[:1], upsample_argmax(probs.float(), truth.shape[-2:])])
            # What a perfect tracker scores at this feature resolution: frame t0's own labels
            # through the feature map's grid and back (bodies smaller than a cell vanish).
            ceiling.append(frame_scores(upsample_argmax(ref[None].float(), truth.shape[-2:]), truth[:1], len(visible)))
            copied = np.repeat(truth[:1], len(truth), axis=0)
            colours = F.avg_pool2d(torch.as_tensor(obs[:, -3:]).float(), 2)
            ref = soft_labels(truth[0], len(visible), tuple(colours.shape[-2:]))
            by_colour = upsample_argmax(nearest_propagate(colours[0], ref, colours[1:], 1), truth.shape[-2:])
            per_frame["track"].append(frame_scores(predicted[1:], truth[1:], len(visible)))
            per_frame["copy"].append(frame_scores(copied[1:], truth[1:], len(visible)))
            per_frame["pixels"].append(frame_scores(by_colour, truth[1:], len(visible)))
            names = [renderer.names[renderer.moving.index(b)] for b in visible]
            clips.append(TrackedClip(obs[:, -3:], names, truth, predicted, copied))
    scores: dict[str, float] = {"track_clips": float(len(clips))}
    finite = [float(c[0]) for c in ceiling if np.isfinite(c[0])]
    scores["track_ceiling"] = float(np.mean(finite)) if finite else float("nan")
    for name, rows in per_frame.items():
        for n in horizons:
            values = [np.nanmean(r[:n]) for r in rows if np.isfinite(r[:n]).any()]
            scores[f"{name}_iou{n}"] = float(np.mean(values)) if values else float("nan")
    return scores, clips


def overlay(frame: np.ndarray, labels: np.ndarray, scale: int = 3) -> np.ndarray:
    """A ``(3, H, W)`` frame with labels 1.. tinted (half frame, half label colour), enlarged
    ``scale`` times, as ``(H*scale, W*scale, 3)`` uint8."""
    img = frame.transpose(1, 2, 0).astype(np.float32)
    for k in range(1, int(labels.max()) + 1):
        where = labels == k
        img[where] = 0.4 * img[where] + 0.6 * PALETTE[(k - 1) % len(PALETTE)]
    img = img.round().clip(0, 255).astype(np.uint8)
    return img.repeat(scale, 0).repeat(scale, 1)


def tracking_rows(clips: Sequence[TrackedClip], offsets: Sequence[int] = (0, 5, 10, 20, 30)) -> list[list[np.ndarray]]:
    """Picture rows: per clip, the truth, the method's propagation and the copied first mask,
    each at the frame offsets that the clip has."""
    rows = []
    for clip in clips:
        times = [t for t in offsets if t < len(clip.frames)]
        for maps in (clip.truth, clip.predicted, clip.copied):
            rows.append([overlay(clip.frames[t], maps[t]) for t in times])
    return rows
