"""Denoising autoencoder (Vincent, Larochelle, Bengio and Manzagol, ICML 2008).

The input x (pixels in [0, 1]) is corrupted by a stochastic map x~ ~ q_D(x~ | x), encoded,
decoded, and the decoder must give back the CLEAN image:

    L = 1/N sum_n  L_H( x_n, g(phi(x~_n)) ),     x~_n ~ q_D(. | x_n)

with phi the suite's full-frame encoder (``self.encoder``, the representation) and g a decoder of
the shared family (:class:`~ssrl.representations.control.vae.MirrorDecoder`, the transposed
mirror of the encoder's conv trunk, fed with the encoder's ``latent_dim`` embedding) whose output
goes through a sigmoid. The seed text describes the method in words only ("recover an image from
a version that is partially corrupted or has random noise"); the loss is the paper's.

Corruption (``corruption``):

``"masking"`` (default, the paper's)
    a fixed number round(nu * d) of the d input units of each image is chosen at random and set
    to 0, the others left untouched (Vincent et al. zero a fixed number nu*d of randomly chosen
    components, not a Bernoulli draw per component, so every image loses exactly that share). With
    ``shared_mask=True`` (default) a unit is a PIXEL LOCATION: the same (h, w) is zeroed in all
    channels, i.e. all three colours of all stacked frames, d = H*W. Zeroing single channels
    (``shared_mask=False``, d = C*H*W, the paper's per-component rule applied to channels) lets
    the network copy a masked value from the same pixel's other colours or from the neighbouring
    frame of the stack, which are nearly equal, so it learns far less about the scene.
    ``nu`` = ``mask_fraction`` (default 0.25, a destruction level the paper uses). Pitfall: a
    zeroed pixel that was already black is not corrupted at all; on DMC cartpole frames (about
    65% of pixels are 0) nu = 0.25 changes few pixels (held-out corrupted-input MSE 0.007,
    against 0.04 for Gaussian noise of sigma 0.2).
``"gaussian"``
    additive isotropic Gaussian noise, x~ = x + sigma * eps, eps ~ N(0, I) per component (sigma =
    ``noise_std``, default 0.1 in [0, 1] pixel units); not clipped to [0, 1] (the encoder takes
    any float image), as the corruption is defined.

Reconstruction loss (``reconstruction``), per image, SUMMED over its C*H*W components and
averaged over the batch, the clean image x in [0, 1] as target and z = sigmoid(g(.)):

``"cross_entropy"`` (default)
    L_H(x, z) = - sum_k [ x_k log z_k + (1 - x_k) log(1 - z_k) ], the reconstruction
    cross-entropy Vincent et al. use for inputs in [0, 1] (with a sigmoid decoder). Its minimum
    over z is at z = x (also for grey levels, where it equals the entropy of x, not 0), and its
    gradient in the logits, z - x, does not vanish where the sigmoid saturates.
``"squared"``
    L(x, z) = sum_k (x_k - z_k)^2, the squared error (the paper's choice for real-valued inputs).

Frames: whole frame stacks (``frame_stack=3``, BaseConfig's default) at any square size; the
decoder outputs all 3k channels. frame_stack=1 makes a step about 2x cheaper (measured on CPU,
``fast``, 84 px, batch 32), but RL would then encode each frame of its stack separately (three
encoder passes, a 3 x latent_dim observation); the default is kept, so the encoder is the one RL
uses on its stacked observations, as for the other pretext methods. The encoder is
``make_encoder(arch, C, (H, W), latent_dim)`` with the default flatten head (a whole-image
method), BaseConfig's ``dmc`` architecture by default.

Departures from the paper and public code:

* The paper's DAE is a one-hidden-layer (tied-weight) autoencoder on flattened MNIST-like
  vectors, stacked greedily; here encoder and decoder are conv nets (the suite's encoder and its
  transposed mirror), untied, trained end to end with Adam (the pretraining loop's optimiser)
  rather than SGD.
* Masking zeroes whole pixel locations by default (see above); the paper masks components.
* There is no public reference implementation that this follows (the method is small; the
  Theano deep-learning tutorial ``dA`` is the classic one, with per-component Bernoulli masks).

``extra_scores``: on held-out frames, the per-pixel mean squared error of the denoised output
against the clean image (``denoise_mse``) and, as the baseline a copy of the input would score,
that of the corrupted input itself (``corrupted_mse``); both lower is better.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import make_encoder, to_float_image
from ...control.vae import MirrorDecoder
from ...core import BaseConfig, Need, Representation, register

CORRUPTIONS = ("masking", "gaussian")
RECONSTRUCTIONS = ("cross_entropy", "squared")


@dataclasses.dataclass
class DenoisingAEConfig(BaseConfig):
    corruption: str = "masking"  # or "gaussian"
    mask_fraction: float = 0.25  # nu: the share of units set to 0 (masking)
    shared_mask: bool = True  # masking: a unit is a pixel location, zeroed in every channel
    noise_std: float = 0.1  # sigma of the additive Gaussian noise, in [0, 1] pixel units
    reconstruction: str = "cross_entropy"  # or "squared"
    num_filters: int = 32
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"{name}.corruption must be one of {CORRUPTIONS}, got {self.corruption!r}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"{name}.reconstruction must be one of {RECONSTRUCTIONS}, got {self.reconstruction!r}")
        if not 0.0 <= self.mask_fraction < 1.0:
            raise ValueError(f"{name}.mask_fraction (nu) must be in [0, 1), got {self.mask_fraction}")
        if self.noise_std < 0:
            raise ValueError(f"{name}.noise_std (sigma) must be >= 0, got {self.noise_std}")


def masking_noise(
    x: torch.Tensor, fraction: float, shared: bool = True, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero exactly round(fraction * d) random units of each image of ``x`` (B, C, H, W); a unit
    is a pixel location (all channels at once, d = H*W) when ``shared``, else a component
    (d = C*H*W). Returns (corrupted, keep) with keep 1 where the input is left untouched
    (shape (B, 1, H, W) when shared, else (B, C, H, W))."""
    b, c, h, w = x.shape
    shape = (b, 1, h, w) if shared else (b, c, h, w)
    units = int(np.prod(shape[1:]))
    k = int(round(fraction * units))
    keep = torch.ones(b, units, device=x.device, dtype=x.dtype)
    if k > 0:
        scores = torch.rand(b, units, device=x.device, generator=generator)
        keep.scatter_(1, scores.topk(k, dim=1, largest=False).indices, 0.0)
    keep = keep.view(shape)
    return x * keep, keep


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + std * eps, eps ~ N(0, I) per component (not clipped)."""
    if std == 0:
        return x.clone()
    return x + std * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image loss, summed over all components: cross-entropy of sigmoid(logits) against the
    target in [0, 1], or the squared error (target - sigmoid(logits))^2."""
    if kind == "cross_entropy":
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "squared":
        per = (torch.sigmoid(logits) - target).pow(2)
    else:
        raise ValueError(f"unknown reconstruction {kind!r}; use one of {RECONSTRUCTIONS}")
    return per.flatten(1).sum(1)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@register
class DenoisingAE(Representation):
    name = "denoising-ae"
    needs = Need.FRAMES
    Config = DenoisingAEConfig

    def __init__(self, config: DenoisingAEConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        c, h, w = self.obs_shape
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, config.num_filters)
        self.decoder = MirrorDecoder(self.encoder.trunk, config.latent_dim, c)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """q_D(x~ | x) for float images in [0, 1]."""
        cfg = self.config
        if cfg.corruption == "masking":
            return masking_noise(x, cfg.mask_fraction, cfg.shared_mask, generator)[0]
        return gaussian_noise(x, cfg.noise_std, generator)

    def terms(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Clean target, corrupted input, decoder logits and the per-image loss."""
        clean = to_float_image(obs)
        noisy = self.corrupt(clean, generator)
        logits = self.decoder(self.encoder(noisy))
        return {
            "clean": clean,
            "noisy": noisy,
            "logits": logits,
            "loss": reconstruction_loss(logits, clean, self.config.reconstruction),
        }

    def loss(self, batch):
        t = self.terms(batch["obs"])
        mse = (torch.sigmoid(t["logits"]) - t["clean"]).pow(2).mean()
        return t["loss"].mean(), {"mse": mse.detach()}

    @torch.no_grad()
    def denoise(self, frames, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(corrupted, denoised) versions of ``frames`` as uint8, for pictures."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with self.evaluating():
            t = self.terms(torch.as_tensor(np.asarray(frames)).to(self.device), generator)
        return _to_uint8(t["noisy"]), _to_uint8(torch.sigmoid(t["logits"]))

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out per-pixel MSE of the denoised frames and of the corrupted inputs (lower is better)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        generator = torch.Generator(device=self.device).manual_seed(0)

        def errors(x: torch.Tensor) -> torch.Tensor:
            t = self.terms(x, generator)
            out = (torch.sigmoid(t["logits"]) - t["clean"]).pow(2).flatten(1).mean(1)
            return torch.stack([out, (t["noisy"] - t["clean"]).pow(2).flatten(1).mean(1)], 1)

        err = self.map_batches(errors, obs, batch_size=64).mean(0)
        return {"denoise_mse": float(err[0]), "corrupted_mse": float(err[1])}


__all__ = ["DenoisingAE", "DenoisingAEConfig", "gaussian_noise", "masking_noise", "reconstruction_loss"]
