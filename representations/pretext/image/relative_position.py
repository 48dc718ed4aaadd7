"""Relative patch position, or context prediction (Doersch, Gupta and Efros, ICCV 2015,
"Unsupervised Visual Representation Learning by Context Prediction").

A first patch is placed at random in the frame; it is the centre of a 3x3 grid of patches of
``patch_size`` pixels separated by ``gap`` pixels, and the second patch is one of its 8
neighbours in that grid, label y in 0..7 in raster order (up-left, up, up-right, left, right,
down-left, down, down-right; the official code's labels 1..8). Both patches go through the same
encoder phi; a classifier g on the concatenation predicts where the neighbour is:

    L = - 1/N sum_n log softmax( g([phi(centre_n), phi(neighbour_n)]) )_{y_n}

an 8-way cross-entropy: log 8 = 2.079 at uniform logits; the held-out accuracy
``relative_position_acc`` has chance level 1/8.

Sampling (one pair per frame): the label is drawn uniformly, then the centre patch uniformly
among the positions where it and that neighbour both fit the frame, each patch jittered by up to
``jitter`` pixels in each direction. The official code (cdoersch/deepcontext ``train.py``)
instead lays a dense grid at a random offset over a larger image and trains on every adjacent
pair of it; the class balance and the patch geometry are the same.

Shortcut counter-measures (the paper's Section 3.1), each a config field:

* ``gap``: the grid's patches are ``gap`` pixels apart, so no line or texture continues from one
  patch into the next (paper: 96-px patches, 48-px gaps);
* ``jitter``: each patch moves by up to ``jitter`` pixels in x and y (paper: 7), so the pair's
  exact alignment is no clue; ``2 * jitter <= gap`` so patches never touch;
* ``pixelate_prob``, ``pixelate_min_pixels``: as the official code, a third of the patches are
  downsampled to between ``pixelate_min_pixels`` (100) and (patch_size - 1)^2 pixels (the count
  uniform in that range) and upsampled back, for robustness to pixelation;
* chromatic aberration (``color``): ``"drop"`` (default, the official code's choice) keeps one
  colour channel drawn at random per patch and replaces the other two with the kept channel's
  mean plus Gaussian noise of 1/100 its standard deviation (the paper's text; the code adds
  uniform noise to mean-subtracted channels); ``"project"`` multiplies every RGB pixel by
  B = I - a a^T / (a^T a), a = (-1, 2, -1), which removes the green-magenta axis; ``"none"``.
  Rendered frames have no chromatic aberration, so here these only remove colour cues.

Geometry at 84x84: 24-px patches, 12-px gaps, 2-px jitter (the paper's 96/48/7 scaled by 1/4);
a diagonal pair spans 2*24 + 12 + 2*2 = 64 px, leaving 20 px of placement freedom.

Patch-based encoder rule (every patch method of the suite): the encoder is
``make_encoder(arch, C, (H, W), latent_dim, pool="mean")``: conv trunk, global average pooling,
Linear + LayerNorm, so the same module takes a patch during pretraining and a full frame in RL
and probes. Patches smaller than its trunk needs (:func:`~ssrl.representations.backbones.min_input_size`: 31 px for
``fast``, 15 for ``dmc``) are resized bilinearly to ``input_size`` (default: the patch size, or
the trunk's minimum if larger: 24 -> 31 px for ``fast``). A frame stack is cut as one image (every
frame at the same positions; colour dropping keeps the same channel of each frame).

Other departures: the official code also rescales each patch to a fixed RMS after mean
subtraction (not done: the encoder must take raw [0, 1] frames in RL); its network is AlexNet-like
up to fc6 (4096) per patch, then fc7, fc8 (4096 each) and fc9 over the pair (with batch norm);
here phi is the suite's pooled encoder and g is Linear(2 latent_dim, ``hidden``) -> ReLU ->
Linear(``hidden``, 8), discarded after pretraining; Adam instead of SGD.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssrl.utils import image_grid, write_png

from ...backbones import make_encoder, min_input_size, to_float_image
from ...core import BaseConfig, Need, Representation, register
from .patches import GREEN, RED, YELLOW, canvas, crop_patches, enlarge, newest_rgb, outline, resize_square

# (dy, dx) grid offset of the neighbour for each label, raster order without the centre.
OFFSETS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
NUM_POSITIONS = len(OFFSETS)
COLOR_MODES = ("drop", "project", "none")
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0])


@dataclasses.dataclass
class RelativePositionConfig(BaseConfig):
    patch_size: int = 24  # patch side in frame pixels
    gap: int = 12  # pixels between neighbouring patches of the grid
    jitter: int = 2  # each patch moves by up to this many pixels in x and in y
    input_size: int | None = (
        None  # patches are resized to this for the encoder (None: patch_size or the trunk's minimum)
    )
    color: str = "drop"  # chromatic-aberration counter-measure: "drop", "project" or "none"
    pixelate_prob: float = 1 / 3  # share of patches downsampled then upsampled
    pixelate_min_pixels: int = 100  # ... to as few as this many pixels
    hidden: int = 256  # width of the classifier over the pair's embeddings
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        if self.patch_size < 2 or self.gap < 0 or self.jitter < 0:
            raise ValueError(
                f"{name}: patch_size >= 2, gap >= 0 and jitter >= 0 needed, "
                f"got {self.patch_size}, {self.gap}, {self.jitter}"
            )
        if 2 * self.jitter > self.gap:
            raise ValueError(f"{name}: 2 * jitter ({2 * self.jitter}) > gap ({self.gap}): jittered patches could touch")
        need = min_input_size(self.arch)
        if self.input_size is not None and self.input_size < need:
            raise ValueError(
                f"{name}.input_size {self.input_size} px is below the {need} px the {self.arch!r} trunk needs"
            )
        if self.color not in COLOR_MODES:
            raise ValueError(f"{name}.color must be one of {COLOR_MODES}, got {self.color!r}")
        if not 0.0 <= self.pixelate_prob <= 1.0:
            raise ValueError(f"{name}.pixelate_prob must be in [0, 1], got {self.pixelate_prob}")
        if self.pixelate_prob > 0 and not 1 <= self.pixelate_min_pixels < (self.patch_size - 1) ** 2:
            raise ValueError(
                f"{name}.pixelate_min_pixels ({self.pixelate_min_pixels}) must be in [1, (patch_size - 1)^2 = "
                f"{(self.patch_size - 1) ** 2})"
            )
        if self.hidden < 1:
            raise ValueError(f"{name}.hidden must be positive, got {self.hidden}")

    @property
    def encoder_input(self) -> int:
        """The side of the images the encoder sees during pretraining."""
        return self.input_size or max(self.patch_size, min_input_size(self.arch))

    @property
    def pair_extent(self) -> int:
        """Pixels a diagonal pair spans in x and y, jitter included."""
        return 2 * self.patch_size + self.gap + 2 * self.jitter

    def check_frame(self, obs_shape) -> None:
        _, h, w = obs_shape
        if h != w:
            raise ValueError(f"relative-position needs square frames, got {h}x{w}")
        if self.pair_extent > h:
            raise ValueError(
                f"a diagonal pair of {self.patch_size}-px patches {self.gap} px apart with {self.jitter} px of jitter "
                f"spans {self.pair_extent} px, more than the {h}-px frame; lower patch_size, gap or jitter "
                "(84-px frames: 24, 12, 2)"
            )


def drop_colors(x: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(N, 3k, h, w)`` -> the same with, in every RGB frame of patch n, only channel
    ``keep[n]`` kept; the two others become that channel's mean plus Gaussian noise of 1/100 its
    standard deviation (Doersch et al.'s colour dropping)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 3, 3, h, w)
    kept = x.gather(2, keep.view(n, 1, 1, 1, 1).expand(n, c // 3, 1, h, w))  # (N, k, 1, h, w)
    mean = kept.mean(dim=(3, 4), keepdim=True)
    std = kept.std(dim=(3, 4), keepdim=True, unbiased=False)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mask = F.one_hot(keep, 3).bool().view(n, 1, 3, 1, 1)
    return torch.where(mask, x, mean + 0.01 * std * noise).reshape(n, c, h, w)


def project_colors(x: torch.Tensor) -> torch.Tensor:
    """Every RGB pixel of ``(N, 3k, h, w)`` multiplied by B = I - a a^T / a^T a, a = (-1, 2, -1):
    the green-magenta component removed (Doersch et al.'s projection)."""
    a = GREEN_MAGENTA.to(x.device, x.dtype)
    b = torch.eye(3, device=x.device, dtype=x.dtype) - torch.outer(a, a) / a.dot(a)
    n, c, h, w = x.shape
    return torch.einsum("ij,nkjhw->nkihw", b, x.reshape(n, c // 3, 3, h, w)).reshape(n, c, h, w)


def pixelate(x: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Images with ``sides[n] > 0`` downsampled (area) to ``sides[n]`` pixels a side and
    upsampled (bilinear) back to their size."""
    out = x
    for side in sides.unique().tolist():
        if side <= 0:
            continue
        sel = sides == side
        small = F.interpolate(x[sel], size=(side, side), mode="area")
        if out is x:
            out = x.clone()
        out[sel] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


@register
class RelativePosition(Representation):
    name = "relative-position"
    needs = Need.FRAMES
    Config = RelativePositionConfig

    def __init__(self, config: RelativePositionConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        config.check_frame(obs_shape)
        c, h, w = obs_shape
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, pool="mean")
        self.head = nn.Sequential(
            nn.Linear(2 * config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, NUM_POSITIONS)
        )

    def pairs(self, obs: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Frames ``(B, C, H, W)`` -> ``patches`` ``(B, 2, C, p, p)`` (centre, neighbour), their
        top-left ``corners`` ``(B, 2, 2)`` (y, x), ``label`` ``(B,)``, and per patch the colour
        channel to ``keep`` and the side to ``pixelate`` to (0: none); ``noise_seed`` seeds the
        colour-dropping noise."""
        cfg, b, size = self.config, len(obs), obs.shape[-1]
        p, j, pitch = cfg.patch_size, cfg.jitter, cfg.patch_size + cfg.gap
        label = rng.integers(0, NUM_POSITIONS, b)
        step = OFFSETS[label]  # (B, 2)
        lo = j + np.maximum(0, -step) * pitch  # the centre's top-left range keeping both patches inside
        hi = size - p - j - np.maximum(0, step) * pitch
        centre = lo + np.floor(rng.random((b, 2)) * (hi - lo + 1)).astype(np.int64)
        corners = np.stack([centre, centre + step * pitch], 1) + rng.integers(-j, j + 1, (b, 2, 2))
        patches = crop_patches(obs, corners[..., 0], corners[..., 1], p)
        count = rng.random((b, 2)) * ((p - 1) ** 2 - cfg.pixelate_min_pixels) + cfg.pixelate_min_pixels
        sides = np.where(rng.random((b, 2)) < cfg.pixelate_prob, np.sqrt(count).astype(np.int64), 0)
        return {
            "patches": patches,
            "corners": corners,
            "label": label,
            "keep": rng.integers(0, 3, (b, 2)),
            "pixelate": sides,
            "noise_seed": rng.integers(0, 2**62, 1),
        }

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        obs = data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)
        batch = self.pairs(obs, rng)
        del batch["corners"]
        return batch

    def patch_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``(2B, C, s, s)`` images the encoder sees (centre and neighbour of each pair in
        turn): pixelated, colour-treated, resized to the encoder's input."""
        x = pixelate(to_float_image(batch["patches"].flatten(0, 1)), batch["pixelate"].flatten())
        if self.config.color == "drop":
            generator = torch.Generator(device=x.device).manual_seed(int(batch["noise_seed"][0]))
            x = drop_colors(x, batch["keep"].flatten().long(), generator)
        elif self.config.color == "project":
            x = project_colors(x)
        return resize_square(x, self.config.encoder_input)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        z = self.encoder(self.patch_inputs(batch))
        return self.head(z.reshape(len(batch["label"]), 2 * z.shape[-1]))

    def loss(self, batch):
        logits = self.logits(batch)
        label = batch["label"].long()
        loss = F.cross_entropy(logits, label)
        return loss, {"accuracy": (logits.argmax(1) == label).float().mean().detach()}

    def extra_scores(self, data) -> dict[str, float]:
        """Neighbour-position accuracy on pairs from held-out frames (chance 1/8)."""
        rng = np.random.default_rng(0)
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        batch = self.pairs(data.stack(idx, self.config.camera, self.config.frame_stack), rng)
        correct, total = 0.0, 0
        with self.evaluating(), torch.no_grad():
            for start in range(0, len(idx), 128):
                part = {k: v[start : start + 128] for k, v in batch.items() if k != "noise_seed"}
                part = self.to_batch(dict(part, noise_seed=batch["noise_seed"] + start))
                correct += float((self.logits(part).argmax(1) == part["label"]).sum())
                total += len(part["label"])
        return {"relative_position_acc": correct / max(total, 1)}

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``relative_position.png`` (pixels doubled), a row per held-out frame (newest frame of each stack): the
        frame with the centre patch outlined yellow, the true neighbour green and, when the network
        points elsewhere, the patch it pointed to red (clamped to the frame); the two patches as
        the network sees them (pixelated, colour-treated, resized; enlarged); its probabilities
        over the 8 positions around the centre (grey level: white 1, black 0; the centre cell
        yellow, the true position framed green, a wrong pick red)."""
        cfg = self.config
        obs = data.stack(np.linspace(0, len(data) - 1, 6).astype(int), cfg.camera, cfg.frame_stack)
        _, h, w = obs.shape[1:]
        pairs = self.pairs(obs, np.random.default_rng(0))
        with self.evaluating(), torch.no_grad():
            seen = self.patch_inputs(self.to_batch({k: v for k, v in pairs.items() if k != "corners"}))
            probs = F.softmax(self.head(self.encoder(seen).reshape(len(obs), -1)), 1).cpu().numpy()
        seen = newest_rgb(torch.round(seen.clamp(0, 1) * 255).cpu().numpy()).reshape(len(obs), 2, *seen.shape[-2:], 3)
        p, pitch, cell = cfg.patch_size, cfg.patch_size + cfg.gap, min(h, w) // 3
        rows = []
        for i, frame in enumerate(newest_rgb(obs)):
            truth, guess = int(pairs["label"][i]), int(probs[i].argmax())
            (centre, neighbour) = pairs["corners"][i]
            frame = outline(outline(frame, *centre, p, YELLOW), *neighbour, p, GREEN)
            board = np.zeros((3 * cell, 3 * cell, 3), np.uint8)
            board[cell : 2 * cell, cell : 2 * cell] = YELLOW
            for k, (dy, dx) in enumerate(OFFSETS):
                board[(1 + dy) * cell : (2 + dy) * cell, (1 + dx) * cell : (2 + dx) * cell] = round(255 * probs[i, k])
            board = outline(board, (1 + OFFSETS[truth][0]) * cell, (1 + OFFSETS[truth][1]) * cell, cell, GREEN, 2)
            if guess != truth:
                top, left = np.clip(centre + OFFSETS[guess] * pitch, 0, [h - p, w - p])
                frame = outline(frame, top, left, p, RED)
                board = outline(board, (1 + OFFSETS[guess][0]) * cell, (1 + OFFSETS[guess][1]) * cell, cell, RED, 2)
            rows.append([frame, enlarge(seen[i, 0], h, w), enlarge(seen[i, 1], h, w), canvas(board, h, w)])
        return [write_png(folder / "relative_position.png", image_grid(rows, scale=2))]
