"""Context encoder (Pathak, Krähenbühl, Donahue, Darrell and Efros, CVPR 2016).

A region of the image is removed and a network F (the suite's encoder, then a decoder) fills it
in from the rest. With M the binary mask of the seed text (1 for kept pixels, 0 for dropped):

    L(x)       = lambda_rec * L_rec(x) + lambda_adv * L_adv(x),    lambda_rec = 0.999, lambda_adv = 0.001
    L_rec(x)   = || (1 - M) . (x - F(M . x)) ||_2^2   / (number of dropped entries)
    L_adv(x)   = max_D  E_x[ log D(x) + log(1 - D(x^)) ],          x^ = M . x + (1 - M) . F(M . x)

F(M . x): the masked image (dropped pixels set to the fill value, below) goes through the
encoder phi (``self.encoder``, the representation: ``make_encoder(arch, C, (H, W), latent_dim)``,
the default flatten head of whole-image methods) and a decoder of the shared family
(:class:`~ssrl.representations.control.vae.MirrorDecoder`, the transposed mirror of the
encoder's trunk, from the ``latent_dim`` embedding) whose sigmoid output is an image in [0, 1].
Only the dropped pixels of the prediction enter the loss: L_rec counts masked entries only, and
the discriminator D sees x^, the real context with the prediction pasted into the hole (so the
adversarial gradient also reaches only the filled pixels).

Weights and normalisation: the seed writes L = L_rec + L_adv; the paper weights them
0.999 and 0.001, as the public code does (``wtl2=0.999``: (1 - wtl2) * errG + wtl2 * errG_l2 in
pathak22/context-encoder ``train.lua``). There errG_l2 is a per-entry MEAN squared error, so
L_rec here is the squared norm of the seed divided by the number of dropped entries of the batch
(C times the dropped pixels), which keeps the 0.999/0.001 balance the paper tuned; the seed's
un-normalised sum would make the adversarial term ~10^4 times weaker still.

Generator's adversarial loss (``generator_loss``): ``"non_saturating"`` (default) minimises
-log D(x^), as the public code does (errG = BCE(D(fake), real label)); ``"minimax"`` minimises
log(1 - D(x^)), the seed's formula taken literally. D minimises
-[log D(x) + log(1 - D(x^))] (the BCE of the code, errD_real + errD_fake).

One optimiser, one backward. ``ssrl pretrain`` runs ONE Adam over ``rep.parameters()`` on the
loss ``loss(batch)`` returns, then calls ``backward``. The discriminator is an attribute
(``self.discriminator``, thrown away after pretraining), so its parameters are in that optimiser,
and the loss is built so that one backward gives each player exactly its own gradient:

* D's loss is computed on x^ DETACHED (no gradient to the encoder/decoder);
* the generator's adversarial term is computed with D's parameters FROZEN (``requires_grad``
  off during that forward pass, so the graph holds no edge to them; the gradient still flows
  through D into x^);
* the returned tensor is  G_loss + (D_loss - D_loss.detach()):  its VALUE is the generator's
  objective lambda_rec L_rec + lambda_adv L_adv (what ``pretrain`` logs as ``loss``), its
  gradient is grad G_loss on (encoder, decoder) plus grad D_loss on D; D's loss is logged as
  ``d_loss``. A NaN or infinite D loss still makes the value NaN, so ``pretrain`` stops.

So the two players take SIMULTANEOUS Adam steps on the same batch, where the paper alternates
(D step, then G step on a fresh forward). Because D and the generator are ordinary parameters of
the module, ``state.pt`` holds D's weights and its Adam moments: a resumed run continues exactly
(a discriminator with its own optimiser held as a hidden attribute would lose that state on
resume). The price: one learning rate and Adam's default betas (0.9, 0.999) for both players,
where the code uses lr 2e-4 with beta1 0.5 and a 10x generator learning rate when
0 < wtl2 < 1 (per-group rates do not exist in the loop's single optimiser; and scaling a loss
does not change an Adam step).

Masks (``mask``), each removing ``mask_fraction`` (default 1/4, the paper's share) of the image,
one mask per image, the SAME for every channel (all colours of all stacked frames: a hole in one
frame only would be copied from its neighbour):

``"random_region"`` (default)
    the paper randomises the hole (a fixed central one lets the network latch onto its boundary)
    and uses "random regions" (arbitrary shapes, up to 1/4 of the image) for its feature-learning
    experiments. The public ``train_random.lua`` thresholds a smooth random pattern (bicubic
    upsampling of uniform noise at 0.06 cells per pixel) at density 0.25, keeping windows of
    20-30% area. Here: uniform noise on a ceil(0.06 * H)-cell grid (at least 2), bicubic
    upsampling to H x W, and the round(fraction * H * W) lowest pixels are dropped, so every mask
    has exactly the given area (the code samples one mask per batch; here one per image).
``"center"``
    the central square of side round(H * sqrt(fraction)) (42 px at 84, as 64 of 128 in the paper).
``"random_blocks"``
    the paper's "random block": smaller, possibly overlapping squares of side
    round(H * sqrt(fraction) / 2) (21 px at 84) at uniform positions; of 8 drawn per image, the
    longest prefix whose union stays within fraction * H * W is dropped ("up to 1/4").

Fill (``fill``): dropped pixels are set to the data mean, per channel, estimated on the batch
(the code fills the ImageNet mean colour 2*[117, 104, 123]/255 - 1), or to 0 (``"zero"``).

Other departures: frame stacks (``frame_stack=3``, BaseConfig's default, so the encoder is the one
RL uses; a hole covers all stacked frames) instead of single RGB images; 84x84 frames, not
128x128; the suite's encoder (ReLU, no BatchNorm) and a ``latent_dim``-wide bottleneck instead of
the paper's AlexNet-based encoder with a channel-wise fully connected layer (or the code's
DCGAN-style one with a 4000-d bottleneck, ``nBottleneck``); the decoder predicts the whole frame
and the loss uses its hole only (the paper's inpainting network predicts the central patch plus a
4-7 px overlap border weighted 10x, which the seed's formula does not have); D is a
``disc_arch`` conv trunk of the family (default ``fast``) and a linear logit on the whole
composite image x^ (the code's D sees the predicted patch, or for random
regions the generator's whole output).

``extra_scores``: on held-out frames (masks drawn with a fixed seed), the per-entry mean squared
error of the prediction in the hole (``inpaint_mse``) and of the fill value there
(``fill_mse``, the baseline of predicting the mean); lower is better.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssrl.utils import image_grid, write_png

from ...backbones import ConvTrunk, EncoderConfig, make_encoder, orthogonal_init, to_float_image
from ...control.vae import MirrorDecoder
from ...core import BaseConfig, Need, Representation, register

MASKS = ("random_region", "center", "random_blocks")
FILLS = ("mean", "zero")
GENERATOR_LOSSES = ("non_saturating", "minimax")
REGION_CELLS_PER_PIXEL = 0.06  # pathak22/context-encoder train_random.lua: res = 0.06
MAX_BLOCKS = 8


@dataclasses.dataclass
class ContextEncoderConfig(BaseConfig):
    mask: str = "random_region"  # or "center", "random_blocks"
    mask_fraction: float = 0.25  # share of the image removed (the paper's 1/4)
    fill: str = "mean"  # dropped pixels: the batch's per-channel mean, or "zero"
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    generator_loss: str = "non_saturating"  # or "minimax"
    num_filters: int = 32
    disc_arch: str = "fast"  # the discriminator's conv trunk (the suite's family)
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field, options in (("mask", MASKS), ("fill", FILLS), ("generator_loss", GENERATOR_LOSSES)):
            if getattr(self, field) not in options:
                raise ValueError(f"{name}.{field} must be one of {options}, got {getattr(self, field)!r}")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ValueError(f"{name}.mask_fraction must be in (0, 1), got {self.mask_fraction}")
        if self.lambda_rec < 0 or self.lambda_adv < 0:
            raise ValueError(f"{name}.lambda_rec and lambda_adv must be >= 0, got {self.lambda_rec}, {self.lambda_adv}")

    def check_frame(self, size: int) -> None:
        """Raise if this mask does not fit a ``size`` x ``size`` frame."""
        side = round(size * math.sqrt(self.mask_fraction))
        if self.mask == "center" and not 1 <= side < size:
            raise ValueError(
                f"a centre hole of mask_fraction {self.mask_fraction} on {size}x{size} frames is {side} px wide; "
                f"it must be between 1 and {size - 1}"
            )
        if self.mask == "random_blocks" and round(side / 2) < 1:
            raise ValueError(
                f"random blocks of mask_fraction {self.mask_fraction} on {size}x{size} frames would be "
                f"{round(side / 2)} px wide; use a larger fraction or frame"
            )
        if self.mask == "random_region" and round(self.mask_fraction * size * size) < 1:
            raise ValueError(f"mask_fraction {self.mask_fraction} drops no pixel of a {size}x{size} frame")


# -- masks -----------------------------------------------------------------------------------------


def _drop_lowest(field: torch.Tensor, k: int) -> torch.Tensor:
    """keep mask (B, 1, H, W): 0 at the k lowest values of each image's ``field``, 1 elsewhere."""
    b = field.shape[0]
    flat = field.reshape(b, -1)
    keep = torch.ones_like(flat)
    keep.scatter_(1, flat.topk(k, dim=1, largest=False).indices, 0.0)
    return keep.view_as(field)


def make_keep_masks(
    kind: str, n: int, size: int, fraction: float = 0.25, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """M of the seed text for ``n`` square images: float (n, 1, size, size), 1 kept, 0 dropped
    (see the module docstring for the three kinds)."""
    if kind == "center":
        side = round(size * math.sqrt(fraction))
        lo = (size - side) // 2
        keep = torch.ones(n, 1, size, size, device=device)
        keep[:, :, lo : lo + side, lo : lo + side] = 0.0
        return keep
    if kind == "random_region":
        cells = max(2, math.ceil(REGION_CELLS_PER_PIXEL * size))
        noise = torch.rand(n, 1, cells, cells, generator=generator, device=device)
        field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
        return _drop_lowest(field, int(round(fraction * size * size)))
    if kind == "random_blocks":
        side = max(1, round(size * math.sqrt(fraction) / 2))
        top = torch.randint(0, size - side + 1, (n, MAX_BLOCKS, 1, 1), generator=generator, device=device)
        left = torch.randint(0, size - side + 1, (n, MAX_BLOCKS, 1, 1), generator=generator, device=device)
        rows = torch.arange(size, device=device).view(1, 1, size, 1)
        cols = torch.arange(size, device=device).view(1, 1, 1, size)
        blocks = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (n, K, H, W)
        unions = blocks.cummax(dim=1).values  # union of the first k+1 blocks
        area = unions.flatten(2).sum(2)  # (n, K), non-decreasing in k
        k = (area <= fraction * size * size).sum(1) - 1  # the longest prefix within the budget (>= 0)
        hole = unions[torch.arange(n, device=device), k.clamp(min=0)]
        return (~hole).float().unsqueeze(1)
    raise ValueError(f"unknown mask {kind!r}; use one of {MASKS}")


def fill_values(x: torch.Tensor, fill: str) -> torch.Tensor:
    """The value dropped pixels take, (1, C, 1, 1): the batch's per-channel mean, or 0."""
    if fill == "mean":
        return x.detach().mean(dim=(0, 2, 3), keepdim=True)
    if fill == "zero":
        return torch.zeros(1, x.shape[1], 1, 1, device=x.device, dtype=x.dtype)
    raise ValueError(f"unknown fill {fill!r}; use one of {FILLS}")


def remove_region(x: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """M . x with the dropped pixels set to ``fill`` (every channel)."""
    return keep * x + (1.0 - keep) * fill


# -- losses (shared with bigan.py) -------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Inside the block, ``module``'s parameters are constants to autograd: graphs built there
    carry gradients through the module to its inputs but none to its parameters (they are
    left out of the graph, so a later backward cannot reach them either)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-[E log D(real) + E log(1 - D(fake))], D = sigmoid(logit): BCE with labels 1 and 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's side: -E log D(fake) (non-saturating) or E log(1 - D(fake)) (minimax)."""
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"unknown generator loss {kind!r}; use one of {GENERATOR_LOSSES}")


def masked_l2(prediction: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """||(1 - M) . (x - F)||^2 divided by the number of dropped entries (over all channels)."""
    hole = (1.0 - keep).expand_as(target)
    return (hole * (target - prediction).pow(2)).sum() / hole.sum().clamp(min=1.0)


def context_encoder_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    keep: torch.Tensor,
    fake_logits: torch.Tensor,
    lambda_rec: float = 0.999,
    lambda_adv: float = 0.001,
    generator_loss: str = "non_saturating",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lambda_rec L_rec + lambda_adv L_adv, L_rec, L_adv): the generator's objective, given D's
    logits on the composite images."""
    rec = masked_l2(prediction, target, keep)
    adv = generator_adversarial_loss(fake_logits, generator_loss)
    return lambda_rec * rec + lambda_adv * adv, rec, adv


class ImageDiscriminator(nn.Module):
    """Image -> logit of "real": a conv trunk of the suite's family, flattened, then Linear."""

    def __init__(self, arch: str, in_shape, num_filters: int = 32) -> None:
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        self.trunk = ConvTrunk(EncoderConfig(arch, c, (h, w), 1, num_filters))
        self.fc = nn.Linear(math.prod(self.trunk.output_shape), 1)
        self.apply(orthogonal_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x).flatten(1)).squeeze(1)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@register
class ContextEncoder(Representation):
    name = "context-encoder"
    needs = Need.FRAMES
    Config = ContextEncoderConfig

    def __init__(self, config: ContextEncoderConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        c, h, w = self.obs_shape
        if h != w:
            raise ValueError(f"context-encoder needs square frames, got {h}x{w}")
        config.check_frame(h)
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, config.num_filters)
        self.decoder = MirrorDecoder(self.encoder.trunk, config.latent_dim, c)
        self.discriminator = ImageDiscriminator(config.disc_arch, self.obs_shape, config.num_filters)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def keep_masks(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.config
        return make_keep_masks(cfg.mask, n, self.obs_shape[-1], cfg.mask_fraction, generator, self.device)

    def predict(self, obs: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target x, masked input M . x (+ fill), prediction F(M . x) and composite x^."""
        x = to_float_image(obs)
        fill = fill_values(x, self.config.fill)
        masked = remove_region(x, keep, fill)
        prediction = torch.sigmoid(self.decoder(self.encoder(masked)))
        composite = keep * x + (1.0 - keep) * prediction
        return {"target": x, "fill": fill, "masked": masked, "prediction": prediction, "composite": composite}

    def loss(self, batch):
        """``batch["keep"]`` (B, 1, H, W) fixes the masks; otherwise they are drawn."""
        keep = batch.get("keep")
        if keep is None:
            keep = self.keep_masks(len(batch["obs"]))
        p = self.predict(batch["obs"], keep.float())
        cfg = self.config
        # D's own loss: real frames against the composites, detached from the generator.
        real_logits = self.discriminator(p["target"])
        fake_logits = self.discriminator(p["composite"].detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        # The generator's: D's parameters frozen, the gradient flows through D into the hole.
        with frozen(self.discriminator):
            g_logits = self.discriminator(p["composite"])
        g_loss, rec, adv = context_encoder_loss(
            p["prediction"], p["target"], keep, g_logits, cfg.lambda_rec, cfg.lambda_adv, cfg.generator_loss
        )
        d_acc = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
        metrics = {"rec": rec.detach(), "adv": adv.detach(), "d_loss": d_loss.detach(), "d_acc": d_acc.detach()}
        return g_loss + (d_loss - d_loss.detach()), metrics

    @torch.no_grad()
    def inpaint(self, frames, seed: int = 0, keep: torch.Tensor | None = None) -> np.ndarray:
        """``frames`` with a hole (the config's masks drawn with ``seed``, or ``keep``) filled in
        by the network, uint8 (B, C, H, W), for pictures."""
        obs = torch.as_tensor(np.asarray(frames)).to(self.device)
        if keep is None:
            keep = self.keep_masks(len(obs), torch.Generator(device=self.device).manual_seed(seed))
        with self.evaluating():
            return _to_uint8(self.predict(obs, keep.to(self.device).float())["composite"])

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``inpainting.png``: per held-out frame, the input with its hole, the in-painting, and
        the original (newest frame of each stack)."""
        idx = np.linspace(0, len(data) - 1, 6).astype(int)
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        keep = self.keep_masks(len(obs), torch.Generator(device=self.device).manual_seed(0))
        with self.evaluating(), torch.no_grad():
            masked = _to_uint8(self.predict(torch.as_tensor(obs).to(self.device), keep.float())["masked"])
        filled = self.inpaint(obs, keep=keep)
        rows = [[masked[i, -3:], filled[i, -3:], obs[i, -3:]] for i in range(len(obs))]
        return [write_png(folder / "inpainting.png", image_grid(rows))]

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out squared error per dropped entry of the prediction and of the fill (lower is better)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        generator = torch.Generator(device=self.device).manual_seed(0)

        def errors(x: torch.Tensor) -> torch.Tensor:
            keep = self.keep_masks(len(x), generator)
            p = self.predict(x, keep)
            hole = (1.0 - keep).expand_as(p["target"]).flatten(1)
            sq = lambda y: (hole * (p["target"] - y).pow(2).flatten(1)).sum(1)  # noqa: E731
            return torch.stack([sq(p["prediction"]), sq(p["masked"]), hole.sum(1)], 1)

        err = self.map_batches(errors, obs, batch_size=64).sum(0)
        return {"inpaint_mse": float(err[0] / err[2]), "fill_mse": float(err[1] / err[2])}


__all__ = [
    "ContextEncoder",
    "ContextEncoderConfig",
    "ImageDiscriminator",
    "context_encoder_loss",
    "discriminator_loss",
    "frozen",
    "generator_adversarial_loss",
    "make_keep_masks",
    "masked_l2",
    "remove_region",
]
