"""The one family of conv encoders used by every method and every agent of the suite.

Every representation (TCN, grasp2vec, the VAEs, DBC, the pretext tasks) and the pixel agents
train the same network, so a comparison between methods compares objectives, not architectures.

Architectures (``make_encoder(arch, ...)``):

``dmc``
    The encoder of SAC-AE, CURL, DrQ and DBC: conv3x3(32, stride 2) then three conv3x3(32,
    stride 1), ReLU, flatten (39,200 features at 84x84), Linear to ``feature_dim`` (50),
    LayerNorm, optionally tanh (SAC-AE and DrQ use it, CURL and DBC do not).
``fast``
    The same with strides (2, 2, 2, 1), as ATC uses: 4.5x fewer multiply-adds at 84x84, for
    CPU budgets.
``resnet``
    A small ResNet: a stride-2 stem and three stages of two basic blocks (32, 64, 128 channels,
    stride 2 between stages), global average pooling, then the same Linear + LayerNorm head.

Pooling: the feature map becomes a vector by flattening (``dmc``, ``fast``), by global average
pooling (``resnet``, or any architecture with ``pool="mean"``), or by a spatial softmax
(``pool="keypoints"``: per channel the expected image coordinates under a softmax over
positions, the feature points of Levine, Finn et al. 2016's visuomotor policies and of the deep
spatial autoencoder that RIG compares with; ``2 C`` features in [-1, 1]). A pooled encoder
takes any image its convolutions fit, so patch-based pretext methods train it on patches and RL
uses the same module on full frames.

Inputs are channels-first images, uint8 in [0, 255] or float in [0, 1] (Stable-Baselines3
divides by 255 before its features extractor); any number of channels (a 3-frame stack is 9).
The conv trunk runs channels-last, which oneDNN's CPU kernels prefer (1.35x faster for the
``dmc`` encoder's update here). ``spatial(x)`` returns the last conv feature map before
flattening, for methods that need spatial features (grasp2vec's localisation heatmap).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURES: tuple[str, ...] = ("dmc", "fast", "resnet")
POOLING: tuple[str, ...] = ("flatten", "mean", "keypoints")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder (saved in checkpoints)."""

    arch: str = "dmc"
    in_channels: int = 9
    image_size: tuple[int, int] = (84, 84)
    feature_dim: int = 50
    num_filters: int = 32
    output_tanh: bool = False
    # How the feature map becomes a vector: "flatten" (dmc, fast: the published encoders),
    # "mean" (global average pooling; resnet) or "keypoints" (spatial softmax). None: the
    # architecture's own. With "mean" the
    # encoder takes any image at least as large as its trunk needs (patch-based pretext methods
    # train it on patches; RL uses the same module on full frames).
    pool: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown encoder architecture {self.arch!r}; use one of {ARCHITECTURES}")
        if self.pool is None:
            object.__setattr__(self, "pool", "mean" if self.arch == "resnet" else "flatten")
        if self.pool not in POOLING:
            raise ValueError(f"unknown pooling {self.pool!r}; use one of {POOLING}")
        if self.in_channels < 1 or self.feature_dim < 1 or self.num_filters < 1:
            raise ValueError(f"encoder sizes must be positive: {self}")
        if isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (self.image_size, self.image_size))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def orthogonal_init(module: nn.Module) -> None:
    """SAC-AE's initialisation: orthogonal linear layers, delta-orthogonal convolutions.

    A delta-orthogonal conv starts as an orthogonal map applied at the kernel's centre only,
    which keeps activations' scale through a deep stack of 3x3 convs.
    """
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
        module.weight.data.zero_()
        if module.bias is not None:
            module.bias.data.zero_()
        centre = module.kernel_size[0] // 2
        gain = nn.init.calculate_gain("relu")
        nn.init.orthogonal_(module.weight.data[:, :, centre, centre], gain)


def to_float_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is taken as already in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float() if x.dtype != torch.float32 else x


def network_image(x: torch.Tensor) -> torch.Tensor:
    """What the conv trunk runs on: :func:`to_float_image` of ``x``, channels-last in memory.

    A uint8 batch is laid out channels-last while it is still one byte per value, and under
    autocast it becomes the autocast dtype directly (bfloat16 holds 0..255 exactly, and its
    division by 255 rounds the float32 quotient once, as autocast's own cast of the float32 image
    would): the same values the convolutions saw before, for a fraction of the copies (a uint8
    to float32 copy, a float32 layout copy and autocast's cast were a third of a pixel SAC update
    with the ``fast`` encoder on our CPUs)."""
    if x.dtype != torch.uint8:
        return to_float_image(x).contiguous(memory_format=torch.channels_last)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    return x.contiguous(memory_format=torch.channels_last).to(dtype).div_(255.0)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """Feature points: per channel of ``(B, C, H, W)``, the expected ``(x, y)`` under a softmax
    over the ``H x W`` positions, coordinates in [-1, 1] (left/top -1); ``(B, 2C)`` as
    ``[x_1..x_C, y_1..y_C]``."""
    b, c, h, w = features.shape
    weights = torch.softmax(features.float().reshape(b, c, h * w), dim=-1).reshape(b, c, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=features.device)
    ys = torch.linspace(-1.0, 1.0, h, device=features.device)
    return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=1)


def pool_features(features: torch.Tensor, pool: str) -> torch.Tensor:
    """A feature map ``(B, C, H, W)`` as a vector, by ``pool`` (see :data:`POOLING`)."""
    if pool == "mean":
        return features.mean(dim=(2, 3))
    if pool == "keypoints":
        return spatial_softmax(features)
    return features.flatten(1)


def pooled_dim(shape: Sequence[int], pool: str) -> int:
    """The width of :func:`pool_features` for a feature map of shape ``(C, H, W)``."""
    c, h, w = shape
    return {"mean": c, "keypoints": 2 * c}.get(pool, c * h * w)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(min(8, c_out), c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (x if self.skip is None else self.skip(x)))


def _conv_trunk(config: EncoderConfig) -> nn.Sequential:
    c, f = config.in_channels, config.num_filters
    if config.arch in ("dmc", "fast"):
        strides: Sequence[int] = (2, 1, 1, 1) if config.arch == "dmc" else (2, 2, 2, 1)
        layers: list[nn.Module] = []
        for stride in strides:
            layers += [nn.Conv2d(c, f, 3, stride), nn.ReLU(inplace=True)]
            c = f
        return nn.Sequential(*layers)
    # resnet: GroupNorm rather than BatchNorm, so an encoder behaves the same in train and eval
    # mode and with batch size 1 (the policy acts on single observations).
    return nn.Sequential(
        nn.Conv2d(c, f, 3, 2, 1, bias=False),
        nn.GroupNorm(min(8, f), f),
        nn.ReLU(inplace=True),
        _BasicBlock(f, f, 1),
        _BasicBlock(f, f, 1),
        _BasicBlock(f, 2 * f, 2),
        _BasicBlock(2 * f, 2 * f, 1),
        _BasicBlock(2 * f, 4 * f, 2),
        _BasicBlock(4 * f, 4 * f, 1),
    )


class ConvTrunk(nn.Module):
    """The conv part of an encoder: image (uint8 or float) -> feature map ``output_shape``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = (config.in_channels, *config.image_size)
        self.net = _conv_trunk(config).to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.output_shape = tuple(self.net(torch.zeros(1, *self.input_shape)).shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A pooled encoder takes any image size its convolutions fit (patches or full frames).
        shape = tuple(x.shape[-3:]) if self.config.pool == "flatten" else tuple(x.shape[-3:-2])
        expected = self.input_shape if self.config.pool == "flatten" else self.input_shape[:1]
        if shape != expected:
            raise ValueError(f"encoder expects images of shape {self.input_shape}, got {tuple(x.shape[-3:])}")
        return self.net(network_image(x))


class ConvEncoder(nn.Module):
    """Image -> ``feature_dim`` vector: a conv trunk and a Linear + LayerNorm head.

    ``forward(x)`` takes ``(B, C, H, W)`` (uint8 or float) and returns ``(B, feature_dim)``;
    ``spatial(x)`` returns the trunk's feature map ``(B, C', H', W')``;
    ``head(spatial)`` maps a feature map to the embedding (so both can be had from one pass).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_dim = config.feature_dim
        self.trunk = ConvTrunk(config)
        self.input_shape = self.trunk.input_shape
        self.spatial_shape = self.trunk.output_shape
        self.pool = config.pool
        self.fc = nn.Linear(pooled_dim(self.spatial_shape, self.pool), config.feature_dim)
        self.norm = nn.LayerNorm(config.feature_dim)
        self.apply(orthogonal_init)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.fc(pool_features(features, self.pool)).float())
        return torch.tanh(out) if self.config.output_tanh else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@functools.lru_cache(maxsize=8)
def min_input_size(arch: str) -> int:
    """The smallest square image side the trunk of ``arch`` maps to a non-empty feature map
    (15 for ``dmc``, 31 for ``fast``, 1 for ``resnet``): the smallest patch a pooled encoder of
    that architecture takes."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown encoder architecture {arch!r}; use one of {ARCHITECTURES}")
    trunk = _conv_trunk(EncoderConfig(arch, 1, 128, 1, pool="mean"))
    with torch.no_grad():
        for size in range(1, 129):
            try:
                out = trunk(torch.zeros(2, 1, size, size))
            except (RuntimeError, ValueError):  # the convolutions do not fit
                continue
            if out.shape[-1] >= 1 and out.shape[-2] >= 1:
                return size
    raise ValueError(f"the {arch!r} trunk takes no image up to 128 px")  # pragma: no cover


def make_encoder(
    arch: str = "dmc",
    in_channels: int = 9,
    image_size: int | Sequence[int] = 84,
    feature_dim: int = 50,
    num_filters: int = 32,
    output_tanh: bool = False,
    pool: str | None = None,
) -> ConvEncoder:
    """Build an encoder of the suite's family (see the module docstring)."""
    return ConvEncoder(EncoderConfig(arch, in_channels, image_size, feature_dim, num_filters, output_tanh, pool))


def encoder_from_config(config: dict | EncoderConfig) -> ConvEncoder:
    return ConvEncoder(config if isinstance(config, EncoderConfig) else EncoderConfig(**config))


class TemporalEncoder(nn.Module):
    """Clip -> embedding: the family's conv trunk on every frame, then a temporal head.

    The input is a frame stack of ``span = (n_frames - 1) * stride + 1`` RGB frames, oldest
    first (what an env with that frame stack gives); the encoder takes every ``stride``-th frame
    ending at the newest, runs the per-frame trunk (shared weights), stacks the feature maps in
    time and aggregates them with a 3-D convolution over (time, height, width), then the same
    Linear + LayerNorm head as :class:`ConvEncoder`. This is mfTCN's architecture (per-frame CNN,
    3-D temporal convolutions, then fully connected layers).
    """

    def __init__(
        self,
        arch: str = "dmc",
        n_frames: int = 3,
        stride: int = 1,
        image_size=84,
        feature_dim: int = 50,
        num_filters: int = 32,
    ) -> None:
        super().__init__()
        if n_frames < 1 or stride < 1:
            raise ValueError(f"n_frames and stride must be >= 1, got {n_frames}, {stride}")
        self.n_frames, self.stride = n_frames, stride
        span = (n_frames - 1) * stride + 1
        self.config = EncoderConfig(arch, 3 * span, image_size, feature_dim, num_filters)
        self.input_shape = (3 * span, *self.config.image_size)
        self.feature_dim = feature_dim
        self.trunk = ConvTrunk(dataclasses.replace(self.config, in_channels=3))
        c, h, w = self.trunk.output_shape
        self.temporal = nn.Conv3d(c, c, kernel_size=(n_frames, 3, 3), stride=(1, 2, 2))
        with torch.no_grad():
            flat = self.temporal(torch.zeros(1, c, n_frames, h, w)).numel()
        self.fc = nn.Linear(flat, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self._frames = [span - 1 - stride * (n_frames - 1 - i) for i in range(n_frames)]
        self.apply(orthogonal_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(f"encoder expects clips of shape {self.input_shape}, got {tuple(x.shape[-3:])}")
        b = x.shape[0]
        x = x.reshape(b, -1, 3, *x.shape[-2:])[:, self._frames]  # (B, n, 3, H, W)
        features = self.trunk(x.reshape(b * self.n_frames, 3, *x.shape[-2:]))
        features = features.reshape(b, self.n_frames, *features.shape[1:]).transpose(1, 2)  # (B, C, n, H', W')
        out = torch.relu(self.temporal(features.contiguous()))
        return self.norm(self.fc(out.flatten(1)).float())
