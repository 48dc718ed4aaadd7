"""TCN imitation from a video filmed from another camera, against its baselines (issue 13, part 4).

    python -m ssrl.benchmarks.imitation [--out outputs/imitation] [--env-steps 100000] [--seeds 1]

On ``ssrl/cartpole-swingup-v0`` (action repeat 8, 64x64 frames), every step a resumable run
folder under ``--out``:

1. ``expert``: state SAC (the true state, 100k env steps): the demonstrator;
2. ``demo``: one episode of the expert filmed from ``lookatcart`` (the demonstration) and from
   ``fixed`` (the agent's camera; only the same-view check below reads it);
3. ``tcn-data``: 40 episodes from both cameras, alternating the expert (epsilon 0.3) and
   sticky-random actions, so the embedding sees both the swing-up and the rest;
4. ``tcn`` (multi-view: the same instant from the two cameras is the positive) and
   ``tcn-single`` (single-view: a temporal neighbour in the agent's camera is the positive),
   each pretrained for ``--pretrain-steps``; ``random-encoder``: the TCN architecture untrained;
5. the rows, SAC on the frozen embedding of the agent's ``fixed`` camera, rewarded by
   ``-alpha ||w - v_t||^2 - beta sqrt(gamma + ||w - v_t||^2)`` against the time-aligned demo
   frame (:mod:`ssrl.representations.imitation`):

   ===================  ===========================  ===================================
   row                  agent sees                   reward
   ===================  ===========================  ===================================
   ``tcn``              multi-view TCN embedding     TCN distance to the lookatcart demo
   ``tcn-single``       single-view TCN embedding    its distance to the lookatcart demo
   ``pixels``           multi-view TCN embedding     pixel distance to the lookatcart demo
   ``random-encoder``   untrained TCN embedding      its distance to the lookatcart demo
   ``task-reward``      multi-view TCN embedding     cartpole's own reward (no demo)
   ===================  ===========================  ===================================

Every row reports the task's own return (the evaluation env has no demo), 10 episodes every
10k env steps. TCN's claim (Sermanet et al. 2018) is that the multi-view embedding makes a
demo from another viewpoint usable: ``tcn`` should approach ``task-reward`` and beat the
single-view, pixel and random rows. Results go to ``--out/summary.json`` and are printed.
Rerunning the same command resumes every unfinished step.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

ENV = "ssrl/cartpole-swingup-v0"
SIZE = 64
AGENT_CAMERA, DEMO_CAMERA = "fixed", "lookatcart"
ROWS = ("tcn", "tcn-single", "pixels", "random-encoder", "task-reward")


def _finished(folder: pathlib.Path) -> bool:
    return (folder / "final.json").exists()


def expert(out: pathlib.Path, env_steps: int) -> pathlib.Path:
    from ssrl.agents.run import train_run

    folder = out / "expert"
    if not _finished(folder):
        train_run(folder, ENV, env_steps=env_steps, env_kwargs={"from_pixels": False}, progress=False)
    return folder


def data_sets(out: pathlib.Path, expert_run: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from ssrl.envs.rollouts import collect

    cameras = [AGENT_CAMERA, DEMO_CAMERA]
    demo = out / "demo"
    collect(ENV, policy=f"agent:{expert_run}", episodes=1, out=demo, size=SIZE, cameras=cameras, seed=7, progress=False)
    tcn_data = out / "tcn-data"
    policy = f"mix:agent:{expert_run}@0.3+sticky_random"
    collect(ENV, policy=policy, episodes=40, out=tcn_data, size=SIZE, cameras=cameras, seed=0, progress=False)
    return demo, tcn_data


def encoders(out: pathlib.Path, data: pathlib.Path, steps: int) -> dict[str, pathlib.Path]:
    from ssrl.representations import RolloutData
    from ssrl.representations.pretrain import build, pretrain

    config = {"arch": "fast", "latent_dim": 32}
    models = {}
    for name, extra in (("tcn", {}), ("tcn-single", {"single_view": True, "views": [AGENT_CAMERA]})):
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


def row_spec(row: str, models: dict[str, pathlib.Path], demo: pathlib.Path) -> dict[str, Any]:
    """The encoder and demo of a row (see the module docstring's table)."""
    demo_options = {"data": str(demo), "camera": DEMO_CAMERA, "episode": 0}
    if row in ("tcn", "tcn-single", "random-encoder"):
        return {"encoder": str(models[row]), "demo": demo_options}
    if row == "pixels":
        return {"encoder": str(models["tcn"]), "demo": dict(demo_options, reward="pixels")}
    if row == "task-reward":
        return {"encoder": str(models["tcn"]), "demo": None}
    raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def run_row(out: pathlib.Path, row: str, seed: int, spec: dict[str, Any], env_steps: int) -> dict[str, Any]:
    from ssrl.agents.run import train_run

    folder = out / "rows" / f"{row}-s{seed}"
    if not _finished(folder):
        train_run(
            folder,
            ENV,
            env_steps=env_steps,
            seed=seed,
            env_kwargs={"size": SIZE, "camera": AGENT_CAMERA},
            encoder=spec["encoder"],
            demo=spec["demo"],
            eval_every=10_000,
            eval_episodes=10,
            progress=False,
        )
    evals = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    return {"curve": [(e["env_steps"], e["return_mean"]) for e in evals], "final_return": evals[-1]["return_mean"]}


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/imitation")
    parser.add_argument("--env-steps", type=int, default=100_000, help="RL budget of the expert and of every row")
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from ssrl.utils import write_json

    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    expert_run = expert(out, args.env_steps)
    demo, tcn_data = data_sets(out, expert_run)
    models = encoders(out, tcn_data, args.pretrain_steps)
    expert_eval = [json.loads(line) for line in (expert_run / "metrics.jsonl").read_text().splitlines()]
    summary: dict[str, Any] = {
        "expert_final_return": [e for e in expert_eval if e["kind"] == "eval"][-1]["return_mean"],
        "rows": {},
    }
    for row in args.rows:
        spec = row_spec(row, models, demo)
        summary["rows"][row] = [run_row(out, row, seed, spec, args.env_steps) for seed in range(args.seeds)]
        write_json(out / "summary.json", summary)
        finals = [r["final_return"] for r in summary["rows"][row]]
        print(f"{row}: final task return {', '.join(f'{f:.1f}' for f in finals)}", flush=True)
    print(f"expert (state SAC): {summary['expert_final_return']:.1f}")
    return summary


if __name__ == "__main__":
    main()
