"""Counting visual primitives (Noroozi, Pirsiavash and Favaro, ICCV 2017, "Representation Learning
by Learning to Count").

A feature phi that counts visual primitives must give the same counts for an image at half scale
and for the sum of its four quarters. With D the 2x downsampling and T_1..T_4 the 2x2 tiling
(both give images of half the frame's size) and y another image of the batch, the loss is the
paper's (and the source text's)

    L = mean_n  || phi(D x_n) - sum_j phi(T_j x_n) ||^2  +  max(0, M - || phi(D y_n) - sum_j phi(T_j x_n) ||^2)

squared Euclidean norms over the count vector, averaged over the batch. The first term alone is
solved by phi = 0; the second (contrastive) term asks the tile counts of x to be at least
sqrt(M) away from the counts of another image. M = 10 (``margin``) as in the paper.

What phi is here. The paper's counting network ends in a ReLU, so counts are non-negative. Our
encoder ends in a LayerNorm, whose output has zero mean and unit variance over features whatever
the input: a count vector cannot live there (phi(D x) has the same norm as each phi(T_j x), so it
could equal their sum only if the four largely cancelled). So phi is the ReLU of the encoder's
pre-LayerNorm features:

    h(x) = W mean_{u,v} trunk(x)[:, u, v] + b       (the pooled encoder's Linear layer)
    phi(x) = ReLU(h(x))                              counts (trained here)
    encoder(x) = LayerNorm(h(x))                     what RL and probes use

Counting trains the trunk and the Linear layer; the LayerNorm's affine parameters get no gradient
and stay at their initial values (weight 1, bias 0), so the RL encoder is the standardised h.

Encoder rule (shared by the patch-based methods of the suite): the encoder is
``make_encoder(arch, C, (H, W), latent_dim, pool="mean")``, whose conv trunk is followed by global
average pooling, so the same module takes the half-size tiles and downsampled images during
pretraining and the full frames in RL, unchanged.

Sizes: tiles and the downsampled image are (H/2, W/2): 42x42 at 84x84 frames, which the ``fast``
trunk (smallest input 31 px) and the ``dmc`` trunk (15 px) both fit. Frames must be square with
an even side, and half of it must fit the trunk; the model says which numbers do not.

Training behaviour: at initialisation phi is small and the loss is about M. While every hinge is
active, the loss over a batch is M - (2/B) sum_n t_n . (phi(D x_n) - phi(D y_n)) with t_n the tile
sum (the ||phi(D .)||^2 terms cancel between x and y), so its gradient is proportional to how much
the counts of x and y differ: on frames that are nearly alike (one DMC scene) it is small and the
loss stays near M for a while (on 24 cartpole episodes at 84x84, ``fast``, batch 64, it leaves
the plateau after about 30 steps; on 4 short 48-px episodes, after about 100), while a batch
mixing two scenes falls from the first steps (see the tests).

Departures from the paper and from public code:

* Network: the suite's conv encoder (mean-pooled, ``latent_dim`` = 50 counts) instead of the
  paper's AlexNet with 1000 ReLU outputs on 114x114 inputs; phi is the pre-LayerNorm ReLU
  features, as above.
* Frames: the frame stack (3 RGB frames, 9 channels) is tiled and downsampled as one image, so
  phi counts over all three frames, and the encoder keeps the RL input.
* Downsampling (``downsample``): "area" (default), the exact mean of each 2x2 block; "bilinear"
  and "bicubic" (antialiased, clamped to [0, 1]); "random" picks one of the three per batch (the
  same for x and y). The paper, as we read it, draws the downsampling method at random (Lanczos
  among them, which torch lacks) so that phi cannot recognise a downsampled image by its
  interpolation; "area" is the default here because it is exact and deterministic. No colour
  augmentation or grey-scale conversion is applied.
* y_n = x_{n-1 mod B} (the batch rolled by one), so phi(D y) is phi(D x) rolled, not computed
  again; the paper draws y at random. The batch needs at least 2 frames.
* The loss follows the paper, not the public TensorFlow implementation
  (clvrai/Representation-Learning-by-Learning-to-Count, ``model.py``), which averages the first
  term over features too and applies the hinge to each feature's squared difference separately
  (``max(0, M - d_k^2)`` averaged over k) instead of to the squared norm.

``extra_scores``: ``counting_acc``, on held-out frames in shuffled groups of 32 (all of them if
fewer): the fraction of frames x whose tile-count sum sum_j phi(T_j x) is nearer to phi(D x) than
to phi(D x') of any other frame x' of its group (chance 1/32 = 0.031).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import make_encoder, min_input_size, to_float_image
from ...core import BaseConfig, Need, Representation, register

DOWNSAMPLING = ("area", "bilinear", "bicubic", "random")
PAPER_MARGIN = 10.0  # M of Noroozi et al. (2017)
EVAL_GROUP = 32  # candidates per held-out retrieval (chance 1/32)


@dataclasses.dataclass
class CountingConfig(BaseConfig):
    margin: float = PAPER_MARGIN  # M of the contrastive term (the paper's 10)
    downsample: str = "area"  # D: "area", "bilinear", "bicubic" or "random" (one of the three per batch)
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.margin <= 0:
            raise ValueError(f"CountingConfig.margin must be positive, got {self.margin}")
        if self.downsample not in DOWNSAMPLING:
            raise ValueError(f"CountingConfig.downsample must be one of {DOWNSAMPLING}, got {self.downsample!r}")
        min_input_size(self.arch)  # an unknown architecture fails here

    def check_frame(self, height: int, width: int) -> None:
        """Raise ValueError unless (height, width) frames can be tiled 2x2 into images the trunk
        takes."""
        if height != width or height % 2:
            raise ValueError(f"counting needs square frames with an even side, got {height}x{width}")
        least = min_input_size(self.arch)
        if height // 2 < least:
            raise ValueError(
                f"counting: the tiles of {height}x{width} frames are {height // 2}x{width // 2}, smaller than the "
                f"{least}x{least} the {self.arch!r} trunk needs; use frames of at least {2 * least} px or another arch"
            )


def tile_2x2(x: torch.Tensor) -> list[torch.Tensor]:
    """T_1..T_4: the top-left, top-right, bottom-left and bottom-right quarters of ``(B, C, H, W)``."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]


def downsample_2x(x: torch.Tensor, mode: str = "area") -> torch.Tensor:
    """D: ``(B, C, H, W)`` float images -> ``(B, C, H/2, W/2)``. "area" is the mean of each 2x2
    block; "bilinear" and "bicubic" are antialiased and clamped to the input's [0, 1] range."""
    if mode == "area":
        return F.avg_pool2d(x, 2)
    if mode in ("bilinear", "bicubic"):
        size = (x.shape[-2] // 2, x.shape[-1] // 2)
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)
    raise ValueError(f"unknown downsampling {mode!r}; use one of {DOWNSAMPLING[:-1]}")


def counting_loss(
    phi: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    margin: float = PAPER_MARGIN,
    downsample: str = "area",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The counting loss of ``(B, C, H, W)`` images x against the other images y (default: x
    rolled by one in the batch), with ``phi`` mapping half-size images ``(N, C, H/2, W/2)`` to
    counts ``(N, K)``; returns the loss and its two terms ("feat", "diff"). ``generator``
    draws the method of ``downsample="random"``."""
    x = to_float_image(x)
    b = len(x)
    if y is None and b < 2:
        raise ValueError("counting needs at least 2 images in a batch (another image y for each x)")
    if downsample == "random":
        downsample = DOWNSAMPLING[int(torch.randint(0, 3, (), generator=generator))]
    images = [downsample_2x(x, downsample), *tile_2x2(x)]
    if y is not None:
        images.append(downsample_2x(to_float_image(y), downsample))
    counts = phi(torch.cat(images))
    phi_dx, tiles = counts[:b], counts[b : 5 * b].reshape(4, b, -1).sum(0)
    phi_dy = counts[5 * b :] if y is not None else phi_dx.roll(1, 0)
    feat = (phi_dx - tiles).pow(2).sum(-1).mean()
    diff = F.relu(margin - (phi_dy - tiles).pow(2).sum(-1)).mean()
    return feat + diff, {"feat": feat, "diff": diff}


@register
class Counting(Representation):
    name = "counting"
    needs = Need.FRAMES
    Config = CountingConfig

    def __init__(self, config: CountingConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        config.check_frame(*self.obs_shape[1:])
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim, pool="mean")

    def counts(self, images: torch.Tensor) -> torch.Tensor:
        """phi: ReLU of the encoder's pre-LayerNorm features, ``(N, latent_dim)``, non-negative."""
        return F.relu(self.encoder.fc(self.encoder.spatial(images).mean(dim=(2, 3))))

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def loss(self, batch):
        loss, terms = counting_loss(
            self.counts,
            batch["obs"],
            margin=self.config.margin,
            downsample=self.config.downsample,
            generator=getattr(self, "generator", None),
        )
        return loss, {k: v.detach() for k, v in terms.items()}

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out count matching: is sum_j phi(T_j x) nearest to phi(D x) among 32 frames (chance 1/32)."""
        group = min(EVAL_GROUP, len(data))
        n = min(len(data), 512) // group * group
        idx = np.random.default_rng(0).permutation(len(data))[:n]
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        mode = "area" if self.config.downsample == "random" else self.config.downsample

        def correct(x: torch.Tensor) -> torch.Tensor:
            x = to_float_image(x)
            counts = self.counts(torch.cat([downsample_2x(x, mode), *tile_2x2(x)]))
            phi_dx, tiles = counts[: len(x)], counts[len(x) :].reshape(4, len(x), -1).sum(0)
            nearest = torch.cdist(tiles, phi_dx).argmin(1)
            return (nearest == torch.arange(len(x), device=x.device)).float()

        return {"counting_acc": float(self.map_batches(correct, obs, batch_size=group).mean())}
