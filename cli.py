"""The ssrl command line: one subcommand per stage of the pipeline.

``ssrl demo`` renders a rollout of a pixel task to an mp4. Every subcommand lives in the module
that owns its stage; this file only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import ssrl  # noqa: F401  (registers the envs)
    from ssrl.utils import write_video

    env = gym.make(args.env, size=args.size, cameras=args.cameras.split(",") if args.cameras else None)
    obs, info = env.reset(seed=args.seed)
    frames = [_tile(env.unwrapped._observer.latest_frames())]
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    ret = 0.0
    for _ in range(args.steps):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        ret += reward
        frames.append(_tile(env.unwrapped._observer.latest_frames()))
        if terminated or truncated:
            break
    elapsed = time.perf_counter() - start
    path = write_video(args.out, frames, fps=env.metadata.get("render_fps", 30))
    shape = {k: v.shape for k, v in obs.items()} if isinstance(obs, dict) else obs.shape
    print(
        f"{args.env}: {len(frames) - 1} agent steps of a random policy, return {ret:.1f}, "
        f"{(len(frames) - 1) / elapsed:.0f} steps/s, observation {shape}"
    )
    print(f"video written to {path}")
    env.close()
    return 0


def parse_options(pairs: Sequence[str]) -> dict:
    """``["size=64", "distractor=video"]`` -> ``{"size": 64, "distractor": "video"}`` (YAML values).

    A number in exponent form without a dot (``1e-4``), which YAML 1.1 reads as a string, is a
    float, as a user who types ``encoder_lr=1e-4`` means."""
    import re

    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"option {pair!r}: the value is not valid YAML ({' '.join(str(err).split())})") from err
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):  # unquoted
            parsed = float(parsed)
        options[key.replace("-", "_")] = parsed
    return options


def _collect(args: argparse.Namespace) -> int:
    import ssrl  # noqa: F401
    from ssrl.envs.rollouts import collect

    dataset = collect(
        args.env,
        policy=args.policy,
        episodes=args.episodes,
        out=args.out,
        cameras=[c for c in args.cameras.split(",") if c] or None,
        size=args.size,
        seed=args.seed,
        env_kwargs=parse_options(args.env_option),
        max_steps=args.max_steps,
        append=args.append or 0,
        compress=args.compress,
        workers=args.workers,
    )
    info = dataset.summary()
    print(f"{info['episodes']} episodes, {info['steps']} steps, cameras {info['cameras']} in {dataset.path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ssrl.agents import TrainingDiverged
    from ssrl.agents.run import train_run

    rep = args.aux or args.method
    tag = f"-{rep}" if rep else ""
    tag += f"-{args.regime}" if args.regime else ""
    out = args.out or f"runs/{args.env.split('/')[-1]}-{args.algo}{tag}-s{args.seed}"
    try:
        summary = train_run(
            out,
            args.env,
            algo=args.algo,
            env_steps=args.env_steps,
            seed=args.seed,
            env_kwargs=parse_options(args.env_option),
            hyperparams=parse_options(args.set),
            encoder=args.encoder,
            method=args.method,
            regime=args.regime,
            method_kwargs=parse_options(args.method_option),
            aux=args.aux,
            aux_kwargs=parse_options(args.aux_option),
            regime_kwargs=parse_options(args.regime_option),
            goal_reward=args.goal_reward,
            exploration_goals=args.exploration_goals,
            demo=dict(parse_options(args.demo_option), data=args.demo) if args.demo else None,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            checkpoint_every=args.checkpoint_every,
            video=args.video,
            overwrite=args.overwrite,
            device=args.device,
        )
    except TrainingDiverged as err:
        print(f"ssrl train: training diverged: {err}\nthe last good checkpoint is in {out}/checkpoint", file=sys.stderr)
        return 3
    print(f"{summary['env_steps']} env steps, last evaluation return {summary['last_eval_return']:.1f}; run in {out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from ssrl.representations.pretrain import pretrain

    out = args.out or f"runs/pretrain-{args.method}-s{args.seed}"
    _, summary = pretrain(
        args.method,
        args.data,
        out=out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        config=parse_options(args.set),
        holdout=args.holdout,
        checkpoint_every=args.checkpoint_every,
        overwrite=args.overwrite,
        device=args.device,
        precision=args.precision,
    )
    if summary["first_loss"] is None:  # --steps 0: the freshly initialised encoder, saved as is
        print(f"0 steps: the untrained model is in {out}/model.pt")
        return 0
    if "loss" not in summary.get("last", {}):  # a finished run asked again: nothing left to do
        print(f"{summary['steps']} steps done before; model in {out}/model.pt")
        return 0
    print(
        f"{summary['steps']} steps at {summary['steps_per_s']:.1f} steps/s, loss {summary['first_loss']:.4g} -> "
        f"{summary['last']['loss']:.4g}; model in {out}/model.pt"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ssrl.agents.evaluate import describe, evaluate_run

    kwargs = {"episodes": args.episodes, "env_overrides": parse_options(args.env_option), "out": args.out}
    if args.seed is not None:
        kwargs["seed"] = args.seed
    result = evaluate_run(args.run, **kwargs)
    print(describe(result))
    return 0


def _probe(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import pathlib

    import torch

    from ssrl.representations import RolloutData, load_representation, make
    from ssrl.representations.pretrain import probe_split
    from ssrl.representations.probe import probe
    from ssrl.utils import write_json

    rep = load_representation(args.checkpoint)
    data = RolloutData(args.data)
    # Only episodes the encoder never trained on are scored (or a clear refusal).
    train, test = probe_split(rep, data, args.holdout)
    torch.manual_seed(0)
    untrained = make(rep.name, rep.obs_shape, **dataclasses.asdict(rep.config)).eval()
    scores = {
        name: dict(probe(model, train, test, camera=args.camera), **model.extra_scores(test))
        for name, model in (("trained", rep), ("random_init", untrained))
    }
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "method": rep.name,
        **scores,
        "meaning": "r2: ridge regression of the probe target from the embedding, held-out episodes (1 is perfect, 0 "
        "is the mean's); knn_mse: k-NN regression error (lower is better); gtc: max |correlation| of a target "
        "with one latent dim; random_init: an untrained encoder of the same method, the baseline to beat",
    }
    out = (
        pathlib.Path(args.out)
        if args.out
        else pathlib.Path(args.checkpoint).with_name(f"probe-{pathlib.Path(args.data).resolve().name}.json")
    )
    write_json(out, result)
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ssrl.benchmarks.bench import CellsFailed, SuiteError, available_suites, run_bench

    if args.list:
        print("\n".join(available_suites()))
        return 0
    try:
        run_bench(
            args.suite,
            out=args.out,
            methods=args.methods or None,
            tasks=args.tasks or None,
            regimes=args.regimes or None,
            seeds=args.seeds,
            workers=args.workers,
            ray_address=args.ray,
            rl_steps=args.rl_steps,
            pretrain_steps=args.pretrain_steps,
            overwrite=args.overwrite,
            ray_gpus=args.ray_gpus,
        )
    except SuiteError as err:
        print(f"ssrl bench: error: {err}", file=sys.stderr)
        return 2
    except CellsFailed as err:
        print(f"ssrl bench: {err}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ssrl.benchmarks.compare import run_compare

    result = run_compare(
        args.rows, metric=args.metric, at=args.at, last=args.last, out=args.out, mixed_envs=args.mixed_envs
    )
    print(result["markdown"], end="")
    if args.out:
        print(f"written to {args.out}/compare.md, compare.json, curves.png", file=sys.stderr)
    return 0


def _tile(frames):
    import numpy as np

    return np.concatenate(list(frames), axis=1)


def _algos() -> list[str]:
    """The agent algorithms ``--algo`` takes (ssrl.agents.ALGOS)."""
    from ssrl.agents import ALGOS

    return list(ALGOS)


def _set_keys_epilog() -> str:
    """The agent hyper-parameters ``--set`` takes, by algorithm (read from the config classes)."""
    import dataclasses

    from ssrl.agents import QMapConfig, SACConfig, TD3Config

    sac = [f.name for f in dataclasses.fields(SACConfig)]
    td3_only = [f.name for f in dataclasses.fields(TD3Config) if f.name not in sac]
    qmap_only = [f.name for f in dataclasses.fields(QMapConfig) if f.name not in sac]
    return (
        f"--set keys (SAC): {', '.join(sac)}. TD3 also: {', '.join(td3_only)}. QMap also: {', '.join(qmap_only)}. "
        "Each is documented where ssrl.agents.SACConfig / TD3Config / QMapConfig define it."
    )


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none or the help already says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or action.dest.replace("_", " ")
        default = action.default
        nothing = default is None or default is False or default is argparse.SUPPRESS or default in ("", [])
        if "default" in text or nothing or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    threads_help = "torch threads (1: with 2, a busy second core slowed updates 10-40x on our 2-core machines)"
    parser = argparse.ArgumentParser(
        prog="ssrl", description=__doc__.splitlines()[0], formatter_class=_HelpWithDefaults
    )
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    # Global options are taken after the subcommand too (`ssrl demo --threads 2`); SUPPRESS keeps
    # a subcommand's absent option from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=threads_help)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
        return _add_parser(name, parents=[common], formatter_class=_HelpWithDefaults, **kwargs)

    sub.add_parser = add_parser

    demo = sub.add_parser("demo", help="render a random rollout of a pixel task to an mp4")
    demo.add_argument("--env", default="ssrl/cheetah-run-v0")
    demo.add_argument("--steps", type=int, default=250)
    demo.add_argument("--size", type=int, default=84)
    demo.add_argument("--cameras", default="", help="comma-separated camera names (default: the task's first)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="outputs/demo.mp4")
    demo.set_defaults(func=_demo)

    col = sub.add_parser("collect", help="run a policy in an env and write its rollouts to a data set")
    col.add_argument("env", help="environment id, e.g. ssrl/cartpole-swingup-v0")
    col.add_argument(
        "--policy",
        default="random",
        help="a scripted policy (random, sticky_random, push_expert, ...); agent:RUN_DIR[@EPSILON]: the agent "
        "of an ssrl train run on this env's states, with probability EPSILON of a random action; mix:A+B: "
        "policies A and B in turn, episode by episode",
    )
    col.add_argument("--episodes", type=int, default=10)
    col.add_argument("--cameras", default="", help="comma-separated cameras to record (default: the env's)")
    col.add_argument("--size", type=int, default=84)
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--max-steps", type=int, default=None, help="cap on agent steps per episode")
    col.add_argument("--out", required=True, help="data set folder")
    col.add_argument(
        "--append",
        type=int,
        default=None,
        metavar="N",
        help="add N episodes to the data set (without it, --episodes is the total: a rerun finishes a collection)",
    )
    col.add_argument("--compress", action="store_true", help="zip-compress episode files (smaller, slower to read)")
    col.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes recording episodes in parallel (spawned; the data are the same for any number)",
    )
    col.add_argument(
        "--env-option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env option, e.g. -o distractor=video -o action_repeat=4",
    )
    col.set_defaults(func=_collect)

    tr = sub.add_parser(
        "train", help="train SAC or TD3 in a run folder (resumes a killed run)", epilog=_set_keys_epilog()
    )
    tr.add_argument("--env", required=True, help="environment id, e.g. ssrl/cartpole-swingup-v0")
    tr.add_argument("--algo", default="sac", choices=sorted(_algos()))
    tr.add_argument("--env-steps", type=int, default=100_000, help="budget in env steps (agent steps x action repeat)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--encoder",
        default=None,
        help="a pretrained representation checkpoint (ssrl pretrain); alone: train on its frozen latents",
    )
    tr.add_argument("--method", default=None, help="the representation a --regime uses (when no --encoder gives it)")
    tr.add_argument(
        "--regime",
        default=None,
        choices=["frozen", "finetune", "decoupled", "joint"],
        help="how the representation serves the agent: frozen latents; finetune (the critic trains the pretrained "
        "encoder); decoupled (only the method's own loss on the replay trains it); joint (both losses)",
    )
    tr.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of a fresh representation's config, e.g. --method-option latent_dim=32",
    )
    tr.add_argument(
        "--regime-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the decoupled regime on a goal env with image goals (RIG's online fine-tuning): "
        "every_episodes, steps, batch_size, data, data_fraction, refresh_batch",
    )
    tr.add_argument(
        "--goal-reward",
        default=None,
        choices=["latent", "cosine", "env", "any"],
        help="a goal env with image goals seen through --encoder: 'latent' (the representation's reward: RIG's "
        "-||e(s) - e(g)||, grasp2vec's phi_o(g) . phi_o(o); the default), 'cosine' (grasping: the cosine of "
        "phi_o(g) and phi_o(o)), 'env' (the env's own reward on the images behind the latents: Push's pixel "
        "distance, GraspGoal's object ids) or 'any' (grasping: any lift)",
    )
    tr.add_argument(
        "--exploration-goals",
        default=None,
        choices=["prior", "env"],
        help="a goal env with image goals seen through --encoder with a prior (RIG's VAE): what each training "
        "episode pursues, 'prior' (imagined goals, RIG; the default) or 'env' (the env's own goal images)",
    )
    tr.add_argument(
        "--aux",
        default=None,
        help="shorthand for --method NAME --regime joint (e.g. dbc: its objective trained with the critic)",
    )
    tr.add_argument("--aux-option", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument(
        "--demo",
        default=None,
        metavar="DATA",
        help="imitate a demonstration (an ssrl collect folder) with TCN's reward on the --encoder's embedding; "
        "evaluations report the task's own return",
    )
    tr.add_argument(
        "--demo-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="episode (default 0), camera (default the data's first), alpha, beta, gamma",
    )
    tr.add_argument("--eval-every", type=int, default=10_000, help="env steps between evaluations")
    tr.add_argument("--eval-episodes", type=int, default=10)
    tr.add_argument(
        "--checkpoint-every", type=int, default=None, help="env steps between checkpoints (default: eval-every)"
    )
    tr.add_argument("--video", action="store_true", help="record an eval episode to mp4 at each evaluation")
    tr.add_argument("--out", default=None, help="run folder (default runs/ENV-ALGO-sSEED)")
    tr.add_argument("--overwrite", action="store_true", help="start again even if the run folder holds a finished run")
    tr.add_argument("--device", default="auto")
    tr.add_argument(
        "--env-option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env option, e.g. -o action_repeat=1",
    )
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="agent hyper-parameter, e.g. --set batch_size=512",
    )
    tr.set_defaults(func=_train)

    pre = sub.add_parser(
        "pretrain",
        help="train a representation on a collected data set (resumable)",
        epilog="--set keys: the fields of the method's config (every method takes latent_dim, arch, frame_stack, lr, "
        "batch_size; the rest are in its module's docstring and in ssrl.representations.get(NAME).Config).",
    )
    pre.add_argument("method", help="representation name (see ssrl.representations.names())")
    pre.add_argument("--data", required=True, help="data set folder written by ssrl collect")
    pre.add_argument("--steps", type=int, default=2000)
    pre.add_argument("--batch-size", type=int, default=None)
    pre.add_argument("--lr", type=float, default=None)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="fraction of episodes kept from the encoder, for held-out probes (0: train on all)",
    )
    pre.add_argument("--checkpoint-every", type=int, default=500)
    pre.add_argument("--out", default=None, help="output folder (default runs/pretrain-METHOD-sSEED)")
    pre.add_argument("--overwrite", action="store_true")
    pre.add_argument("--device", default="auto")
    pre.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "auto"],
        help="bf16: the loss under bfloat16 autocast (fp32 weights and optimiser); auto: bf16 where the "
        "hardware has it natively (default: fp32)",
    )
    pre.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="method option, e.g. --set latent_dim=32"
    )
    pre.set_defaults(func=_pretrain)

    ev = sub.add_parser(
        "evaluate", help="evaluate a train run's agent again, on its env or a changed one (-o KEY=VALUE)"
    )
    ev.add_argument("run", help="an ssrl train run folder")
    ev.add_argument("--episodes", type=int, default=20)
    ev.add_argument("--seed", type=int, default=None, help="first episode's seed (default: the trainer's eval seeds)")
    ev.add_argument(
        "--env-option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an env option replacing the run's, e.g. -o object_shapes=[box] (held-out objects)",
    )
    ev.add_argument("--out", default=None, help="result JSON (default RUN/evaluate.json)")
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser("probe", help="score how much ground-truth state a representation holds")
    pr.add_argument("checkpoint", help="a representation checkpoint (model.pt)")
    pr.add_argument("--data", required=True)
    pr.add_argument("--camera", default=None)
    pr.add_argument("--out", default=None, help="where to write the scores (default: probe-DATA.json beside the model)")
    pr.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="fraction of episodes held out for scoring when the data set is not the encoder's own",
    )
    pr.set_defaults(func=_probe)

    be = sub.add_parser("bench", help="compare representations on control tasks (the main job)")
    be.add_argument("--suite", default="quick", help="a suite name (see --list) or a YAML file")
    be.add_argument("--methods", nargs="*", default=None, help="only these rows (methods or reference rows)")
    be.add_argument(
        "--tasks",
        nargs="*",
        default=None,
        help="only these tasks (DOMAIN-TASK) and probe data sets (the suite's probes: names)",
    )
    be.add_argument("--regimes", nargs="*", default=None, help="only these regimes (frozen, finetune, ...)")
    be.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the suite's)")
    be.add_argument("--workers", type=int, default=2, help="parallel cells in a local process pool")
    be.add_argument("--ray", default=None, metavar="ADDRESS", help="run cells as Ray tasks on an existing cluster")
    be.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="with --ray: the GPU share each cell requests (e.g. 0.25; state SAC cells ask for none)",
    )
    be.add_argument("--rl-steps", type=int, default=None, help="override the suite's RL budget (env steps)")
    be.add_argument("--pretrain-steps", type=int, default=None, help="override the suite's pretraining steps")
    be.add_argument("--out", default=None, help="output folder (default outputs/bench-SUITE); re-running resumes it")
    be.add_argument("--overwrite", action="store_true", help="delete the output folder first")
    be.add_argument("--list", action="store_true", help="list the suites and exit")
    be.set_defaults(func=_bench)

    co = sub.add_parser(
        "compare",
        help="compare runs across seeds (ssrl train folders or bench cells) with bootstrap intervals",
        description="Each row is NAME=PATH[,PATH...]: run folders of `ssrl train` or bench cell folders, one per "
        "seed, shell patterns allowed, e.g. ssrl compare 'ATC=outputs/atc-s*' 'pixel SAC=outputs/pixel-s*'.",
    )
    co.add_argument("rows", nargs="+", metavar="NAME=PATH[,PATH...]", help="a row and its runs")
    co.add_argument(
        "--metric", default="return_mean", help="an eval.csv column (success_rate, final_puck_distance, ...)"
    )
    co.add_argument(
        "--at",
        type=int,
        default=None,
        metavar="STEPS",
        help="env steps to compare at (default: the last all runs share)",
    )
    co.add_argument(
        "--last", type=int, default=1, metavar="K", help="score a run by the mean of its last K evaluations up to --at"
    )
    co.add_argument("--out", default=None, help="also write compare.md, compare.json and curves.png here")
    co.add_argument("--mixed-envs", action="store_true", help="allow runs of different envs in one comparison")
    co.set_defaults(func=_compare)
    # Options without a help text still get a line (and so their default) in --help.
    for command in sub.choices.values():
        for action in command._actions:
            action.help = action.dest.replace("_", " ") if action.help is None else action.help
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    threads = max(1, args.threads)
    # Mesa's llvmpipe (headless EGL on a CPU) starts one rasteriser thread per core when it first
    # renders; two runs side by side on our two cores then keep four render threads beside their
    # torch threads. As a bench cell does (utils.one_thread), the renderer gets --threads too.
    os.environ.setdefault("LP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: missing files, a full disk, ...
        print(f"ssrl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
