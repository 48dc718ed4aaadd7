"""Representations: encoders and the self-supervised objectives that train them.

>>> from ssrl.representations import make, names, load_representation, EncodedObservation
>>> names()                                   # registered methods
>>> rep = make("tcn", obs_shape=(9, 84, 84))  # an encoder + its objective
>>> env = EncodedObservation(env, load_representation("model.pt").encoder)

See :mod:`.core` (base class, registry, checkpoints), :mod:`.backbones` (the one encoder
family), :mod:`.losses`, :mod:`.data` (samplers over collected rollouts), :mod:`.pretrain`,
:mod:`.probe` and :mod:`.wrappers`.
"""

from .backbones import ARCHITECTURES, ConvEncoder, EncoderConfig, TemporalEncoder, encoder_from_config, make_encoder
from .control import AUX_OBJECTIVES, make_aux_objective
from .core import BaseConfig, Need, Representation, get, load_representation, make, names, register
from .data import RolloutData
from .wrappers import EncodedObservation, EncodedVectorObservation

__all__ = [
    "ARCHITECTURES", "AUX_OBJECTIVES", "BaseConfig", "ConvEncoder", "EncodedObservation", "EncodedVectorObservation", "EncoderConfig",
    "Need", "Representation", "RolloutData", "TemporalEncoder", "encoder_from_config", "get", "load_representation",
    "make", "make_aux_objective", "make_encoder", "names", "register",
]
