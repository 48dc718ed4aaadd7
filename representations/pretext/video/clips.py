"""Samplers of frames in time, shared by the video pretext methods.

All work on :class:`~ssrl.representations.data.RolloutData` (flat frame indices; an episode's
frames are consecutive) and draw *high-motion windows* as the papers do, with motion found from
the video itself: a window's weight is the mean absolute pixel change of its frames since their
previous ones (:meth:`~ssrl.representations.data.RolloutData.motion`), and windows are drawn with
probability proportional to it (uniformly when nothing moves at all). A still window has no
order to learn: Shuffle & Learn and the arrow of time would see identical "right" and "wrong"
answers there.
"""

from __future__ import annotations

import numpy as np


def window_weights(data, span: int, camera: str | None = None, episode: int | None = None) -> np.ndarray:
    """Per frame s, the weight of the window s .. s+span-1 (0 where it would leave the episode
    or, with ``episode``, where s lies in another episode)."""
    motion = data.motion(camera)
    cum = np.concatenate([[0.0], np.cumsum(motion, dtype=np.float64)])
    valid = data.frame_t + span - 1 <= data.ep_len[data.frame_episode]
    if episode is not None:
        valid &= data.frame_episode == episode
    starts = np.flatnonzero(valid)
    weights = np.zeros(len(data))
    if span > 1:
        weights[starts] = (cum[starts + span] - cum[starts + 1]) / (span - 1)  # frames s+1 .. s+span-1
    weights[starts] += 1e-12  # a still window can still be drawn when nothing moves anywhere
    return weights


def window_starts(
    data, n: int, span: int, rng: np.random.Generator, camera: str | None = None, episode: int | None = None
) -> np.ndarray:
    """``n`` first frames of windows of ``span`` frames inside one episode (all in ``episode``
    if given), drawn in proportion to the windows' motion. Raises ValueError if none fits."""
    weights = window_weights(data, span, camera, episode)
    total = weights.sum()
    if total <= 0:
        where = f"episode {episode}" if episode is not None else "any episode"
        raise ValueError(f"no window of {span} frames fits in {where} (the longest has {int(data.ep_len.max()) + 1})")
    return rng.choice(len(data), size=n, p=weights / total)


def order_tuples(
    data, n: int, rng: np.random.Generator, tau_max: int, tau_min: int, camera: str | None = None
) -> np.ndarray:
    """Shuffle & Learn's five frames: ``(n, 5)`` flat indices a < b < c < d < e of one episode
    with ``2 <= d - b <= tau_max`` (c strictly between), ``tau_min <= b - a <= tau_max`` and
    ``tau_min <= e - d <= tau_max``; each tuple's window a .. e drawn by its motion."""
    if not 1 <= tau_min <= tau_max or tau_max < 2:
        raise ValueError(f"need 1 <= tau_min <= tau_max and tau_max >= 2, got tau_min={tau_min}, tau_max={tau_max}")
    longest = int(data.ep_len.max()) + 1
    if 2 * tau_min + 3 > longest:
        raise ValueError(
            f"a tuple spans at least {2 * tau_min + 3} frames (2 tau_min + 3); the longest episode has {longest}"
        )
    out = np.empty((n, 5), np.int64)
    cache: dict[int, np.ndarray] = {}
    for i in range(n):
        while True:
            bd = int(rng.integers(2, tau_max + 1))
            ab, de = (int(g) for g in rng.integers(tau_min, tau_max + 1, 2))
            span = ab + bd + de + 1
            if span <= longest:
                break
        if span not in cache:
            cache[span] = window_weights(data, span, camera)
        w = cache[span]
        a = int(rng.choice(len(data), p=w / w.sum()))
        c = a + ab + int(rng.integers(1, bd))
        out[i] = (a, a + ab, c, a + ab + bd, a + ab + bd + de)
    return out


def clip_indices(starts: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """``(n, length)`` frame indices of the clips starting at ``starts`` (in time order)."""
    return np.asarray(starts)[:, None] + stride * np.arange(length)[None, :]


def shuffle_not_identity(length: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(length)`` that is not the identity (length >= 2)."""
    if length < 2:
        raise ValueError("a clip of one frame cannot be out of order")
    while True:
        perm = rng.permutation(length)
        if (perm != np.arange(length)).any():
            return perm
