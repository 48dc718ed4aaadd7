"""Split-brain autoencoder (Zhang, Isola and Efros, "Split-Brain Autoencoders: Unsupervised
Learning by Cross-Channel Prediction", CVPR 2017).

The Lab image x is split into its channel groups x1 = L and x2 = ab; a sub-network F1 predicts
x2 from x1 and a disjoint sub-network F2 predicts x1 from x2, and the representation is the
two sub-networks' features concatenated, F(x) = [F1(x1), F2(x2)]. Both predictions are
classification over quantised values (the source text: "the loss is either L1 loss or cross
entropy if color values are quantized"; we use cross-entropy for both, as the released model
``model_splitbrainauto_clcl``, "cl,cl", does):

    L = l_ab + l_L,
    l_ab = - 1/(N h w) sum_{n,h,w} sum_q Z_nhwq log F1(x1)_nhwq      (ab: Q = 261 bins, soft targets)
    l_L  = - 1/(N h w) sum_{n,h,w} log F2(x2)_nhw,l(n,h,w)            (L: 50 bins of 2 units, hard)

each averaged over locations (and frames), summed over the two terms: at uniform logits
L = log Q + log 50 = log 261 + log 50 = 5.565 + 3.912 = 9.477. Z is colorization's soft
encoding of the true ab (5 nearest bins, Gaussian sigma = 5); l is floor(L / 2) (L = 100 in the
last bin). The ab bins, the soft encoding and the Lab conversion come from :mod:`.colour`,
shared with the colorization method. F1's term is not class-rebalanced (v = 1): the
rebalancing is the colorization paper's device for vivid pictures, not part of the split-brain
objective in the source text.

Frames and encoders. A stack of k RGB frames gives L (k channels, L / 100) and ab (2k channels,
ab / 110). F1's encoder is ``make_encoder(arch, k, (H, W), d1, num_filters=f1)`` and F2's
``make_encoder(arch, 2k, (H, W), d2, num_filters=f2)``, the suite's default flatten encoders
(a whole-image method). The split follows the paper, which halves every layer of the network
between the two sub-networks: the latent is split as d1 = latent_dim - latent_dim // 2 (L half),
d2 = latent_dim // 2 (ab half), 25 + 25 by default, and the conv width likewise,
f1 = num_filters - num_filters // 2, f2 = num_filters // 2 (16 + 16 of the suite's 32), so the
pair is the size of one encoder of the family. ``self.encoder`` is a :class:`.colour.LabEncoder`
whose ``input_shape`` is the RGB stack ``(3k, H, W)``: it takes the env's uint8 frames, converts
them to Lab inside and returns concat(F1_enc(L), F2_enc(ab)), ``(B, d1 + d2)``, L half first.

Heads (thrown away after pretraining): :class:`.colour.SpatialLogits` from each half's
embedding to k x Q (F1) and k x 50 (F2) logits at 1/``downsample`` of the frame (21 x 21 at 84
px, the paper's 1/4), through the embedding so each whole encoder is trained. The targets are
Lab averaged over ``downsample`` x ``downsample`` cells.

``extra_scores``: held-out accuracy of F1's most likely ab bin against the true colour's nearest
bin (``split_brain_ab_acc``; chance: the share of the most common bin) and of F2's L bin
(``split_brain_L_acc``; chance: the most common L bin's share), and the held-out loss
``split_brain_loss`` (lower is better; 9.477 at uniform logits).

Departures from the paper (richzhang/splitbrainauto, Caffe; only the deploy models are public):
Q = 261 bins computed from the sRGB gamut instead of the 313 shipped with colorization; the
suite's small encoders with an embedding bottleneck and a small upsampling head, instead of a
fully convolutional AlexNet split in two groups; losses averaged, not summed, over locations;
Adam at the suite's defaults.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import make_encoder
from ...core import BaseConfig, Need, Representation, register
from . import colour
from .colorization import output_size


@dataclasses.dataclass
class SplitBrainConfig(BaseConfig):
    downsample: int = 4  # logits at 1/4 of the frame size (21 x 21 at 84 px)
    hidden: int = 32  # channels of each logits decoder
    num_filters: int = 32  # total encoder width, split between the halves (16 + 16)
    neighbours: int = colour.NEIGHBOURS  # soft encoding of ab: nearest bins
    sigma: float = colour.SIGMA  # soft encoding kernel (ab units)
    camera: str | None = None  # the data's camera to train on (default its first)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__qualname__
        for field in ("downsample", "hidden", "neighbours"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        if self.latent_dim < 2 or self.num_filters < 2:
            raise ValueError(
                f"{name}: latent_dim and num_filters are split between two sub-networks and must be >= 2, "
                f"got {self.latent_dim} and {self.num_filters}"
            )
        if not self.sigma > 0:
            raise ValueError(f"{name}.sigma must be positive, got {self.sigma}")

    def halves(self, total: int) -> tuple[int, int]:
        """(L half, ab half) of ``total``: the L half takes the odd unit."""
        return total - total // 2, total // 2


@register
class SplitBrain(Representation):
    name = "split-brain"
    needs = Need.FRAMES
    Config = SplitBrainConfig

    def __init__(self, config: SplitBrainConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.out_size = output_size(config, self.obs_shape, self.name)
        self.frames = k = self.obs_shape[0] // 3
        centres = torch.as_tensor(colour.ab_gamut(), dtype=torch.float32)
        self.register_buffer("centres", centres)
        self.soft_encoder = colour.SoftEncoder(centres, config.neighbours, config.sigma)
        self.num_ab, self.num_l = len(centres), colour.L_BINS
        if config.neighbours > self.num_ab:
            raise ValueError(f"neighbours={config.neighbours} exceeds the {self.num_ab} ab bins")
        (d1, d2), (f1, f2) = config.halves(config.latent_dim), config.halves(config.num_filters)
        size = self.obs_shape[1:]
        self.encoder = colour.LabEncoder(
            self.obs_shape,
            L=make_encoder(config.arch, k, size, d1, num_filters=f1),
            ab=make_encoder(config.arch, 2 * k, size, d2, num_filters=f2),
        )
        self.head_ab = colour.SpatialLogits(d1, k * self.num_ab, self.out_size, hidden=config.hidden)  # F1: L -> ab
        self.head_l = colour.SpatialLogits(d2, k * self.num_l, self.out_size, hidden=config.hidden)  # F2: ab -> L

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": data.stack(data.sample_frames(batch_size, rng), self.config.camera, self.config.frame_stack)}

    def predict(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """F1's ab logits ``(B, h, w, k, Q)``, F2's L logits ``(B, h, w, k, 50)`` and the Lab
        targets averaged over cells, ``(B, h, w, k, 3)``."""
        lab = self.encoder.lab(obs)
        parts = self.encoder.parts
        z1 = parts["L"](self.encoder.group(lab, "L"))
        z2 = parts["ab"](self.encoder.group(lab, "ab"))
        b, (h, w) = len(obs), self.out_size
        target = F.avg_pool2d(lab.flatten(0, 1), self.config.downsample)
        return {
            "ab_logits": self.head_ab(z1).reshape(b, h, w, self.frames, self.num_ab),
            "l_logits": self.head_l(z2).reshape(b, h, w, self.frames, self.num_l),
            "target": target.reshape(b, self.frames, 3, h, w).permute(0, 3, 4, 1, 2),
        }

    def terms(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-location losses and correctness of both predictions, ``(B, h, w, k)`` each."""
        out = self.predict(obs)
        target = out["target"]
        idx, weights = self.soft_encoder(target[..., 1:])
        l_bin = colour.quantize_l(target[..., 0])
        l_log_p = F.log_softmax(out["l_logits"].float(), dim=-1)
        return {
            "ab": colour.soft_cross_entropy(out["ab_logits"], idx, weights),
            "L": -l_log_p.gather(-1, l_bin[..., None])[..., 0],
            "ab_correct": (out["ab_logits"].argmax(-1) == idx[..., 0]).float(),
            "L_correct": (out["l_logits"].argmax(-1) == l_bin).float(),
        }

    def loss(self, batch):
        t = self.terms(batch["obs"])
        loss_ab, loss_l = t["ab"].mean(), t["L"].mean()
        return loss_ab + loss_l, {
            "loss_ab": loss_ab.detach(),
            "loss_L": loss_l.detach(),
            "ab_accuracy": t["ab_correct"].mean().detach(),
            "L_accuracy": t["L_correct"].mean().detach(),
        }

    def extra_scores(self, data) -> dict[str, float]:
        """Held-out accuracies of both predictions and the held-out loss (lower is better)."""
        idx = np.arange(0, len(data), max(1, len(data) // 512))
        obs = data.stack(idx, self.config.camera, self.config.frame_stack)

        def scores(x: torch.Tensor) -> torch.Tensor:
            t = self.terms(x)
            per_frame = [t[k].flatten(1).mean(1) for k in ("ab_correct", "L_correct", "ab", "L")]
            return torch.stack(per_frame, 1)

        ab_acc, l_acc, ab_ce, l_ce = self.map_batches(scores, obs, batch_size=64).mean(0)
        return {
            "split_brain_ab_acc": float(ab_acc),
            "split_brain_L_acc": float(l_acc),
            "split_brain_loss": float(ab_ce + l_ce),
        }
