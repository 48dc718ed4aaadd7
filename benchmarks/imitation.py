"""TCN imitation from a video filmed from another camera, against its baselines (issue 13, part 4).

    python -m ssrl.benchmarks.imitation [--task cartpole|push] [--out DIR] [--env-steps 100000] [--seeds 1]

Two tasks (``--task``), each with a demonstrator and two cameras:

==========  ===============================  =====================  =================  ===========
task        env (64x64 frames)               demonstrator           agent's camera     demo camera
==========  ===============================  =====================  =================  ===========
cartpole    ``ssrl/cartpole-swingup-v0``     state SAC, trained     ``fixed``          ``lookatcart``
            (action repeat 8)                here (100k env steps)
push        ``ssrl/PushTask-v0`` (one goal,  the scripted          ``push``           ``side``
            the same every episode)          ``push_expert``
==========  ===============================  =====================  =================  ===========

Every step a resumable run folder under ``--out`` (default ``outputs/imitation`` for cartpole,
``outputs/imitation-push`` for push):

1. ``expert`` (cartpole only): state SAC on the true state: the demonstrator;
2. ``demo``: one episode of the demonstrator filmed from the demo camera (the demonstration) and
   from the agent's camera (only the alignment check reads it);
3. ``tcn-data``: 40 episodes from both cameras, alternating the demonstrator (cartpole: epsilon
   0.3) and exploration (sticky-random actions; Push: ``push_explore``), so the embedding sees
   both the task done and the rest;
4. ``tcn`` (multi-view: the same instant from the two cameras is the positive) and
   ``tcn-single`` (single-view: a temporal neighbour in the agent's camera is the positive),
   each pretrained for ``--pretrain-steps``; ``random-encoder``: the TCN architecture untrained;
5. the rows, SAC on the frozen embedding of the agent's camera, rewarded by
   ``-alpha ||w - v_t||^2 - beta sqrt(gamma + ||w - v_t||^2)`` against the time-aligned demo
   frame (:mod:`ssrl.representations.imitation`):

   ===================  ===========================  ===================================
   row                  agent sees                   reward
   ===================  ===========================  ===================================
   ``tcn``              multi-view TCN embedding     TCN distance to the demo
   ``tcn-single``       single-view TCN embedding    its distance to the demo
   ``pixels``           multi-view TCN embedding     pixel distance to the demo
   ``random-encoder``   untrained TCN embedding      its distance to the demo
   ``task-reward``      multi-view TCN embedding     the task's own reward (no demo)
   ===================  ===========================  ===================================

Every row reports the task's own measure (the evaluation env has no demo), 10 episodes every
10k env steps: cartpole's return; Push's final puck distance to the goal and success (within
5 cm; the task reward is minus the puck's distance at every step). TCN's claim (Sermanet et al.
2018) is that the multi-view embedding makes a demo from another viewpoint usable: ``tcn``
should approach ``task-reward`` and beat the single-view, pixel and random rows. Before the
rows, each encoder's alignment error
(:func:`~ssrl.representations.control.tcn.alignment_error`: the demonstration from the agent's
camera against the demo camera, frames where nothing moves counted as one instant; 0 when the
views align frame for frame) says how well it matches the two views; on Push,
:func:`reward_weights` says what the demo reward pays for once the demonstration is done (a
centimetre of puck error against one of hand error). Results go to ``--out/summary.json`` (the
two checks also to ``--out/checks.json``) and are printed. Rerunning the same command resumes
every unfinished step.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import numpy as np

from ssrl.runs import read_evaluations

SIZE = 64
ROWS = ("tcn", "tcn-single", "pixels", "random-encoder", "task-reward")


@dataclasses.dataclass(frozen=True)
class ImitationTask:
    """Where the imitation happens: the env, the two cameras, who demonstrates, who explores."""

    env: str
    agent_camera: str
    demo_camera: str
    demonstrator: str | None  # a scripted policy's name; None: state SAC trained here (the expert step)
    explore: str  # the exploration policy mixed into the TCN data
    expert_epsilon: float = 0.0  # random actions in the trained expert's share of the TCN data
    tcn: dict[str, Any] = dataclasses.field(default_factory=dict)  # TCN options beyond the defaults


TASKS = {
    "cartpole": ImitationTask("ssrl/cartpole-swingup-v0", "fixed", "lookatcart", None, "sticky_random", 0.3),
    # Push shows one frame per step (the env's frame stack of 1), as TCN's embedding of single frames.
    "push": ImitationTask("ssrl/PushTask-v0", "push", "side", "push_expert", "push_explore", tcn={"frame_stack": 1}),
}


def _finished(folder: pathlib.Path) -> bool:
    return (folder / "final.json").exists()


def demonstrator(out: pathlib.Path, task: ImitationTask, env_steps: int) -> str:
    """The demonstrating policy as ``ssrl collect`` names it: the scripted one, or the agent of a
    state SAC run trained here first."""
    if task.demonstrator is not None:
        return task.demonstrator
    from ssrl.agents.run import train_run

    folder = out / "expert"
    if not _finished(folder):
        train_run(folder, task.env, env_steps=env_steps, env_kwargs={"from_pixels": False}, progress=False)
    return f"agent:{folder}"


def data_sets(
    out: pathlib.Path, task: ImitationTask, expert: str, episodes: int = 40
) -> tuple[pathlib.Path, pathlib.Path]:
    from ssrl.envs.rollouts import collect

    cameras = [task.agent_camera, task.demo_camera]
    demo = out / "demo"
    collect(task.env, policy=expert, episodes=1, out=demo, size=SIZE, cameras=cameras, seed=7, progress=False)
    tcn_data = out / "tcn-data"
    noisy = f"{expert}@{task.expert_epsilon}" if task.expert_epsilon else expert
    policy = f"mix:{noisy}+{task.explore}"
    collect(
        task.env, policy=policy, episodes=episodes, out=tcn_data, size=SIZE, cameras=cameras, seed=0, progress=False
    )
    return demo, tcn_data


def encoders(out: pathlib.Path, task: ImitationTask, data: pathlib.Path, steps: int) -> dict[str, pathlib.Path]:
    from ssrl.representations import RolloutData
    from ssrl.representations.pretrain import build, pretrain

    config = {"arch": "fast", "latent_dim": 32, **task.tcn}
    models = {}
    for name, extra in (("tcn", {}), ("tcn-single", {"single_view": True, "views": [task.agent_camera]})):
        folder = out / "encoders" / name
        if not _finished(folder):
            pretrain("tcn", data, out=folder, steps=steps, config=dict(config, **extra), progress=False)
        models[name] = folder / "model.pt"
    random_model = out / "encoders" / "random-encoder" / "model.pt"
    if not random_model.exists():
        import torch

        torch.manual_seed(0)
        build("tcn", RolloutData(data, max_episodes=2), **config).save(random_model)
    models["random-encoder"] = random_model
    return models


def row_spec(row: str, task: ImitationTask, models: dict[str, pathlib.Path], demo: pathlib.Path) -> dict[str, Any]:
    """The encoder and demo of a row (see the module docstring's table)."""
    demo_options = {"data": str(demo), "camera": task.demo_camera, "episode": 0}
    if row in ("tcn", "tcn-single", "random-encoder"):
        return {"encoder": str(models[row]), "demo": demo_options}
    if row == "pixels":
        return {"encoder": str(models["tcn"]), "demo": dict(demo_options, reward="pixels")}
    if row == "task-reward":
        return {"encoder": str(models["tcn"]), "demo": None}
    raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def task_measures(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's curve and final values of the task's own measures: the return, and where the env
    reports them (Push) the final puck distance and the success rate."""
    keys = [k for k in ("return_mean", "final_puck_distance", "success_rate") if evals[-1].get(k) is not None]
    return {
        "curve": [[e["env_steps"]] + [e[k] for k in keys] for e in evals],
        "curve_columns": ["env_steps"] + keys,
        "final_return": evals[-1]["return_mean"],
        **{f"final_{k.removeprefix('final_')}": evals[-1][k] for k in keys if k != "return_mean"},
    }


def run_row(
    out: pathlib.Path,
    task: ImitationTask,
    row: str,
    seed: int,
    spec: dict[str, Any],
    env_steps: int,
    eval_episodes: int = 10,
) -> dict[str, Any]:
    from ssrl.agents.run import train_run

    folder = out / "rows" / f"{row}-s{seed}"
    if not _finished(folder):
        train_run(
            folder,
            task.env,
            env_steps=env_steps,
            seed=seed,
            env_kwargs={"size": SIZE, "camera": task.agent_camera},
            encoder=spec["encoder"],
            demo=spec["demo"],
            eval_every=10_000,
            eval_episodes=eval_episodes,
            progress=False,
        )
    return task_measures(read_evaluations(folder))


def demonstration_measures(demo: pathlib.Path) -> dict[str, Any]:
    """The demonstration's own task measures: its return and, where recorded, its last step's
    puck distance and success."""
    from ssrl.envs.rollouts import RolloutDataset

    episode = RolloutDataset(demo).load(1)[0]
    measures: dict[str, Any] = {"return": float(episode.reward.sum())}
    for key in ("puck_distance", "is_success"):
        if key in episode.info:
            measures[key] = episode.info[key][-1].item()
    return measures


def alignments(task: ImitationTask, models: dict[str, pathlib.Path], demo: pathlib.Path) -> dict[str, float]:
    """Each encoder's :func:`~ssrl.representations.control.tcn.alignment_error` between the
    agent's camera and the demo camera on the demonstration episode (filmed from both): is the
    reward's demo frame at time t what the agent would see at time t?"""
    from ssrl.representations import RolloutData, load_representation
    from ssrl.representations.control.tcn import alignment_error

    data = RolloutData(demo)
    cameras = (task.agent_camera, task.demo_camera)
    return {name: round(alignment_error(load_representation(m), data, cameras, 1), 4) for name, m in models.items()}


def distance_weights(distance: np.ndarray, puck_error: np.ndarray, hand_error: np.ndarray) -> dict[str, float]:
    """The least-squares fit ``distance ~ a * puck_error + b * hand_error + c`` (errors in metres):
    ``puck_per_cm`` = a / 100 and ``hand_per_cm`` = b / 100, what a centimetre of each error
    adds to the embedding distance (in the embedding's units), and the fit's R^2 (0 for a
    constant distance)."""
    x = np.c_[puck_error, hand_error, np.ones(len(distance))]
    coef, *_ = np.linalg.lstsq(x, distance, rcond=None)
    residual = distance - x @ coef
    spread = float(((distance - distance.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else 0.0
    return {"puck_per_cm": float(coef[0]) / 100, "hand_per_cm": float(coef[1]) / 100, "r2": r2}


def distances_to_the_demo_end(embed, frames, shown, task: ImitationTask, frame_stack: int) -> dict[str, np.ndarray]:
    """Over the frames of ``frames`` (a ``RolloutData`` of Push) that follow a step, seen from the
    agent's camera: ``distance``, the embedding distance (``embed``) to the last frame of the
    demonstration ``shown`` seen from the demo camera; ``puck_error``, the step's recorded
    ``puck_distance`` to the goal; ``hand_error``, the hand's distance in x and y (the state's
    first two values, ``Scene.ground_truth``) from where the demonstration's hand ended."""
    after_step = np.flatnonzero(frames.has_next) + 1  # a step's records describe the frame after it
    z = embed(frames.stack(after_step, task.agent_camera, frame_stack))
    end = embed(shown.stack(np.array([len(shown) - 1]), task.demo_camera, frame_stack))
    return {
        "distance": np.linalg.norm(z - end, axis=1),
        "puck_error": np.asarray(frames.info["puck_distance"]),
        "hand_error": np.linalg.norm(frames.state[after_step, :2] - shown.state[-1, :2], axis=1),
    }


def reward_weights(
    task: ImitationTask, models: dict[str, pathlib.Path], demo: pathlib.Path, data: pathlib.Path
) -> dict[str, dict[str, float]]:
    """Push: what each encoder's demo reward pays for once the demonstration is done (after its
    14th of 50 steps the reward's demo frame is its last, and the reward falls as the embedding
    distance to it grows): :func:`distance_weights` of :func:`distances_to_the_demo_end` over
    the TCN data. Empty for a task whose data record no ``puck_distance``."""
    from ssrl.envs.rollouts import RolloutDataset
    from ssrl.representations import RolloutData, load_representation

    if "puck_distance" not in RolloutDataset(data).meta.get("record_keys", []):
        return {}
    frames, shown = RolloutData(data), RolloutData(demo)
    weights = {}
    for name, model in models.items():
        rep = load_representation(model)
        fit = distance_weights(**distances_to_the_demo_end(rep.embed, frames, shown, task, rep.config.frame_stack))
        weights[name] = {key: round(value, 4) for key, value in fit.items()}
    return weights


def _describe(result: dict[str, Any]) -> str:
    text = f"return {result['final_return']:.1f}"
    if "final_puck_distance" in result:
        text += f", puck {100 * result['final_puck_distance']:.1f} cm, success {result['final_success_rate']:.0%}"
    return text


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole")
    parser.add_argument("--out", default=None, help="default outputs/imitation (cartpole), outputs/imitation-TASK")
    parser.add_argument("--env-steps", type=int, default=100_000, help="RL budget of the expert and of every row")
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--data-episodes", type=int, default=40, help="episodes of TCN pretraining data")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from ssrl.utils import write_json

    torch.set_num_threads(1)
    task = TASKS[args.task]
    out = pathlib.Path(
        args.out or ("outputs/imitation" if args.task == "cartpole" else f"outputs/imitation-{args.task}")
    )
    expert = demonstrator(out, task, args.env_steps)
    demo, tcn_data = data_sets(out, task, expert, args.data_episodes)
    models = encoders(out, task, tcn_data, args.pretrain_steps)
    summary: dict[str, Any] = {
        "task": args.task,
        "demonstration": demonstration_measures(demo),
        "alignment_error": alignments(task, models, demo),
        "reward_weights": reward_weights(task, models, demo, tcn_data),
        "rows": {},
    }
    print(f"alignment error, agent camera against demo camera (0 aligned, ~0.33 none): {summary['alignment_error']}")
    if summary["reward_weights"]:
        print(
            "embedding distance to the demo's last frame, per cm of puck and of hand error: "
            f"{summary['reward_weights']}"
        )
    # The checks alone too: summary.json, rewritten as rows finish, keeps the rows of this command.
    write_json(out / "checks.json", {k: summary[k] for k in ("alignment_error", "reward_weights")})
    if task.demonstrator is None:
        summary["expert_final_return"] = read_evaluations(out / "expert")[-1]["return_mean"]
    for row in args.rows:
        spec = row_spec(row, task, models, demo)
        summary["rows"][row] = [
            run_row(out, task, row, seed, spec, args.env_steps, args.eval_episodes) for seed in range(args.seeds)
        ]
        write_json(out / "summary.json", summary)
        print(f"{row}: " + "; ".join(_describe(r) for r in summary["rows"][row]), flush=True)
    print(f"demonstration: {summary['demonstration']}")
    return summary


if __name__ == "__main__":
    main()
