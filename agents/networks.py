"""Actor and critic networks of SAC and TD3, and the actor's own encoder head.

The twin critics are one *ensemble* MLP: each layer holds the weights of both Q networks as a
``(2, in, out)`` tensor and runs them in one batched matmul (``baddbmm``). Same maths as two
separate MLPs, half the kernel launches and Python calls, which on a CPU is a good part of an
update's cost (see ``benchmarks/agent_speed.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssrl.representations.backbones import pool_features, pooled_dim


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied at once: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_features))
        for i in range(n):  # orthogonal, like each layer of SAC-AE's MLPs
            nn.init.orthogonal_(self.weight.data[i].T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """``n`` independent LayerNorms over the last dim: (n, B, d) -> (n, B, d), each member with
    its own gain and bias (``nn.LayerNorm``'s maths, eps 1e-5)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class EnsembleMLP(nn.Module):
    """``n`` MLPs with the same shape evaluated together; input (B, in) or (n, B, in).

    Each hidden layer is Linear -> ReLU, or Linear -> LayerNorm -> ReLU with ``layer_norm``.
    """

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], out_dim: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.n = n
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, d) for d in hidden) if layer_norm else None

    def hidden_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations, (n, B, hidden[-1]): what the output layer is linear in."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, *x.shape)
        for i, layer in enumerate(self.layers[:-1]):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = F.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.hidden_features(x))


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_dim))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    """Two Q functions Q_i(h, a); ``forward`` returns both, shape (2, B). ``layer_norm``: a
    LayerNorm after each hidden layer's Linear (``AgentConfig.critic_layer_norm``).
    ``model_dim`` > 0: each Q's last hidden layer also feeds a linear head of that many outputs,
    :meth:`q_and_change` (``AgentConfig.critic_model_weight``'s model of the observation's change)."""

    def __init__(
        self, feature_dim: int, action_dim: int, hidden: Sequence[int], layer_norm: bool = False, model_dim: int = 0
    ) -> None:
        super().__init__()
        self.q = EnsembleMLP(2, feature_dim + action_dim, hidden, 1, layer_norm)
        self.model = EnsembleLinear(2, hidden[-1], model_dim) if model_dim > 0 else None

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat([h, action], dim=-1)).squeeze(-1).float()

    def q_and_change(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward(h, action), each Q's model-head prediction (2, B, model_dim))`` from one pass."""
        if self.model is None:
            raise ValueError("this critic has no model head (built with model_dim=0)")
        z = self.q.hidden_features(torch.cat([h, action], dim=-1))
        return self.q.layers[-1](z).squeeze(-1).float(), self.model(z).float()


class ActorHead(nn.Module):
    """The actor's own Linear + LayerNorm (+ tanh) on features it reads *detached*.

    SAC-AE (Yarats et al. 2019, ``denisyarats/pytorch_sac_ae`` sac_ae.py) and DrQ (Kostrikov,
    Yarats and Fergus, ICLR 2021, ``denisyarats/drq`` drq.py) give the actor an encoder of its
    own whose convolutions are tied to the critic's and whose fc + LayerNorm (+ tanh) head is its
    own, and call it with ``detach_encoder=True``: the conv output is detached, so the actor's
    loss trains this head and never the shared convolutions. Here the head is that fc +
    LayerNorm (+ tanh); it detaches its input itself, so nothing it reads can receive a gradient
    through it.

    :param in_dim: width of what it reads once pooled (a conv feature map ``(B, C, H, W)`` is
        pooled as its encoder pools it; a ``(B, in_dim)`` vector is read as is).
    :param out_dim: width of its output (the encoder's feature dimension, 50 in both codes).
    :param tanh: tanh after the LayerNorm (SAC-AE and DrQ: yes).
    :param pool: how a feature map becomes a vector, the encoder's ``pool`` (a name of
        :data:`~ssrl.representations.backbones.POOLING`).
    """

    def __init__(self, in_dim: int, out_dim: int, tanh: bool = True, pool: str = "flatten") -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.tanh, self.pool = tanh, pool
        nn.init.orthogonal_(self.fc.weight)  # both codes' weight_init: orthogonal, zero bias
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if x.dim() > 2:
            x = pool_features(x, self.pool)
        out = self.norm(self.fc(x).float())
        return torch.tanh(out) if self.tanh else out


class RLHeadEncoder(nn.Module):
    """The agent's view of a representation's encoder in the decoupled regime with ``rl_head``:
    the encoder's conv trunk, read *detached*, through the agent's own Linear + LayerNorm
    (+ tanh) head, which the critic's loss trains.

    ATC's online setting (Stooke et al. 2021; rlpyt ``rl_with_ul``, ``stop_rl_conv_grad=True``)
    stops the RL gradient at the conv layers: only the UL loss trains the convolutions, while
    the RL agent's own ``fc1`` (Linear -> LayerNorm, 50 wide) on top of them is trained by RL.
    Without it the critic reads the method's own code (its compressor and LayerNorm, trained by
    the method's loss alone), which no RL gradient can adapt.

    ``forward(x)`` is what the critic and actor read; :meth:`split` gives it together with the
    method's code ``source(x)`` (with gradient into the trunk and the method's head) from one
    trunk pass, so the method's loss on the agent's batch costs no extra encoder pass.

    :param source: the representation's encoder: a suite encoder with ``trunk``, ``head`` and
        ``pool`` (:class:`~ssrl.representations.backbones.ConvEncoder`), or a
        :class:`~ssrl.representations.wrappers.StackedFramesEncoder` of one chunk around one.
    :param out_dim: width of the head's output (SAC-AE's and ATC's RL ``feature_dim``, 50).
    :param tanh: tanh after the LayerNorm (the agent's ``encoder_tanh``).
    """

    def __init__(self, source: nn.Module, out_dim: int, tanh: bool) -> None:
        super().__init__()
        if getattr(source, "chunks", 1) != 1:
            raise ValueError(
                "rl_head reads the encoder's conv trunk, but this encoder is applied to each frame of the stack "
                "separately (an encoder of single frames under a frame stack); use rl_head=False"
            )
        conv = getattr(source, "encoder", source)
        if not all(hasattr(conv, name) for name in ("trunk", "head", "pool")):
            raise ValueError(
                f"rl_head reads the encoder's conv trunk; a {type(conv).__name__} has none (a suite ConvEncoder "
                "has); use rl_head=False"
            )
        self.source, self.pool = source, conv.pool  # (the conv encoder is reached through source: stored once)
        in_dim = pooled_dim(conv.trunk.output_shape, conv.pool)
        self.head = ActorHead(in_dim, out_dim, tanh, conv.pool)

    # The trunk / head / fc / pool of the suite's encoders, so that an agent's actor head
    # (``actor_head``) reads the trunk here as it does on an encoder the agent built.
    @property
    def conv(self) -> nn.Module:
        """The suite encoder inside ``source`` (its trunk and the method's head)."""
        return getattr(self.source, "encoder", self.source)

    @property
    def trunk(self) -> nn.Module:
        return self.conv.trunk

    @property
    def fc(self) -> nn.Linear:
        return self.head.fc

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(head(trunk(x)) with the trunk detached, source(x), trunk(x))`` from one trunk pass."""
        z = self.conv.trunk(x)
        return self.head(z), self.conv.head(z), z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.conv.trunk(x)
        return self.head(z)


class TanhGaussianActor(nn.Module):
    """SAC's policy: a Gaussian squashed by tanh, with the change-of-variables log-density.

    ``log_std`` is squashed into ``[log_std_min, log_std_max]`` with tanh (SAC-AE, DrQ).
    Sampling takes an explicit ``torch.Generator`` so a run's randomness can be saved and resumed.
    ``head`` (an :class:`ActorHead`, optional) maps what the actor reads to the MLP's input.
    """

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        log_std_bounds=(-10.0, 2.0),
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.head = head
        self.net = mlp(feature_dim, hidden, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_bounds

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False):
        """Returns ``(action, log_prob)``; ``log_prob`` is None when deterministic."""
        if self.head is not None:
            h = self.head(h)
        mu, log_std = self.net(h).float().chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mu), None
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        u = mu + log_std.exp() * eps
        action = torch.tanh(u)
        # log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter written stably as
        # 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return action, log_prob


class DeterministicActor(nn.Module):
    """TD3's policy: tanh(MLP(h)), with an optional ``head`` (:class:`ActorHead`) before the MLP."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: Sequence[int], head: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.net = mlp(feature_dim, hidden, action_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            h = self.head(h)
        return torch.tanh(self.net(h).float())


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class RunningNormalizer(nn.Module):
    """Vector observations standardised by running statistics: ``clip((x - mean) / std, -clip, clip)``
    with ``std = max(sqrt(var), eps)``.

    HER's normaliser (``openai/baselines`` her/normalizer.py: eps 0.01, clip 5), on the whole
    network input, goal included; updated with every replay batch the agent trains on, so
    relabelled goals count too (baselines updates with relabelled episodes, the same idea).
    The statistics are buffers: checkpoints carry them, so a resumed run normalises exactly as
    the killed one would have. Batches are merged into the running moments exactly (Chan et al.'s
    parallel update), in float64.
    """

    def __init__(self, dim: int, eps: float = 0.01, clip: float = 5.0) -> None:
        super().__init__()
        self.eps, self.clip = float(eps), float(clip)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).reshape(len(x), -1)
        n = float(len(x))
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n / total)
        self.count.fill_(total)

    @property
    def std(self) -> torch.Tensor:
        var = self.m2 / self.count.clamp(min=1.0)
        return var.sqrt().clamp(min=self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.count == 0:
            return x
        z = (x.to(torch.float64) - self.mean) / self.std
        return z.clamp(-self.clip, self.clip).to(x.dtype)
