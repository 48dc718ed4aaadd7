"""Agent checkpoints on disk: the file format, space (de)serialisation, atomic save and load.

A checkpoint is one ``torch.save`` file (loaded back with ``weights_only=True``) holding a dict::

    format              CHECKPOINT_FORMAT
    algo                "sac" | "td3"
    config              the agent's config dataclass, as a dict: every value resolved (the pixel
                        preset applied, ``precision`` "fp32" or "bf16", never "auto"), so a
                        resumed agent is configured exactly as the saved one
    observation_space   space_to_dict(...) of the agent's spaces, so the agent can be rebuilt
    action_space        without its env
    frame_stack, seed
    modules             {name: state_dict} of every network (OffPolicyAgent.modules())
    optimizers          {name: state_dict} of every optimiser ("aux" for the aux objective's)
    counters            agent_steps, env_steps, updates, episodes
    rng                 the numpy and torch generator states
    replay              which replay save this checkpoint goes with (the trainer's), or None
    aux                 the aux objective's state_dict, if the agent has one

The agent builds the dict (:meth:`~ssrl.agents.OffPolicyAgent.state_dict`) and restores it
(:meth:`~ssrl.agents.OffPolicyAgent.load_state_dict`); this module writes, reads and checks
files. ``agent.save(path)`` and ``SAC.load(path, env)`` call :func:`save_agent` and
:func:`load_agent`.

Checkpoints written before pixel presets existed have no ``pixel_preset`` in their config; they
load with the ``"legacy"`` preset, the behaviour they were trained with; those written before goal
presets load with ``goal_preset="none"``.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

from ssrl.utils import atomic_path, read_torch_file

if TYPE_CHECKING:
    from ssrl.representations.objective import AuxObjective

    from .base import OffPolicyAgent

CHECKPOINT_FORMAT = 1  # bump when the layout above changes incompatibly
LEGACY_PRESET = "legacy"  # the pixel preset of checkpoints whose config names none

AgentT = TypeVar("AgentT", bound="OffPolicyAgent")


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of a Box or Dict space.

    :param space: a ``gym.spaces.Box`` or a ``gym.spaces.Dict`` of them.
    :raises ValueError: for any other space.
    """
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
    """The space :func:`space_to_dict` described."""
    if d["type"] == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})
    shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
    low = np.asarray(d["low"], dtype).reshape(shape) if isinstance(d["low"], list) else d["low"]
    high = np.asarray(d["high"], dtype).reshape(shape) if isinstance(d["high"], list) else d["high"]
    return gym.spaces.Box(low, high, shape, dtype)


def read_checkpoint(path: str | pathlib.Path) -> dict[str, Any]:
    """Load an agent checkpoint's dict, with a clear error for missing, corrupt or foreign files.

    :raises FileNotFoundError: no file at ``path``.
    :raises ValueError: the file is corrupt or is not an ssrl agent checkpoint of this format.
    """
    return read_torch_file(path, "agent checkpoint", CHECKPOINT_FORMAT, required=("algo", "config", "modules"))


def save_agent(agent: OffPolicyAgent, path: str | pathlib.Path) -> pathlib.Path:
    """Write ``agent.state_dict()`` to ``path`` atomically: a temporary file in the same folder,
    renamed over ``path`` once complete, so a kill mid-write leaves the previous checkpoint."""
    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
        # Through a file object the zip's root is always "archive" (a path would put the random
        # temporary name inside it): the same agent saves to the same bytes, so a checkpoint's
        # hash (the bench's data keys of agent: policies) changes only with the agent.
        torch.save(agent.state_dict(), fh)
    return pathlib.Path(path)


def load_agent(
    cls: type[AgentT],
    path: str | pathlib.Path,
    env: gym.Env | None = None,
    device: str | torch.device = "auto",
    aux: AuxObjective | None = None,
    encoder: torch.nn.Module | None = None,
) -> AgentT:
    """Rebuild a ``cls`` agent from a checkpoint written by :func:`save_agent`.

    :param cls: the agent class (:class:`~ssrl.agents.SAC` or :class:`~ssrl.agents.TD3`); the
        checkpoint must hold that algorithm.
    :param env: the env to train further in (optional: the spaces are in the checkpoint); its
        observation and action shapes must be the checkpoint's.
    :param device: where to put the networks ("auto": the GPU if torch sees one).
    :param aux: the auxiliary objective the agent was trained with, if any (its state is restored).
    :param encoder: a module of the encoder architecture the agent was built with, if it was
        given one (a representation's); its weights are replaced by the checkpoint's.
    """
    return agent_from_state(cls, read_checkpoint(path), env, device, aux, encoder, where=str(path))


def agent_from_state(
    cls: type[AgentT],
    state: dict[str, Any],
    env: gym.Env | None = None,
    device: str | torch.device = "auto",
    aux: AuxObjective | None = None,
    encoder: torch.nn.Module | None = None,
    where: str = "the checkpoint",
) -> AgentT:
    """:func:`load_agent` from a checkpoint dict already read (:func:`read_checkpoint`)."""
    if state["algo"] != cls.algo:
        raise ValueError(f"{where} holds a {state['algo']} agent, not {cls.algo}")
    obs_space = space_from_dict(state["observation_space"])
    act_space = space_from_dict(state["action_space"])
    if env is not None and (
        env.observation_space.shape != obs_space.shape or env.action_space.shape != act_space.shape
    ):
        raise ValueError(
            f"{where} was trained on observations {obs_space} and actions {act_space}; "
            f"the env given has {env.observation_space} and {env.action_space}"
        )
    config = dict(state["config"])
    config.setdefault("pixel_preset", LEGACY_PRESET)  # written before presets: the preset of that time
    config.setdefault("goal_preset", "none")  # written before goal presets: no normaliser, SB3's values
    agent = cls(
        env,
        aux=aux,
        device=device,
        seed=state["seed"],
        observation_space=obs_space,
        action_space=act_space,
        frame_stack=state["frame_stack"],
        encoder=encoder,
        **config,
    )
    agent.load_state_dict(state)
    return agent
