"""Rotation prediction (Gidaris, Singh and Komodakis, ICLR 2018, "RotNet").

Every image x of a batch is rotated by all four multiples of 90 degrees, r in {0, 1, 2, 3}, and a
classifier on the encoder's embedding predicts which rotation it sees:

    L = - 1/(4N) sum_n sum_r log softmax( g(phi(rot_r(x_n))) )_r

a 4-way cross-entropy (log 4 = 1.386 at uniform logits). Recognising "which way is up" needs the
parts of the scene and where they are relative to each other, not local texture.

As in the paper and mmselfsup's ``RotationPred`` (and unlike VISSL's one random rotation per
image, and the source text's "by a multiple of 90 degrees at random"), all four rotations of each
image are in the batch, so the batch holds 4N images. A frame
stack is rotated as one image (every frame by the same angle), so the encoder is the same
``(3k, H, W)`` encoder that RL uses; rotations are exact (``torch.rot90``), so frames must be
square. The head g is Linear -> ReLU -> Linear on the embedding (the paper puts its classifier on
conv features of a NIN); it is discarded after pretraining.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import make_encoder
from ...core import BaseConfig, Need, Representation, register

ROTATIONS = 4


@dataclasses.dataclass
class RotationConfig(BaseConfig):
    hidden: int = 256  # width of the classifier head
    camera: str | None = None  # the data's camera to train on (default its first)


def rotate_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, H, W)`` -> the 4N images rot_r(x_n), r = 0..3 (counter-clockwise, r-major), and
    their labels r."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    images = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return images, labels


@register
class Rotation(Representation):
    name = "rotation"
    needs = Need.FRAMES
    Config = RotationConfig

    def __init__(self, config: RotationConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.head = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, ROTATIONS)
        )

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def logits(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation logits of all four rotations of ``obs``, and their labels."""
        images, labels = rotate_all(obs)
        return self.head(self.encoder(images)), labels

    def loss(self, batch):
        logits, labels = self.logits(batch["obs"])
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def extra_scores(self, data) -> dict[str, float]:
        """Rotation accuracy on held-out frames (chance 0.25)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)

        def correct(x: torch.Tensor) -> torch.Tensor:
            logits, labels = self.logits(x)
            return (logits.argmax(1) == labels).float()

        return {"rotation_acc": float(self.map_batches(correct, obs, batch_size=64).mean())}
