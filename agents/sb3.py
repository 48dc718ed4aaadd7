"""Stable-Baselines3 interop: the suite's encoders as SB3 features extractors.

>>> from stable_baselines3 import SAC
>>> from ssrl.agents.sb3 import SSRLEncoderExtractor
>>> model = SAC("CnnPolicy", env, policy_kwargs=dict(
...     features_extractor_class=SSRLEncoderExtractor,
...     features_extractor_kwargs=dict(arch="dmc", feature_dim=50)))

``SSRLEncoderExtractor`` builds an encoder of the suite's family for the observation space, or
wraps a given one (a pretrained representation's encoder, e.g. ``load_representation(path).encoder``),
optionally frozen. SB3 divides uint8 images by 255 before the extractor; the encoder accepts both
uint8 and [0, 1] floats, so either ``normalize_images`` setting works.

For frozen encoders the simpler path needs no extractor at all: wrap the env with
``ssrl.representations.EncodedObservation`` and use ``"MlpPolicy"``.
"""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn as nn
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from ssrl.representations.backbones import make_encoder


class SSRLEncoderExtractor(BaseFeaturesExtractor):
    """An ssrl conv encoder as an SB3 features extractor.

    Args:
        observation_space: SB3 passes the (channels-first) image space.
        encoder: an existing encoder module (pretrained); else one is built from ``arch``.
        freeze: keep the given encoder's weights fixed (no gradient, eval mode).
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
        with torch.no_grad():
            sample = torch.as_tensor(observation_space.sample()[None])
            dim = int(encoder(sample).shape[-1])
        super().__init__(observation_space, features_dim=dim)
        self.encoder = encoder
        self.freeze = freeze
        if freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.freeze:
            with torch.no_grad():
                return self.encoder(observations)
        return self.encoder(observations)
