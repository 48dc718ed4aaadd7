"""Patch helpers the patch-based pretext methods share (jigsaw, relative position, exemplar)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def crop_patches(obs: np.ndarray, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
    """``(B, C, H, W)`` frames -> ``(B, K, C, size, size)``: patch k of frame b has its top-left
    corner at ``(top[b, k], left[b, k])`` (which must keep it inside the frame)."""
    ar = np.arange(size)
    rows = np.asarray(top)[..., None] + ar  # (B, K, size)
    cols = np.asarray(left)[..., None] + ar
    b = np.arange(len(obs))[:, None, None, None]
    patches = obs[b, :, rows[..., :, None], cols[..., None, :]]  # (B, K, size, size, C)
    return np.ascontiguousarray(patches.transpose(0, 1, 4, 2, 3))


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, h)`` float images to ``size`` (no-op at the same size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
