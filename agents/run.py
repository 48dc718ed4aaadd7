"""``ssrl train``: a training run in a folder, resumable, never overwritten by accident.

A run folder holds ``run.json`` (what was asked: env, options, algorithm, hyper-parameters,
seed), the trainer's logs and checkpoints (see :mod:`ssrl.agents.trainer`) and, once the budget
is reached, ``final.json``. Calling :func:`train_run` on a folder with a checkpoint resumes it;
on a finished run it refuses unless ``overwrite=True``; with a different configuration it
refuses always (:class:`ssrl.runs.RunFolder`, shared by every long-running command).
"""

from __future__ import annotations

import pathlib
from typing import Any

import gymnasium as gym

from ssrl.runs import RunFolder

from . import ALGOS
from .trainer import Trainer


def make_env(env_id: str, env_kwargs: dict[str, Any], encoder: str | None = None, render: bool = False) -> gym.Env:
    """The env of a run: ``env_id`` with its options, wrapped by a frozen encoder if given."""
    import ssrl  # noqa: F401  (registers the envs)

    kwargs = dict(env_kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    if encoder is not None:
        from ssrl.representations import EncodedObservation, load_representation

        env = EncodedObservation(env, load_representation(encoder).encoder)
    return env


def make_aux(name: str | None, env: gym.Env, kwargs: dict[str, Any], latent_dim: int):
    """Method ``name``'s joint objective for an agent on ``env`` (``None`` for no name)."""
    if name is None:
        return None
    from ssrl.representations import make_aux_objective

    return make_aux_objective(name, env, latent_dim=latent_dim, **kwargs)


def agent_hyperparams(aux: str | None, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """The agent's hyper-parameters: what the joint objective ``aux`` needs of the agent (its
    method's ``joint_agent_options``, e.g. DBC's encoder without tanh), then the user's."""
    if aux is None:
        return dict(hyperparams)
    from ssrl.representations import get

    return dict(get(aux).joint_agent_options, **hyperparams)


def train_run(
    out: str | pathlib.Path,
    env_id: str,
    algo: str = "sac",
    env_steps: int = 100_000,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    encoder: str | None = None,
    aux: str | None = None,
    aux_kwargs: dict[str, Any] | None = None,
    eval_every: int = 10_000,
    eval_episodes: int = 10,
    checkpoint_every: int | None = None,
    video: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = True,
    callback=None,
) -> dict[str, Any]:
    """Train (or resume) one run in ``out``; returns the trainer's summary."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; use one of {sorted(ALGOS)}")
    out = pathlib.Path(out)
    spec = {
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "algo": algo,
        "hyperparams": dict(hyperparams or {}),
        "seed": int(seed),
        "encoder": str(encoder) if encoder else None,
        "aux": aux,
        "aux_kwargs": dict(aux_kwargs or {}),
    }
    folder = RunFolder(out, "ssrl train")
    folder.check(spec, budget=env_steps, budget_key="env_steps", overwrite=overwrite)
    env = make_env(env_id, spec["env_kwargs"], encoder)
    eval_env = None
    try:
        eval_env = make_env(env_id, spec["env_kwargs"], encoder, render=video) if eval_episodes > 0 else None
        agent_cls = ALGOS[algo]
        checkpoint = out / "checkpoint" / "agent.pt"
        aux_obj = make_aux(aux, env, spec["aux_kwargs"], latent_dim=int(spec["hyperparams"].get("feature_dim", 50)))
        if checkpoint.exists():
            agent = agent_cls.load(checkpoint, env=env, device=device, aux=aux_obj)
            agent.replay.load(out / "checkpoint" / "replay", agent.replay_meta)
            if progress:
                print(f"resuming {out} from {agent.num_env_steps} env steps")
        else:
            agent = agent_cls(env, aux=aux_obj, device=device, seed=seed, **agent_hyperparams(aux, spec["hyperparams"]))
        # Only now, with the env and the agent built from the options, is the run real: a start
        # that fails validation leaves no run.json to refuse (or mislabel) the corrected command.
        folder.start(spec, env_steps=int(env_steps))
        trainer = Trainer(
            agent,
            env,
            eval_env,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            run_dir=out,
            checkpoint_every=checkpoint_every,
            video=video,
            progress=progress,
            tensorboard=tensorboard,
            callback=callback,
        )
        return trainer.train(env_steps)
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
