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
from .core import (
    BaseConfig,
    Need,
    Representation,
    get,
    load_representation,
    make,
    names,
    register,
)
from .data import RolloutData
from .objective import AuxInputs, AuxObjective
from .wrappers import EncodedObservation, EncodedVectorObservation, StackedFramesEncoder

__all__ = [
    "ARCHITECTURES",
    "BaseConfig",
    "AuxInputs",
    "AuxObjective",
    "ConvEncoder",
    "EncodedObservation",
    "EncodedVectorObservation",
    "EncoderConfig",
    "Need",
    "Representation",
    "RolloutData",
    "StackedFramesEncoder",
    "TemporalEncoder",
    "encoder_from_config",
    "get",
    "load_representation",
    "make",
    "make_encoder",
    "names",
    "register",
]
