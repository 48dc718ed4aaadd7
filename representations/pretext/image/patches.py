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


# -- pictures -----------------------------------------------------------------------------------

YELLOW, GREEN, RED = (255, 200, 0), (0, 190, 0), (230, 0, 0)


def outline(image: np.ndarray, top: int, left: int, size: int, colour, width: int = 1) -> np.ndarray:
    """A copy of an ``(H, W, 3)`` uint8 image with the border of the ``size``-pixel square whose
    top-left corner is ``(top, left)`` painted ``colour``, ``width`` pixels thick, inside the square."""
    out = np.array(image, np.uint8, copy=True)
    square = out[top : top + size, left : left + size]
    square[:width], square[-width:], square[:, :width], square[:, -width:] = colour, colour, colour, colour
    return out


def canvas(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 image centred on a white ``(height, width, 3)`` canvas (h <= height, w <= width)."""
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = image.shape[:2]
    top, left = (height - h) // 2, (width - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def enlarge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An ``(h, w, 3)`` image scaled up by the largest whole factor that fits ``height`` x ``width``
    (nearest neighbour, so every pixel stays visible), on a white canvas of that size."""
    factor = max(1, min(height // image.shape[0], width // image.shape[1]))
    return canvas(np.repeat(np.repeat(image, factor, 0), factor, 1), height, width)


def tile_mosaic(tiles: np.ndarray, cells: np.ndarray, height: int, width: int, grid: int = 3) -> np.ndarray:
    """``(K, h, h, 3)`` uint8 tiles laid out on a ``grid`` x ``grid`` board: tile k in cell
    ``cells[k]`` (raster order), up to 2 white pixels apart, centred on a ``height`` x ``width``
    white canvas."""
    side = tiles.shape[1]
    gap = max(0, min(2, (min(height, width) - grid * side) // (grid - 1)))
    pitch = side + gap
    board = np.full((grid * pitch - gap, grid * pitch - gap, 3), 255, np.uint8)
    for tile, cell in zip(tiles, cells, strict=True):
        r, c = divmod(int(cell), grid)
        board[r * pitch : r * pitch + side, c * pitch : c * pitch + side] = tile
    return canvas(board, height, width)


def newest_rgb(images: np.ndarray) -> np.ndarray:
    """Channels-first frame stacks ``(..., 3k, h, w)`` -> the newest frame as ``(..., h, w, 3)`` uint8."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(images)[..., -3:, :, :], -3, -1)).astype(np.uint8)
