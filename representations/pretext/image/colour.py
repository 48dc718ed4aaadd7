"""CIE Lab colour for the colorization and split-brain methods: conversion, quantised ab and L
bins, soft encoding, class rebalancing, the annealed mean, and the two networks' shared parts.

Colour maths (Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016):

* :func:`rgb_to_lab` / :func:`lab_to_rgb`: sRGB (IEC 61966-2-1 transfer curve, D65 white) <->
  CIE XYZ <-> CIE L*a*b*. The white point is the XYZ of sRGB white (the rows of the sRGB matrix
  summed), so white is exactly (100, 0, 0). L is in [0, 100]; a in [-86.2, 98.2] and b in
  [-107.9, 94.5] over the sRGB gamut.
* :func:`ab_gamut`: the quantised ab output space, COMPUTED here and never downloaded. ab is
  quantised with bucket size 10, bins centred on multiples of 10 (as the paper's
  ``pts_in_hull.npy``), a colour belonging to the nearest centre; the in-gamut bins are those
  hit by an sRGB colour. Lab is a continuous bijection of the RGB cube, so the ab values of the
  whole cube are those of its six faces (a vertical line through an interior point leaves the
  solid through its surface); the set is computed from all 8-bit colours of the faces,
  6 x 256^2, and ``tests/test_colorization.py`` checks that a dense grid of the whole cube lands
  in it. We get **Q = 261** bins. The paper reports Q = 313: its in-gamut test (not published
  with the bins; public re-implementations ship the paper's ``pts_in_hull.npy``/``ab-gamut.npy``
  file) keeps more bins than the ones actually hit by sRGB colours.
* :func:`soft_encode`: the paper's soft encoding: the ``k = 5`` nearest bins of each ab value,
  weighted by a Gaussian kernel of the distance (sigma = 5), normalised to sum to 1 (the
  paper's text; its Caffe layer ``NNEncode`` uses 10 neighbours).
* :func:`smooth_prior` and :func:`rebalance_weights`: the empirical distribution p of colours
  (hard, nearest bin) on OUR training frames, smoothed with a Gaussian kernel (sigma = 5 ab
  units) over the bins: p~ = K p with K_qr = exp(-|c_q - c_r|^2 / 2 sigma^2) normalised over q
  (each bin's mass spread over its neighbours, total kept; the paper convolves its ab
  histogram with the same kernel); then w ~ ((1 - lambda) p~ + lambda / Q)^-1, lambda = 0.5,
  scaled so that E_p~[w] = sum_q p~_q w_q = 1 (the paper's normalisation). :class:`ColourPrior`
  holds p~ and w as buffers, so they are saved with a model.
* :func:`weighted_soft_cross_entropy`: the paper's loss
  L = - sum_{h,w} v(Z_hw) sum_q Z_hwq log Zhat_hwq, with v(Z_hw) = w_{q*}, q* = argmax_q Z_hwq
  (the nearest bin); we average over locations (and images) where the paper sums. Uniform logits
  give mean(v) log Q (log Q without rebalancing).
* :func:`annealed_mean`: H(Z) = E[f_T(Z)], f_T(z) = exp(log z / T) / sum_q exp(log z_q / T), the
  paper's decoding for pictures at T = 0.38; T -> 0 gives the mode, T = 1 the mean.
* :func:`quantize_l`: L in 50 bins of 2 units (split-brain's F2 target).

Shared networks: :class:`LabEncoder`, the ``self.encoder`` of both methods, takes the env's RGB
frame stack ``(B, 3k, H, W)`` (uint8, or float in [0, 1]), declares that shape as
``input_shape`` (what the RL and probe wrappers read), converts it to Lab inside and runs
encoders of the suite's family on its channel groups (L: k channels scaled to [0, 1]; ab: 2k
channels divided by 110), concatenating their outputs in the order L, ab.
:class:`SpatialLogits` maps an embedding to per-location class logits at a downsampled
resolution.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import orthogonal_init

AB_BIN = 10.0  # ab bucket size (the paper's grid)
NEIGHBOURS = 5  # soft encoding: nearest bins kept
SIGMA = 5.0  # soft encoding and prior smoothing: Gaussian kernel width, in ab units
LAMBDA = 0.5  # class rebalancing: weight of the uniform distribution
TEMPERATURE = 0.38  # annealed mean for pictures
L_BINS = 50  # split-brain: L quantised in 50 bins of 2 units
L_BIN_SIZE = 2.0
L_SCALE = 100.0  # network inputs: L / 100 in [0, 1]
AB_SCALE = 110.0  # network inputs: ab / 110, about [-1, 1]

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1).
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ.sum(1)  # XYZ of RGB (1, 1, 1): (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


# -- conversion -------------------------------------------------------------------------------------


def _mix(x: torch.Tensor, matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply a 3x3 matrix along ``dim``."""
    m = matrix.to(device=x.device, dtype=x.dtype)
    return torch.movedim(torch.tensordot(torch.movedim(x, dim, -1), m, dims=([-1], [1])), -1, dim)


def _along(v: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[dim] = 3
    return v.to(device=x.device, dtype=x.dtype).reshape(shape)


def _linearize(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve inverted: [0, 1] -> linear light."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.0) + 0.055) / 1.055).pow(2.4))


_LINEAR_LUT = _linearize(torch.arange(256, dtype=torch.float64) / 255.0).float()  # uint8 -> linear


def rgb_to_lab(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """sRGB -> CIE Lab along ``dim`` (size 3). ``rgb``: uint8 in [0, 255] or float in [0, 1]."""
    if rgb.shape[dim] != 3:
        raise ValueError(f"rgb_to_lab needs 3 channels along dim {dim}, got shape {tuple(rgb.shape)}")
    if rgb.dtype == torch.uint8:  # a table lookup: exact, and much cheaper than the power
        linear = _LINEAR_LUT.to(rgb.device)[rgb.long()]
    else:
        linear = _linearize(rgb if rgb.is_floating_point() else rgb.float())
    t = _mix(linear, _RGB_TO_XYZ, dim) / _along(_WHITE, linear, dim)
    f = torch.where(t > _DELTA**3, t.clamp(min=_DELTA**3).pow(1.0 / 3.0), t / (3 * _DELTA**2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(dim)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim)


def lab_to_rgb(lab: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """CIE Lab -> sRGB float in [0, 1] along ``dim`` (out-of-gamut colours are clipped)."""
    L, a, b = lab.unbind(dim)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim)
    t = torch.where(f > _DELTA, f.pow(3), 3 * _DELTA**2 * (f - 4.0 / 29.0))
    linear = _mix(t * _along(_WHITE, lab, dim), _XYZ_TO_RGB, dim).clamp(0.0, 1.0)
    rgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.pow(1.0 / 2.4) - 0.055)
    return rgb.clamp(0.0, 1.0)


def frames_to_lab(frames: torch.Tensor) -> torch.Tensor:
    """A frame stack ``(B, 3k, H, W)`` (uint8 or float in [0, 1]) -> Lab ``(B, k, 3, H, W)``,
    in float32 even under autocast (a bf16 colour matrix would shift ab by whole units). uint8
    frames are looked up per colour in a table :func:`rgb_to_lab` computed (the same values,
    10x cheaper on our frames, ``python -m ssrl.benchmarks.input_speed``: the conversion was most
    of a fine-tuning update of split-brain's encoder)."""
    b, c, h, w = frames.shape
    if c % 3:
        raise ValueError(f"an RGB frame stack has a multiple of 3 channels, got {c}")
    if frames.dtype == torch.uint8:
        lut = _lab_lut().to(frames.device)
        lab = lut.index_select(0, _colour_index(frames).flatten()).reshape(b, c // 3, h, w, 3)
        return lab.permute(0, 1, 4, 2, 3).contiguous()
    with torch.autocast(frames.device.type, enabled=False):
        return rgb_to_lab(frames.reshape(b, c // 3, 3, h, w), dim=2)


def _colour_index(frames: torch.Tensor) -> torch.Tensor:
    """``r << 16 | g << 8 | b`` of every pixel of a uint8 frame stack: ``(B, k, H, W)``."""
    b, c, h, w = frames.shape
    x = frames.reshape(b, c // 3, 3, h, w).int()
    return (x[:, :, 0] << 16) | (x[:, :, 1] << 8) | x[:, :, 2]


@functools.lru_cache(maxsize=1)
def _lab_lut() -> torch.Tensor:
    """Lab of every 24-bit colour, ``(256^3, 3)`` float32 indexed by ``r << 16 | g << 8 | b``,
    computed by :func:`rgb_to_lab` itself (192 MB, a few seconds, once per process)."""
    v = torch.arange(256, dtype=torch.uint8)
    gb = torch.stack(torch.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)  # (65536, 2): g, b
    rows = []
    with torch.autocast("cpu", enabled=False):
        for r in range(256):
            rgb = torch.cat([torch.full((len(gb), 1), r, dtype=torch.uint8), gb], 1)
            rows.append(rgb_to_lab(rgb, dim=1))
    return torch.cat(rows)


@functools.lru_cache(maxsize=1)
def _lightness_lut() -> torch.Tensor:
    """The L column of :func:`_lab_lut`, contiguous (64 MB): one value to gather per pixel."""
    return _lab_lut()[:, 0].contiguous()


def frames_to_lightness(frames: torch.Tensor) -> torch.Tensor:
    """A uint8 frame stack ``(B, 3k, H, W)`` -> L ``(B, k, H, W)``, float32: the L of
    :func:`frames_to_lab`, looked up per colour (a colour encoder's input costs one gather
    instead of the whole conversion, which was half of a fine-tuning update of video
    colorization's encoder)."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames_to_lightness takes uint8 frames, got {frames.dtype}")
    b, c, h, w = frames.shape
    if c % 3:
        raise ValueError(f"an RGB frame stack has a multiple of 3 channels, got {c}")
    lut = _lightness_lut().to(frames.device)
    return lut.index_select(0, _colour_index(frames).flatten()).reshape(b, c // 3, h, w)


# -- bins -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _gamut() -> np.ndarray:
    v = torch.arange(256, dtype=torch.float64) / 255.0
    g, b = torch.meshgrid(v, v, indexing="ij")
    faces = []
    for channel in range(3):
        others = [c for c in range(3) if c != channel]
        for value in (0.0, 1.0):
            face = torch.empty(*g.shape, 3, dtype=torch.float64)
            face[..., channel] = value
            face[..., others[0]], face[..., others[1]] = g, b
            faces.append(face.reshape(-1, 3))
    lab = rgb_to_lab(torch.cat(faces), dim=-1)
    cells = torch.unique(torch.round(lab[:, 1:] / AB_BIN).long(), dim=0)  # sorted by (a, b)
    return (cells.double() * AB_BIN).numpy()


def ab_gamut() -> np.ndarray:
    """The in-gamut ab bin centres ``(Q, 2)`` (float64, sorted by a then b): the bins of size 10
    hit by some sRGB colour (see the module docstring; Q = 261)."""
    return _gamut().copy()


def nearest_bin(values: torch.Tensor, centres: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centre for each row of ``values`` ``(N, D)`` (hard quantisation)."""
    centres = centres.to(values)
    out = [torch.cdist(part, centres).argmin(1) for part in values.split(chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=values.device)


def soft_encode(
    ab: torch.Tensor, centres: torch.Tensor, k: int = NEIGHBOURS, sigma: float = SIGMA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft encoding of ab values ``(..., 2)`` by brute force: the indices ``(..., k)`` of the k
    nearest bin centres (nearest first) and their weights ``(..., k)``, proportional to
    exp(-d^2 / 2 sigma^2) and summing to 1. :class:`SoftEncoder` gives the same, faster."""
    flat = ab.reshape(-1, 2)
    d2 = (flat[:, None, :] - centres.to(flat)[None]).pow(2).sum(-1)
    d2, idx = d2.topk(k, dim=1, largest=False)  # sorted: nearest first
    weights = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    return idx.reshape(*ab.shape[:-1], k), weights.reshape(*ab.shape[:-1], k)


class SoftEncoder:
    """:func:`soft_encode` against a fixed set of centres, exactly, looking only at candidates.

    A value p rounds to the grid point g = 10 round(p / 10), with |p - g| <= r = 5 sqrt(2). Its
    k-th nearest centre is at most d_k(g) + r away, so its k nearest centres lie within
    d_k(g) + 2r of g: that set, precomputed for every grid point of [-130, 130]^2, is all a value
    is compared with (about 20 centres instead of Q). Values beyond that square (not ab values
    of sRGB colours) are clamped to its border cells, where the result may not be exact.
    """

    REACH = 13  # grid points -130 .. 130 on each axis

    def __init__(self, centres: torch.Tensor, k: int = NEIGHBOURS, sigma: float = SIGMA, bin_size: float = AB_BIN):
        c = torch.as_tensor(centres, dtype=torch.float64)
        if not 1 <= k <= len(c):
            raise ValueError(f"soft encoding needs 1 <= k <= {len(c)} (the number of bins), got {k}")
        self.k, self.sigma, self.bin_size = int(k), float(sigma), float(bin_size)
        axis = torch.arange(-self.REACH, self.REACH + 1, dtype=torch.float64) * bin_size
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        d = torch.cdist(grid, c)
        reach = d.topk(k, dim=1, largest=False).values[:, -1] + 2 * (bin_size / 2) * math.sqrt(2) + 1e-6
        inside = d <= reach[:, None]
        order = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, : int(inside.sum(1).max())]
        self.candidates = torch.where(inside.gather(1, order), order, len(c))  # (grid points, M); Q pads
        self.centres = torch.cat([c, torch.full((1, 2), 1e6, dtype=torch.float64)]).float()  # pad: far away

    def __call__(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = ab.reshape(-1, 2).float()
        n = 2 * self.REACH + 1
        cell = torch.round(flat / self.bin_size).long().clamp(-self.REACH, self.REACH) + self.REACH
        cand = self.candidates.to(flat.device)[cell[:, 0] * n + cell[:, 1]]  # (P, M)
        d2 = (flat[:, None, :] - self.centres.to(flat.device)[cand]).pow(2).sum(-1)
        d2, pos = d2.topk(self.k, dim=1, largest=False)
        weights = torch.softmax(-d2 / (2 * self.sigma**2), dim=1)
        idx = cand.gather(1, pos)
        return idx.reshape(*ab.shape[:-1], self.k), weights.reshape(*ab.shape[:-1], self.k)


def dense_encoding(idx: torch.Tensor, weights: torch.Tensor, num_bins: int) -> torch.Tensor:
    """``(..., k)`` indices and weights -> the dense distribution ``(..., num_bins)``."""
    return torch.zeros(*idx.shape[:-1], num_bins, dtype=weights.dtype, device=weights.device).scatter_add_(
        -1, idx, weights
    )


def quantize_l(L: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> bin in [0, 50): floor(L / 2), with L = 100 in the last bin."""
    return torch.div(L, L_BIN_SIZE, rounding_mode="floor").long().clamp(0, L_BINS - 1)


def l_bin_centres() -> torch.Tensor:
    return torch.arange(L_BINS, dtype=torch.float64) * L_BIN_SIZE + L_BIN_SIZE / 2


# -- class rebalancing --------------------------------------------------------------------------------


def smooth_prior(p: torch.Tensor, centres: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """p~ = K p, K_qr = exp(-|c_q - c_r|^2 / 2 sigma^2) normalised over q (mass preserving)."""
    c = centres.to(p)
    kernel = torch.exp(-torch.cdist(c, c).pow(2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(0, keepdim=True)
    smoothed = kernel @ p
    return smoothed / smoothed.sum()


def rebalance_weights(p_smooth: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """w ~ ((1 - lam) p~ + lam / Q)^-1, scaled so that sum_q p~_q w_q = 1."""
    w = 1.0 / ((1.0 - lam) * p_smooth + lam / len(p_smooth))
    return w / (p_smooth * w).sum()


class ColourPrior(nn.Module):
    """The empirical ab prior of a data set and its rebalancing weights, as buffers (saved with
    the model). Before :meth:`fit` the weights are all 1 (no rebalancing)."""

    def __init__(self, centres: torch.Tensor, lam: float = LAMBDA, sigma: float = SIGMA) -> None:
        super().__init__()
        self.lam, self.sigma = float(lam), float(sigma)
        q = len(centres)
        self.register_buffer("centres", centres.float().clone())
        self.register_buffer("empirical", torch.full((q,), 1.0 / q))
        self.register_buffer("smoothed", torch.full((q,), 1.0 / q))
        self.register_buffer("weights", torch.ones(q))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, ab: torch.Tensor) -> None:
        """Fit to ab values ``(N, 2)``: p from their nearest bins, then p~ and w."""
        counts = torch.bincount(nearest_bin(ab.float(), self.centres), minlength=len(self.centres)).double()
        p = counts / counts.sum()
        smoothed = smooth_prior(p, self.centres.double(), self.sigma)
        self.empirical.copy_(p)
        self.smoothed.copy_(smoothed)
        self.weights.copy_(rebalance_weights(smoothed, self.lam))
        self.fitted.fill_(True)


# -- loss and decoding --------------------------------------------------------------------------------


def soft_cross_entropy(logits: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-location -sum_q Z_q log softmax(logits)_q, classes on the LAST dim: ``logits``
    ``(..., Q)``; Z given sparsely by ``idx`` and ``weights`` ``(..., k)``; returns ``(...)``."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.gather(-1, idx) * weights).sum(-1)


def weighted_soft_cross_entropy(
    logits: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The colorization loss, averaged over locations: mean of v(Z) * soft cross-entropy, with
    v(Z) = class_weights[nearest bin] (``idx[..., 0]``; 1 without class weights)."""
    ce = soft_cross_entropy(logits, idx, weights)
    if class_weights is not None:
        ce = ce * class_weights[idx[..., 0]]
    return ce.mean()


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Annealed mean of the distributions softmax(logits) over the LAST dim ``(..., Q)`` ->
    ``(..., D)``: f_T = softmax(log p / T) = softmax(logits / T) weights the centres ``(Q, D)``."""
    f_t = torch.softmax(logits.float() / temperature, dim=-1)
    return f_t @ centres.to(f_t)


# -- networks -----------------------------------------------------------------------------------------


class LabEncoder(nn.Module):
    """RGB frame stack -> concat of encoders on its Lab channel groups (see the module docstring).

    ``parts`` maps "L" and/or "ab" to encoders of ``k`` and ``2k`` channels; the output is their
    embeddings concatenated in the order L, ab.
    """

    GROUPS = ("L", "ab")

    def __init__(self, input_shape, **parts: nn.Module) -> None:
        super().__init__()
        unknown = set(parts) - set(self.GROUPS)
        if unknown or not parts:
            raise ValueError(f"LabEncoder parts must be among {self.GROUPS}, got {sorted(parts)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        if self.input_shape[0] % 3:
            raise ValueError(f"LabEncoder takes RGB frame stacks (3k channels), got {self.input_shape}")
        self.frames = self.input_shape[0] // 3
        self.parts = nn.ModuleDict({g: parts[g] for g in self.GROUPS if g in parts})
        self.feature_dim = sum(int(p.feature_dim) for p in self.parts.values())

    def lab(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(f"encoder expects images of shape {self.input_shape}, got {tuple(x.shape[-3:])}")
        return frames_to_lab(x)

    @staticmethod
    def group(lab: torch.Tensor, name: str) -> torch.Tensor:
        """The network input of channel group ``name`` from Lab ``(B, k, 3, H, W)``: L / 100
        ``(B, k, H, W)`` or ab / 110 ``(B, 2k, H, W)`` (frame-major: a1, b1, a2, b2, ...)."""
        if name == "L":
            return lab[:, :, 0] / L_SCALE
        return (lab[:, :, 1:] / AB_SCALE).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(self.parts) == ("L",) and x.dtype == torch.uint8:  # L alone: looked up per colour
            if tuple(x.shape[-3:]) != self.input_shape:
                raise ValueError(f"encoder expects images of shape {self.input_shape}, got {tuple(x.shape[-3:])}")
            return self.parts["L"](frames_to_lightness(x) / L_SCALE)
        lab = self.lab(x)
        return torch.cat([enc(self.group(lab, name)) for name, enc in self.parts.items()], dim=1)


class SpatialLogits(nn.Module):
    """Embedding ``(B, in_dim)`` -> logits ``(B, h, w, out_channels)`` (classes last, which is
    how the channels-last convs store them: no copy): Linear to a
    ``hidden``-channel map of about (h, w) / 2^upsample, ReLU, then ``upsample`` transposed
    3x3 stride-2 convs (output padding chosen to land exactly on each size) with ReLU, and a
    1x1 conv to the logits."""

    def __init__(self, in_dim: int, out_channels: int, size, hidden: int = 32, upsample: int = 2) -> None:
        super().__init__()
        sizes = [tuple(int(s) for s in size)]
        for _ in range(upsample):
            sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))
        self.size, self.seed = sizes[0], sizes[-1]
        self.hidden = hidden
        self.fc = nn.Linear(in_dim, hidden * math.prod(self.seed))
        layers: list[nn.Module] = []
        for target, current in zip(reversed(sizes[:-1]), reversed(sizes[1:])):
            pad = tuple(t - (2 * c - 1) for t, c in zip(target, current))
            layers += [nn.ConvTranspose2d(hidden, hidden, 3, 2, 1, output_padding=pad), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, out_channels, 1))
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.apply(orthogonal_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(len(z), self.hidden, *self.seed)
        return self.net(h.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
