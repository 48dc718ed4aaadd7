"""Jigsaw puzzles (Noroozi and Favaro, ECCV 2016, "Unsupervised Learning of Visual Representations
by Solving Jigsaw Puzzles").

A square crop of the frame is cut into a 3x3 grid of cells and one tile is cropped at a random
position inside each cell. The nine tiles are shuffled by a permutation P_y drawn uniformly from a
fixed set P = {P_1, ..., P_|P|}: input slot s shows the tile of grid cell P_y(s) (cells in raster
order). One encoder phi with shared weights embeds every tile, the nine embeddings are
concatenated in slot order, and a classifier g predicts which permutation of the set was applied:

    L = - 1/N sum_n log softmax( g([phi(t_{n,P_y(1)}), ..., phi(t_{n,P_y(9)})]) )_{y_n}

an |P|-way cross-entropy: log |P| at uniform logits (log 100 = 4.605 for the default set);
the held-out accuracy ``jigsaw_acc`` has chance level 1/|P| (0.01).

Permutation set (:func:`hamming_permutations`, public): the paper's greedy Algorithm 1. The
first permutation is drawn at random (seeded); each next one is the permutation whose summed
Hamming distance to those already chosen is largest (ties: the first in lexicographic order),
kept as a running sum over all 9! = 362,880 permutations, so N permutations cost O(N 9!) time and
O(9!) memory (VISSL's ``generate_jigsaw_permutations.py`` and bbrattoli/JigsawPuzzlePytorch's
``select_permutations.py`` recompute the whole distance matrix each step). Optional
``min_distance``: only permutations at least that far from every chosen one are candidates (the
paper's rule alone gives sets whose closest pair differs in 2 positions; for |P| = 100 the mean
distance is 8.08 with or without ``min_distance=6``). Sets are cached per process
(``functools.lru_cache``, about 1 s for 100 permutations) and saved in the checkpoint (buffer
``permutations``), so a loaded model uses the set it was trained with.

Shortcut counter-measures (paper, Section 3.2), each a config field:

* gap and jitter: a tile is ``tile_size`` pixels cropped at a uniformly random position inside
  its ``cell_size`` cell, so neighbouring tiles are separated by a random gap (the paper: 64-px
  tiles in 75-px cells of a 225-px crop; here 23-px tiles in 27-px cells, the same 85 % ratio),
  and the 81-px crop itself sits at a random position in the 84-px frame (the paper crops 225 of
  256 at random);
* per-tile normalisation (``tile_norm``): every tile is normalised by its own mean and standard
  deviation (over its pixels and channels, as bbrattoli/JigsawPuzzlePytorch does), so low-level
  statistics shared by neighbours are no clue. Departure: the normalised tile is then mapped to
  mean ``tile_mean`` (0.5) and standard deviation ``tile_std`` (0.25) instead of 0 and 1, so the
  encoder trains on the value range of the [0, 1] frames RL feeds it (every tile still has the
  same statistics; ``tile_mean=0, tile_std=1`` is the paper's form). Standard deviations are
  floored at 0.01 (a flat tile becomes the constant ``tile_mean``).

Not implemented: the paper's counter-measures to chromatic aberration (training on colour and
grey-scale images, jittering the colour channels of a tile by up to 2 pixels), since rendered
frames have no chromatic aberration.

Patch-based encoder rule (every patch method of the suite): the encoder is
``make_encoder(arch, C, (H, W), latent_dim, pool="mean")``: conv trunk, global average pooling,
Linear + LayerNorm, so the same module takes a tile during pretraining and a full frame in RL and
probes. Its trunk needs inputs of at least :func:`min_input_size` pixels (15 for ``dmc``, 31 for
``fast``, 1 for ``resnet``); tiles smaller than that are resized bilinearly to it
(``input_size``, default: the tile size, or the trunk's minimum if larger: 23 -> 31 px for
``fast``, a 1.35x upscale, as bbrattoli/JigsawPuzzlePytorch resizes its 64-px tiles to 75 px for
its AlexNet). A frame stack (``frame_stack`` RGB frames) is tiled as one image, every frame at
the same positions.

Other departures: the paper's per-tile network is AlexNet up to fc6 (512 units), then fc7 (4096)
and fc8 over the concatenation; here phi is the suite's pooled encoder (``latent_dim`` outputs)
and g is Linear(9 latent_dim, ``hidden``) -> ReLU -> Linear(``hidden``, |P|). The head is
discarded after pretraining. Optimiser and schedule are the suite's (Adam), not the paper's SGD.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssrl.utils import image_grid, write_png

from ...backbones import make_encoder, min_input_size, to_float_image
from ...core import BaseConfig, Need, Representation, register
from .patches import GREEN, RED, YELLOW, crop_patches, newest_rgb, outline, resize_square, tile_mosaic

GRID = 3
NUM_TILES = GRID * GRID
STD_FLOOR = 0.01  # per-tile normalisation: flat tiles are not blown up


# -- the permutation set ------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _all_permutations(n_tiles: int) -> np.ndarray:
    perms = np.array(list(itertools.permutations(range(n_tiles))), dtype=np.int8)
    perms.flags.writeable = False
    return perms


@functools.lru_cache(maxsize=16)
def _hamming_permutations(n: int, n_tiles: int, seed: int, min_distance: int) -> np.ndarray:
    candidates = _all_permutations(n_tiles)
    columns = np.ascontiguousarray(candidates.T)  # position-major: 20x faster distances than row-wise
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(candidates)))]
    total = np.zeros(len(candidates), np.int64)  # summed distance to the chosen permutations
    nearest = np.full(len(candidates), n_tiles + 1, np.int16)  # distance to the closest chosen one
    for _ in range(n - 1):
        distance = np.zeros(len(candidates), np.int16)
        for position, tile in enumerate(candidates[chosen[-1]]):
            distance += columns[position] != tile
        total += distance
        np.minimum(nearest, distance, out=nearest)
        eligible = nearest >= max(min_distance, 1)  # distance 0: already chosen
        if not eligible.any():
            raise ValueError(
                f"only {len(chosen)} permutations of {n_tiles} tiles are at Hamming distance >= {min_distance} "
                f"from each other by the greedy rule, {n} were asked; lower min_distance or the set size"
            )
        chosen.append(int(np.argmax(np.where(eligible, total, -1))))
    perms = candidates[chosen].astype(np.int64)
    perms.flags.writeable = False
    return perms


def hamming_permutations(n: int, n_tiles: int = NUM_TILES, seed: int = 0, min_distance: int = 0) -> np.ndarray:
    """``(n, n_tiles)`` permutations of ``range(n_tiles)`` chosen for maximal Hamming distance by
    Noroozi and Favaro's greedy Algorithm 1 (see the module docstring): a seeded random first one,
    then each time the permutation with the largest summed distance to those chosen, among those
    at least ``min_distance`` from each of them (0: the paper's rule alone). Cached per process."""
    n, n_tiles, seed, min_distance = int(n), int(n_tiles), int(seed), int(min_distance)
    if n_tiles < 2:
        raise ValueError(f"need at least 2 tiles to permute, got {n_tiles}")
    if not 1 <= n <= math.factorial(n_tiles):
        raise ValueError(f"a set of {n} permutations of {n_tiles} tiles: there are only {math.factorial(n_tiles)}")
    if not 0 <= min_distance <= n_tiles:
        raise ValueError(f"min_distance must be in [0, {n_tiles}], got {min_distance}")
    return _hamming_permutations(n, n_tiles, seed, min_distance).copy()


def hamming_stats(perms: np.ndarray) -> dict[str, float]:
    """Minimum and mean pairwise Hamming distance of a permutation set."""
    perms = np.asarray(perms)
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)[np.triu_indices(len(perms), 1)]
    return {"min": float(d.min()), "mean": float(d.mean())}


# -- the method ---------------------------------------------------------------------------------


@dataclasses.dataclass
class JigsawConfig(BaseConfig):
    cell_size: int = 27  # grid cell side (frame pixels); the 3x3 grid is a 3*cell_size crop placed at random
    tile_size: int = 23  # tile side; each tile is cropped at a random position inside its cell (gap + jitter)
    input_size: int | None = None  # tiles are resized to this for the encoder (None: tile_size, or the trunk's minimum)
    permutations: int = 100  # size of the permutation set (classes)
    min_hamming: int = 0  # candidates closer than this to a chosen permutation are skipped (0: the paper's rule)
    permutation_seed: int = 0  # draws the first permutation of the greedy algorithm
    tile_norm: bool = True  # normalise every tile by its own mean and standard deviation
    tile_mean: float = 0.5  # ... then map it to this mean
    tile_std: float = 0.25  # ... and this standard deviation (0 and 1: the paper's form)
    hidden: int = 512  # width of the classifier over the concatenated tile embeddings
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        if not 1 <= self.tile_size <= self.cell_size:
            raise ValueError(
                f"{name}: tile_size ({self.tile_size}) must be in [1, cell_size ({self.cell_size})]: "
                "a tile is cropped inside its cell"
            )
        need = min_input_size(self.arch)
        if self.input_size is not None and self.input_size < need:
            raise ValueError(
                f"{name}.input_size {self.input_size} px is below the {need} px the {self.arch!r} trunk needs"
            )
        if not 2 <= self.permutations <= math.factorial(NUM_TILES):
            raise ValueError(f"{name}.permutations must be in [2, 9!], got {self.permutations}")
        if not 0 <= self.min_hamming <= NUM_TILES:
            raise ValueError(f"{name}.min_hamming must be in [0, 9], got {self.min_hamming}")
        if self.tile_std <= 0 or self.hidden < 1:
            raise ValueError(f"{name}: tile_std and hidden must be positive, got {self.tile_std}, {self.hidden}")

    @property
    def encoder_input(self) -> int:
        """The side of the images the encoder sees during pretraining."""
        return self.input_size or max(self.tile_size, min_input_size(self.arch))

    def check_frame(self, obs_shape) -> None:
        _, h, w = obs_shape
        if h != w:
            raise ValueError(f"jigsaw needs square frames, got {h}x{w}")
        if GRID * self.cell_size > h:
            raise ValueError(
                f"the jigsaw grid of 3 cells of {self.cell_size} px ({GRID * self.cell_size} px) does not fit "
                f"{h}-px frames; lower cell_size and tile_size (84-px frames: 27 and 23)"
            )


def normalise_tiles(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Each ``(C, h, w)`` image of ``x`` standardised by its own mean and standard deviation
    (floored at ``STD_FLOOR``), then scaled to ``mean`` and ``std``."""
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sd = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(STD_FLOOR)
    return (x - mu) / sd * std + mean


@register
class Jigsaw(Representation):
    name = "jigsaw"
    needs = Need.FRAMES
    Config = JigsawConfig

    def __init__(self, config: JigsawConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        config.check_frame(obs_shape)
        c, h, w = obs_shape
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, pool="mean")
        self.head = nn.Sequential(
            nn.Linear(NUM_TILES * config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.permutations),
        )
        perms = hamming_permutations(config.permutations, NUM_TILES, config.permutation_seed, config.min_hamming)
        self.register_buffer("permutations", torch.as_tensor(perms))

    def layout(self, b: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``b`` puzzles on ``size``-px frames: each tile's top-left ``corner`` ``(b, 9, 2)`` (y, x;
        grid cells in raster order) and each puzzle's permutation ``label`` ``(b,)``."""
        cfg = self.config
        origin = rng.integers(0, size - GRID * cfg.cell_size + 1, (b, 1, 2))
        offset = rng.integers(0, cfg.cell_size - cfg.tile_size + 1, (b, NUM_TILES, 2))
        cell = np.stack(np.divmod(np.arange(NUM_TILES), GRID), -1) * cfg.cell_size  # (9, 2) raster order
        return origin + cell + offset, rng.integers(0, cfg.permutations, b)

    def puzzles(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(B, C, H, W)`` -> shuffled tiles ``(B, 9, C, t, t)`` (slot s holds the tile of
        cell ``permutations[label][s]``) and the labels ``(B,)``."""
        corner, label = self.layout(len(obs), obs.shape[-1], rng)
        tiles = crop_patches(obs, corner[..., 0], corner[..., 1], self.config.tile_size)
        order = self.permutations.cpu().numpy()[label]
        return tiles[np.arange(len(obs))[:, None], order], label

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        obs = data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)
        tiles, label = self.puzzles(obs, rng)
        return {"tiles": tiles, "label": label}

    def tile_inputs(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(B, 9, C, t, t)`` tiles -> the ``(9B, C, s, s)`` images the encoder sees."""
        x = to_float_image(tiles.flatten(0, 1))
        if self.config.tile_norm:
            x = normalise_tiles(x, self.config.tile_mean, self.config.tile_std)
        return resize_square(x, self.config.encoder_input)

    def logits(self, tiles: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.tile_inputs(tiles))
        return self.head(z.reshape(len(tiles), NUM_TILES * z.shape[-1]))

    def loss(self, batch):
        logits = self.logits(batch["tiles"])
        label = batch["label"].long()
        loss = F.cross_entropy(logits, label)
        return loss, {"accuracy": (logits.argmax(1) == label).float().mean().detach()}

    def extra_scores(self, data) -> dict[str, float]:
        """Permutation accuracy on puzzles from held-out frames (chance 1/|P|)."""
        rng = np.random.default_rng(0)
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        tiles, label = self.puzzles(data.stack(idx, self.config.camera, self.config.frame_stack), rng)
        correct = self.map_batches(lambda t, y: (self.logits(t).argmax(1) == y).float(), tiles, label, batch_size=64)
        return {"jigsaw_acc": float(correct.mean())}

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``jigsaw.png`` (pixels doubled), a row per held-out frame (newest frame of each stack): the frame with its
        nine tiles' crops outlined; the puzzle as the network gets it (the shuffled tiles in slot
        order); the network's solution (slot s's tile put in cell P_pred(s)), framed green when
        it picked the applied permutation and red when not; the tiles in their true cells."""
        cfg, rng = self.config, np.random.default_rng(0)
        obs = data.stack(np.linspace(0, len(data) - 1, 6).astype(int), cfg.camera, cfg.frame_stack)
        _, h, w = obs.shape[1:]
        corner, label = self.layout(len(obs), obs.shape[-1], rng)
        perms = self.permutations.cpu().numpy()
        stacks = crop_patches(obs, corner[..., 0], corner[..., 1], cfg.tile_size)  # (B, 9, C, t, t), cell order
        shuffled = stacks[np.arange(len(obs))[:, None], perms[label]]  # slot order, as the network gets it
        with self.evaluating(), torch.no_grad():
            predicted = self.logits(torch.as_tensor(shuffled).to(self.device)).argmax(1).cpu().numpy()
        tiles, puzzle = newest_rgb(stacks), newest_rgb(shuffled)
        rows, slots = [], np.arange(NUM_TILES)
        for i, frame in enumerate(newest_rgb(obs)):
            for top, left in corner[i]:
                frame = outline(frame, top, left, cfg.tile_size, YELLOW)
            guess = int(predicted[i])
            solution = tile_mosaic(puzzle[i], perms[guess], h, w)
            solution = outline(solution, 0, 0, min(h, w), GREEN if guess == label[i] else RED, width=2)
            rows.append([frame, tile_mosaic(puzzle[i], slots, h, w), solution, tile_mosaic(tiles[i], slots, h, w)])
        return [write_png(folder / "jigsaw.png", image_grid(rows, scale=2))]
