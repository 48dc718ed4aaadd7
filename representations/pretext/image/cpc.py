"""Contrastive Predictive Coding on images (van den Oord, Li and Vinyals 2018, "Representation
Learning with Contrastive Predictive Coding"; Henaff et al. 2019, "Data-Efficient Image
Recognition with Contrastive Predictive Coding", CPC v2).

Each frame is cut into a G x G grid of overlapping square patches; the encoder maps patch (i, j)
(row i, column j) to z_{i,j}. A masked ("PixelCNN-style") context network turns the grid of
latents into contexts c_{i,j} that depend only on rows 0..i (the row itself and those above it,
every column), and a linear map per offset k predicts the latent k rows below,
zhat_{i+k,j} = W_k c_{i,j}. The source text's loss is

    L = - sum_{i,j,k} log [ exp(zhat_{i+k,j}^T z_{i+k,j})
                            / ( exp(zhat_{i+k,j}^T z_{i+k,j}) + sum_l exp(zhat_{i+k,j}^T z_l) ) ]

implemented, as in Henaff et al.'s pseudo-code (their appendix) and cs294-158-ssl's
``deepul_helper/tasks/cpc.py``, as a sum over offsets k of the mean over (image, i, j) of that
cross-entropy, with the negatives z_l = every other patch of
the batch: all other positions in the same image and all positions in the other images, so each
prediction picks its target among N = B G^2 candidates (log N at uniform scores). The cross-
entropy is :func:`ssrl.representations.losses.info_nce` with the dot product and temperature 1
(``normalize=False``); its keys are ordered so that key n is query n's target.

Geometry (``patch_size``, ``patch_stride``; 0 picks the architecture's default for 84x84 frames):

* ``dmc`` and ``resnet``: 24x24 patches at stride 10, a 7x7 grid (24 + 6 * 10 = 84);
* ``fast``: 32x32 patches at stride 13, a 5x5 grid (32 + 4 * 13 = 84); the ``fast`` trunk needs
  at least 31 px, so 24-px patches do not fit it.

The patches must tile the frame exactly (``(H - patch) % stride == 0``) and fit the trunk. Henaff
et al. use 64x64 patches at stride 32 (a 7x7 grid on 256x256 crops), so neighbouring rows overlap
by half.

Offsets: k = ``first_offset``, ..., ``first_offset + num_offsets - 1``, cut at G - 1. The default
first offset, ceil(patch / stride), is the first row whose patches share no pixel with the
context's own row, so a prediction cannot copy pixels it has seen: k = 3, 4, 5 on the ``dmc``
grid and k = 3, 4 on the ``fast`` grid. cs294-158-ssl skips two offsets and predicts three
(``steps_to_ignore=2, steps_to_predict=3``: k = 3, 4, 5) on its 64-px, stride-32 grid, where k = 1
overlaps the context's row by half and k = 2 touches it.

Encoder rule (shared by the patch-based methods of the suite): the encoder is
``make_encoder(arch, C, (H, W), latent_dim, pool="mean")``, whose conv trunk is followed by global
average pooling, so the module trained here on patches is the one RL uses, unchanged, on full
frames. The context network and the W_k are discarded after pretraining.

Context network (``RowCausalContext``), as Henaff et al.'s: ``context_blocks`` residual blocks of
1x1 conv -> ReLU -> 1x3 conv (zero padding on both sides: a row sees all its columns) -> ReLU ->
one zero row padded on top and a 2x1 conv (row i sees rows i-1 and i) -> ReLU -> 1x1 conv, added
to the block's input, then a ReLU. Nothing flows upwards, so c_{i,j} depends on rows <= i only
(checked bit for bit in the tests).

Departures from the papers and public code:

* Encoder: the suite's conv encoder with mean pooling and its Linear + LayerNorm head instead of
  a ResNet; the targets are the encoder's outputs z themselves (the source text's z_{i+k,j}),
  not a 1x1-conv projection of them to 64 dims as in Henaff et al.'s code.
* ``emb_scale`` = 0.1 multiplies the predictions, as in Henaff et al.'s pseudo-code (and
  cs294-158-ssl ``deepul_helper/tasks/cpc.py``): a re-parametrisation of W_k that keeps the
  initial scores small; it does not change the loss's form.
* Patch geometry and offsets as above (smaller frames); the frame stack (9 channels) is cut
  into patches as one image, so the encoder keeps the RL input.
* Direction: top-down only by default (CPC v1); ``bidirectional=True`` adds bottom-up
  predictions (a second context network and W_k on the grid flipped upside down, the source
  text's "both directions"), their loss added. CPC v2's four directions and its patch
  augmentations (colour dropping, random crops, flips) are not used.
* The loss is a mean over predictions for each offset (summed over offsets), not a sum over
  every (i, j), so it does not scale with the batch.

``extra_scores``: ``cpc_acc``, on held-out frames in shuffled groups of 32 (all of them if
fewer): the fraction of predictions whose highest score is their true target among all 32 G^2
patches of the group (chance 1 / (32 G^2): 1/800 for the 5x5 grid, 1/1568 for the 7x7 grid).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import make_encoder, min_input_size
from ...core import BaseConfig, Need, Representation, register
from ...losses import info_nce

# Patch size and stride per architecture for 84x84 frames (patch + (G - 1) * stride = 84).
DEFAULT_PATCHES = {"dmc": (24, 10), "fast": (32, 13), "resnet": (24, 10)}
EVAL_GROUP = 32  # frames per held-out group (candidates: 32 G^2)


@dataclasses.dataclass
class CPCConfig(BaseConfig):
    patch_size: int = 0  # side of a patch in pixels (0: the arch's default for 84-px frames)
    patch_stride: int = 0  # pixels between neighbouring patches (0: the arch's default)
    first_offset: int = 0  # smallest k predicted (0: ceil(patch_size / patch_stride), no shared pixels)
    num_offsets: int = 3  # K: offsets first_offset .. first_offset + K - 1 (cut at the grid's last row)
    context_blocks: int = 5  # residual blocks of the context network (Henaff et al.: 5)
    context_hidden: int = 64  # channels inside a block
    emb_scale: float = 0.1  # the predictions' scale (Henaff et al.'s emb_scale)
    bidirectional: bool = False  # also predict upwards (bottom-up), with its own context network
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        least = min_input_size(self.arch)  # an unknown architecture fails here
        default_patch, default_stride = DEFAULT_PATCHES[self.arch]
        self.patch_size = self.patch_size or default_patch
        self.patch_stride = self.patch_stride or default_stride
        if self.patch_size < least:
            raise ValueError(
                f"CPCConfig.patch_size {self.patch_size} is smaller than the {least} px the {self.arch!r} trunk needs"
            )
        if self.patch_stride < 1:
            raise ValueError(f"CPCConfig.patch_stride must be >= 1, got {self.patch_stride}")
        if self.first_offset < 0 or self.num_offsets < 1:
            raise ValueError(
                f"CPCConfig needs first_offset >= 0 (0: automatic) and num_offsets >= 1, "
                f"got {self.first_offset} and {self.num_offsets}"
            )
        self.first_offset = self.first_offset or math.ceil(self.patch_size / self.patch_stride)
        if self.context_blocks < 1 or self.context_hidden < 1 or self.emb_scale <= 0:
            raise ValueError(
                "CPCConfig needs context_blocks >= 1, context_hidden >= 1 and emb_scale > 0, got "
                f"{self.context_blocks}, {self.context_hidden} and {self.emb_scale}"
            )

    def grid(self, height: int, width: int) -> tuple[int, tuple[int, ...]]:
        """(G, offsets) for (height, width) frames: the grid's side and the k predicted; raises
        ValueError, naming the numbers, when the patches do not tile the frame or no offset fits."""
        p, s = self.patch_size, self.patch_stride
        if height != width:
            raise ValueError(f"cpc needs square frames, got {height}x{width}")
        if height < p or (height - p) % s:
            raise ValueError(
                f"cpc: {p}-px patches at stride {s} do not tile {height}-px frames exactly "
                f"(need {p} + (G - 1) * {s} = {height}); set patch_size and patch_stride"
            )
        g = (height - p) // s + 1
        offsets = tuple(range(self.first_offset, min(self.first_offset + self.num_offsets, g)))
        if not offsets:
            raise ValueError(
                f"cpc: the {g}x{g} grid ({p}-px patches at stride {s} on {height}-px frames) has no row "
                f"{self.first_offset} rows below another; lower first_offset or use a finer grid"
            )
        return g, offsets


def patch_grid(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, G, G, C, size, size)``: patch (i, j) is
    ``x[:, :, i * stride : i * stride + size, j * stride : j * stride + size]``."""
    patches = x.unfold(2, size, stride).unfold(3, size, stride)  # (B, C, G, G, size, size)
    return patches.permute(0, 2, 3, 1, 4, 5)


class RowCausalContext(nn.Module):
    """PixelCNN-style context over a grid of latents ``(B, D, G, G)`` -> ``(B, D, G, G)``; output
    row i depends on input rows 0..i only (see the module docstring)."""

    def __init__(self, dim: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, hidden, 1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, (1, 3), padding=(0, 1)),  # along the row
                nn.ReLU(),
                nn.ZeroPad2d((0, 0, 1, 0)),  # one zero row on top: the 2x1 conv sees rows i-1 and i
                nn.Conv2d(hidden, hidden, (2, 1)),
                nn.ReLU(),
                nn.Conv2d(hidden, dim, 1),
            )
            for _ in range(blocks)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = z + block(z)
        return F.relu(z)


def row_candidates(pred: torch.Tensor, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of one offset: ``pred`` ``(B, G - k, G, D)`` holds zhat_{i+k,j} made from
    rows i = 0..G-1-k, ``z`` ``(B, G, G, D)`` the latents. Returns queries ``(Q, D)`` and all
    B G^2 latents as keys ``(B G^2, D)``, ordered so that key n is query n's target z_{i+k,j} (the
    other keys, the same image's other patches and every patch of the other images, are its
    negatives)."""
    d = z.shape[-1]
    return pred.reshape(-1, d), torch.cat([z[:, k:].reshape(-1, d), z[:, :k].reshape(-1, d)])


def row_info_nce(pred: torch.Tensor, z: torch.Tensor, k: int) -> torch.Tensor:
    """The InfoNCE of one offset: mean over queries of -log softmax(zhat^T z_l)_target over all
    B G^2 patches (log(B G^2) at uniform scores)."""
    queries, keys = row_candidates(pred, z, k)
    return info_nce(queries, keys, temperature=1.0, normalize=False)


@register
class CPC(Representation):
    name = "cpc"
    needs = Need.FRAMES
    Config = CPCConfig

    def __init__(self, config: CPCConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.grid_size, self.offsets = config.grid(*self.obs_shape[1:])
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim, pool="mean")
        directions = 2 if config.bidirectional else 1
        d = config.latent_dim
        self.context = nn.ModuleList(
            RowCausalContext(d, config.context_hidden, config.context_blocks) for _ in range(directions)
        )
        self.predictors = nn.ModuleList(
            nn.ModuleList(nn.Linear(d, d, bias=False) for _ in self.offsets) for _ in range(directions)
        )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def latents(self, obs: torch.Tensor) -> torch.Tensor:
        """z: the encoder on every patch, ``(B, G, G, D)``."""
        patches = patch_grid(obs, self.config.patch_size, self.config.patch_stride)
        b, g = patches.shape[:2]
        return self.encoder(patches.reshape(b * g * g, *patches.shape[3:])).reshape(b, g, g, -1)

    def predictions(self, z: torch.Tensor) -> list[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
        """For each direction, the latents in that direction's row order (the grid flipped upside
        down for bottom-up) and {k: zhat ``(B, G - k, G, D)``}, zhat[:, i] = W_k c_i (unscaled)."""
        out = []
        for direction, (context, predictors) in enumerate(zip(self.context, self.predictors)):
            grid = z.flip(1) if direction == 1 else z
            c = context(grid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, G, G, D)
            out.append((grid, {k: w(c[:, : self.grid_size - k]) for k, w in zip(self.offsets, predictors)}))
        return out

    def loss(self, batch):
        z = self.latents(batch["obs"])
        metrics, total = {}, z.new_zeros(())
        for direction, (grid, preds) in enumerate(self.predictions(z)):
            for k, pred in preds.items():
                loss_k = row_info_nce(pred * self.config.emb_scale, grid, k)
                metrics[f"loss_{'up' if direction else 'down'}{k}"] = loss_k.detach()
                total = total + loss_k
        return total, metrics

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out CPC accuracy: the target scores highest among 32 G^2 patches (chance 1/(32 G^2))."""
        group = min(EVAL_GROUP, len(data))
        n = min(len(data), 512) // group * group
        idx = np.random.default_rng(0).permutation(len(data))[:n]
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)

        def accuracy(x: torch.Tensor) -> torch.Tensor:
            hits = []
            for grid, preds in self.predictions(self.latents(x)):
                for k, pred in preds.items():
                    queries, keys = row_candidates(pred, grid, k)
                    hits.append((queries @ keys.T).argmax(1) == torch.arange(len(queries), device=x.device))
            return torch.cat(hits).float().mean().reshape(1)

        return {"cpc_acc": float(self.map_batches(accuracy, obs, batch_size=group).mean())}
