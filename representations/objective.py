"""The seam between agents and self-supervised objectives: what an agent hands an objective at
each update, and what it expects back.

Both sides import this module; neither imports the other. An agent (:mod:`ssrl.agents`) takes
an optional ``aux`` objective and calls ``aux.loss(AuxInputs(...))`` on every replay batch; the
objectives of :mod:`ssrl.representations` (DBC, DeepMDP, ...) implement :class:`AuxObjective`.
Nothing here imports a method, so ``import ssrl.agents`` loads none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn


@dataclasses.dataclass
class AuxInputs:
    """What an auxiliary objective receives at each update (tensors on the agent's device).

    Attributes:
        latent: ``encoder(obs)``, with gradient to the agent's encoder.
        next_latent: ``target_encoder(next_obs)``, without gradient.
        action: actions in [-1, 1], ``(B, A)``.
        reward: ``(B,)``.
        discount: ``1 - terminated``, ``(B,)`` (the agent multiplies by its gamma itself).
        obs, next_obs: the (augmented) uint8 observations, for objectives that need more encoder
            passes (contrastive ones); ``None`` on vector observations.
        encoder: the agent's encoder (``None`` on vector observations).
        segments: ``segments(n, max_length, rng)``: ``n`` runs of up to ``max_length``
            consecutive instants of one episode from the agent's replay (``ReplayBuffer.sample_segments``), for
            objectives that learn from clips; ``None`` where the replay cannot give them.

    With the agent's ``rl_head`` (the decoupled regime), ``latent``, ``next_latent`` and
    ``encoder`` are the method's code and encoder, not the agent's head on them.
    """

    latent: torch.Tensor
    next_latent: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    obs: torch.Tensor | None
    next_obs: torch.Tensor | None
    encoder: nn.Module | None
    segments: Callable[[int, int, np.random.Generator], dict[str, np.ndarray]] | None = None


@runtime_checkable
class AuxObjective(Protocol):
    """Everything an agent uses of its ``aux`` objective.

    ``loss`` is added to the critic's loss on the same batch; ``parameters`` (its own models,
    never the agent's encoder) get their own optimiser; ``state_dict``/``load_state_dict`` go
    into the agent's checkpoint; ``to`` moves it to the agent's device; ``generator`` is set by
    the agent to its own torch generator, so the objective's sampling is part of the run's saved
    RNG state and a resumed run continues bit-exactly. ``torch.nn.Module`` subclasses with a
    ``generator`` attribute satisfy all of it.
    """

    generator: torch.Generator | None

    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...

    def to(self, device: torch.device) -> Any: ...
