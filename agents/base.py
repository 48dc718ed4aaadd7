"""What SAC and TD3 share: observations, the pixel encoder, the replay, acting, checkpoints.

An agent is built from an env (for its spaces) and a config dataclass whose defaults depend on
the observation: vectors (states or frozen-encoder latents) or pixels (a frame stack, encoded by
the suite's conv encoder). Subclasses define the networks and ``update(batch)``; the training
loop lives in :mod:`ssrl.agents.trainer`.

The pixel path follows SAC-AE, DrQ and DBC: one conv encoder (with a slow EMA copy for targets)
is trained by the critic loss; the actor reads its output detached. Each update encodes the
observations once with gradient and the next observations once without, and the actor update
reuses the detached critic features: two encoder passes per update, where SB3's SAC (separate
actor and critic CNNs) makes five.

Auxiliary objectives (DBC, DeepMDP, contrastive) plug in through ``aux``: an object with
``loss(inputs: AuxInputs) -> (loss, metrics)`` and ``parameters()``. Its loss is added to the
critic loss on the same batch, so its gradient reaches the encoder, and its own parameters
(reward and transition models) get their own optimiser.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import pathlib
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ssrl.representations.backbones import EncoderConfig, encoder_from_config
from ssrl.utils import atomic_path, read_torch_file

from .augment import random_shift
from .replay import GOAL_KEYS, Batch, ReplayBuffer

CHECKPOINT_FORMAT = 1


@dataclasses.dataclass
class AgentConfig:
    """Hyper-parameters SAC and TD3 share; each algorithm's config adds its own. Defaults are for
    state or latent observations; a subclass's ``PIXEL_PRESET`` replaces some for pixels."""

    gamma: float = 0.99
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 5000  # agent steps of uniform random actions before the first update
    updates_per_step: int = 1
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4  # also the encoder's (the critic optimiser trains it)
    tau: float = 0.005
    hidden_dims: tuple[int, ...] = (256, 256)
    her_ratio: float = 0.8  # goal envs: SB3's n_sampled_goal=4
    aux_lr: float = 1e-3
    precision: str = "fp32"  # "bf16": matmuls and convs in bfloat16 (weights, Adam, losses stay fp32)
    # pixels only
    encoder_arch: str = "dmc"
    feature_dim: int = 50
    encoder_tanh: bool = True
    encoder_tau: float = 0.05
    augment: str | None = "shift"
    shift_pad: int = 4

    PIXEL_PRESET: ClassVar[dict] = {}
    POSITIVE: ClassVar[tuple[str, ...]] = ("batch_size", "buffer_size", "updates_per_step")

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.augment not in (None, "shift"):
            raise ValueError(f"augment must be None or 'shift', got {self.augment!r}")
        for name in self.POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")


class TrainingDiverged(RuntimeError):
    """A loss or an observation became NaN or infinite."""


@dataclasses.dataclass
class AuxInputs:
    """What an auxiliary objective receives at each update (tensors on the agent's device)."""

    latent: torch.Tensor  # encoder(obs), with gradient to the encoder
    next_latent: torch.Tensor  # target encoder(next_obs), no gradient
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    obs: torch.Tensor | None  # the (augmented) observations, for objectives needing extra passes
    next_obs: torch.Tensor | None
    encoder: nn.Module | None


class AuxObjective(Protocol):
    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, float]]: ...

    def parameters(self): ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of a Box or Dict space (for checkpoints)."""
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(v) for k, v in space.spaces.items()}}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.flatten().tolist() if space.dtype != np.uint8 else 0,
            "high": space.high.flatten().tolist() if space.dtype != np.uint8 else 255,
        }
    raise ValueError(f"agents support Box and Dict spaces, not {type(space).__name__}")


def space_from_dict(d: dict[str, Any]) -> gym.Space:
    if d["type"] == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})
    shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
    low = np.asarray(d["low"], dtype).reshape(shape) if isinstance(d["low"], list) else d["low"]
    high = np.asarray(d["high"], dtype).reshape(shape) if isinstance(d["high"], list) else d["high"]
    return gym.spaces.Box(low, high, shape, dtype)


def is_pixel_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def build_config(config_cls, pixels: bool, overrides: dict[str, Any]):
    """The config for this observation type, with the user's overrides checked by name."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} option(s) {unknown}; valid options: {sorted(fields)}")
    preset = dict(config_cls.PIXEL_PRESET) if pixels else {}
    preset.update(overrides)
    return config_cls(**preset)


class OffPolicyAgent(abc.ABC):
    """Base of :class:`~ssrl.agents.SAC` and :class:`~ssrl.agents.TD3` (see module docstring)."""

    algo: ClassVar[str] = ""
    config_cls: ClassVar[type]

    def __init__(
        self,
        env: gym.Env | None,
        aux: AuxObjective | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        observation_space: gym.Space | None = None,
        action_space: gym.spaces.Box | None = None,
        frame_stack: int | None = None,
        reward_fn=None,
        **hyperparams: Any,
    ) -> None:
        self.env = env
        observation_space = observation_space if observation_space is not None else env.observation_space
        action_space = action_space if action_space is not None else env.action_space
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"{self.algo} needs a 1-D continuous (Box) action space, got {action_space}")
        self.observation_space, self.action_space = observation_space, action_space
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.aux = aux

        self.is_dict = isinstance(observation_space, gym.spaces.Dict)
        self.pixels = is_pixel_space(observation_space)
        if self.is_dict:
            if not all(k in observation_space.spaces for k in ("observation", "desired_goal")):
                raise ValueError("dict observations must hold 'observation' and 'desired_goal' (a goal env)")
            if any(is_pixel_space(s) for s in observation_space.spaces.values()):
                raise ValueError(
                    "goal envs with image observations: encode them first, e.g. "
                    "ssrl.representations.EncodedObservation(env, encoder), then train on latents"
                )
        self.config = build_config(self.config_cls, self.pixels, hyperparams)
        if frame_stack is None:
            # Only the env's own frame stack counts: a wrapper that changes the observation (an
            # encoder, say) hides it.
            own = env is not None and not self.is_dict and env.observation_space == env.unwrapped.observation_space
            frame_stack = getattr(env.unwrapped, "frame_stack", 1) if own else 1
        self.frame_stack = int(frame_stack)
        # Action bounds: the networks act in [-1, 1] and actions are rescaled to the space.
        self._low = action_space.low.astype(np.float32)
        self._high = action_space.high.astype(np.float32)
        self.action_dim = int(action_space.shape[0])

        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)

        self.encoder: nn.Module | None = None
        self.encoder_target: nn.Module | None = None
        if self.pixels:
            c = self.config
            enc_cfg = EncoderConfig(c.encoder_arch, observation_space.shape[0], tuple(observation_space.shape[1:]),
                                    c.feature_dim, output_tanh=c.encoder_tanh)
            self.encoder = encoder_from_config(enc_cfg).to(self.device)
            self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
            self.feature_dim = c.feature_dim
        elif self.is_dict:
            spaces = observation_space.spaces
            self.feature_dim = int(np.prod(spaces["observation"].shape) + np.prod(spaces["desired_goal"].shape))
        else:
            self.feature_dim = int(np.prod(observation_space.shape))

        if reward_fn is None and env is not None and self.is_dict and all(k in observation_space.spaces for k in GOAL_KEYS):
            reward_fn = env.get_wrapper_attr("compute_reward")
        her_ratio = self.config.her_ratio if self.is_dict and reward_fn is not None else 0.0
        self.replay = ReplayBuffer(
            self.config.buffer_size, observation_space, action_space, self.frame_stack,
            reward_fn=reward_fn, her_ratio=her_ratio, seed=self.seed,
        )
        self.replay_meta: dict | None = None  # which replay save the last checkpoint goes with
        # Loop state, saved in checkpoints so that a resumed run continues the same run.
        self.num_agent_steps = 0
        self.num_env_steps = 0
        self.num_updates = 0
        self.num_episodes = 0
        self.build_networks()
        if aux is not None:
            if not self.pixels:
                raise ValueError("an auxiliary objective trains the pixel encoder; this agent has vector observations")
            if isinstance(aux, nn.Module):
                aux.to(self.device)
            if hasattr(aux, "generator"):
                aux.generator = self.generator  # its randomness is part of the run's saved state
            aux_params = list(aux.parameters())
            self.aux_optimizer = torch.optim.Adam(aux_params, lr=self.config.aux_lr) if aux_params else None

    # -- what an algorithm defines -------------------------------------------------------------

    @abc.abstractmethod
    def build_networks(self) -> None:
        """Create actor, critics, targets and optimisers (the encoder exists already)."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on a replay batch; returns scalar metrics."""

    @abc.abstractmethod
    def policy(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Action in [-1, 1] for features ``h`` (exploration noise included unless deterministic)."""

    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Everything with weights, by name (checkpoints)."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser, by name (checkpoints)."""

    # -- observations --------------------------------------------------------------------------

    def obs_to_tensor(self, obs, augment: bool = False) -> torch.Tensor:
        """A batch of observations (numpy) -> network input (a float tensor, or uint8 images)."""
        if self.is_dict:
            parts = [np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in ("observation", "desired_goal")]
            return torch.from_numpy(np.concatenate(parts, axis=1)).to(self.device)
        x = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device, non_blocking=True)
        if self.pixels:
            if augment and self.config.augment == "shift":
                x = random_shift(x, self.config.shift_pad, self.generator)
            return x
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) if self.pixels else x

    def check_observation(self, obs) -> None:
        values = obs.values() if isinstance(obs, dict) else (obs,)
        for v in values:
            v = np.asarray(v)
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise TrainingDiverged(f"the env returned a NaN or infinite observation at env step {self.num_env_steps}")

    # -- acting --------------------------------------------------------------------------------

    def _batch_obs(self, obs):
        if isinstance(obs, dict):
            return {k: np.asarray(v)[None] for k, v in obs.items()}
        return np.asarray(obs)[None]

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """An action for one observation, rescaled to the env's action space."""
        h = self.features(self.obs_to_tensor(self._batch_obs(obs)))
        a = self.policy(h, deterministic)[0].cpu().numpy()
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def random_action(self) -> np.ndarray:
        return self.rng.uniform(self._low, self._high).astype(np.float32)

    def to_unit(self, action: np.ndarray) -> np.ndarray:
        """Env action -> [-1, 1] (what the replay stores and the networks output)."""
        return 2.0 * (np.asarray(action, np.float32) - self._low) / (self._high - self._low) - 1.0

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """Stable-Baselines3's signature: ``(action, None)``."""
        return self.act(obs, deterministic=deterministic), None

    # -- training ------------------------------------------------------------------------------

    def learn(self, env_steps: int, progress: bool = False, **trainer_kwargs) -> "OffPolicyAgent":
        """Train for ``env_steps`` more environment steps (agent steps x action repeat)."""
        from .trainer import Trainer

        if self.env is None:
            raise ValueError("this agent has no env: pass one to the constructor or to load()")
        Trainer(self, self.env, progress=progress, **trainer_kwargs).train(self.num_env_steps + env_steps)
        return self

    # -- pieces of an update shared by SAC and TD3 ---------------------------------------------

    def autocast(self):
        """bfloat16 matmuls and convolutions when ``precision="bf16"`` (4x the fp32 matmul rate
        on CPUs with AVX-512 BF16); network outputs are cast back to fp32 for the losses."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    def prepare(self, batch: Batch):
        """Batch -> tensors, with the two encoder passes of an update: ``h = encoder(obs)``
        with gradient and ``h_next = target_encoder(next_obs)`` without."""
        obs = self.obs_to_tensor(batch.obs, augment=True)
        next_obs = self.obs_to_tensor(batch.next_obs, augment=True)
        action = torch.from_numpy(batch.action).to(self.device)
        reward = torch.from_numpy(batch.reward).to(self.device)
        discount = torch.from_numpy(batch.discount).to(self.device)
        h = self.features(obs)
        with torch.no_grad():
            h_next = self.encoder_target(next_obs) if self.pixels else next_obs
        return obs, next_obs, h, h_next, action, reward, discount

    def critic_step(self, critic_loss: torch.Tensor, inputs: AuxInputs) -> dict[str, torch.Tensor]:
        """Backward the critic loss (plus the auxiliary loss) and step their optimisers.

        Refuses to step on a NaN or infinite loss, so the weights stay the last good ones.
        """
        metrics = {"critic_loss": critic_loss.detach()}
        loss = critic_loss
        if self.aux is not None:
            aux_loss, aux_metrics = self.aux.loss(inputs)
            loss = loss + aux_loss
            metrics["aux_loss"] = aux_loss.detach()
            metrics.update({f"aux/{k}": v for k, v in aux_metrics.items()})
        self.check_finite(loss, "critic loss" if self.aux is None else "critic + auxiliary loss")
        self.critic_optimizer.zero_grad(set_to_none=True)
        if self.aux is not None and self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        if self.aux is not None and self.aux_optimizer is not None:
            self.aux_optimizer.step()
        return metrics

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
        """One gradient step on ``loss``; refuses a NaN or infinite loss (see :meth:`critic_step`)."""
        self.check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def check_finite(self, loss: torch.Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{name} is {loss.item()} at update {self.num_updates} (env step {self.num_env_steps}); "
                "lower the learning rate or check the observations and rewards"
            )

    def aux_inputs(self, obs, next_obs, h, h_next, action, reward, discount) -> AuxInputs:
        return AuxInputs(h, h_next, action, reward, discount, obs if self.pixels else None,
                         next_obs if self.pixels else None, self.encoder)

    def critic_parameters(self, critic: nn.Module) -> list[nn.Parameter]:
        """The critic optimiser trains the encoder too (the critic loss shapes it)."""
        params = list(critic.parameters())
        return params + list(self.encoder.parameters()) if self.pixels else params

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "algo": self.algo,
            "config": dataclasses.asdict(self.config),
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "frame_stack": self.frame_stack,
            "seed": self.seed,
            "modules": {name: m.state_dict() for name, m in self.modules().items()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers().items()},
            "counters": {
                "agent_steps": self.num_agent_steps,
                "env_steps": self.num_env_steps,
                "updates": self.num_updates,
                "episodes": self.num_episodes,
            },
            "rng": {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()},
            "replay": self.replay_meta,
        }
        if self.aux is not None:
            state["aux"] = self.aux.state_dict() if hasattr(self.aux, "state_dict") else {}
            if self.aux_optimizer is not None:
                state["optimizers"]["aux"] = self.aux_optimizer.state_dict()
        return state

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write weights, optimiser states, counters and RNG states to ``path`` atomically.

        The replay buffer is saved separately (``replay.save(folder)``), by the trainer.
        """
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(self.state_dict(), tmp)
        return pathlib.Path(path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        optimizers = self.optimizers()
        if self.aux is not None and self.aux_optimizer is not None:
            optimizers["aux"] = self.aux_optimizer
        for name, opt in optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        if self.aux is not None and "aux" in state and hasattr(self.aux, "load_state_dict"):
            self.aux.load_state_dict(state["aux"])
        c = state["counters"]
        self.num_agent_steps, self.num_env_steps = c["agent_steps"], c["env_steps"]
        self.num_updates, self.num_episodes = c["updates"], c["episodes"]
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.generator.set_state(state["rng"]["torch"])
        self.replay_meta = state.get("replay")

    @classmethod
    def load(cls, path: str | pathlib.Path, env: gym.Env | None = None, device: str = "auto", aux=None) -> "OffPolicyAgent":
        """Rebuild an agent from :meth:`save` (``env`` is needed only to train further)."""
        state = read_checkpoint(path)
        if state["algo"] != cls.algo:
            raise ValueError(f"{path} holds a {state['algo']} agent, not {cls.algo}")
        obs_space = space_from_dict(state["observation_space"])
        act_space = space_from_dict(state["action_space"])
        if env is not None and (env.observation_space.shape != obs_space.shape or env.action_space.shape != act_space.shape):
            raise ValueError(
                f"{path} was trained on observations {obs_space} and actions {act_space}; "
                f"the env given has {env.observation_space} and {env.action_space}"
            )
        agent = cls(env, aux=aux, device=device, seed=state["seed"], observation_space=obs_space, action_space=act_space,
                    frame_stack=state["frame_stack"], **state["config"])
        agent.load_state_dict(state)
        return agent


def read_checkpoint(path: str | pathlib.Path) -> dict[str, Any]:
    """Load an agent checkpoint with a clear error for missing, corrupt or foreign files."""
    state = read_torch_file(path, "ssrl agent checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT or "algo" not in state:
        raise ValueError(f"{path} is not an ssrl agent checkpoint (format {CHECKPOINT_FORMAT})")
    return state
