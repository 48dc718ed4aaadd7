"""Stable-Baselines3 interop: the suite's encoders as SB3 features extractors.

>>> from stable_baselines3 import SAC
>>> from ssrl.agents.sb3 import SSRLEncoderExtractor
>>> model = SAC("CnnPolicy", env, policy_kwargs=dict(
...     features_extractor_class=SSRLEncoderExtractor,
...     features_extractor_kwargs=dict(arch="dmc", feature_dim=50)))

``SSRLEncoderExtractor`` builds an encoder of the suite's family for the observation space, or
takes a given one (a pretrained representation's encoder, e.g. ``load_representation(path).encoder``),
optionally frozen. SB3 divides uint8 images by 255 before the extractor; the encoder accepts both
uint8 and [0, 1] floats, so either ``normalize_images`` setting works.

Why a given encoder is copied. SB3 builds one extractor per network from the same
``features_extractor_kwargs``: the actor's, the critic's and the critic target's. Were they to
hold the one module the user passed, the target would be the critic itself, and every Polyak
update ``theta' <- (1 - tau) theta' + tau theta`` with ``theta' is theta`` would scale the weights
by ``(1 - tau)(1 + tau) = 1 - tau^2`` (at tau = 0.1 a weight norm fell from 17.8 to 6.5 in 100
updates), in the user's own module. So each extractor holds its own deep copy, and the user's
module is never changed (nor moved, nor switched to eval mode).

Why a frozen encoder's weights are buffers. ``requires_grad=False`` keeps a tensor out of the
optimisers but not out of ``critic.parameters()``, which SB3 Polyak-averages; and
``(1 - tau) x + tau x`` is not bit-identical to ``x`` in floating point. A frozen copy therefore
keeps its weights as buffers: not in ``parameters()`` (no optimiser, no Polyak average), still in
``state_dict()`` (saved and loaded with the policy) and moved by ``.to(device)``; it stays in eval
mode whatever ``train()`` asks. After any amount of training its weights equal the given ones.

For frozen encoders the simpler path needs no extractor at all: wrap the env with
``ssrl.representations.EncodedObservation`` and use ``"MlpPolicy"``.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import torch
import torch.nn as nn
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from ssrl.representations.backbones import make_encoder


def weights_as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a buffer of the same name, in place (tied weights
    stay tied); returns ``module``. Its forward is unchanged, ``parameters()`` becomes empty."""
    converted: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}  # keeps each parameter alive
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in converted:
                converted[id(param)] = (param, param.detach().requires_grad_(False))
            del sub._parameters[name]
            sub.register_buffer(name, converted[id(param)][1])
    return module


class SSRLEncoderExtractor(BaseFeaturesExtractor):
    """An ssrl conv encoder as an SB3 features extractor: ``features = encoder(obs)``.

    Args:
        observation_space: SB3 passes the (channels-first) image space.
        encoder: an existing encoder module (pretrained); the extractor trains (or freezes) its
            own deep copy and never changes this one. Else one is built from ``arch``.
        freeze: keep the encoder's weights fixed: they become buffers (see the module docstring),
            so no optimiser step and no Polyak update touches them, and it runs in eval mode
            without a graph. ``extractor.encoder`` holds the copy.
        arch, feature_dim: the architecture built when ``encoder`` is None.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        encoder: nn.Module | None = None,
        freeze: bool = False,
        arch: str = "dmc",
        feature_dim: int = 50,
    ) -> None:
        if encoder is None:
            encoder = make_encoder(arch, observation_space.shape[0], tuple(observation_space.shape[1:]), feature_dim)
        else:
            encoder = copy.deepcopy(encoder)
        frozen = bool(freeze)
        if frozen:
            weights_as_buffers(encoder).eval()
        with torch.no_grad():
            sample = torch.as_tensor(observation_space.sample()[None])
            device = next(iter(encoder.state_dict().values()), torch.empty(0)).device
            dim = int(encoder(sample.to(device)).shape[-1])
        super().__init__(observation_space, features_dim=dim)
        self.encoder = encoder
        self.freeze = frozen

    def train(self, mode: bool = True) -> SSRLEncoderExtractor:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.freeze:
            with torch.no_grad():
                return self.encoder(observations)
        return self.encoder(observations)
