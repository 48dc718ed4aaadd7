"""Goal images beside what a trained agent reached: a picture per goal-task run.

``python -m ssrl.benchmarks.goal_pictures RUN_OR_BENCH_FOLDER [--episodes 6]`` writes
``goals_reached.png`` into ``RUN/pictures/`` for an ``ssrl train`` run folder, or into each
``cells/*/pictures/`` of a bench folder: one row per evaluation episode, the goal (the scene put
in the goal configuration, as the run's camera sees it) beside the last frame the agent reached,
on the evaluation seeds of the run's first evaluation. ``ssrl bench`` writes it for each
goal-task cell it runs. Runs whose env cannot render its goal are skipped.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np

from ssrl.utils import atomic_path


def goal_panels(run_dir: str | pathlib.Path, episodes: int = 6, size: int = 128) -> list[dict[str, Any]] | None:
    """Per evaluation episode of the run's last checkpoint: ``goal`` (what ``render_goal``
    shows), ``reached`` (the last frame) and the final metrics the env reports; None when the
    run's env has no ``render_goal``."""
    from ssrl.agents.evaluate import evaluation_agent_and_env
    from ssrl.agents.trainer import EVAL_SEED_BASE

    # The evaluation env and agent as ssrl evaluate rebuilds them (the frozen or fine-tuned
    # encoder, the run's goal reward), rendering at ``size``.
    agent, env = evaluation_agent_and_env(run_dir, {"render_size": size}, render=True)
    try:
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "render_goal"):
            return None
        panels = []
        for e in range(episodes):
            obs, _ = env.reset(seed=EVAL_SEED_BASE + e)
            goal = unwrapped.render_goal()
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(agent.act(obs, deterministic=True))
                done = terminated or truncated
            finals = {k: float(info[k]) for k in getattr(unwrapped, "final_metrics", ())}
            # What was reached: the env's own picture of it where it has one (GraspGoal: the
            # lifted object), else the last frame.
            reached = unwrapped.render_reached() if hasattr(unwrapped, "render_reached") else env.render()
            panels.append(
                {
                    "goal": goal,
                    "reached": np.asarray(reached),
                    "title": getattr(unwrapped, "reached_title", "reached (last frame)"),
                    "finals": finals,
                    "success": info.get("is_success"),
                }
            )
        return panels
    finally:
        env.close()


def goal_pictures(
    run_dir: str | pathlib.Path, out: str | pathlib.Path, episodes: int = 6, size: int = 128
) -> pathlib.Path | None:
    """Write ``out/goals_reached.png`` (columns "goal" and "reached", each row titled with its
    final distances) for a run with a checkpoint; returns the path, or None when the run's env
    has no ``render_goal``."""
    panels = goal_panels(run_dir, episodes, size)
    if panels is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(4.2, 2.3 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        for ax, key in zip(row, ("goal", "reached")):
            ax.imshow(panel[key])
            ax.set_xticks([])
            ax.set_yticks([])
        label = [f"{k.removesuffix('_distance')} {v * 100:.1f} cm off" for k, v in panel["finals"].items()]
        if panel["success"] is not None:
            label.insert(0, "success" if panel["success"] else "failure")
        row[1].set_xlabel(", ".join(label), fontsize=7)
    axes[0, 0].set_title("goal", fontsize=9)
    axes[0, 1].set_title(panels[0]["title"], fontsize=9)
    spec = json.loads((pathlib.Path(run_dir) / "run.json").read_text())
    fig.suptitle(f"{spec['env_id']}: goals and what the agent reached", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title
    path = pathlib.Path(out) / "goals_reached.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="an ssrl train run folder, or an ssrl bench folder")
    parser.add_argument("--episodes", type=int, default=6)
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.folder)
    if (folder / "run.json").exists():
        runs = [(folder, folder / "pictures")]
    else:
        runs = [(run, run.parent / "pictures") for run in sorted(folder.glob("cells/*/run"))]
    for run, out in runs:
        if (run / "checkpoint" / "agent.pt").exists():
            path = goal_pictures(run, out, args.episodes)
            if path is not None:
                print(path)


if __name__ == "__main__":
    main()
