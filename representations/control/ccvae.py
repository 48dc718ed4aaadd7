"""CC-VAE: the context-conditioned VAE of contextual imagined goals (Nair, Pong et al. 2019;
railrl's ``DeltaCVAE``).

A CVAE whose condition is the episode's first frame s_0, seen through a separate context
encoder (no shared weights): c = e_0(s_0), deterministic. The encoder q_phi(z|s, c) and the
decoder p_psi(s|z, c) both receive c, and a context decoder d_0 reconstructs s_0 from c alone.
From the source text:

    L_CVAE  = -E_{z ~ q_phi(z|s,c)}[ log p_psi(s|z, c) ] + beta D_KL( q_phi(z|s,c) || p(z) ),   p(z) = N(0, I)
    L_CC-VAE = L_CVAE - log p(s_0|c),   s_0_hat = d_0(c)

The source prints the extra term as ``+ log p(s_0|c)``: added to a loss that is minimised, that
would make s_0 *harder* to reconstruct, which contradicts its own sentence ("learn to reconstruct c
back to s_0") and railrl's ``DeltaCVAETrainer`` (loss = -(log p(s|z,c) + log p(s_0|c)) + beta KL).
We implement the reconstruction term, i.e. the negative log-likelihood of s_0. As for the
beta-VAE, the expectation uses one reparameterised sample, the KL is closed-form and summed over
latent dims, every term is per image and averaged over the batch, and the likelihood and its
normalisation (``"bernoulli"``: summed BCE; ``"gaussian"``: 1/2 summed squared error, unit variance)
are those of :mod:`.vae`, for both reconstructions. The default betas are stronger than the
beta-VAE's: 1.0 (bernoulli) and 0.1 (gaussian), the same 10:1 ratio between the likelihoods. With
the beta-VAE's 10/128 the posterior keeps the objects' appearance as well as c does (a few nats
are cheap next to reconstructions of ~10^4 nats), and goals drawn from N(0, I) show objects of
other episodes; at beta = 1 they keep the context's objects and colours (``benchmarks/vae_bench.py``;
railrl anneals CC-VAE's beta upwards for the same reason).

Architecture (all from the backbone family): q_phi is the conv trunk of the observation,
flattened, with c concatenated before the two Linear heads (mu, floored logvar, as in
:mod:`.vae`); e_0 is a :class:`~ssrl.representations.backbones.ConvEncoder` of a single frame
(trunk, Linear, LayerNorm: c is bounded like the N(0, I) latent it sits beside); the decoder
takes [z, c]; d_0 mirrors e_0's trunk. s_0 is the first RGB frame of the episode (a single frame
whatever the frame stack).

The latent RL uses (``encoder``): railrl's ``[mu(s_t, s_0), c(s_0)]``, the posterior mean beside
the episode's context, so that an imagined goal ``[z ~ N(0, I), c(s_0)]`` (``sample_goals``) lives in
the same space and RIG's reward -||e(s) - e(g)|| compares like with like. The encoder module
gets only the current observation, so where s_0 comes from is explicit:

* with a context set (``encoder.set_context(first_frames)``, done at every reset by
  :class:`ContextEncodedObservation`, the wrapper to use for RL), e(s_t) = [mu(s_t | c), c] with
  c = e_0(s_0) of the episode: railrl's latent exactly;
* with none set (plain :class:`~ssrl.representations.wrappers.EncodedObservation`, probes, any
  stateless use) the observation is its own context: e(s) = [mu(s | e_0(s)), e_0(s)], a
  function of the image alone. e_0 then sees frames from mid-episode (trained on first frames
  only) and carries the objects' appearance and positions; mu carries what the context leaves
  out (above all the hand, which is always at its start in s_0). This is a complete,
  deterministic state code, but not the space of ``sample_goals``.

``fit_prior(data)`` fits N(mean, std^2) to mu(s_t | c(s_0)) over the data (the frames with their
own episode's context); ``sample_goals(context_images, rng)`` draws z ~ N(0, I) (or the fitted
prior) and returns [z, e_0(s_0)]; ``decode`` maps such latents to images, ``decode_context(c)``
gives d_0's reconstruction of s_0.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ..backbones import make_encoder
from ..core import Need, register
from ..losses import gaussian_kl
from ..wrappers import EncodedObservation
from .vae import GaussianEncoder, MirrorDecoder, VAEConfig, _VAEBase, pixels_to_unit, reconstruction_nll, reparameterize

# Stronger than the beta-VAE's, so the context, not z, carries the objects' appearance (see above).
DEFAULT_CC_BETA = {"bernoulli": 1.0, "gaussian": 0.1}


@dataclasses.dataclass
class CCVAEConfig(VAEConfig):
    default_beta: ClassVar[dict[str, float]] = DEFAULT_CC_BETA

    context_dim: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_dim < 1:
            raise ValueError(f"CCVAEConfig.context_dim must be >= 1, got {self.context_dim}")


class ContextConditionedEncoder(nn.Module):
    """observation -> [mu(s | c), c]: the RL latent of CC-VAE (see the module docstring).

    ``c`` is, in order of precedence: e_0(``context_images``) if passed to ``forward``; the context
    stored by ``set_context`` (one row, broadcast, or one per observation); e_0 of the
    observation's newest frame.
    """

    def __init__(self, posterior: GaussianEncoder, context_encoder: nn.Module) -> None:
        super().__init__()
        self.posterior = posterior
        self.context_encoder = context_encoder
        self.input_shape = posterior.input_shape
        self.context: torch.Tensor | None = None

    @torch.no_grad()
    def set_context(self, images) -> torch.Tensor:
        """Store c = e_0(images) (``(n, 3, H, W)`` first frames; n = 1 for one env) for later calls."""
        x = torch.as_tensor(np.asarray(images)).to(next(self.parameters()).device)
        self.context = self.context_encoder(x if x.dim() == 4 else x[None])
        return self.context

    def clear_context(self) -> None:
        self.context = None

    def condition(self, x: torch.Tensor, context_images: torch.Tensor | None = None) -> torch.Tensor:
        if context_images is not None:
            return self.context_encoder(context_images)
        if self.context is not None:
            return self.context.expand(len(x), -1) if len(self.context) == 1 else self.context
        return self.context_encoder(x[:, -3:])

    def forward(self, x: torch.Tensor, context_images: torch.Tensor | None = None) -> torch.Tensor:
        c = self.condition(x, context_images)
        mu, _ = self.posterior.distribution(x, c)
        return torch.cat([mu, c], dim=1)


@register
class CCVAE(_VAEBase):
    name = "cc-vae"
    needs = Need.FRAMES | Need.CONTEXT
    Config = CCVAEConfig

    def __init__(self, config: CCVAEConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        _, h, w = self.obs_shape
        self.context_encoder = make_encoder(config.arch, 3, (h, w), config.context_dim, config.num_filters)
        self.posterior = GaussianEncoder(
            config.arch,
            obs_shape,
            config.latent_dim,
            config.min_variance,
            config.num_filters,
            cond_dim=config.context_dim,
        )
        self.decoder = MirrorDecoder(self.posterior.trunk, config.latent_dim + config.context_dim, obs_shape[0])
        self.context_decoder = MirrorDecoder(self.context_encoder.trunk, config.context_dim, 3)
        self.encoder = ContextConditionedEncoder(self.posterior, self.context_encoder)
        self._init_prior(config.latent_dim)

    @property
    def latent_dim(self) -> int:
        """Width of the encoder's output, [mu, c]."""
        return int(self.config.latent_dim + self.config.context_dim)

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = data.sample_frames(batch_size, rng)
        cam = self.config.camera
        return {"obs": data.stack(idx, cam, self.config.frame_stack), "context": data.first_frame(idx, cam)}

    def terms(self, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image terms: ``recon`` (-log p(s|z,c)), ``recon_context`` (-log p(s_0|c)), ``kl``;
        and c, mu, logvar, z, logits, context_logits."""
        c = self.context_encoder(x0)
        mu, logvar = self.posterior.distribution(x, c)
        z = reparameterize(mu, logvar, eps)
        logits = self.decoder(torch.cat([z, c], dim=1))
        context_logits = self.context_decoder(c)
        lik = self.config.likelihood
        return {
            "recon": reconstruction_nll(logits, pixels_to_unit(x), lik),
            "recon_context": reconstruction_nll(context_logits, pixels_to_unit(x0), lik),
            "kl": gaussian_kl(mu, logvar),
            "c": c,
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "logits": logits,
            "context_logits": context_logits,
        }

    def loss(self, batch):
        """mean_batch[ -log p(s|z,c) - log p(s_0|c) + beta KL(q(z|s,c) || N(0, I)) ]; ``batch["eps"]``
        fixes the noise."""
        t = self.terms(batch["obs"], batch["context"], batch.get("eps"))
        loss = (t["recon"] + t["recon_context"] + self.config.beta * t["kl"]).mean()
        return loss, {k: t[k].mean().detach() for k in ("recon", "recon_context", "kl")}

    # -- embeddings with the episode's context -----------------------------------------------------

    def embed_with_context(self, obs, context_images, batch_size: int = 256) -> np.ndarray:
        """[mu(s | c(s_0)), c(s_0)] for observations and their episodes' first frames (railrl's latent)."""
        return self.map_batches(self.encoder, obs, context_images, batch_size=batch_size)

    def episode_latents(self, data, idx: np.ndarray | None = None) -> np.ndarray:
        """:meth:`embed_with_context` of ``data``'s frames ``idx`` (default all), each with its
        episode's first frame."""
        idx = np.arange(len(data)) if idx is None else np.asarray(idx)
        cam = self.config.camera
        return self.embed_with_context(data.stack(idx, cam, self.config.frame_stack), data.first_frame(idx, cam))

    # -- prior, goals, images ------------------------------------------------------------------------

    @torch.no_grad()
    def fit_prior(self, data, max_frames: int | None = 20000, seed: int = 0) -> dict[str, np.ndarray]:
        """Fit N(mean, diag std^2) to mu(s_t | c(s_0)) over ``data``'s frames."""
        z = self.episode_latents(data, self._frame_indices(data, max_frames, seed))[:, : self.config.latent_dim]
        return self._store_prior(z)

    @torch.no_grad()
    def context_of(self, context_images) -> np.ndarray:
        """c = e_0(s_0) for first frames ``(n, 3, H, W)``."""
        with self.evaluating():
            return (
                self.context_encoder(torch.as_tensor(np.asarray(context_images)).to(self.device)).float().cpu().numpy()
            )

    def sample_goals(self, context_images, rng: np.random.Generator, prior: str = "standard") -> np.ndarray:
        """One imagined goal per first frame: [z, e_0(s_0)] with z ~ N(0, I) (``prior="fitted"``:
        the fitted prior), float32 ``(n, latent_dim + context_dim)``, in the space of ``encoder``."""
        c = self.context_of(context_images)
        return np.concatenate([self._draw(len(c), rng, prior), c], axis=1)

    @torch.no_grad()
    def decode(self, latent, c=None) -> np.ndarray:
        """Images (float32 in [0, 1]) of latents [z, c] (or of ``z`` and ``c`` given apart)."""
        latent = np.asarray(latent, np.float32)
        if c is not None:
            c = np.broadcast_to(np.asarray(c, np.float32), (len(latent), self.config.context_dim))
            latent = np.concatenate([latent, c], 1)
        if latent.shape[1] != self.latent_dim:
            raise ValueError(f"decode takes [z, c] of width {self.latent_dim}, got {latent.shape[1]}")
        with self.evaluating():
            return self._images(self.decoder(torch.as_tensor(latent).to(self.device)))

    def goal_sampler(self):
        """CC-RIG's imagined goals: [z, c] with z ~ N(0, I) (the paper's; the fitted prior is
        ``sample_goals(..., prior="fitted")``) and c the context of the latents in ``like`` (the
        rows' own episodes), which the sampler needs."""

        def sample(n, rng, like=None):
            if like is None:
                raise ValueError("CC-VAE goals keep an episode's context: pass like (latents [z, c] of it)")
            c = np.asarray(like, np.float32).reshape(n, -1)[:, self.config.latent_dim :]
            return np.concatenate([self._draw(n, rng, "standard"), c], axis=1)

        return sample

    def observation_wrapper(
        self,
        env,
        *,
        explore: bool,
        keep_images: bool = False,
        reward: str = "latent_distance",
        observe_frames: bool = False,
    ):
        """Latents [mu(s | c(s_0)), c(s_0)] with the episode's first frame as context (the frozen
        regime of ``ssrl train``); on a goal env, CC-RIG's imagined goals [z, c(s_0)] for
        relabelling and, when ``explore``, one per episode. Not built for CC-RIG: online
        fine-tuning (``keep_images``), the critics fine-tuning the encoder (``observe_frames``:
        the context would have to ride with every frame) and the env's reward on images
        (``reward="env"``). On
        ``ssrl/GraspGoal-v0``: instance grasping by its embedding, as every representation's."""
        from ..grasping import is_instance_grasping

        if is_instance_grasping(env):
            return super().observation_wrapper(
                env, explore=explore, keep_images=keep_images, reward=reward, observe_frames=observe_frames
            )
        if keep_images or observe_frames or reward != "latent_distance":
            raise ValueError(
                "CC-RIG runs frozen with its latent reward only: online fine-tuning, the critics fine-tuning the "
                "encoder and the env's image reward are built for RIG's beta-VAE"
            )
        spaces = getattr(env.observation_space, "spaces", {})
        goal_env = {"achieved_goal", "desired_goal"} <= set(spaces)
        sampler = self.goal_sampler() if goal_env else None
        return ContextEncodedObservation(
            env, self.encoder, goal_sampler=sampler, imagine_goals=explore and sampler is not None
        )

    @torch.no_grad()
    def decode_context(self, c) -> np.ndarray:
        """d_0(c): the context decoder's image of s_0, float32 in [0, 1]."""
        with self.evaluating():
            return self._images(self.context_decoder(torch.as_tensor(np.asarray(c, np.float32)).to(self.device)))

    @torch.no_grad()
    def reconstruct(self, obs, context_images) -> np.ndarray:
        """decode([mu(s | c(s_0)), c(s_0)]): reconstructions given each observation's first frame."""
        return self.decode(self.embed_with_context(obs, context_images))


class ContextEncodedObservation(EncodedObservation):
    """:class:`~ssrl.representations.wrappers.EncodedObservation` for a CC-VAE encoder that sets
    the episode's context at every reset: the newest frame of the reset observation (its
    ``observation`` entry for a goal env) becomes s_0, so every observation and goal image of the
    episode is encoded as [mu(x | c(s_0)), c(s_0)], the space of ``CCVAE.sample_goals``. The context
    is stored on the encoder module (one env per encoder at a time); ``close`` clears it."""

    def __init__(self, env: gym.Env, encoder: ContextConditionedEncoder, **kwargs) -> None:
        if not isinstance(encoder, ContextConditionedEncoder):
            raise TypeError("ContextEncodedObservation needs a CC-VAE encoder (CCVAE.encoder)")
        super().__init__(env, encoder, **kwargs)
        self.context_encoder = encoder

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        image = obs["observation"] if isinstance(obs, dict) else obs
        self.context_encoder.set_context(image[-3:][None])  # the newest frame (one camera)
        if isinstance(obs, dict):
            return self._start_episode(obs), info  # (and the imagined goal, in this context)
        return self.observation(obs), info

    def close(self):
        self.context_encoder.clear_context()  # the encoder may be used elsewhere afterwards
        super().close()
