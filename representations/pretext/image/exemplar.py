"""Exemplar-CNN (Dosovitskiy, Fischer, Springenberg, Riedmiller and Brox, NIPS 2014 / TPAMI 2016,
"Discriminative Unsupervised Feature Learning with Exemplar Convolutional Neural Networks").

N "exemplary" patches are sampled once from the data; every random transformation T of exemplar
i is a sample of surrogate class i, and a classifier over the N surrogate classes is trained on
the encoder's embedding of transformed patches:

    L = - 1/B sum_b log softmax( g(phi(T_b(x_{i_b}))) )_{i_b},   i_b ~ U{1..N},  T_b ~ the transformations

an N-way cross-entropy: log N at uniform logits (log 1000 = 6.908 for the default N).

Form: the paper's parametric softmax over a fixed set of ``n_exemplars`` patches (default 1000;
the paper uses 8000 from STL-10), sampled once, seeded by ``exemplar_seed``, from the data the
method first trains on (the training episodes), with the linear layer over N classes in the head.
The exemplars are kept as (frame index, top, left, side) in the checkpoint (buffer ``exemplars``),
not as pixels, so resuming on the same data continues with the same classes. Beyond some 10^4
classes a non-parametric (instance-discrimination / memory-bank) form would be needed; that form is
not implemented, N is a field.

Exemplar sampling: frames are drawn without replacement (with replacement only once every frame
holds an exemplar), one exemplar per frame; the exemplar's side is ``patch_size`` times a factor
drawn log-uniformly from ``source_scale`` (patches "at varying positions and scales"), and its
position is drawn with probability proportional to the mean squared gradient magnitude inside the
patch (the paper: "only from regions containing considerable gradients"), the gradient computed
(central differences) on the grey level of the newest frame of the stack.

Transformations (the paper's list and ranges; every sample composes all of them, parameters
drawn independently, multiplicative factors log-uniformly, additive ones uniformly; the paper
does not say how it draws them):

* translation: up to ``translation`` (0.2) of the exemplar's side, in x and in y;
* scaling by a factor in ``scale`` (0.7 to 1.4); rotation by up to ``rotation`` (20) degrees;
  all three as one affine resampling (bilinear, reflection outside the frame) of the frame to a
  ``patch_size`` patch, so the identity transform returns the exemplar's pixels exactly when
  its side equals ``patch_size``;
* contrast 1: the projection of every pixel onto each principal component of the pixel colours
  (computed once from the exemplars' frames) multiplied by a factor in ``pca_factor`` (0.5 to 2),
  independent per component, the same for all pixels of a patch;
* contrast 2: saturation and value (HSV) raised to a power in ``sv_power`` (0.25 to 4),
  multiplied by a factor in ``sv_factor`` (0.7 to 1.4) and shifted by up to ``sv_shift`` (0.1),
  drawn independently for S and V (the paper does not say whether they share them);
* colour: the hue shifted by up to ``hue_shift`` (0.1).

A frame stack is transformed as one image (the same transformation for each of its frames).

Patch-based encoder rule (every patch method of the suite): the encoder is
``make_encoder(arch, C, (H, W), latent_dim, pool="mean")``: conv trunk, global average pooling,
Linear + LayerNorm, so the same module takes a patch during pretraining and a full frame in RL
and probes. Patches are 32 px (the paper's size; 38 % of an 84-px frame's side), which every
trunk takes (:func:`~ssrl.representations.backbones.min_input_size`: 31 for ``fast``), so no resizing.

Held-out score: there are no surrogate classes on held-out episodes, so ``extra_scores`` reports
``exemplar_retrieval_acc``: for up to 256 exemplars sampled the same way from the held-out frames,
two random transformations each, the share whose first view's nearest embedding (cosine) among
all second views is its own (chance 1 / the number of exemplars, 1/256 on large enough data).

Other departures: the paper's network is a 3-4 layer conv net with a fully connected layer and
dropout, trained with SGD on a surrogate data set generated in advance (the paper's K transformed
samples per class); here transformations are drawn afresh at every step (an unbounded K), phi is
the suite's pooled encoder and g is Linear(latent_dim, ``hidden``) -> ReLU -> Linear(``hidden``, N),
discarded after pretraining; Adam.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import make_encoder, min_input_size, to_float_image
from ...core import BaseConfig, Need, Representation, register

RANGE_FIELDS = ("source_scale", "scale", "pca_factor", "sv_power", "sv_factor")


@dataclasses.dataclass
class ExemplarConfig(BaseConfig):
    n_exemplars: int = 1000  # surrogate classes N
    patch_size: int = 32  # side of the patches the encoder sees
    source_scale: tuple[float, float] = (0.75, 1.5)  # an exemplar's side over patch_size (log-uniform)
    exemplar_seed: int = 0  # draws the exemplars
    translation: float = 0.2  # largest shift, as a fraction of the exemplar's side
    scale: tuple[float, float] = (0.7, 1.4)
    rotation: float = 20.0  # largest rotation, degrees
    pca_factor: tuple[float, float] = (0.5, 2.0)  # contrast 1
    sv_power: tuple[float, float] = (0.25, 4.0)  # contrast 2
    sv_factor: tuple[float, float] = (0.7, 1.4)
    sv_shift: float = 0.1
    hue_shift: float = 0.1  # colour
    hidden: int = 256  # width of the classifier head
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field in RANGE_FIELDS:
            lo, hi = (float(v) for v in getattr(self, field))
            if not 0 < lo <= hi:
                raise ValueError(f"{name}.{field} must be a range 0 < low <= high, got {getattr(self, field)}")
            setattr(self, field, (lo, hi))  # JSON gives lists back
        for field in ("translation", "rotation", "sv_shift", "hue_shift"):
            if getattr(self, field) < 0:
                raise ValueError(f"{name}.{field} must be >= 0, got {getattr(self, field)}")
        if self.n_exemplars < 2 or self.hidden < 1:
            raise ValueError(f"{name}: n_exemplars >= 2 and hidden >= 1 needed, got {self.n_exemplars}, {self.hidden}")
        need = min_input_size(self.arch)
        if self.patch_size < need:
            raise ValueError(
                f"{name}.patch_size {self.patch_size} px is below the {need} px the {self.arch!r} trunk needs"
            )

    def check_frame(self, obs_shape) -> None:
        _, h, w = obs_shape
        if h != w:
            raise ValueError(f"exemplar needs square frames, got {h}x{w}")
        largest = round(self.patch_size * self.source_scale[0])
        if largest > h:
            raise ValueError(
                f"exemplars of at least {largest} px (patch_size {self.patch_size} x source_scale "
                f"{self.source_scale[0]}) do not fit {h}-px frames; lower patch_size or source_scale"
            )


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float], shape) -> np.ndarray:
    lo, hi = bounds
    return np.exp(rng.uniform(math.log(lo), math.log(hi), shape)).astype(np.float32)


def gradient_energy(gray: np.ndarray) -> np.ndarray:
    """Squared gradient magnitude (central differences) of an ``(H, W)`` image."""
    gy, gx = np.gradient(gray.astype(np.float64))
    return gx * gx + gy * gy


def select_exemplars(
    frames: np.ndarray, n: int, patch_size: int, source_scale: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """``(n, 4)`` exemplars ``(frame, top, left, side)`` from RGB ``frames`` ``(F, 3, H, W)``:
    frames without replacement while they last, sides ``patch_size`` times a log-uniform factor in
    ``source_scale``, positions drawn with probability proportional to the patch's mean squared
    gradient magnitude (uniform on a flat frame)."""
    size = frames.shape[-1]
    order = np.concatenate([rng.permutation(len(frames)) for _ in range(-(-n // len(frames)))])[:n]
    sides = np.clip(np.round(patch_size * log_uniform(rng, source_scale, n)), 1, size).astype(np.int64)
    out = np.zeros((n, 4), np.int64)
    for i, (frame, side) in enumerate(zip(order, sides)):
        energy = gradient_energy(frames[frame].mean(0))
        integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        window = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
        weights = np.maximum(window, 0.0).ravel()
        total = weights.sum()
        pick = rng.choice(len(weights), p=weights / total) if total > 0 else rng.integers(len(weights))
        top, left = divmod(int(pick), window.shape[1])
        out[i] = (frame, top, left, side)
    return out


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] -> HSV with every component in [0, 1]."""
    r, g, b = rgb.unbind(-3)
    maxc, minc = rgb.amax(-3), rgb.amin(-3)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dc = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(-3)
    h6 = (h % 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    sector = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(hsv)
    for k, (rr, gg, bb) in enumerate(sector):
        mask = (i == k).unsqueeze(-3)
        out = torch.where(mask, torch.stack([rr, gg, bb], -3), out)
    return out


@register
class Exemplar(Representation):
    name = "exemplar"
    needs = Need.FRAMES | Need.DATASET  # the surrogate classes are patches of one data set's frames
    Config = ExemplarConfig

    def __init__(self, config: ExemplarConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        config.check_frame(obs_shape)
        c, h, w = obs_shape
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, pool="mean")
        self.head = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.n_exemplars)
        )
        # Drawn from the first data the method trains on (see ``exemplars_for``); -1: not yet.
        self.register_buffer("exemplars", torch.full((config.n_exemplars, 4), -1, dtype=torch.long))
        self.register_buffer("exemplar_data_size", torch.zeros((), dtype=torch.long))
        self.register_buffer("pca_mean", torch.zeros(3))
        self.register_buffer("pca_basis", torch.eye(3))  # principal components as columns

    # -- the surrogate classes ---------------------------------------------------------------

    def exemplars_for(self, data) -> np.ndarray:
        """The ``(N, 4)`` exemplars (frame, top, left, side) of this model, drawn from ``data``
        (seeded by ``exemplar_seed``) the first time; later calls check that ``data`` is the same
        size as the data they were drawn from."""
        if int(self.exemplars[0, 0]) < 0:
            cfg = self.config
            frames = data.view(cfg.camera)
            rng = np.random.default_rng(cfg.exemplar_seed)
            exemplars = select_exemplars(frames, cfg.n_exemplars, cfg.patch_size, cfg.source_scale, rng)
            mean, basis = pixel_pca(frames[np.unique(exemplars[:, 0])[:512]])
            self.exemplars.copy_(torch.as_tensor(exemplars))
            self.exemplar_data_size.fill_(len(data))
            self.pca_mean.copy_(torch.as_tensor(mean))
            self.pca_basis.copy_(torch.as_tensor(basis))
        elif int(self.exemplar_data_size) != len(data):
            raise ValueError(
                f"this model's exemplars were drawn from a data set of {int(self.exemplar_data_size)} frames; "
                f"the data given has {len(data)}: train on the same episodes"
            )
        return self.exemplars.cpu().numpy()

    def sample_transforms(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Parameters of ``n`` random transformations (see the module docstring)."""
        cfg = self.config
        return {
            "shift": rng.uniform(-cfg.translation, cfg.translation, (n, 2)).astype(np.float32),
            "scale": log_uniform(rng, cfg.scale, n),
            "angle": rng.uniform(-cfg.rotation, cfg.rotation, n).astype(np.float32),
            "pca": log_uniform(rng, cfg.pca_factor, (n, 3)),
            "sv_power": log_uniform(rng, cfg.sv_power, (n, 2)),
            "sv_factor": log_uniform(rng, cfg.sv_factor, (n, 2)),
            "sv_shift": rng.uniform(-cfg.sv_shift, cfg.sv_shift, (n, 2)).astype(np.float32),
            "hue": rng.uniform(-cfg.hue_shift, cfg.hue_shift, n).astype(np.float32),
        }

    def draw(self, data, exemplars: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of random transformations of ``exemplars[labels]``: the frame stacks they
        come from, their boxes, the labels and the transformation parameters."""
        chosen = exemplars[labels]
        frames = data.stack(chosen[:, 0], self.config.camera, self.config.frame_stack)
        return {
            "frames": frames,
            "box": chosen[:, 1:],
            "label": np.asarray(labels),
            **self.sample_transforms(len(labels), rng),
        }

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        exemplars = self.exemplars_for(data)
        return self.draw(data, exemplars, rng.integers(0, len(exemplars), batch_size), rng)

    # -- rendering -----------------------------------------------------------------------------

    def render(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``(B, C, P, P)`` transformed patches (float, [0, 1]) of a batch from :meth:`draw`."""
        x = to_float_image(batch["frames"])
        b, c, size = x.shape[0], x.shape[1], x.shape[-1]
        p = self.config.patch_size
        box = batch["box"].to(x.dtype)
        side = box[:, 2]
        centre = box[:, :2] + side[:, None] / 2 + batch["shift"] * side[:, None]  # (y, x), pixels
        a = side / (batch["scale"] * size)  # half the sampled region, in normalised units
        angle = batch["angle"] * (math.pi / 180.0)
        cos, sin = torch.cos(angle) * a, torch.sin(angle) * a
        theta = torch.stack(
            [
                torch.stack([cos, -sin, 2 * centre[:, 1] / size - 1], -1),
                torch.stack([sin, cos, 2 * centre[:, 0] / size - 1], -1),
            ],
            1,
        )
        grid = F.affine_grid(theta, [b, c, p, p], align_corners=False)
        patch = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return self.recolour(patch, batch)

    def recolour(self, patch: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Contrast 1 (principal components), contrast 2 (S and V) and colour (H) on every RGB
        frame of ``(B, 3k, P, P)`` patches."""
        b, c, p, _ = patch.shape
        rgb = patch.reshape(b, c // 3, 3, p, p)
        coeff = torch.einsum("ji,bkjhw->bkihw", self.pca_basis, rgb - self.pca_mean.view(1, 1, 3, 1, 1))
        coeff = coeff * batch["pca"].view(b, 1, 3, 1, 1)
        rgb = torch.einsum("ij,bkjhw->bkihw", self.pca_basis, coeff) + self.pca_mean.view(1, 1, 3, 1, 1)
        hsv = rgb_to_hsv(rgb.clamp(0.0, 1.0))
        h, sv = hsv[:, :, :1], hsv[:, :, 1:]
        view = lambda t: t.view(b, 1, 2, 1, 1)  # noqa: E731
        sv = (sv.pow(view(batch["sv_power"])) * view(batch["sv_factor"]) + view(batch["sv_shift"])).clamp(0.0, 1.0)
        h = (h + batch["hue"].view(b, 1, 1, 1, 1)) % 1.0
        return hsv_to_rgb(torch.cat([h, sv], 2)).reshape(b, c, p, p)

    # -- objective -----------------------------------------------------------------------------

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(self.render(batch)))

    def loss(self, batch):
        logits = self.logits(batch)
        label = batch["label"].long()
        loss = F.cross_entropy(logits, label)
        return loss, {"accuracy": (logits.argmax(1) == label).float().mean().detach()}

    def extra_scores(self, data) -> dict[str, float]:
        """Retrieval accuracy between two transformations of exemplars drawn from held-out frames
        (chance 1 / their number; see the module docstring)."""
        cfg = self.config
        rng = np.random.default_rng(0)
        frames = data.view(cfg.camera)
        n = min(256, len(data))
        exemplars = select_exemplars(frames, n, cfg.patch_size, cfg.source_scale, rng)
        labels = np.arange(n)
        views = []
        with self.evaluating(), torch.no_grad():
            for _ in range(2):
                batch = self.to_batch(self.draw(data, exemplars, labels, rng))
                views.append(F.normalize(self.encoder(self.render(batch)), dim=1))
        nearest = (views[0] @ views[1].T).argmax(1).cpu().numpy()
        return {"exemplar_retrieval_acc": float((nearest == labels).mean())}


def pixel_pca(frames: np.ndarray, max_pixels: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(3,)`` and principal components (columns of ``(3, 3)``) of the RGB colours of
    ``frames`` ``(F, 3, H, W)`` (uint8), in [0, 1] units, from at most ``max_pixels`` pixels."""
    pixels = frames.transpose(0, 2, 3, 1).reshape(-1, 3)
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
    pixels = pixels.astype(np.float64) / 255.0
    mean = pixels.mean(0)
    _, basis = np.linalg.eigh(np.cov(pixels, rowvar=False) + 1e-12 * np.eye(3))
    return mean.astype(np.float32), basis[:, ::-1].copy().astype(np.float32)
