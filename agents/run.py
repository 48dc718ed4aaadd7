"""``ssrl train``: a training run in a folder, resumable, never overwritten by accident.

A run folder holds ``run.json`` (what was asked: env, options, algorithm, hyper-parameters,
seed, representation and regime), the trainer's logs and checkpoints (see
:mod:`ssrl.agents.trainer`) and, once the budget is reached, ``final.json``. Calling
:func:`train_run` on a folder with a checkpoint resumes it; on a finished run it refuses unless
``overwrite=True``; with a different configuration it refuses always (:class:`ssrl.runs.RunFolder`,
shared by every long-running command).

A representation serves the agent in one of four regimes (:mod:`ssrl.representations.regimes`):
``frozen`` (latents of a pretrained encoder, ``--encoder CHECKPOINT``), ``finetune`` (the
pretrained encoder trained further by the critic), ``decoupled`` (the method's own loss on the
agent's replay trains the encoder; the critic reads it detached) and ``joint`` (the method's loss
added to the critic's). ``--aux NAME`` is shorthand for ``--method NAME --regime joint``.

On a goal env with image goals the goals are always the pretrained encoder's latents, so the
latent reward is one function of what the replay stores: ``frozen`` is RIG without online
fine-tuning; ``decoupled`` is RIG with it: the method's own loss fine-tunes the encoder every K
episodes on the agent's images and the replay is re-encoded (:mod:`ssrl.representations.online`;
its options are ``regime_kwargs``); ``finetune`` gives the agent the frames and its own copy of
the encoder, which the critics train, while the goals (and rewards) stay the frozen encoder's.
``joint`` would add the method's loss to a critic that reads latents of goal images the loss
never sees, and is refused there.
"""

from __future__ import annotations

import pathlib
from typing import Any

import gymnasium as gym

from ssrl.runs import RunFolder
from ssrl.utils import build_config, check_whole, file_fingerprint

from . import ALGOS
from .trainer import Trainer


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    encoder: str | None = None,
    render: bool = False,
    explore: bool = True,
    demo: dict[str, Any] | None = None,
    goal_reward: str | None = None,
) -> gym.Env:
    """The env of a run: ``env_id`` with its options, seen through a frozen encoder if given (the
    representation's :meth:`~ssrl.representations.core.Representation.observation_wrapper`;
    ``explore``: the training env, where RIG pursues imagined goals, not the evaluation one);
    with a ``demo`` (training env), rewarded for imitating it (:mod:`ssrl.representations.imitation`);
    ``goal_reward="env"``: on a goal env, the env's own reward on the images behind the latents.
    An env of several cameras (``cameras=[A, B]``) is seen through A, the others' frames in
    ``info["views"]`` (:class:`~ssrl.envs.AgentCamera`), where the agent's replay keeps them."""
    import ssrl  # noqa: F401  (registers the envs)
    from ssrl.envs import AgentCamera, is_multi_camera, make

    kwargs = dict(env_kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
    env = make(env_id, **kwargs)
    if is_multi_camera(env):
        env = AgentCamera(env, keep_views=False)  # views only for a method that learns from them (replay_cameras)
    on_pixels = False
    if demo is not None:
        from ssrl.representations.imitation import demo_reward, imitate

        on_pixels = demo_reward(demo) == "pixels"
        if on_pixels:  # the pixel-distance baseline rewards the env's own frames: below the encoder
            env = imitate(env, demo)
    if encoder is not None:
        from ssrl.representations import load_representation

        env = load_representation(encoder).observation_wrapper(env, explore=explore, **_reward_option(goal_reward))
    if demo is not None and not on_pixels:
        env = imitate(env, demo)
    return env


# "latent": the representation's own reward on latents (RIG's distance, grasp2vec's embedding
# product); "cosine": grasping, the cosine of grasp2vec's embeddings; "env": the env's reward on
# the images behind them (Push's pixel distance, Grasp's ids); "any": grasping, any lifted object
# (indiscriminate grasping).
GOAL_REWARDS = ("latent", "cosine", "env", "any")
# What a training episode pursues on a goal env seen through a representation with a prior.
EXPLORATION_GOALS = ("prior", "env")


def _reward_option(goal_reward: str | None) -> dict[str, str]:
    """The wrapper's ``reward`` for a run's ``goal_reward`` (None or "latent": RIG's latent distance)."""
    if goal_reward in (None, "latent"):
        return {}
    if goal_reward not in GOAL_REWARDS:
        raise ValueError(f"unknown goal reward {goal_reward!r}; use one of {', '.join(GOAL_REWARDS)}")
    return {"reward": goal_reward}


def resolve_regime(
    method: str | None, regime: str | None, encoder: str | None, aux: str | None
) -> tuple[str | None, str | None]:
    """(method, regime) of a run from what was asked, with the shorthands: ``--aux NAME`` is
    ``--method NAME --regime joint``; ``--encoder`` alone is the frozen regime."""
    from ssrl.representations.regimes import check_regime

    if aux is not None:
        if (method not in (None, aux)) or (regime not in (None, "joint")):
            raise ValueError(
                f"--aux {aux} means --method {aux} --regime joint; it contradicts the method or regime given"
            )
        method, regime = aux, "joint"
    if regime is None:
        if method is not None:
            raise ValueError("--method needs a --regime: frozen, finetune, decoupled or joint")
        return None, "frozen" if encoder else None
    check_regime(regime)
    if regime in ("frozen", "finetune") and encoder is None:
        raise ValueError(f"the {regime} regime needs a pretrained encoder: --encoder CHECKPOINT (from ssrl pretrain)")
    if regime in ("decoupled", "joint") and method is None and encoder is None:
        raise ValueError(f"the {regime} regime needs a --method (or a pretrained --encoder of one)")
    return method, regime


def representation_for(
    method: str | None,
    encoder: str | None,
    method_kwargs: dict[str, Any],
    env: gym.Env,
    hyperparams: dict[str, Any],
    seed: int = 0,
):
    """The representation a run's agent adopts: the pretrained one at ``encoder`` (which must
    be of ``method`` when both are given), else a fresh ``method`` sized for the env's frames,
    with the agent's ``encoder_arch`` and ``feature_dim`` unless ``method_kwargs`` say otherwise."""
    from ssrl.representations import load_representation
    from ssrl.representations.regimes import fresh_representation

    if encoder is not None:
        rep = load_representation(encoder)
        if method is not None and rep.name != method:
            raise ValueError(f"--encoder {encoder} holds a {rep.name} model, not {method}")
        if method_kwargs:
            raise ValueError("method options apply to a fresh representation; the --encoder checkpoint has its own")
        return rep.train()
    import torch

    torch.manual_seed(seed)  # the fresh encoder's initialisation is part of the seeded run
    defaults = {"arch": hyperparams.get("encoder_arch", "dmc"), "latent_dim": hyperparams.get("feature_dim", 50)}
    return fresh_representation(
        method, env.observation_space.shape, int(env.action_space.shape[0]), **dict(defaults, **method_kwargs)
    )


def replay_cameras(env: gym.Env, rep) -> tuple[str, ...]:
    """The cameras an agent's replay keeps for ``rep``'s objective, the agent's first: all of an
    :class:`~ssrl.envs.AgentCamera` env's when the method learns from synchronised views (the env
    then gives them; :func:`make_env` makes it give none), else none (the agent's alone)."""
    from ssrl.envs import AgentCamera
    from ssrl.representations.core import Need

    if not isinstance(env, AgentCamera):
        return ()
    env.keep_views = Need.VIEWS in rep.needs
    return (env.agent_camera, *env.view_names) if env.keep_views else ()


def has_image_goals(env: gym.Env) -> bool:
    """Whether ``env`` is a goal env whose desired goal is an image."""
    from ssrl.utils import is_image_space

    spaces = getattr(env.observation_space, "spaces", {})
    return "desired_goal" in spaces and is_image_space(spaces["desired_goal"])


def _imagines_goals(env: gym.Env) -> bool:
    """Whether ``env`` (through its wrappers) can imagine goals (a representation's prior)."""
    try:
        return bool(env.get_wrapper_attr("can_imagine_goals"))
    except AttributeError:
        return False


def _image_goal_regime(
    env: gym.Env, eval_env: gym.Env | None, regime: str, spec: dict[str, Any], seed: int, imagine: bool = True
):
    """(train env, eval env, hooks, the agent's encoder) of a regime other than frozen on a goal
    env with image goals. Both envs are seen through one representation's encoder (the training
    env pursuing imagined goals if ``imagine``).

    ``decoupled`` (RIG with online fine-tuning): latents everywhere, the training env keeping the
    images for re-encoding, and the fine-tuning hook; the agent has no encoder.
    ``finetune``: the goals encoded, the observation left a frame, and the agent's encoder a copy
    of the representation's that its critics train (the frozen one keeps encoding the goals)."""
    import copy

    from ssrl.representations.online import OnlineFinetuning

    if regime not in ("decoupled", "finetune"):
        raise ValueError(
            f"the {regime} regime on a goal env with image goals would add the method's own loss to critics that "
            "read latent goals; use frozen (RIG), finetune (the critics train the observation's encoder) or "
            "decoupled (RIG with online fine-tuning of the encoder by its own loss)"
        )
    if spec["encoder"] is None:
        raise ValueError(
            f"the {regime} regime on a goal env with image goals needs a pretrained --encoder (RIG's VAE): its latents "
            "are the goals"
        )
    if spec["hyperparams"].get("rl_head"):
        raise ValueError(
            "rl_head gives a pixel agent its own head on the encoder's trunk; on a goal env with image goals the "
            "agent reads the encoder's latents (RIG's), so it has none: drop rl_head"
        )
    rep = representation_for(spec["method"], spec["encoder"], spec["method_kwargs"], env, {}, seed).eval()
    reward = _reward_option(spec.get("goal_reward"))
    if regime == "finetune":
        from ssrl.representations import StackedFramesEncoder

        env = rep.observation_wrapper(env, explore=imagine, observe_frames=True, **reward)
        if eval_env is not None:
            eval_env = rep.observation_wrapper(eval_env, explore=False, observe_frames=True, **reward)
        own = copy.deepcopy(rep.encoder).requires_grad_(True)  # the agent's; rep's stays frozen for the goals
        return env, eval_env, [], StackedFramesEncoder(own, env.observation_space["observation"].shape)
    env = rep.observation_wrapper(env, explore=imagine, keep_images=True, **reward)
    stored = tuple(env.observation_space[env.image_keys["observation"]].shape)
    if stored != tuple(rep.obs_shape):
        raise ValueError(
            f"online fine-tuning trains {rep.name} on the stored observation images and re-encodes them whole; "
            f"they are {stored}; {rep.name} takes {tuple(rep.obs_shape)} (a frame stack of a single-frame "
            "encoder?): use frame_stack=1, or the frozen regime"
        )
    if eval_env is not None:
        eval_env = rep.observation_wrapper(eval_env, explore=False, **reward)
    hook = OnlineFinetuning(rep, env.image_keys, spec.get("regime_kwargs"), seed=seed)
    return env, eval_env, [hook], None


def _by_weights(spec: dict[str, Any], folder: RunFolder) -> dict[str, Any]:
    """The identity a run folder must match: ``spec``, with the encoder known by its weights where
    the folder recorded them (``encoder_sha256``), so a folder moved with its checkpoints (a bench
    folder renamed, copied to another machine) resumes from the new path, and retrained weights at
    the old path do not. Folders from before the fingerprint compare paths, as they did."""
    previous = folder.read(folder.identity_path) or {}
    recorded = previous.get("encoder_sha256")
    if recorded is not None and recorded == spec.get("encoder_sha256"):
        return dict(spec, encoder=previous.get("encoder"))
    if recorded is None and "encoder_sha256" in spec:
        return {k: v for k, v in spec.items() if k != "encoder_sha256"}
    return spec


def train_run(
    out: str | pathlib.Path,
    env_id: str,
    algo: str = "sac",
    env_steps: int = 100_000,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    encoder: str | None = None,
    method: str | None = None,
    regime: str | None = None,
    method_kwargs: dict[str, Any] | None = None,
    aux: str | None = None,
    aux_kwargs: dict[str, Any] | None = None,
    regime_kwargs: dict[str, Any] | None = None,
    goal_reward: str | None = None,
    exploration_goals: str | None = None,
    demo: dict[str, Any] | None = None,
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
    """Train (or resume) one run in ``out``; returns the trainer's summary.

    ``encoder``: a representation checkpoint; ``method``/``regime``: how a representation serves
    the agent (see the module docstring); ``method_kwargs`` (or ``aux_kwargs`` with ``aux``):
    options of a fresh representation's config; ``regime_kwargs``: options of online fine-tuning
    (:class:`~ssrl.representations.online.OnlineConfig`: the decoupled regime on a goal env with
    image goals); ``goal_reward``: on a goal env with image goals seen through an encoder,
    ``"latent"`` (RIG's -||e(s) - e(g)||, the default) or ``"env"`` (the env's own reward on the
    images behind the latents: RIG's pixel-distance ablation on Push); ``exploration_goals``: what a
    training episode on such an env pursues when the representation has a prior, ``"prior"`` (RIG's
    imagined goals, the default) or ``"env"`` (the env's own image goals, rlkit's
    ``exploration_goal_sampling_mode="env"``; relabelling with imagined goals is unchanged, set by
    ``imagined_goal_ratio``); ``demo``: imitate a demonstration with TCN's
    reward on the frozen encoder's embedding (``{"data": FOLDER, "episode": 0, "camera": ...}``);
    evaluations then report the task's own return.
    """
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; use one of {sorted(ALGOS)}")
    for name, value, minimum in (
        ("env_steps", env_steps, 1),
        ("eval_every", eval_every, 1),
        ("eval_episodes", eval_episodes, 0),
    ):
        check_whole(name, value, minimum)
    method, regime = resolve_regime(method, regime, encoder, aux)
    out = pathlib.Path(out)
    spec = {
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "algo": algo,
        "hyperparams": dict(hyperparams or {}),
        "seed": int(seed),
        "encoder": str(encoder) if encoder else None,
        "method": method,
        "regime": regime,
        "method_kwargs": dict(method_kwargs or aux_kwargs or {}),
    }
    if demo is not None:  # (absent otherwise, so earlier run folders keep their identity)
        if regime != "frozen":
            raise ValueError("imitating a demo needs a frozen embedding: --encoder CHECKPOINT (the frozen regime)")
        spec["demo"] = dict(demo)
    if goal_reward not in (None, "latent"):  # (absent otherwise, so earlier run folders keep their identity)
        _reward_option(goal_reward)
        if regime not in ("frozen", "decoupled"):
            raise ValueError(
                "--goal-reward applies to a goal env seen through an encoder (--encoder: frozen or decoupled)"
            )
        spec["goal_reward"] = goal_reward
    if exploration_goals not in (None, "prior"):  # (absent otherwise, so earlier run folders keep their identity)
        if exploration_goals not in EXPLORATION_GOALS:
            raise ValueError(
                f"unknown exploration goals {exploration_goals!r}; use one of {', '.join(EXPLORATION_GOALS)}"
            )
        if regime not in ("frozen", "decoupled", "finetune"):
            raise ValueError(
                "--exploration-goals applies to a goal env seen through an encoder (--encoder: frozen, decoupled or "
                "finetune)"
            )
        spec["exploration_goals"] = exploration_goals
    imagine = spec.get("exploration_goals", "prior") == "prior"
    if regime_kwargs:  # (absent otherwise, so earlier run folders keep their identity)
        from ssrl.representations.online import OnlineConfig

        if regime != "decoupled":
            raise ValueError("regime options (online fine-tuning) apply to the decoupled regime only")
        build_config(OnlineConfig, dict(regime_kwargs))  # refuse a typo before any work
        spec["regime_kwargs"] = dict(regime_kwargs)
    if spec["encoder"] is not None:
        from ssrl.representations.core import checkpoint_file

        weights = checkpoint_file(spec["encoder"])
        if not weights.is_file():
            raise FileNotFoundError(f"no representation checkpoint at {weights}")
        spec["encoder_sha256"] = file_fingerprint(weights)
    folder = RunFolder(out, "ssrl train")
    with folder.locked():  # a second ssrl train on this --out refuses while this one runs
        folder.check(_by_weights(spec, folder), budget=env_steps, budget_key="env_steps", overwrite=overwrite)
        frozen = spec["encoder"] if regime == "frozen" else None
        reward = spec.get("goal_reward")
        env = make_env(env_id, spec["env_kwargs"], frozen, explore=imagine, demo=spec.get("demo"), goal_reward=reward)
        eval_env, hooks = None, []
        try:
            if eval_episodes > 0:
                eval_env = make_env(env_id, spec["env_kwargs"], frozen, render=video, explore=False, goal_reward=reward)
            agent_encoder, aux_obj, hyper = None, None, dict(spec["hyperparams"])
            if regime in ("finetune", "decoupled", "joint") and has_image_goals(env):
                env, eval_env, hooks, agent_encoder = _image_goal_regime(env, eval_env, regime, spec, seed, imagine)
            elif "goal_reward" in spec and regime != "frozen":
                raise ValueError("--goal-reward applies to goal envs with image goals only")
            elif "regime_kwargs" in spec:
                raise ValueError("regime options (online fine-tuning) apply to goal envs with image goals only")
            elif regime in ("finetune", "decoupled", "joint"):
                from ssrl.representations import StackedFramesEncoder
                from ssrl.representations.regimes import RepresentationObjective

                rep = representation_for(method, spec["encoder"], spec["method_kwargs"], env, hyper, seed)
                agent_encoder = StackedFramesEncoder(rep.encoder, env.observation_space.shape)
                hyper["critic_trains_encoder"] = regime != "decoupled"
                if regime != "finetune":
                    cameras = replay_cameras(env, rep)
                    aux_obj = RepresentationObjective(rep, regime, int(env.action_space.shape[0]), seed, cameras)
            if "exploration_goals" in spec and not _imagines_goals(env):
                raise ValueError(
                    "--exploration-goals chooses between imagined and env goals: it needs a goal env with image goals "
                    "seen through a representation with a prior (RIG's beta-VAE)"
                )
            agent_cls = ALGOS[algo]
            checkpoint = out / "checkpoint" / "agent.pt"
            if checkpoint.exists():
                agent = agent_cls.load(checkpoint, env=env, device=device, aux=aux_obj, encoder=agent_encoder)
                agent.replay.load(out / "checkpoint" / "replay", agent.replay_meta)
                for hook in hooks:  # the hooks go on from the checkpoint (after the replay they refresh)
                    if hook.name not in agent.hook_state:
                        raise ValueError(f"{checkpoint} holds no state of {hook.name}: was it trained without it?")
                    hook.load_state_dict(agent.hook_state[hook.name], agent.replay)
                if progress:
                    print(f"resuming {out} from {agent.num_env_steps} env steps")
            else:
                agent = agent_cls(env, aux=aux_obj, device=device, seed=seed, encoder=agent_encoder, **hyper)
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
                hooks=hooks,
            )
            return trainer.train(env_steps)
        finally:
            env.close()
            if eval_env is not None:
                eval_env.close()
