"""BiGAN: bidirectional GAN (Donahue, Krähenbühl and Darrell, ICLR 2017).

An encoder E (``self.encoder``, the representation: ``make_encoder(arch, C, (H, W), latent_dim)``,
the default flatten head of whole-image methods) maps data to latents, a generator G maps
latents z ~ p_z to images, and a discriminator D judges JOINT pairs (x, z):

    min_{G,E} max_D V(D, E, G)
    V(D, E, G) = E_{x ~ p_x}[ log D(x, E(x)) ] + E_{z ~ p_z}[ log(1 - D(G(z), z)) ]

(the seed's formula, with E deterministic so p_E(z|x) puts all its mass on E(x), and G
deterministic. The seed's prose calls (x, E(x)) the "generated" pair and (G(z), z) the "real"
one; its formula, like the paper, gives D the label 1 on (x, E(x)), which is what is done here.)
Both expectations are averages over the batch: N frames and N prior draws.

Losses: D minimises -V. E and G minimise, by default (``generator_loss="non_saturating"``), the
paper's "inverted" objective -E log(1 - D(x, E(x))) - E log D(G(z), z) (the labels swapped, as in
Goodfellow et al.'s non-saturating generator loss; same fixed point, stronger gradients early on);
``"minimax"`` makes them minimise V itself.

One optimiser, one backward (as in :mod:`.context_encoder`): ``ssrl pretrain`` runs ONE Adam over
``rep.parameters()``, D included (an attribute, thrown away after pretraining). D's loss is computed
on DETACHED E(x) and G(z); E/G's loss with D's parameters FROZEN (no graph edges to them, the
gradient flows through D into E(x) and G(z)); the returned tensor is
EG_loss + (D_loss - D_loss.detach()): its value is E/G's objective (logged as ``loss``; D's is
``d_loss``), its gradient gives each player exactly its own. The players therefore take
simultaneous Adam steps (the paper alternates), with one learning rate and Adam's default
betas (0.9, 0.999) (the paper, like DCGAN, uses Adam with lr 2e-4 and beta1 0.5; on cartpole
frames lr 2e-4 left D as dominant as BaseConfig's 1e-3 and probed worse, so 1e-3 is kept).
D's weights and Adam moments are in ``state.pt``, so a resumed run continues exactly. The real
pair's image features are computed once: D's trunk on x is data-only, so E's side reuses them
detached.

The prior. The paper draws z ~ U[-1, 1]^d. Our encoder ends with a LayerNorm: every E(x) is
gamma . n + beta with n of zero mean and unit variance across its d dimensions, i.e. on a sphere of
radius sqrt(d) in a hyperplane; D could tell any prior off that set from E(x) by its norm alone, and
E could never match it. So p_z is the LayerNorm's image of a standard normal:
z = gamma . normalise(u) + beta, u ~ N(0, I_d) (the direction of a centred Gaussian is uniform, so
normalise(u) is uniform on that sphere), with E's current gamma and beta DETACHED (the prior is
data for the fake pair, not a path for E's gradient). With ``latent_dim`` d the sphere has d - 2
free dimensions.

Architectures: G is a decoder of the shared family
(:class:`~ssrl.representations.control.vae.MirrorDecoder`, the transposed mirror of E's trunk)
with a sigmoid, so G(z) is an image in [0, 1] like the real frames; D runs a conv trunk of the
family (``disc_arch``, default ``fast``) on x, flattened, Linear to ``disc_hidden``; z goes
through Linear to ``disc_hidden``; the concatenation through LeakyReLU(0.2) -> Linear(2h, h) ->
LeakyReLU(0.2) -> Linear(h, 1). No BatchNorm or dropout: the one backward holds two D passes per
pair (D's and the frozen one), which must be the same deterministic function.

Frames: whole frame stacks (``frame_stack=3``, BaseConfig's default: G generates 3-frame stacks
and E is the encoder RL uses); frame_stack=1 makes a step only about 1.35x cheaper (E's first
conv, G's last layer and D's first conv; measured on CPU, ``fast``, 84 px, batch 32).

Other departures: the suite's conv encoder, ``latent_dim`` 50 and 84x84 frame stacks of our envs
rather than the paper's nets and data sets; no public PyTorch reference implementation was
followed (the original is jeffdonahue/bigan, in Theano).

``extra_scores``: on held-out frames, the per-pixel mean squared error of G(E(x)) against x
(``reconstruction_mse``, lower is better; BiGAN does not train it, it measures how far E inverts
G) and D's accuracy on held-out pairs (``disc_acc``; 0.5 at the game's equilibrium, near 1 when D
wins: this is a diagnostic, not a larger-is-better score).
"""

from __future__ import annotations

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
from .context_encoder import GENERATOR_LOSSES, discriminator_loss, frozen


@dataclasses.dataclass
class BiGANConfig(BaseConfig):
    generator_loss: str = "non_saturating"  # or "minimax"
    num_filters: int = 32
    disc_arch: str = "fast"  # D's conv trunk on x (the suite's family)
    disc_hidden: int = 256
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"{name}.generator_loss must be one of {GENERATOR_LOSSES}, got {self.generator_loss!r}")
        if self.latent_dim < 3:
            raise ValueError(
                f"{name}.latent_dim must be >= 3 (the prior lives on a (d-2)-sphere), got {self.latent_dim}"
            )
        if self.disc_hidden < 1:
            raise ValueError(f"{name}.disc_hidden must be >= 1, got {self.disc_hidden}")


def value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V = E log D(x, E(x)) + E log(1 - D(G(z), z)), D = sigmoid(logit), from D's logits on the
    real pairs (x, E(x)) and the fake pairs (G(z), z)."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


def encoder_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """E and G's loss: V (minimax), or -E log(1 - D(x, E(x))) - E log D(G(z), z) (non-saturating)."""
    if kind == "minimax":
        return value(real_logits, fake_logits)
    if kind == "non_saturating":
        return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown generator loss {kind!r}; use one of {GENERATOR_LOSSES}")


class JointDiscriminator(nn.Module):
    """(x, z) -> logit of "real pair": conv trunk on x and Linear on z, joined by an MLP."""

    def __init__(self, arch: str, in_shape, latent_dim: int, hidden: int = 256, num_filters: int = 32) -> None:
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        self.trunk = ConvTrunk(EncoderConfig(arch, c, (h, w), 1, num_filters))
        self.fc_x = nn.Linear(math.prod(self.trunk.output_shape), hidden)
        self.fc_z = nn.Linear(latent_dim, hidden)
        self.joint = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )
        self.apply(orthogonal_init)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_x(self.trunk(x).flatten(1))

    def judge(self, hx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([hx, self.fc_z(z)], dim=1)).squeeze(1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.judge(self.image_features(x), z)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _rename_old_generator(module, state_dict, prefix, *args) -> None:
    """Checkpoints saved before G's rename (``generator.*``) load as ``image_generator.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "generator.")]:
        state_dict[prefix + "image_" + key[len(prefix) :]] = state_dict.pop(key)


@register
class BiGAN(Representation):
    name = "bigan"
    needs = Need.FRAMES
    Config = BiGANConfig

    def __init__(self, config: BiGANConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        c, h, w = self.obs_shape
        self.encoder = make_encoder(config.arch, c, (h, w), config.latent_dim, config.num_filters)
        # G is not called ``generator``: that name is the torch RNG an agent lends every
        # representation (``Representation.generator``).
        self.image_generator = MirrorDecoder(self.encoder.trunk, config.latent_dim, c)
        self.register_load_state_dict_pre_hook(_rename_old_generator)
        self.discriminator = JointDiscriminator(
            config.disc_arch, self.obs_shape, config.latent_dim, config.disc_hidden, config.num_filters
        )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def prior(self, n: int, generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ p_z: E's LayerNorm (gamma, beta detached) applied to u ~ N(0, I) (or to ``u``)."""
        norm = self.encoder.norm
        if u is None:
            u = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return F.layer_norm(u, norm.normalized_shape, norm.weight.detach(), norm.bias.detach(), norm.eps)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): images in [0, 1]."""
        return torch.sigmoid(self.image_generator(z))

    def logits(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Both players' D logits on the real pairs (x, E(x)) and the fake pairs (G(z), z)."""
        x = to_float_image(obs)
        if z is None:
            z = self.prior(len(x), self.generator)  # the agent's RNG under an agent, else torch's global one
        z_real = self.encoder(x)
        x_fake = self.generate(z)
        hx_real = self.discriminator.image_features(x)
        d = self.discriminator
        out = {
            "d_real": d.judge(hx_real, z_real.detach()),
            "d_fake": d(x_fake.detach(), z),
        }
        with frozen(d):
            out["eg_real"] = d.judge(hx_real.detach(), z_real)
            out["eg_fake"] = d(x_fake, z)
        return out

    def loss(self, batch):
        """``batch["z"]`` fixes the prior draws; otherwise they are drawn."""
        out = self.logits(batch["obs"], batch.get("z"))
        d_loss = discriminator_loss(out["d_real"], out["d_fake"])  # = -V
        eg_loss = encoder_generator_loss(out["eg_real"], out["eg_fake"], self.config.generator_loss)
        d_acc = 0.5 * ((out["d_real"] > 0).float().mean() + (out["d_fake"] < 0).float().mean())
        metrics = {"d_loss": d_loss.detach(), "value": -d_loss.detach(), "d_acc": d_acc.detach()}
        return eg_loss + (d_loss - d_loss.detach()), metrics

    @torch.no_grad()
    def samples(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` frames G(z), z ~ p_z, uint8 (n, C, H, W), for pictures."""
        with self.evaluating():
            z = self.prior(n, torch.Generator(device=self.device).manual_seed(seed))
            return _to_uint8(self.generate(z))

    @torch.no_grad()
    def reconstruct(self, frames) -> np.ndarray:
        """G(E(x)) of ``frames``, uint8, for pictures."""
        with self.evaluating():
            return _to_uint8(self.generate(self.encoder(torch.as_tensor(np.asarray(frames)).to(self.device))))

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``bigan.png``: a row of samples G(z), then per held-out frame the original beside
        its reconstruction G(E(x)) (newest frame of each stack)."""
        idx = np.linspace(0, len(data) - 1, 6).astype(int)
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        samples, recon = self.samples(6), self.reconstruct(obs)
        rows = [[s[-3:] for s in samples]] + [[obs[i, -3:], recon[i, -3:]] for i in range(len(obs))]
        return [write_png(folder / "bigan.png", image_grid(rows))]

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out G(E(x)) pixel MSE (lower is better) and D's accuracy on held-out pairs (0.5 at equilibrium)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)
        generator = torch.Generator(device=self.device).manual_seed(0)

        def scores(x: torch.Tensor) -> torch.Tensor:
            xf = to_float_image(x)
            z_real = self.encoder(x)
            mse = (self.generate(z_real) - xf).pow(2).flatten(1).mean(1)
            z = self.prior(len(x), generator)
            real_ok = (self.discriminator(xf, z_real) > 0).float()
            fake_ok = (self.discriminator(self.generate(z), z) < 0).float()
            return torch.stack([mse, 0.5 * (real_ok + fake_ok)], 1)

        s = self.map_batches(scores, obs, batch_size=64).mean(0)
        return {"reconstruction_mse": float(s[0]), "disc_acc": float(s[1])}


__all__ = ["BiGAN", "BiGANConfig", "JointDiscriminator", "encoder_generator_loss", "value"]
