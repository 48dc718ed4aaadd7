"""Colorization (Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016).

A network sees only the lightness L of an image (CIE Lab) and predicts, at each location of a
downsampled grid, a distribution Zhat over the quantised ab colour bins; the target Z is the
soft encoding of the true ab there, and the loss is the class-rebalanced multinomial
cross-entropy of the source text and the paper:

    L(Zhat, Z) = - 1/(N h w) sum_{n,h,w} v(Z_nhw) sum_q Z_nhwq log Zhat_nhwq,
    v(Z_nhw) = w_{q*},  q* = argmax_q Z_nhwq,
    w ~ ((1 - lambda) p~ + lambda / Q)^-1,  sum_q p~_q w_q = 1,  lambda = 0.5,

(the source text writes the weighting term as the mixture itself; the weight is its inverse, as
in the paper, which is what "boosts infrequent buckets" needs), where p~ is the empirical
distribution of the colours (nearest bin) of OUR training frames,
smoothed with a Gaussian kernel (sigma = 5), and Z puts on the 5 nearest bins of the true ab
weights proportional to a Gaussian kernel of their distance (sigma = 5). The colour maths (Lab,
the Q bins, soft encoding, rebalancing, annealed mean) lives in :mod:`.colour`, shared with
split-brain. Uniform logits give mean(v) log Q; log Q = log 261 = 5.56 without rebalancing.

Q: the ab bins of size 10 hit by sRGB colours, computed in :func:`.colour.ab_gamut`: Q = 261
here (the paper reports 313; see :mod:`.colour`).

Frames and the encoder. A frame stack of k RGB frames becomes its k L channels, the encoder's
input (k channels, L / 100); the network predicts the ab of every frame of the stack (k
distributions per location, from one embedding). The representation is this L-only encoder:
``make_encoder(arch, k, (H, W), latent_dim)``, the suite's default flatten encoder (a whole-image
method). ``self.encoder`` is a :class:`.colour.LabEncoder` around it whose ``input_shape`` is the
RGB stack ``(3k, H, W)``: it takes the env's uint8 frames as every other method's encoder does
and converts them to L inside, so RL and probes use it unchanged.

Head: :class:`.colour.SpatialLogits`, Linear from the embedding to a 32-channel map of a quarter
of the output's side (6 x 6), two transposed stride-2 convs, a 1x1 conv to k x Q logits; outputs
at 1/``downsample`` of the frame (21 x 21 for 84-pixel frames with the default 4, as the paper
predicts 56 x 56 for 224 x 224 inputs). The decoder goes through the embedding (not the conv
map) so the whole encoder, its Linear + LayerNorm included, is trained. The shared
``MirrorDecoder`` (representations/control/vae.py) does not fit: it outputs at the full frame
size, and its last transposed conv to k x Q channels at 84 x 84 would cost over 100x the
``fast`` encoder's multiply-adds. Targets: ab averaged over ``downsample`` x ``downsample``
cells (the paper's Caffe net subsamples ab with a stride-4 1x1 layer; averaging keeps the
colour of thin objects such as cartpole's pole).

The prior: fitted BEFORE training, lazily on the first :meth:`Colorization.sample_batch`, from
up to ``prior_frames`` frames of the data set pretraining trains on (drawn with their own seed,
so the training stream is not shifted), at the resolution of the targets; stored in buffers
(:class:`.colour.ColourPrior`) and saved with the model. Until it is fitted, ``loss`` uses v = 1.
A pretrained model keeps its prior in the RL regimes; a fresh one trained on an agent's replay
(the decoupled and joint regimes) fits it on the first replay batch it draws.

Pictures: :meth:`Colorization.colorize` decodes the annealed mean (T = 0.38) of each location's
distribution, upsamples ab bilinearly to the frame size and joins it to the input's L.

``extra_scores``: ``colorization_acc``, the accuracy of the most likely bin against the nearest
bin of the true colour on held-out frames (chance: the share of the most common bin, which is
large on DMC frames whose background dominates), and ``colorization_loss``, the unweighted soft
cross-entropy (lower is better; log Q = 5.56 at uniform logits).

Departures from the paper and its code (richzhang/colorization): Q = 261 computed bins instead
of the 313 shipped ones; prior from our frames, not ImageNet's ``prior_probs.npy``; 5 neighbours
in the soft encoding as the paper's text (its ``NNEncode`` layer uses 10); the rebalancing
weight applied in the forward loss as the paper's formula (the Caffe ``ClassRebalanceMultLayer``
scales only the gradient: same gradient, different reported loss); the loss averaged over
locations, not summed; a frame stack in (k L channels) and the colours of all k frames out,
where the paper colours one image; ab targets averaged over cells, not subsampled; no
``NonGrayMaskLayer`` (our frames are colour); the suite's small encoder and an embedding
bottleneck instead of the paper's fully convolutional VGG-style net with dilated convs; Adam at
the suite's defaults.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from ssrl.utils import image_grid, write_png

from ...backbones import make_encoder
from ...core import BaseConfig, Need, Representation, register
from . import colour


@dataclasses.dataclass
class ColorizationConfig(BaseConfig):
    downsample: int = 4  # logits at 1/4 of the frame size (21 x 21 at 84 px), as the paper
    hidden: int = 32  # channels of the logits decoder
    num_filters: int = 32  # encoder width (the suite's default)
    neighbours: int = colour.NEIGHBOURS  # soft encoding: nearest bins
    sigma: float = colour.SIGMA  # soft encoding and prior smoothing kernel (ab units)
    rebalance_lambda: float = colour.LAMBDA  # weight of the uniform distribution in the rebalancing
    temperature: float = colour.TEMPERATURE  # annealed mean for pictures
    prior_frames: int = 2000  # frames the empirical colour prior is estimated from
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field in ("downsample", "hidden", "num_filters", "neighbours", "prior_frames"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        if not 0.0 <= self.rebalance_lambda <= 1.0:
            raise ValueError(f"{name}.rebalance_lambda must be in [0, 1], got {self.rebalance_lambda}")
        if not (self.sigma > 0 and self.temperature > 0):
            raise ValueError(f"{name}.sigma and temperature must be positive, got {self.sigma}, {self.temperature}")


def output_size(config, obs_shape, method: str) -> tuple[int, int]:
    """The logits' (h, w): the frame size over ``downsample``, which must divide it."""
    c, h, w = obs_shape
    if c % 3:
        raise ValueError(f"{method} takes RGB frame stacks (3k channels), got {c} channels")
    if h % config.downsample or w % config.downsample:
        raise ValueError(
            f"{method}: downsample={config.downsample} must divide the frame size {h}x{w} "
            f"(the targets are ab averaged over {config.downsample}x{config.downsample} cells)"
        )
    return h // config.downsample, w // config.downsample


@register
class Colorization(Representation):
    name = "colorization"
    needs = Need.FRAMES
    Config = ColorizationConfig

    def __init__(self, config: ColorizationConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.out_size = output_size(config, self.obs_shape, self.name)
        self.frames = self.obs_shape[0] // 3
        centres = torch.as_tensor(colour.ab_gamut(), dtype=torch.float32)
        self.num_bins = len(centres)
        if config.neighbours > self.num_bins:
            raise ValueError(f"neighbours={config.neighbours} exceeds the {self.num_bins} ab bins")
        trunk = make_encoder(
            config.arch, self.frames, self.obs_shape[1:], config.latent_dim, num_filters=config.num_filters
        )
        self.encoder = colour.LabEncoder(self.obs_shape, L=trunk)
        self.decoder = colour.SpatialLogits(
            config.latent_dim, self.frames * self.num_bins, self.out_size, hidden=config.hidden
        )
        self.prior = colour.ColourPrior(centres, config.rebalance_lambda, config.sigma)
        self.soft_encoder = colour.SoftEncoder(centres, config.neighbours, config.sigma)

    @property
    def centres(self) -> torch.Tensor:
        return self.prior.centres

    # -- data and targets ----------------------------------------------------------------------------

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if not bool(self.prior.fitted):
            self.fit_prior(data)
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def target_ab(self, lab: torch.Tensor) -> torch.Tensor:
        """Lab ``(B, k, 3, H, W)`` -> target ab ``(B, h, w, k, 2)``, averaged over cells."""
        ab = F.avg_pool2d(lab[:, :, 1:].flatten(0, 1), self.config.downsample)
        return ab.reshape(*lab.shape[:2], 2, *self.out_size).permute(0, 3, 4, 1, 2)

    @torch.no_grad()
    def fit_prior(self, data, seed: int = 0) -> None:
        """Fit the empirical colour prior (and rebalancing weights) to ``data``'s frames."""
        idx = np.arange(len(data))
        if len(idx) > self.config.prior_frames:
            idx = np.sort(np.random.default_rng(seed).choice(idx, self.config.prior_frames, replace=False))
        frames = data.stack(idx, self.config.camera, 1)
        ab = []
        for start in range(0, len(frames), 256):
            x = torch.as_tensor(frames[start : start + 256]).to(self.centres.device)
            ab.append(self.target_ab(colour.frames_to_lab(x)).reshape(-1, 2))
        self.prior.fit(torch.cat(ab))

    # -- model ---------------------------------------------------------------------------------------

    def logits(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``(B, h, w, k, Q)`` for every frame of the stack, its Lab ``(B, k, 3, H, W)``)."""
        lab = self.encoder.lab(obs)
        z = self.encoder.parts["L"](self.encoder.group(lab, "L"))
        return self.decoder(z).reshape(len(obs), *self.out_size, self.frames, self.num_bins), lab

    def loss(self, batch):
        logits, lab = self.logits(batch["obs"])
        idx, weights = self.soft_encoder(self.target_ab(lab))  # (B, h, w, k, 5) each
        loss = colour.weighted_soft_cross_entropy(logits, idx, weights, self.prior.weights)
        accuracy = (logits.argmax(-1) == idx[..., 0]).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``colorization.png``: per held-out frame, the grey input (L), the network's colouring
        (annealed mean) and the original (newest frame of each stack)."""
        idx = np.linspace(0, len(data) - 1, 6).astype(int)
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        painted = self.colorize(obs)
        newest = obs[:, -3:].astype(np.float32)
        grey = np.repeat((0.299 * newest[:, :1] + 0.587 * newest[:, 1:2] + 0.114 * newest[:, 2:3]), 3, axis=1)
        rows = [[grey[i].astype(np.uint8), painted[i, -3:], obs[i, -3:]] for i in range(len(obs))]
        return [write_png(folder / "colorization.png", image_grid(rows))]

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out bin accuracy (chance: the most common bin's share) and unweighted soft
        cross-entropy (lower is better)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)

        def scores(x: torch.Tensor) -> torch.Tensor:
            logits, lab = self.logits(x)
            nn_idx, weights = self.soft_encoder(self.target_ab(lab))
            ce = colour.soft_cross_entropy(logits, nn_idx, weights).flatten(1).mean(1)
            acc = (logits.argmax(-1) == nn_idx[..., 0]).float().flatten(1).mean(1)
            return torch.stack([acc, ce], 1)

        acc, ce = self.map_batches(scores, obs, batch_size=64).mean(0)
        return {"colorization_acc": float(acc), "colorization_loss": float(ce)}

    @torch.no_grad()
    def colorize(self, frames, temperature: float | None = None) -> np.ndarray:
        """RGB frame stacks ``(B, 3k, H, W)`` -> the network's colourings, uint8 of that shape:
        the input's L with the annealed mean ab (T = ``config.temperature``) upsampled."""
        temperature = self.config.temperature if temperature is None else temperature

        def paint(x: torch.Tensor) -> torch.Tensor:
            logits, lab = self.logits(x)
            ab = colour.annealed_mean(logits, self.centres, temperature)  # (B, h, w, k, 2)
            ab = ab.permute(0, 3, 4, 1, 2).flatten(0, 1)  # (B*k, 2, h, w)
            ab = F.interpolate(ab, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            lab = torch.cat([lab[:, :, :1].flatten(0, 1), ab], dim=1)
            rgb = colour.lab_to_rgb(lab, dim=1).reshape(x.shape)
            return torch.round(rgb * 255.0)

        return self.map_batches(paint, np.asarray(frames), batch_size=64).astype(np.uint8)
