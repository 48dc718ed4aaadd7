"""beta-VAE, as RIG uses it (Nair et al. 2018; rlkit's ``ConvVAE``).

A Gaussian encoder q_phi(z|s) = N(mu_phi(s), diag sigma_phi^2(s)) and a decoder p_psi(s|z),
trained on single frames (``frame_stack=1``, like RIG) with the source text's loss

    L_beta-VAE = -E_{z ~ q_phi(z|s)}[ log p_psi(s|z) ] + beta D_KL( q_phi(z|s) || p(z) ),   p(z) = N(0, I)
    e(s) := mu_phi(s)

(the source writes the prior as p_psi(s); it is the standard normal over z). The expectation is
estimated with one reparameterised sample z = mu + sigma * eps, eps ~ N(0, I); the KL is in
closed form (:func:`~ssrl.representations.losses.gaussian_kl`), summed over latent dimensions.
Both terms are per image and averaged over the batch.

Likelihood normalisation (``likelihood``; beta values do NOT transfer between the two):

``"bernoulli"`` (default)
    -log p(s|z) = sum over all C*H*W pixels of BCE(sigmoid(logit), s), s in [0, 1]: the summed
    binary cross-entropy, in nats per image, as rlkit's Bernoulli decoder (BCE mean times the
    image length). Default beta = 10/128 (~0.078), RIG's pusher value for this likelihood.
``"gaussian"``
    -log p(s|z) = 1/2 sum over pixels (s - sigmoid(logit))^2: the exact negative log-density of a
    unit-variance Gaussian per pixel (in [0, 1] pixel units), summed over pixels, with the
    constant C*H*W/2 log(2 pi) dropped. NOT rlkit's ``gaussian_identity_variance`` (a per-pixel
    MEAN squared error, against which its beta=20 is a far stronger KL weight). A unit variance
    is a very broad likelihood for [0, 1] pixels (it equals a beta=1 VAE with sigma^2 = beta), so
    the default beta is small: 1/128 (~0.0078), a tenth of the Bernoulli one. On 64-pixel
    PushRandomObject frames (2000 steps) it settles at a similar KL to the Bernoulli default
    (about 67 vs 50 nats) with the same held-out position probe (R^2 0.48 for both).

Both are true negative log-likelihoods in nats, so beta=1 is the ELBO for either; they still
differ in sharpness (BCE's curvature at a pixel is 1/(p(1-p)) >= 4, the unit Gaussian's is 1).

Architecture: the encoder is the suite's conv trunk (:class:`~ssrl.representations.backbones.
ConvTrunk`, ``arch="fast"`` by default: the ``dmc`` trunk keeps 35x35 maps at 84 pixels, too big
to mirror on a CPU) flattened (no pooling, positions matter), then two Linear heads, initialised
uniform(+-1e-3) as in rlkit. The log-variance is floored as rlkit does:
logvar = log(min_variance) + |fc_logvar(h)|, so sigma^2 >= ``min_variance`` (1e-3): the KL's
-log sigma^2 term cannot run off as sigma -> 0 (no upper bound, as in rlkit: the KL itself
penalises large variances). The decoder mirrors the trunk: a Linear layer to the trunk's
output map, then one transposed conv per conv of the trunk (same kernels and strides, in reverse
order, output padding chosen to land exactly on each layer's input size), ReLU between, logits
out; images are sigmoid(logits) for both likelihoods (a sigmoid rather than rlkit's clamp for the
Gaussian mean, so pixels predicted out of range still get a gradient).

Prior and goals (RIG's steps 3 and 5): after training, ``fit_prior(data)`` stores the
per-dimension mean and standard deviation of the encoder means over the data (buffers, saved in
checkpoints); ``sample_goals(n, rng)`` draws latent goals from that fitted prior (or from N(0, I)
with ``prior="standard"``, rlkit's ``sample_from_true_prior``); ``decode(z)`` turns latents into
images. ``ssrl pretrain`` fits the prior on its training data when it ends (``after_pretraining``) and
saves it with the model; call ``fit_prior`` yourself after training by other means.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import ConvTrunk, EncoderConfig, orthogonal_init
from ..core import BaseConfig, Need, Representation, register
from ..losses import gaussian_kl

LIKELIHOODS = ("bernoulli", "gaussian")
DEFAULT_BETA = {"bernoulli": 10 / 128, "gaussian": 1 / 128}
PRIORS = ("fitted", "standard")


@dataclasses.dataclass
class VAEConfig(BaseConfig):
    default_beta: ClassVar[dict[str, float]] = DEFAULT_BETA

    latent_dim: int = 16
    arch: str = "fast"
    frame_stack: int = 1  # single frames, like RIG
    lr: float = 1e-3
    batch_size: int = 64
    likelihood: str = "bernoulli"  # or "gaussian" (see the module docstring)
    beta: float | None = None  # None: default_beta[likelihood]
    min_variance: float = 1e-3  # posterior variance floor (rlkit)
    num_filters: int = 32
    # The data's camera to train on (default its first), or a per-step image it recorded (Grasp's
    # "o": the lifted objects, an autoencoder of goal-like images).
    camera: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"{type(self).__qualname__}.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}"
            )
        if self.beta is None:
            self.beta = self.default_beta[self.likelihood]
        if self.beta < 0:
            raise ValueError(f"{type(self).__qualname__}.beta must be >= 0, got {self.beta}")
        if not self.min_variance > 0:
            raise ValueError(f"{type(self).__qualname__}.min_variance must be positive, got {self.min_variance}")


def reconstruction_nll(logits: torch.Tensor, target: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(s|z) per image (nats), summed over all pixels; ``target`` in [0, 1].

    bernoulli: sum BCE(sigmoid(logits), target); gaussian: 1/2 sum (target - sigmoid(logits))^2
    (unit variance, constant dropped).
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif likelihood == "gaussian":
        nll = 0.5 * (torch.sigmoid(logits) - target).pow(2)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; use one of {LIKELIHOODS}")
    return nll.flatten(1).sum(1)


def pixels_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1] (uint8 are divided by 255; floats are taken as already in
    [0, 1]). Not the agents' ``to_unit``, which rescales actions to [-1, 1]."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) unless given."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


class GaussianEncoder(nn.Module):
    """Image (and optionally a condition vector) -> (mu, logvar) of q(z|s[, c]).

    ``forward(x)`` returns ``mu`` (e(s)); ``distribution(x, c)`` returns ``(mu, logvar)`` with
    logvar = log(min_variance) + |fc_logvar(h)|; h = [flatten(trunk(x)), c].
    """

    def __init__(
        self, arch: str, in_shape, latent_dim: int, min_variance: float = 1e-3, num_filters: int = 32, cond_dim: int = 0
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in in_shape)
        self.trunk = ConvTrunk(EncoderConfig(arch, self.input_shape[0], self.input_shape[1:], latent_dim, num_filters))
        self.cond_dim = cond_dim
        flat = math.prod(self.trunk.output_shape) + cond_dim
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.log_min_variance = math.log(min_variance)
        self.apply(orthogonal_init)
        for head in (self.fc_mu, self.fc_logvar):  # rlkit: last layers uniform(+-1e-3)
            nn.init.uniform_(head.weight, -1e-3, 1e-3)
            nn.init.uniform_(head.bias, -1e-3, 1e-3)

    def features(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = self.trunk(x).flatten(1)
        if self.cond_dim:
            if c is None:
                raise ValueError("this encoder is conditioned: pass the context vector c")
            h = torch.cat([h, c.expand(len(h), -1) if len(c) == 1 else c], dim=1)
        return h

    def distribution(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x, c)
        return self.fc_mu(h), self.log_min_variance + self.fc_logvar(h).abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_mu(self.features(x))


class MirrorDecoder(nn.Module):
    """Latent -> image logits, mirroring a :class:`ConvTrunk`: Linear to the trunk's output map,
    then a transposed conv for each conv of the trunk's main path (reversed), ReLU between."""

    def __init__(self, trunk: ConvTrunk, in_dim: int, out_channels: int) -> None:
        super().__init__()
        convs: list[tuple[nn.Conv2d, tuple[int, int]]] = []
        hooks = []
        for name, module in trunk.net.named_modules():
            if isinstance(module, nn.Conv2d) and "skip" not in name:
                hooks.append(
                    module.register_forward_hook(lambda m, inp, out: convs.append((m, tuple(inp[0].shape[-2:]))))
                )
        with torch.no_grad():
            trunk.net(torch.zeros(1, *trunk.input_shape))
        for h in hooks:
            h.remove()
        self.map_shape = tuple(trunk.output_shape)
        self.fc = nn.Linear(in_dim, math.prod(self.map_shape))
        layers: list[nn.Module] = []
        size = self.map_shape[1:]
        for i, (conv, in_size) in enumerate(reversed(convs)):
            last = i == len(convs) - 1
            k, s, p = conv.kernel_size, conv.stride, conv.padding
            base = [(size[d] - 1) * s[d] - 2 * p[d] + k[d] for d in range(2)]
            pad_out = tuple(in_size[d] - base[d] for d in range(2))
            c_out = out_channels if last else conv.in_channels
            layers.append(nn.ConvTranspose2d(conv.out_channels, c_out, k, s, p, output_padding=pad_out))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            size = in_size
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # as the trunk: faster on CPU
        self.output_shape = (out_channels, *trunk.input_shape[1:])
        nn.init.orthogonal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(len(z), *self.map_shape)
        return self.net(h.contiguous(memory_format=torch.channels_last))


class _VAEBase(Representation):
    """What both VAEs share: config checks, the prior buffers, decoding helpers."""

    example_env = "ssrl/PushRandomObject-v0"  # RIG's setting: goal images of a pushed object

    def after_pretraining(self, data) -> None:
        """RIG's step 3: fit the prior to the encodings of the training data; saved with the model."""
        self.fit_prior(data)

    def _init_prior(self, dim: int) -> None:
        self.register_buffer("prior_mu", torch.zeros(dim))
        self.register_buffer("prior_std", torch.ones(dim))
        self.register_buffer("prior_fitted", torch.zeros((), dtype=torch.bool))

    def _draw(self, n: int, rng: np.random.Generator, prior: str) -> np.ndarray:
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        eps = rng.standard_normal((n, self.config.latent_dim)).astype(np.float32)
        if prior == "standard":
            return eps
        if not bool(self.prior_fitted):
            raise ValueError("the prior is not fitted: call fit_prior(data) after training, or pass prior='standard'")
        return self.prior_mu.cpu().numpy() + self.prior_std.cpu().numpy() * eps

    def _store_prior(self, z: np.ndarray) -> dict[str, np.ndarray]:
        self.prior_mu.copy_(torch.as_tensor(z.mean(0)))
        self.prior_std.copy_(torch.as_tensor(z.std(0)))
        self.prior_fitted.fill_(True)
        return {"mu": z.mean(0), "std": z.std(0)}

    def _frame_indices(self, data, max_frames: int | None, seed: int) -> np.ndarray:
        idx = np.arange(len(data))
        if max_frames is not None and len(idx) > max_frames:
            idx = np.sort(np.random.default_rng(seed).choice(idx, max_frames, replace=False))
        return idx

    @staticmethod
    def _images(logits: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(logits).float().cpu().numpy()


@register
class BetaVAE(_VAEBase):
    name = "beta-vae"
    needs = Need.FRAMES
    Config = VAEConfig

    def __init__(self, config: VAEConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = GaussianEncoder(
            config.arch, obs_shape, config.latent_dim, config.min_variance, config.num_filters
        )
        self.decoder = MirrorDecoder(self.encoder.trunk, config.latent_dim, obs_shape[0])
        self._init_prior(config.latent_dim)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = data.sample_frames(batch_size, rng, view=self.config.camera)
        return {"obs": data.stack(idx, self.config.camera, self.config.frame_stack)}

    def terms(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image ELBO terms: ``recon`` (-log p(s|z)), ``kl``, and mu, logvar, z, logits."""
        target = pixels_to_unit(x)
        mu, logvar = self.encoder.distribution(x)
        z = reparameterize(mu, logvar, eps)
        logits = self.decoder(z)
        return {
            "recon": reconstruction_nll(logits, target, self.config.likelihood),
            "kl": gaussian_kl(mu, logvar),
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "logits": logits,
        }

    def loss(self, batch):
        """mean_batch[ -log p(s|z) + beta KL(q(z|s) || N(0, I)) ]; ``batch["eps"]`` fixes the noise."""
        t = self.terms(batch["obs"], batch.get("eps"))
        loss = (t["recon"] + self.config.beta * t["kl"]).mean()
        return loss, {"recon": t["recon"].mean().detach(), "kl": t["kl"].mean().detach()}

    # -- RIG: prior, goals, images ----------------------------------------------------------------

    @torch.no_grad()
    def fit_prior(self, data, max_frames: int | None = 20000, seed: int = 0) -> dict[str, np.ndarray]:
        """Fit p(z) = N(mean, diag std^2) of the encoder means over ``data``'s frames (RIG step 3)."""
        idx = self._frame_indices(data, max_frames, seed)
        z = self.embed(data.stack(idx, self.config.camera, self.config.frame_stack))
        return self._store_prior(z)

    def sample_goals(self, n: int, rng: np.random.Generator, prior: str = "fitted") -> np.ndarray:
        """``n`` latent goals (float32 ``(n, latent_dim)``) from the fitted prior, or N(0, I)
        with ``prior="standard"``."""
        return self._draw(n, rng, prior)

    def goal_sampler(self):
        """RIG's imagined goals: the fitted prior once fitted (``ssrl pretrain`` fits it), else N(0, I)."""
        prior = "fitted" if bool(self.prior_fitted) else "standard"
        return lambda n, rng, like=None: self.sample_goals(n, rng, prior)

    def goal_decoder(self):
        """Imagined goals as uint8 images (the decoder's mean, rounded): how RIG's online
        fine-tuning keeps a goal it can re-encode."""
        return lambda z: np.round(self.decode(z) * 255.0).astype(np.uint8)

    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """Latents -> images, float32 ``(n, C, H, W)`` in [0, 1] (the decoder's mean)."""
        with self.evaluating():
            return self._images(self.decoder(torch.as_tensor(np.asarray(z, np.float32)).to(self.device)))

    @torch.no_grad()
    def reconstruct(self, obs) -> np.ndarray:
        """decode(e(obs)): the reconstruction from the encoder mean, float32 in [0, 1]."""
        return self.decode(self.embed(obs))
