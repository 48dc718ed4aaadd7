"""Representations: encoders and the self-supervised objectives that train them."""

from .backbones import ARCHITECTURES, ConvEncoder, EncoderConfig, encoder_from_config, make_encoder

__all__ = ["ARCHITECTURES", "ConvEncoder", "EncoderConfig", "encoder_from_config", "make_encoder"]
