"""The report of ``ssrl bench``: tables, aggregate statistics with intervals, plots.

Written into the bench folder:

* ``runs.jsonl``: every evaluation point of every cell (row, task, seed, env steps, returns);
* ``summary.csv`` / ``summary.md``: per row and task, the final return (mean +- std over seeds),
  returns at the suite's report steps beside the published DrQ and CURL numbers (dmc6), probe
  scores (R^2, kNN-MSE, GTC, and each method's extra scores, e.g. grasp2vec's retrieval
  accuracy or TCN's alignment error), and the cost of the
  cell (pretraining steps/s, RL updates/s, wall-clock);
* per row across tasks, the interquartile mean (IQM) of normalised returns (DMC returns / 1000)
  with a 95% stratified-bootstrap interval, computed from the definitions of Agarwal et al.
  (2021) as rliable does (runs resampled with replacement within each task);
* ``curves.png`` (return against env steps) and ``probes.png`` (probe R^2 per row);
* ``bench.json``: all of the above with the machine, versions, date and wall-clock.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections import defaultdict
from typing import Any

import numpy as np

from ssrl.utils import atomic_path, machine_info, write_json

from .published import published_at


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (scipy's trim_mean(., 0.25))."""
    x = np.sort(np.asarray(scores, float).ravel())
    n = len(x)
    cut = int(0.25 * n)
    return float(x[cut : n - cut].mean())


def stratified_bootstrap_ci(
    scores: np.ndarray, statistic=iqm, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high): ``statistic`` of a (runs x tasks) score matrix and its percentile
    interval, resampling runs with replacement independently within each task (stratified)."""
    scores = np.asarray(scores, float)
    if scores.ndim != 2:
        raise ValueError("scores must be a (runs x tasks) matrix")
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    stats = np.empty(reps)
    for r in range(reps):
        idx = rng.integers(0, runs, size=(runs, tasks))
        stats[r] = statistic(np.take_along_axis(scores, idx, axis=0))
    alpha = (1 - confidence) / 2
    return statistic(scores), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _return_at(evals: list[dict], steps: int) -> float | None:
    """The evaluation nearest to ``steps`` env steps from below (within 10%), as DrQ's tables."""
    below = [e for e in evals if e["env_steps"] <= steps]
    if not below or below[-1]["env_steps"] < 0.9 * steps:
        return None
    return below[-1]["return_mean"]


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} +- {np.std(values):.1f}"


def _num(values: list[Any], fmt: str = ".3f") -> str:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return format(float(np.mean(values)), fmt) if values else "-"


_NOT_SCORES = ("target", "n_train", "n_test")


def _score_names(results: list[dict[str, Any]]) -> list[str]:
    """The probe's scores and any method's extra scores (``Representation.extra_scores``) that
    these results hold, in first-seen order; ``_random`` twins are paired with them."""
    names: list[str] = []
    for r in results:
        for key, value in (r.get("probe") or {}).items():
            base = key.removesuffix("_random")
            if base not in names and base not in _NOT_SCORES and isinstance(value, (int, float)):
                names.append(base)
    return names


def write_report(
    out: pathlib.Path, suite: dict[str, Any], results: list[dict[str, Any]], wall_time: float
) -> dict[str, Any]:
    out = pathlib.Path(out)
    # runs.jsonl: every evaluation point
    with atomic_path(out / "runs.jsonl") as tmp:
        with open(tmp, "w") as fh:
            for r in results:
                for e in r.get("evals", []):
                    fh.write(
                        json.dumps({"cell": r["cell"], "row": r["row"], "task": r["task"], "seed": r["seed"], **e})
                        + "\n"
                    )
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["row"], r["task"])].append(r)
    report_steps = [int(s) for s in suite.get("report_steps") or []]
    rows = []
    for (row, task), rs in groups.items():
        entry: dict[str, Any] = {
            "row": row,
            "task": task,
            "seeds": len(rs),
            "final_return": _mean_std([r.get("final_return") for r in rs]),
        }
        errors = [r["error"] for r in rs if r.get("error")]
        if errors:
            entry["final_return"] = f"FAILED ({errors[0][:60]})"
        for steps in report_steps:
            entry[f"return@{steps // 1000}k"] = _mean_std([_return_at(r.get("evals", []), steps) for r in rs])
            if suite.get("published"):
                for name, (mean, std) in published_at(task, steps).items():
                    entry[f"{name}@{steps // 1000}k"] = f"{mean} +- {std}"
        for base in _score_names(rs):
            for key in (base, f"{base}_random"):
                values = [r.get("probe", {}).get(key) for r in rs]
                if any(v is not None for v in values):
                    entry[f"probe_{key}"] = _num(values)
        entry["pretrain_steps_per_s"] = _num([(r.get("pretrain") or {}).get("steps_per_s") for r in rs], ".1f")
        entry["rl_updates_per_s"] = _num([(r.get("rl") or {}).get("updates_per_s") for r in rs], ".1f")
        entry["cell_minutes"] = _num([r["wall_time"] / 60 for r in rs if not r.get("error")], ".1f")
        rows.append(entry)
    order = {name: i for i, name in enumerate(list(suite.get("methods") or {}) + list(suite.get("references") or []))}
    rows.sort(key=lambda e: (e["task"], order.get(e["row"], 99), e["row"]))

    # IQM per row across the DMC tasks (normalised returns), with stratified bootstrap intervals.
    aggregates = {}
    for row in sorted({r["row"] for r in results if r.get("final_return") is not None}):
        tasks = sorted({r["task"] for r in results if r["row"] == row and r.get("final_return") is not None})
        per_task = [[r["final_return"] / 1000.0 for r in results if r["row"] == row and r["task"] == t] for t in tasks]
        n = min(len(p) for p in per_task)
        matrix = np.array([p[:n] for p in per_task]).T  # runs x tasks
        point, low, high = stratified_bootstrap_ci(matrix)
        aggregates[row] = {"iqm": point, "ci95": [low, high], "runs": int(n), "tasks": tasks}

    columns = []
    for e in rows:
        columns += [k for k in e if k not in columns]
    with atomic_path(out / "summary.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    md = [f"# ssrl bench: suite `{suite['name']}`", ""]
    if suite.get("note"):
        md += [f"> {suite['note']}", ""]
    if suite.get("not_run"):
        md += ["Rows not run:", ""] + [f"- {line}" for line in suite["not_run"]] + [""]
    if suite.get("command_line_overrides"):
        md += [f"Run with command-line overrides of the suite: `{json.dumps(suite['command_line_overrides'])}`.", ""]
    cell_time = sum(r.get("wall_time") or 0.0 for r in results)
    md += [
        f"Wall-clock {wall_time / 60:.1f} min for this invocation (cells finished by an earlier one are reused, "
        f"not rerun); the cells' own times add up to {cell_time / 60:.1f} min. Returns are evaluation returns of "
        "the deterministic policy (mean over episodes; +- is the std over seeds). Env steps count simulator steps "
        "(agent steps x action repeat).",
        "",
    ]
    if suite.get("published"):
        md += [
            "Published numbers are labelled so; they are 10-seed means from the papers, not our runs. Our `state_sac` "
            "row uses the task's action repeat (as the pixel rows do); the published state SAC used action repeat 1.",
            "",
        ]
    md += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(str(e.get(c, "")) for c in columns) + " |" for e in rows]
    if aggregates:
        md += [
            "",
            "IQM of normalised final returns (return / 1000) across tasks, 95% stratified-bootstrap interval:",
            "",
            "| row | IQM | 95% CI | runs x tasks |",
            "|---|---|---|---|",
        ]
        md += [
            f"| {row} | {a['iqm']:.3f} | [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | {a['runs']} x {len(a['tasks'])} |"
            for row, a in sorted(aggregates.items(), key=lambda kv: -kv[1]["iqm"])
        ]
    text = "\n".join(md) + "\n"
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(text)
    _plots(out, results)
    summary = {
        "suite": suite["name"],
        "rows": rows,
        "aggregates": aggregates,
        "wall_time": wall_time,
        "machine": machine_info(),
        "cells": len(results),
    }
    write_json(out / "bench.json", summary)
    print(text)
    return summary


def _plots(out: pathlib.Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results if r.get("evals")})
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            by_row: dict[str, list] = defaultdict(list)
            for r in results:
                if r["task"] == task and r.get("evals"):
                    by_row[r["row"]].append(r["evals"])
            for row, runs in sorted(by_row.items()):
                steps = [e["env_steps"] for e in runs[0]]
                n = min(len(run) for run in runs)
                values = np.array([[e["return_mean"] for e in run[:n]] for run in runs])
                ax.plot(steps[:n], values.mean(0), label=row)
                if len(runs) > 1:
                    ax.fill_between(steps[:n], values.min(0), values.max(0), alpha=0.15)
            ax.set_title(task)
            ax.set_xlabel("env steps")
            ax.set_ylabel("eval return")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        with atomic_path(out / "curves.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
    probed = [r for r in results if r.get("probe")]
    if probed:
        labels = sorted({(r["task"], r["row"]) for r in probed})
        values = [np.mean([r["probe"]["r2"] for r in probed if (r["task"], r["row"]) == key]) for key in labels]
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(labels) + 2), 3.6))
        ax.bar(range(len(labels)), values, color="tab:blue")
        ax.set_xticks(
            range(len(labels)), [f"{row}\n{task}" for task, row in labels], rotation=60, fontsize=7, ha="right"
        )
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("linear probe R^2 (held-out episodes)")
        fig.tight_layout()
        with atomic_path(out / "probes.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
