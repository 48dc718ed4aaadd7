"""A grasp Q-map: a contextual-bandit Q-function evaluated densely over grasp positions.

For one-grasp episodes (``ssrl/Grasp-v0`` and ``ssrl/GraspGoal-v0`` seen as a contextual bandit,
e.g. through :class:`~ssrl.representations.grasping.EmbeddedGraspGoals`), the value of a grasp is
its expected reward, ``Q(s, g, a) = E[r | s, g, a]``; nothing is bootstrapped. grasp2vec trains
such a Q-function with QT-Opt (Kalashnikov et al. 2018: a conv net on the image and the action,
maximised by the cross-entropy method). Here the Q-function is fully convolutional over the
observation, which the env gives in action coordinates (``action_grid``: pixel ``(i, j)`` is
where action ``x = -1 + (2j + 1) / G``, ``y = -1 + (2i + 1) / G`` grasps): one pass yields
``Q`` for every grasp position and each of ``yaw_bins`` gripper angles at once, so the
maximisation is exact (an argmax) instead of sampled, and a grasp learnt at one place transfers to
every other by the convolutions' translation equivariance, as in the dense grasp-affordance maps
of Zeng et al. (2018). The goal embedding (a vector ``desired_goal``) modulates the feature map
(FiLM, Perez et al. 2018: per-channel scale and shift from the goal), so one network serves
every goal.

Update: a replay batch's observed (or relabelled) rewards regress the Q-map at the executed
grasp's cell and yaw bin, mean squared error. Acting: the argmax of the map (deterministic), or
with probability ``epsilon`` a uniform random grasp (exploration; before ``learning_starts`` every
grasp is random). Departures from QT-Opt: no target network or Bellman backup (one-step
episodes: the target is the reward), no CEM, discretised positions and yaws.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import AgentConfig, OffPolicyAgent
from .replay import Batch


@dataclasses.dataclass
class QMapConfig(AgentConfig):
    """The Q-map's hyper-parameters (with :class:`~ssrl.agents.base.AgentConfig`'s; the actor,
    target, temperature, encoder and augmentation fields do not apply)."""

    # Gripper angles the map scores at each position: bins of equal width over the action's yaw
    # in [-1, 1) (a half turn; a parallel gripper is symmetric under it), scored at their centres.
    yaw_bins: int = 4
    # Channels of the conv net (the coarse stage has twice as many).
    channels: int = 32
    # Probability of a uniform random grasp when acting to explore (after learning_starts).
    epsilon: float = 0.1
    # Overridden AgentConfig defaults (a bandit on a few thousand grasps, not SB3's MDP scale).
    batch_size: int = 64
    buffer_size: int = 100_000
    learning_starts: int = 200
    critic_lr: float = 1e-3  # Adam learning rate of the Q-map
    augment: str | None = None  # a shift would move the image off its action grid
    pixel_preset: str = "qmap"
    goal_preset: str = "none"

    PIXEL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"qmap": {}}
    GOAL_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"none": {}}
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = AgentConfig.AT_LEAST_ONE + ("yaw_bins", "channels")
    IN_RANGE: ClassVar[dict[str, tuple[float, float, bool, bool]]] = dict(
        AgentConfig.IN_RANGE, epsilon=(0.0, 1.0, True, True)
    )


class QMapNet(nn.Module):
    """Image ``(3, G, G)`` (+ goal vector) -> Q ``(yaw_bins, G, G)``: two 3x3 convs at full
    resolution (with two coordinate channels, so values can depend on where the walls are), a
    stride-2 stage, FiLM by the goal, then back to full resolution with a skip connection."""

    def __init__(self, in_channels: int, goal_dim: int, channels: int, yaw_bins: int) -> None:
        super().__init__()
        c = channels
        self.fine = nn.Sequential(
            nn.Conv2d(in_channels + 2, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU()
        )
        self.coarse = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU())
        self.film = nn.Linear(goal_dim, 4 * c) if goal_dim else None
        self.mix = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU())
        self.out = nn.Sequential(nn.Conv2d(3 * c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, yaw_bins, 1))
        if self.film is not None:  # start as the identity modulation
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, image: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        fine = self.fine(torch.cat([x, xs, ys], dim=1))
        coarse = self.coarse(fine)
        if self.film is not None:
            scale, shift = self.film(goal.float()).chunk(2, dim=1)
            coarse = F.relu(coarse * (1 + scale[..., None, None]) + shift[..., None, None])
        up = F.interpolate(self.mix(coarse), size=(h, w), mode="bilinear", align_corners=False)
        return self.out(torch.cat([fine, up], dim=1))


class QMap(OffPolicyAgent):
    """The grasp Q-map agent (see the module docstring). ``QMap(env, **hyperparams)``; the env's
    observation is an image in action coordinates (a grasping env with ``action_grid``), or a
    goal dict of such an image and vector goals; actions are ``[x, y, yaw]``."""

    algo = "qmap"
    config_cls = QMapConfig

    def _check_spaces(self) -> None:
        super()._check_spaces()
        image = self.observation_space["observation"] if self.is_dict else self.observation_space
        if not self.pixels or image.shape[1] != image.shape[2]:
            raise ValueError(
                "the Q-map reads a square image in action coordinates: a grasping env with action_grid "
                f"(e.g. -o action_grid=32), got {image}"
            )
        if self.action_space.shape != (3,):
            raise ValueError(f"the Q-map chooses grasps [x, y, yaw]; this env's actions are {self.action_space}")

    def _build_encoder(self, encoder: nn.Module | None) -> None:
        """No separate encoder: the Q-map is one conv net from image to values."""
        if encoder is not None:
            raise ValueError("the Q-map is its own network from the image; it adopts no pretrained encoder")
        self.encoder = self.encoder_target = None
        self.split_encoder = False
        self.feature_dim = self.critic_dim = 0
        self.obs_normalizer = self.critic_normalizer = None

    def build_networks(self) -> None:
        c = self.config
        image = self.observation_space["observation"] if self.is_dict else self.observation_space
        self.grid = int(image.shape[-1])
        self.net = QMapNet(image.shape[0], self.goal_dim, c.channels, c.yaw_bins).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.critic_lr)

    def modules(self) -> dict[str, nn.Module]:
        return dict(self.networks())

    def networks(self) -> dict[str, nn.Module]:
        return {"qmap": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"qmap": self.optimizer}

    def features(self, x):
        return x  # the network input itself: the Q-map reads the image (and goal) directly

    def q_values(self, x) -> torch.Tensor:
        """Q for every grasp: ``(B, yaw_bins, G, G)``, rows ``y``, columns ``x``."""
        image, goal = (x.image, x.goal) if self.goal_dim else (x, None)
        return self.net(image, goal)

    def cells(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(yaw bin, row, column)`` of unit actions ``(B, 3)``: the grid cell holding
        ``(x, y)`` and the yaw bin holding the yaw (the yaw's ends, +-1, are one angle)."""
        g, k = self.grid, self.config.yaw_bins
        column = ((action[:, 0] + 1) / 2 * g).long().clamp(0, g - 1)
        row = ((action[:, 1] + 1) / 2 * g).long().clamp(0, g - 1)
        yaw = ((action[:, 2] + 1) / 2 * k).long() % k
        return yaw, row, column

    def centres(self, yaw: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        """Unit actions at the centres of cells and yaw bins, ``(B, 3)``."""
        g, k = self.grid, self.config.yaw_bins
        return torch.stack([-1 + (2 * column + 1) / g, -1 + (2 * row + 1) / g, -1 + (2 * yaw + 1) / k], dim=1).float()

    @torch.no_grad()
    def policy(self, h, deterministic: bool) -> torch.Tensor:
        q = self.q_values(h)
        b, k, g, _ = q.shape
        best = q.flatten(1).argmax(1)
        action = self.centres(best // (g * g), (best // g) % g, best % g)
        if not deterministic and self.config.epsilon > 0:
            explore = torch.rand(b, generator=self.generator, device=self.device) < self.config.epsilon
            uniform = torch.rand(b, 3, generator=self.generator, device=self.device) * 2 - 1
            action = torch.where(explore[:, None], uniform, action)
        return action

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One regression step of the executed grasps' values on their rewards."""
        x = self.obs_to_tensor(batch.obs)
        action = torch.from_numpy(batch.action).to(self.device)
        reward = torch.from_numpy(batch.reward).to(self.device).float()
        yaw, row, column = self.cells(action)
        q = self.q_values(x)[torch.arange(len(reward), device=self.device), yaw, row, column]
        loss = F.mse_loss(q, reward)
        self.optimizer_step(self.optimizer, loss, "Q-map loss")
        self.num_updates += 1
        return {"critic_loss": loss.detach(), "q": q.detach().mean()}
