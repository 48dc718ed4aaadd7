"""The report of ``ssrl bench``: what won, with intervals, then the tables and the figures.

Written into the bench folder:

* ``summary.md``: first a headline that answers the bench's question: per row, the interquartile
  mean (IQM) of normalised final returns (DMC returns / 1000) across tasks and seeds with a 95%
  stratified-bootstrap interval (the definitions of Agarwal et al. 2021, as rliable computes
  them: runs resampled with replacement within each task), and which rows beat the frozen random
  encoder (``random_encoder``) and pixel SAC (``pixel_sac``). A difference is claimed only where
  the two intervals do not overlap; with one seed per task every interval is a single point and
  the headline says that no difference is supported. Then one table of returns per task
  (methods x regimes, the reference rows beside them), returns at the suite's report steps
  beside the published DrQ and CURL numbers (dmc6), probe tables per data set (trained beside
  the random-init encoder of the same method: R^2, kNN-MSE, GTC and each method's own scores),
  the cost of each cell, and the failed cells with their errors;
* ``summary.csv``: one flat line per row and task (mean +- std over seeds, probe scores, cost);
  every std here is numpy's (divided by n, not n - 1);
* ``iqm.png`` (IQM with intervals, sorted, the random-encoder and state-SAC IQMs as reference
  lines), ``curves.png`` (return against env steps, a panel per task and regime, mean with the
  min-max over seeds shaded, reference rows dashed) and ``probes.png`` (probe R^2 trained beside
  random-init, per method and data set);
* goal tasks (Push): success (exact binomial intervals) and final distances per row, and
  ``goals.png`` (final distances and success against env steps); their returns stay out of the
  IQM, which is on DMC's scale;
* ``runs.jsonl``: every evaluation point of every cell (row, task, seed, env steps, returns);
* ``bench.json``: all of the above with the machine, versions, date and wall-clock.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssrl.utils import atomic_path, machine_info, write_json

from .published import published_at
from .suite import REFERENCE_ROWS

LOWER, PIXEL, UPPER = "random_encoder", "pixel_sac", "state_sac"  # the rows the headline compares with
REGIMES = ("frozen", "finetune", "decoupled", "joint")
PROBE_SCORES = {"r2": "R²", "knn_mse": "kNN-MSE", "gtc": "GTC"}  # the probe's own; others are methods' extras
_NOT_SCORES = ("target", "n_train", "n_test")
FIGURES = ("iqm.png", "curves.png", "probes.png", "goals.png")


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


def stratified_bootstrap_ci_per_task(
    per_task: Sequence[Sequence[float]], statistic=iqm, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """:func:`stratified_bootstrap_ci` of per-task lists of run scores, which may differ in length
    (a task where a cell failed keeps the runs it has, rather than every task losing one): each
    task's runs are resampled within that task, and ``statistic`` sees the pooled scores. Equal
    lengths give exactly :func:`stratified_bootstrap_ci` of the (runs x tasks) matrix."""
    tasks = [np.asarray(t, float).ravel() for t in per_task]
    if not tasks or any(len(t) == 0 for t in tasks):
        raise ValueError("every task needs at least one run")
    if len({len(t) for t in tasks}) == 1:
        return stratified_bootstrap_ci(np.stack(tasks, axis=1), statistic, reps, confidence, seed)
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = statistic(np.concatenate([t[rng.integers(0, len(t), size=len(t))] for t in tasks]))
    alpha = (1 - confidence) / 2
    return statistic(np.concatenate(tasks)), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def normalised(task: str, value: float) -> float:
    """A final return on a common scale: the RL tasks are DMC tasks, whose returns lie in [0, 1000]."""
    return value / 1000.0


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What the intervals of two rows' aggregates support: ``above`` / ``below`` (a's interval lies
    wholly above / below b's), ``overlap`` (not distinguishable), ``one_seed`` (either row has a
    task with one run: its interval is a point, and no difference is claimed), or
    ``different_tasks`` (the IQMs are over different tasks, so not comparable)."""
    if a["tasks"] != b["tasks"]:
        return "different_tasks"
    if a["runs"] < 2 or b["runs"] < 2:
        return "one_seed"
    if a["ci95"][0] > b["ci95"][1]:
        return "above"
    if a["ci95"][1] < b["ci95"][0]:
        return "below"
    return "overlap"


# --------------------------------------------------------------------------- rows and cells


class _Rows:
    """Which rows are references, the regime of a method row, and the report's row order (the
    suite's methods, each in regime order, then its reference rows)."""

    def __init__(self, suite: dict[str, Any]) -> None:
        self.methods = list(suite.get("methods") or {})
        self.first_method = self.methods[0] if self.methods else None  # random_encoder's (see cells.plan)
        self.data_order = list(suite.get("tasks") or []) + list(suite.get("probes") or {})
        self.references = list(suite.get("references") or [])
        self.references += [r for r in REFERENCE_ROWS if r not in self.references]
        probe_methods = [m for part in (suite.get("probes") or {}).values() for m in (part.get("methods") or [])]
        self.methods += [m for m in probe_methods if m not in self.methods]

    def is_reference(self, row: str) -> bool:
        return row in self.references

    def method(self, row: str) -> str:
        return row.partition(":")[0]

    def regime(self, r: dict[str, Any]) -> str | None:
        """The regime of a method row's RL cell (None for reference rows and probe cells)."""
        if self.is_reference(r["row"]) or not _is_rl(r):
            return None
        return r.get("regime") or r["row"].partition(":")[2] or "frozen"

    def key(self, row: str) -> tuple:
        if self.is_reference(row):
            return (1, self.references.index(row), 0, row)
        method, _, regime = row.partition(":")
        m = self.methods.index(method) if method in self.methods else len(self.methods)
        g = REGIMES.index(regime) if regime in REGIMES else (0 if not regime else len(REGIMES))
        return (0, m, g, row)

    def sort(self, rows) -> list[str]:
        return sorted(set(rows), key=self.key)


def _is_rl(r: dict[str, Any]) -> bool:
    """An RL cell (finished or failed) rather than a probe-only one."""
    if "kind" in r:
        return r["kind"] != "probe"
    return bool(r.get("evals") or r.get("rl"))


def _ok(r: dict[str, Any]) -> bool:
    return not r.get("error")


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def _return_at(evals: list[dict], steps: int) -> float | None:
    """The evaluation nearest to ``steps`` env steps from below (within 10%), as DrQ's tables."""
    below = [e for e in evals if e["env_steps"] <= steps]
    if not below or below[-1]["env_steps"] < 0.9 * steps:
        return None
    return below[-1]["return_mean"]


def _mean_std(values: list[float | None], pm: str = "+-") -> str:
    values = _finite(values)
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} {pm} {np.std(values):.1f}"


def _num(values: list[Any], fmt: str = ".3f") -> str:
    values = _finite(values)
    return format(float(np.mean(values)), fmt) if values else "-"


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


def _direction(score: str) -> str:
    """An arrow for which way is better, where the name says it."""
    if score in ("r2", "gtc") or score.endswith(("_acc", "_accuracy")):
        return " ↑"
    if score == "knn_mse" or score.endswith(("_error", "_mse", "_loss")):
        return " ↓"
    return ""


# --------------------------------------------------------------------------- statistics and headline


def _final_keys(evals: list[dict[str, Any]]) -> list[str]:
    """The scalar final-step metrics in evaluation records (``final_puck_distance``; not the
    per-episode lists beside them), in the order the env names them (its task's measure first)."""
    keys: dict[str, None] = {}
    for e in evals:
        keys.update((k, None) for k, v in e.items() if k.startswith("final_") and not isinstance(v, list))
    return list(keys)


def _is_goal(r: dict[str, Any]) -> bool:
    """A goal task's cell: its evaluations report final distances (Push) or a success rate
    (GraspGoal, one grasp per episode, has no distance); its returns are not on DMC's scale."""
    return any(
        k.startswith("final_") or (k == "success_rate" and v is not None)
        for e in r.get("evals", [])
        for k, v in e.items()
    )


def _aggregates(results: list[dict[str, Any]], rows: _Rows) -> dict[str, dict[str, Any]]:
    """Per row: IQM of normalised final returns across its (DMC) tasks and runs, with a 95%
    interval. Goal tasks are reported by success and final distance instead (:func:`_goal_tables`)."""
    done = [r for r in results if _ok(r) and _is_rl(r) and r.get("final_return") is not None and not _is_goal(r)]
    failed = Counter(r["row"] for r in results if not _ok(r) and _is_rl(r))
    aggregates = {}
    for row in rows.sort(r["row"] for r in done):
        tasks = sorted({r["task"] for r in done if r["row"] == row})
        per_task = [
            [normalised(t, r["final_return"]) for r in done if r["row"] == row and r["task"] == t] for t in tasks
        ]
        point, low, high = stratified_bootstrap_ci_per_task(per_task)
        runs = {t: len(p) for t, p in zip(tasks, per_task)}
        aggregates[row] = {
            "iqm": point,
            "ci95": [low, high],
            "runs": min(runs.values()),  # runs per task (the fewest, where a cell failed)
            "runs_per_task": runs,
            "tasks": tasks,
            "failed_cells": failed.get(row, 0),
        }
    for row, agg in aggregates.items():
        for ref in (LOWER, PIXEL):
            if ref in aggregates and row != ref:
                agg[f"vs_{ref}"] = compare(agg, aggregates[ref])
    return aggregates


def _fmt_agg(row: str, a: dict[str, Any]) -> str:
    if a["runs"] < 2:
        return f"{row} {a['iqm']:.3f}"
    return f"{row} {a['iqm']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"


def _listing(rows: list[str], aggregates: dict[str, dict[str, Any]]) -> str:
    return ", ".join(_fmt_agg(r, aggregates[r]) for r in rows) if rows else "none"


_LABELS = {LOWER: "the frozen random encoder", PIXEL: "pixel SAC"}


def _probe_headline(probes: dict[str, dict[str, Any]]) -> list[str]:
    """One line: whose probe R^2 beats an untrained encoder of the same method, per data set."""
    higher, not_higher = [], []
    for data, entries in probes.items():
        for label, e in entries.items():
            score = e["scores"].get("r2")
            if not score or score["trained"] is None or score["random"] is None:
                continue
            text = f"{label} on {data} ({score['trained']:.3f} vs {score['random']:.3f}"
            pairs = [(t, x) for t, x in score["per_seed"] if len(_finite([t, x])) == 2]
            if len(pairs) > 1:
                text += f", higher in {sum(t > r for t, r in pairs)} of {len(pairs)} seeds"
            (higher if score["trained"] > score["random"] else not_higher).append(text + ")")
    if not higher and not not_higher:
        return []
    text = (
        "- Probe R² on held-out episodes, trained vs an untrained encoder of the same method (means over seeds, "
        f"no interval): higher for {', '.join(higher) or 'none'}"
    )
    return [text + (f"; not higher for {', '.join(not_higher)}." if not_higher else ".")]


def _goal_headline(goals: dict[str, dict[str, Any]]) -> list[str]:
    """One line per goal task: its rows ranked by success (pooled, exact interval) with their
    first final distance, and which rows' success intervals lie wholly above which others'."""
    lines = []
    for task, table in goals.items():
        rows = [(row, e) for row, e in table["rows"].items() if "success" in e]
        if not rows:
            continue
        rows.sort(key=lambda item: -item[1]["success"]["successes"] / item[1]["success"]["episodes"])
        metric = table["metrics"][0] if table["metrics"] else None
        parts = []
        for row, e in rows:
            s = e["success"]
            text = f"`{row}` {s['successes']}/{s['episodes']} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
            if metric is not None:
                text += f", {metric.removeprefix('final_').replace('_', ' ')} {100 * e[metric]['mean']:.1f} cm"
            parts.append(text)
        above = [
            f"`{a}` > `{b}`"
            for i, (a, ea) in enumerate(rows)
            for b, eb in rows[i + 1 :]
            if ea["success"]["ci95"][0] > eb["success"]["ci95"][1]
        ]
        measure = f" and final {metric.removeprefix('final_').replace('_', ' ')} (mean over seeds)" if metric else ""
        lines.append(
            f"- **{task}**, success at each run's last evaluation (episodes pooled over seeds, exact 95% interval)"
            f"{measure}: " + "; ".join(parts) + ". Intervals apart: " + (", ".join(above) if above else "none") + "."
        )
    return lines


def _headline(
    aggregates: dict[str, dict[str, Any]],
    results: list[dict[str, Any]],
    probes: dict[str, dict[str, Any]],
    goals: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """The first lines of summary.md: which rows beat the random encoder and reach pixel SAC (and
    whose probe beats its random-init encoder); goal tasks by success and final distance."""
    rl = [r for r in results if _is_rl(r)]
    failed = [r for r in results if not _ok(r)]
    lines = ["## Headline", ""]
    goal_lines = _goal_headline(goals or {})
    if not aggregates:
        if goal_lines:
            lines += goal_lines
            if failed:
                lines.append(f"- **{len(failed)} of {len(results)} cells failed** (listed under Failed cells below).")
        elif rl:
            lines.append(f"No RL cell finished ({len(failed)} failed, listed below): there is no return to compare.")
        else:
            lines.append("This suite has no RL cells: see the probe tables below.")
        probe_line = _probe_headline(probes)
        return lines + ([""] + probe_line if probe_line else []) + [""]
    tasks = sorted({t for a in aggregates.values() for t in a["tasks"]})
    runs = sorted({n for a in aggregates.values() for n in a["runs_per_task"].values()})
    seeds = f"{runs[0]} seed{'s' if runs[0] > 1 else ''}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]} seeds"
    few = [n for n in runs if 2 <= n < 5]
    caveat = (
        f" With {few[0]} runs per task an interval cannot be wider than the runs' spread, so it is optimistic: "
        "read the claims as indicative."
        if few
        else ""
    )
    lines += [
        f"IQM of normalised final return (return / 1000) over {len(tasks)} task{'s' if len(tasks) > 1 else ''} "
        f"({', '.join(tasks)}) with {seeds} per task; "
        + (
            "one run per task gives no interval. "
            if runs[-1] < 2
            else "in brackets, its 95% stratified-bootstrap interval over runs. "
        )
        + "A difference is claimed only where two rows' intervals do not overlap."
        + caveat,
        "",
    ]
    ranked = sorted(aggregates, key=lambda row: -aggregates[row]["iqm"])
    single = [row for row in ranked if aggregates[row]["runs"] < 2]
    if single and len(single) == len(ranked):
        lines.append(
            "- **One seed per task: every interval is a single point, so this run supports no difference between "
            "rows.** The orderings below are point estimates only; rerun with `--seeds 3` or more to test them."
        )
    elif single:
        lines.append(
            "- Rows with one run on some task (their interval is a single point; no difference is claimed for "
            f"them): {', '.join(single)}."
        )
    for ref in (LOWER, PIXEL):
        label = _LABELS[ref]
        if ref not in aggregates:
            lines.append(f"- No `{ref}` row finished in these results: nothing is compared with {label}.")
            continue
        a_ref = aggregates[ref]
        groups: dict[str, list[str]] = defaultdict(list)
        for row in ranked:
            if row not in (ref, UPPER):
                groups[aggregates[row][f"vs_{ref}"]].append(row)
        tested = any(groups[v] for v in ("above", "overlap", "below"))
        if tested:
            ref_text = f"`{ref}` {a_ref['iqm']:.3f} [{a_ref['ci95'][0]:.3f}, {a_ref['ci95'][1]:.3f}]"
            short = "the random encoder" if ref == LOWER else label
            beat = "Beat the frozen random encoder" if ref == LOWER else "Above pixel SAC"
            lines.append(
                f"- **{beat}** ({ref_text}; intervals do not overlap): {_listing(groups['above'], aggregates)}."
            )
            if groups["overlap"]:
                lines.append(
                    f"- **Not distinguishable from {short} at this budget/seed count** (intervals overlap): "
                    f"{_listing(groups['overlap'], aggregates)}."
                )
            if groups["below"]:
                lines.append(
                    f"- **Below {short}** (intervals do not overlap): {_listing(groups['below'], aggregates)}."
                )
        if groups["one_seed"]:
            up = [r for r in groups["one_seed"] if aggregates[r]["iqm"] >= a_ref["iqm"]]
            down = [r for r in groups["one_seed"] if aggregates[r]["iqm"] < a_ref["iqm"]]
            lines.append(
                f"- At or above {label} (`{ref}` {a_ref['iqm']:.3f}) by point estimate only, one seed, no claim: "
                f"{_listing(up, aggregates)}; below it: {_listing(down, aggregates)}."
            )
        if groups["different_tasks"]:
            lines.append(
                f"- Not compared with {label} (IQM over other tasks than `{ref}`'s): "
                + ", ".join(f"{r} ({', '.join(aggregates[r]['tasks'])})" for r in groups["different_tasks"])
                + "."
            )
    if UPPER in aggregates:
        a = aggregates[UPPER]
        interval = "" if a["runs"] < 2 else f" [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
        lines.append(f"- State SAC (upper bound, on the true state): {a['iqm']:.3f}{interval}.")
    lines += goal_lines
    lines += _probe_headline(probes)
    if failed:
        lines.append(f"- **{len(failed)} of {len(results)} cells failed** (listed under Failed cells below).")
    return lines + [""]


_VERDICTS = {
    "above": "above",
    "below": "below",
    "overlap": "not distinguishable",
    "one_seed": "no claim (1 seed)",
    "different_tasks": "other tasks",
}


def _iqm_table(aggregates: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| row | IQM | 95% interval | runs x tasks | vs random_encoder | vs pixel_sac |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(aggregates, key=lambda r: -aggregates[r]["iqm"]):
        a = aggregates[row]
        runs = f"{a['runs']} x {len(a['tasks'])}" + (f" ({a['failed_cells']} failed)" if a["failed_cells"] else "")
        verdicts = [_VERDICTS.get(a.get(f"vs_{ref}"), "-") for ref in (LOWER, PIXEL)]
        lines.append(
            f"| {row} | {a['iqm']:.3f} | [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | {runs} | {' | '.join(verdicts)} |"
        )
    return lines


# --------------------------------------------------------------------------- tables


def _returns_cell(rs: list[dict[str, Any]]) -> str:
    done = [r["final_return"] for r in rs if _ok(r) and r.get("final_return") is not None]
    failed = sum(1 for r in rs if not _ok(r))
    text = _mean_std(done, pm="±") if done else "FAILED"
    if failed and done:
        text += f" ({failed} failed)"
    return text


def _returns_tables(results: list[dict[str, Any]], rows: _Rows) -> dict[str, dict[str, Any]]:
    """Per task: rows = methods (then reference rows), columns = the regimes present (then
    ``reference``); each cell the final return, mean ± std over seeds. Goal tasks stay out: their
    rows' returns are sums of different rewards (latent distance, pixel distance, object ids)."""
    rl = [r for r in results if _is_rl(r) and not _is_goal(r)]
    tables = {}
    for task in sorted({r["task"] for r in rl}):
        here = [r for r in rl if r["task"] == task]
        cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in here:
            if rows.is_reference(r["row"]):
                cells[r["row"]]["reference"].append(r)
            else:
                cells[rows.method(r["row"])][rows.regime(r)].append(r)
        present = {g for r in here for g in [rows.regime(r)] if g}
        columns = [g for g in REGIMES if g in present] + sorted(present - set(REGIMES))
        if any(rows.is_reference(r["row"]) for r in here):
            columns.append("reference")
        order = sorted(cells, key=lambda label: (rows.is_reference(label), rows.key(label)))
        tables[task] = {
            "columns": columns,
            "rows": {
                label: {c: _returns_cell(cells[label][c]) for c in columns if cells[label].get(c)} for label in order
            },
        }
    return tables


def _goal_tables(results: list[dict[str, Any]], rows: _Rows) -> dict[str, dict[str, Any]]:
    """Per goal task and row, at each run's last evaluation: the success rate (episodes pooled
    over seeds, with an exact Clopper-Pearson 95% interval) and every final distance the env
    reports (mean +- std over seeds, and each seed's value)."""
    from ssrl.agents.evaluate import success_interval

    done = [r for r in results if _ok(r) and _is_goal(r)]
    tables: dict[str, dict[str, Any]] = {}
    for task in sorted({r["task"] for r in done}):
        here = [r for r in done if r["task"] == task]
        metrics = _final_keys([r["evals"][-1] for r in here])
        table: dict[str, Any] = {"metrics": metrics, "rows": {}}
        for row in rows.sort(r["row"] for r in here):
            runs = sorted((r for r in here if r["row"] == row), key=lambda r: r["seed"])
            last = [r["evals"][-1] for r in runs]
            entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "env_steps": [e["env_steps"] for e in last]}
            rates = [e.get("success_rate") for e in last]
            if all(x is not None for x in rates):
                episodes = [len(e["returns"]) for e in last]
                hits = int(round(sum(x * n for x, n in zip(rates, episodes))))
                entry["success"] = dict(success_interval(hits, sum(episodes)), per_seed=rates)
            for m in metrics:
                entry[m] = _spread([e.get(m) for e in last])
            for key in _held_out_keys(runs):  # the suite's evaluations in changed envs
                held = [r.get(key) for r in runs]
                if all(h is not None for h in held):
                    entry[key] = _held_out_entry(held, metrics)
            table["rows"][row] = entry
        tables[task] = table
    return tables


def _held_out_keys(entries) -> list[str]:
    """The held-out evaluations among result or table entries, in order: ``held_out`` (the
    unnamed one), then ``held_out_NAME`` by first appearance."""
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e if (k == "held_out" or k.startswith("held_out_")) and k not in keys]
    return keys


def _held_out_label(key: str) -> str:
    """``held_out`` -> "held-out"; ``held_out_colours`` -> "held-out colours"."""
    return "held-out" + (" " + key.removeprefix("held_out_") if key != "held_out" else "")


def _held_out_entry(held: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """Pooled success (exact interval) and mean final metrics of the runs' held-out evaluations."""
    from ssrl.agents.evaluate import success_interval

    entry: dict[str, Any] = {"env_overrides": held[0]["env_overrides"]}
    if all("success" in h for h in held):
        hits = sum(h["success"]["successes"] for h in held)
        entry["success"] = success_interval(hits, sum(h["success"]["episodes"] for h in held))
    for m in metrics:
        if all(m in h for h in held):
            entry[m] = _spread([h[m] for h in held])
    return entry


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and std over seeds, and each seed's value."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": values}


def _goal_markdown(goals: dict[str, dict[str, Any]]) -> list[str]:
    md = [
        "## Goal tasks: success and final distances",
        "",
        "At each run's last evaluation. Success: episodes pooled over seeds, exact 95% interval; "
        "distances (m, at the episode's last step): mean ± std over seeds, then each seed's.",
        "",
    ]

    def success(e: dict[str, Any]) -> str:
        if "success" not in e:
            return "-"
        s = e["success"]
        return f"{s['successes']}/{s['episodes']} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"

    def value(v: dict[str, Any] | None) -> str:
        if v is None:
            return "-"
        return f"{v['mean']:.3f} ± {v['std']:.3f} ({', '.join(f'{x:.3f}' for x in v['per_seed'])})"

    for task, table in goals.items():
        metrics = table["metrics"]
        header = ["row", "seeds", "success"] + [m.removeprefix("final_") + " ↓" for m in metrics]
        held_keys = _held_out_keys(table["rows"].values())
        first = metrics[0].removeprefix("final_") if metrics else None
        for key in held_keys:
            label = _held_out_label(key)
            header += [f"{label} success"] + ([f"{label} {first} ↓"] if first else [])
        body = []
        for row, e in table["rows"].items():
            line = [row, str(len(e["seeds"])), success(e)] + [value(e[m]) for m in metrics]
            for key in held_keys:
                h = e.get(key, {})
                line += [success(h)] + ([value(h.get(metrics[0]))] if metrics else [])
            body.append(line)
        md += [f"### {task}", ""] + _md_table(header, body) + [""]
        for key in held_keys:
            overrides = next(e[key]["env_overrides"] for e in table["rows"].values() if key in e)
            label = _held_out_label(key)
            md += [
                f"{label[0].upper()}{label[1:]}: an evaluation of each run with env options {json.dumps(overrides)}.",
                "",
            ]
    return md


def _probe_tables(results: list[dict[str, Any]], rows: _Rows) -> dict[str, dict[str, Any]]:
    """Per data set (a task's or a probe part's): per method, each score trained and, where the
    cell scored one, the random-init encoder of the same method (means over seeds)."""
    probed = [r for r in results if _ok(r) and r.get("probe")]
    tables = {}
    datasets = {r["task"] for r in probed}
    for data in sorted(datasets, key=lambda d: (rows.data_order.index(d) if d in rows.data_order else 99, d)):
        by_label: dict[str, list[dict]] = {}
        # One entry per method: its frozen and fine-tuned rows share one pretrained model and probe.
        for row in rows.sort(r["row"] for r in probed if r["task"] == data):
            if rows.is_reference(row) and row != LOWER:
                continue  # a reward row (pixel_reward, oracle_reward, ...) probes its method's model again
            label = row if rows.is_reference(row) else rows.method(row)
            if label not in by_label:
                by_label[label] = [r for r in probed if r["task"] == data and r["row"] == row]
        entries = {}
        for label, rs in by_label.items():
            scores = {}
            for name in _score_names(rs):
                per_seed = [[r["probe"].get(name), r["probe"].get(f"{name}_random")] for r in rs]
                trained, random = _finite([t for t, _ in per_seed]), _finite([x for _, x in per_seed])
                scores[name] = {
                    "trained": float(np.mean(trained)) if trained else None,
                    "random": float(np.mean(random)) if random else None,
                    "per_seed": per_seed,  # [trained, random-init] of each seed
                }
            method = rs[0].get("method") or (rows.first_method if label == LOWER else rows.method(rs[0]["row"]))
            entries[label] = {"seeds": len(rs), "scores": scores, "method": method}
        tables[data] = entries
    return tables


def _score_text(score: dict[str, Any] | None) -> str:
    if score is None or score["trained"] is None:
        return "-"
    if score["random"] is None:
        return f"{score['trained']:.3f}"
    return f"{score['trained']:.3f} / {score['random']:.3f}"


def _cost(results: list[dict[str, Any]], rows: _Rows) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        if _ok(r):
            groups[(r["row"], r["task"])].append(r)
    out = []
    for (row, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], rows.key(kv[0][0]))):
        out.append(
            {
                "row": row,
                "task": task,
                "cells": len(rs),
                "pretrain_steps_per_s": _num([(r.get("pretrain") or {}).get("steps_per_s") for r in rs], ".1f"),
                "rl_updates_per_s": _num([(r.get("rl") or {}).get("updates_per_s") for r in rs], ".1f"),
                "pretrain_minutes": _num([((r.get("pretrain") or {}).get("wall_time") or 0) / 60 for r in rs], ".1f")
                if any(r.get("pretrain") for r in rs)
                else "-",
                "rl_minutes": _num([(r["rl"].get("wall_time") or 0) / 60 for r in rs if r.get("rl")], ".1f"),
                "cell_minutes": _num([(r.get("wall_time") or 0) / 60 for r in rs], ".1f"),
            }
        )
    return out


def _flat_rows(results: list[dict[str, Any]], suite: dict[str, Any], rows: _Rows) -> list[dict[str, Any]]:
    """summary.csv: one line per row and task."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["row"], r["task"])].append(r)
    report_steps = [int(s) for s in suite.get("report_steps") or []]
    flat = []
    for (row, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], rows.key(kv[0][0]))):
        done = [r for r in rs if _ok(r)]
        if rows.is_reference(row):
            regime = "reference"
        else:
            regime = next((g for g in map(rows.regime, rs) if g), "probe")
        entry: dict[str, Any] = {
            "row": row,
            "task": task,
            "regime": regime,
            "seeds": len(rs),
            "final_return": _mean_std([r.get("final_return") for r in done]),
        }
        errors = [" ".join(str(r["error"]).split()) for r in rs if r.get("error")]
        if errors:  # the finished seeds' mean, or the first error if none finished
            entry["final_return"] = f"FAILED ({errors[0][:80]})" if not done else entry["final_return"]
            entry["failed_cells"] = len(errors)
        for steps in report_steps:
            entry[f"return@{steps // 1000}k"] = _mean_std([_return_at(r.get("evals", []), steps) for r in done])
            if suite.get("published"):
                for name, (mean, std) in published_at(task, steps).items():
                    entry[f"{name}@{steps // 1000}k"] = f"{mean} +- {std}"
        for base in _score_names(done):
            for key in (base, f"{base}_random"):
                values = [r.get("probe", {}).get(key) for r in done]
                if any(v is not None for v in values):
                    entry[f"probe_{key}"] = _num(values)
        entry["pretrain_steps_per_s"] = _num([(r.get("pretrain") or {}).get("steps_per_s") for r in done], ".1f")
        entry["rl_updates_per_s"] = _num([(r.get("rl") or {}).get("updates_per_s") for r in done], ".1f")
        entry["cell_minutes"] = _num([r["wall_time"] / 60 for r in done], ".1f")
        flat.append(entry)
    return flat


def _reference_legend(labels: list[str], rows: _Rows) -> list[str]:
    """What each reference row among ``labels`` is, as one line (nothing if there is none)."""
    refs = sorted({row for row in labels if rows.is_reference(row)}, key=rows.key)
    if not refs:
        return []
    return ["Reference rows: " + "; ".join(f"`{r}`: {REFERENCE_ROWS.get(r, r)}" for r in refs) + ".", ""]


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cells) + " |" for cells in body
    ]


def _markdown(
    suite: dict[str, Any],
    results: list[dict[str, Any]],
    wall_time: float,
    aggregates: dict[str, Any],
    returns: dict[str, Any],
    probes: dict[str, Any],
    cost: list[dict[str, Any]],
    rows: _Rows,
) -> list[str]:
    md = [f"# ssrl bench: suite `{suite['name']}`", ""]
    md += _headline(aggregates, results, probes, _goal_tables(results, rows))
    if aggregates:
        md += _iqm_table(aggregates) + [""]
        probed = bool(_probe_panels(probes))
        md += [
            "Figures: `iqm.png` (these intervals), `curves.png` (learning curves)"
            + (", `probes.png` (probe R²)." if probed else "."),
            "",
        ]
    md += ["## Setting", ""]
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
        "the deterministic policy (mean over episodes; ± is the std over seeds, divided by n). Env steps count "
        "simulator steps (agent steps x action repeat).",
        "",
    ]
    if returns:
        md += ["## Final returns per task and regime", ""]
        md += _reference_legend([row for t in returns.values() for row in t["rows"]], rows)
        report_steps = [int(s) for s in suite.get("report_steps") or []]
        for task, table in returns.items():
            md += [f"### {task}", ""]
            body = [[label] + [cells.get(c, "") for c in table["columns"]] for label, cells in table["rows"].items()]
            md += _md_table(["row"] + table["columns"], body) + [""]
            if report_steps:
                md += _report_steps_table(task, results, suite, report_steps, rows) + [""]
    goals = _goal_tables(results, rows)
    if goals:
        md += _goal_markdown(goals)
        md += _reference_legend([row for t in goals.values() for row in t["rows"]], rows)
        md += [
            "Figures: `goals.png` (success and final distances against env steps); "
            "`cells/ROW__TASK__sSEED/pictures/goals_reached.png` (goal images beside what the agent reached).",
            "",
        ]
    if probes:
        md += [
            "## Probes",
            "",
            "Scores on held-out episodes, means over seeds; `a / b` is the trained encoder / an untrained "
            "(random-init) encoder of the same method. ↑: higher is better, ↓: lower is better.",
            "",
        ]
        for data, entries in probes.items():
            extra = [n for e in entries.values() for n in e["scores"] if n not in PROBE_SCORES]
            extra = list(dict.fromkeys(extra))
            header = ["method"] + [f"{label}{_direction(name)}" for name, label in PROBE_SCORES.items()]
            header += ["method's own scores"] if extra else []
            body = []
            for label, e in entries.items():
                name = f"{label} (untrained {e['method']})" if label == LOWER and e["method"] else label
                line = [name] + [_score_text(e["scores"].get(s)) for s in PROBE_SCORES]
                if extra:
                    own = [f"{n}{_direction(n)} {_score_text(e['scores'][n])}" for n in extra if n in e["scores"]]
                    line.append("; ".join(own) or "-")
                body.append(line)
            md += [f"### {data}", ""] + _md_table(header, body) + [""]
    if cost:
        md += ["## Cost per cell", "", "Means over a row's finished cells on the task."]
        md += [""] + _md_table(
            ["row", "task", "pretrain steps/s", "RL updates/s", "pretrain min", "RL min", "cell min"],
            [
                [
                    c["row"],
                    c["task"],
                    c["pretrain_steps_per_s"],
                    c["rl_updates_per_s"],
                    c["pretrain_minutes"],
                    c["rl_minutes"],
                    c["cell_minutes"],
                ]
                for c in cost
            ],
        )
        md += [""]
    failed = [r for r in results if not _ok(r)]
    if failed:
        md += [
            "## Failed cells",
            "",
            "Re-running the same command retries them; tracebacks in `cells/*/error.txt`.",
            "",
        ]
        md += [f"- `{r['cell']}`: {' '.join(str(r['error']).split())}" for r in failed] + [""]
    return md


def _report_steps_table(
    task: str, results: list[dict[str, Any]], suite: dict[str, Any], steps: list[int], rows: _Rows
) -> list[str]:
    here = [r for r in results if r["task"] == task and _is_rl(r) and _ok(r)]
    body = []
    for row in rows.sort(r["row"] for r in here):
        rs = [r for r in here if r["row"] == row]
        body.append([row] + [_mean_std([_return_at(r.get("evals", []), s) for r in rs], pm="±") for s in steps])
    if suite.get("published"):
        names = list(dict.fromkeys(n for s in steps for n in published_at(task, s)))
        for name in names:
            published = [published_at(task, s).get(name) for s in steps]
            body.append([name] + [f"{p[0]} ± {p[1]}" if p else "-" for p in published])
    header = ["row"] + [f"{s // 1000}k" for s in steps]
    return ["Returns at the suite's report steps (env steps):", ""] + _md_table(header, body)


# --------------------------------------------------------------------------- the report


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
    rows = _Rows(suite)
    flat = _flat_rows(results, suite, rows)
    aggregates = _aggregates(results, rows)
    returns = _returns_tables(results, rows)
    probes = _probe_tables(results, rows)
    cost = _cost(results, rows)

    columns: list[str] = []
    for e in flat:
        columns += [k for k in e if k not in columns]
    with atomic_path(out / "summary.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    md = _markdown(suite, results, wall_time, aggregates, returns, probes, cost, rows)
    text = "\n".join(md) + "\n"
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(text)
    figures = _plots(out, results, aggregates, probes, rows)
    summary = {
        "suite": suite["name"],
        "headline": _headline(aggregates, results, probes, _goal_tables(results, rows))[2:-1],
        "rows": flat,
        "aggregates": aggregates,
        "returns_by_regime": returns,
        "goal_tasks": _goal_tables(results, rows),
        "probes": probes,
        "cost": cost,
        "failed": [{"cell": r["cell"], "error": r["error"]} for r in results if not _ok(r)],
        "figures": figures,
        "wall_time": wall_time,
        "machine": machine_info(),
        "cells": len(results),
    }
    write_json(out / "bench.json", summary)
    print(text)
    return summary


# --------------------------------------------------------------------------- figures

_REFERENCE_STYLE = {  # colour and dash pattern of the reference rows (methods take tab20's colours, solid)
    "state_sac": ("black", (0, (6, 2))),
    "pixel_sac": ("#555555", (0, (5, 2, 1, 2))),
    "random_encoder": ("#999999", (0, (2, 1.5))),
}
_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}


def _styles(all_rows: list[str], rows: _Rows) -> dict[str, tuple[Any, Any]]:
    """Row -> (colour, line style): one colour per method (tab20 without its greys, strong hues
    first, then tab20b: 38 before any repeats), its regimes told apart by panel or label;
    reference rows dashed, in greys or their method's colour."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    base = [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (14, 15)]
    base += list(matplotlib.colormaps["tab20b"].colors)
    methods = list(dict.fromkeys(list(rows.methods) + [rows.method(r) for r in all_rows]))
    methods = [m for m in methods if any(not rows.is_reference(r) and rows.method(r) == m for r in all_rows)]
    colour = {m: base[i % len(base)] for i, m in enumerate(methods)}
    styles, spare = {}, len(methods)
    for row in all_rows:
        if not rows.is_reference(row):
            styles[row] = (colour[rows.method(row)], "-")
        elif row in _REFERENCE_STYLE:
            styles[row] = _REFERENCE_STYLE[row]
        else:  # METHOD_joint: its method's colour, dashed
            method = row.removesuffix("_joint")
            if method not in colour:
                colour[method], spare = base[spare % len(base)], spare + 1
            styles[row] = (colour[method], (0, (4, 2)))
    return styles


def _plots(
    out: pathlib.Path,
    results: list[dict[str, Any]],
    aggregates: dict[str, Any],
    probes: dict[str, Any],
    rows: _Rows,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = _styles(rows.sort(r["row"] for r in results), rows)
    written = []
    with plt.rc_context(_RC):
        for name, plot, has in (
            ("iqm.png", _plot_iqm, bool(aggregates)),
            ("curves.png", _plot_curves, any(r.get("evals") and _ok(r) and not _is_goal(r) for r in results)),
            ("probes.png", _plot_probes, bool(_probe_panels(probes))),
            ("goals.png", _plot_goals, any(_is_goal(r) and _ok(r) for r in results)),
        ):
            if not has:
                (out / name).unlink(missing_ok=True)  # an earlier report's, of cells this one no longer plots
                continue
            fig = plot(plt, results=results, aggregates=aggregates, probes=probes, rows=rows, styles=styles)
            with atomic_path(out / name, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=120, bbox_inches="tight")
            plt.close(fig)
            written.append(name)
    return written


def _plot_iqm(plt, aggregates, styles, rows, **_):
    """Horizontal interval bars, best at the top (rliable's style), reference IQMs as lines."""
    order = sorted(aggregates, key=lambda r: aggregates[r]["iqm"])  # ascending: best ends at the top
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.36 * len(order)))
    for y, row in enumerate(order):
        a, (colour, _) = aggregates[row], styles[row]
        low, high = a["ci95"]
        ax.barh(y, max(high - low, 0.0), left=low, height=0.6, color=colour, alpha=0.55, linewidth=0)
        ax.plot([a["iqm"]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=1.6)
        if high - low < 1e-12:  # a point interval (one seed): a marker, or it would be invisible
            ax.plot(a["iqm"], y, marker="D", color=colour, markeredgecolor="black", markersize=6)
        text = f"{a['iqm']:.3f} [{low:.3f}, {high:.3f}]" if a["runs"] > 1 else f"{a['iqm']:.3f} (1 seed)"
        ax.text(1.02, y, text, transform=ax.get_yaxis_transform(), va="center", fontsize=9, family="monospace")
    ax.set_yticks(range(len(order)), [f"{r} (ref)" if rows.is_reference(r) else r for r in order])
    for label, row in zip(ax.get_yticklabels(), order):
        if rows.is_reference(row):
            label.set_fontstyle("italic")
    lines = []
    for ref, name in ((LOWER, "random encoder"), (UPPER, "state SAC")):
        if ref in aggregates:
            colour = _REFERENCE_STYLE[ref][0]
            x = aggregates[ref]["iqm"]
            lines.append(ax.axvline(x, color=colour, linestyle="--", linewidth=1.2, label=f"{name} IQM ({x:.3f})"))
    highs = [a["ci95"][1] for a in aggregates.values()]
    ax.set_xlim(min(0.0, min(a["ci95"][0] for a in aggregates.values())), max(highs) * 1.08 + 0.01)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel("IQM of normalised final return (return / 1000)")
    runs = sorted({a["runs"] for a in aggregates.values()})
    tasks = sorted({t for a in aggregates.values() for t in a["tasks"]})
    n = "-".join(map(str, runs))
    title = f"{len(tasks)} task{'s' if len(tasks) > 1 else ''}, {n} seed{'s' if runs[-1] > 1 else ''} per task; "
    title += "bars: 95% stratified-bootstrap intervals" if runs[-1] > 1 else "one seed: the intervals are points"
    ax.set_title(title, fontsize=10, pad=26 if lines else 6)
    ax.grid(axis="x", alpha=0.3)
    if lines:
        ax.legend(handles=lines, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _series(runs: list[list[dict]], key: str = "return_mean") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, min and max of ``key`` over the runs that evaluated at each step."""
    at: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for e in run:
            if e.get(key) is not None:
                at[int(e["env_steps"])].append(float(e[key]))
    steps = np.array(sorted(at))
    values = [at[s] for s in steps]
    return (
        steps,
        np.array([np.mean(v) for v in values]),
        np.array([np.min(v) for v in values]),
        np.array([np.max(v) for v in values]),
    )


def _plot_curves(plt, results, rows, styles, **_):
    """One panel per task (and regime, when there are several), references dashed in every panel.
    Goal tasks are left to :func:`_plot_goals` (success and distances; their returns are not on
    DMC's scale), as they are left out of the returns table."""
    from matplotlib.ticker import FuncFormatter

    done = [r for r in results if _ok(r) and r.get("evals") and not _is_goal(r)]
    tasks = sorted({r["task"] for r in done})
    present = {rows.regime(r) for r in done} - {None}
    regimes = [g for g in REGIMES if g in present] + sorted(present - set(REGIMES)) or [None]
    if len(regimes) == 1:
        ncols = min(3, len(tasks))
        nrows = math.ceil(len(tasks) / ncols)
        panels = [(t, regimes[0]) for t in tasks]
    else:
        ncols, nrows = len(tasks), len(regimes)
        panels = [(t, g) for g in regimes for t in tasks]
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.3 * nrows), squeeze=False)
    flat_axes = list(axes.ravel())
    seeds = sorted(Counter((r["row"], r["task"]) for r in done).values())
    handles: dict[str, Any] = {}
    for ax, (task, regime) in zip(flat_axes, panels):
        lowest = 0.0  # the y axis starts at 0 unless a curve goes below it
        here = [r for r in done if r["task"] == task]
        shown = [
            row
            for row in rows.sort(r["row"] for r in here)
            if rows.is_reference(row) or rows.regime(next(r for r in here if r["row"] == row)) == regime
        ]
        for row in shown:
            colour, style = styles[row]
            steps, mean, low, high = _series([r["evals"] for r in here if r["row"] == row])
            ref = rows.is_reference(row)
            (line,) = ax.plot(steps, mean, color=colour, linestyle=style, linewidth=1.5 if ref else 1.8, label=row)
            if len([r for r in here if r["row"] == row]) > 1:
                ax.fill_between(steps, low, high, color=colour, alpha=0.13, linewidth=0)
            handles.setdefault(row, line)
            lowest = min(lowest, float(np.nanmin(low))) if len(low) else lowest
        ax.set_title(task if len(regimes) == 1 or regime is None else f"{task}: {regime}")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        ax.set_ylim(bottom=lowest * 1.05)
        ax.grid(alpha=0.3)
    for ax in flat_axes[len(panels) :]:
        ax.remove()
    for ax in axes[:, 0]:
        ax.set_ylabel("eval return")
    for ax in flat_axes[: len(panels)][-ncols:]:
        ax.set_xlabel("env steps")
    # The legend names each method once (a colour; with several regimes, the panel says which) and
    # each reference row.
    entries: dict[str, Any] = {}
    for row in [r for r in rows.sort(handles) if not rows.is_reference(r)]:
        entries.setdefault(rows.method(row) if len(regimes) > 1 else row, handles[row])
    for row in [r for r in rows.sort(handles) if rows.is_reference(r)]:
        entries[f"{row} (ref)"] = handles[row]
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        ncol=2 if len(entries) > 22 else 1,
        frameon=False,
    )
    n = f"{seeds[0]}" if seeds[0] == seeds[-1] else f"{seeds[0]}-{seeds[-1]}"
    band = f"mean over {n} seeds, shaded: min-max over seeds" if seeds[-1] > 1 else "one seed"
    dashed = "; dashed: reference rows" if any(rows.is_reference(r) for r in handles) else ""
    fig.suptitle(f"Evaluation return ({band}){dashed}", fontsize=11)
    fig.tight_layout()
    return fig


def _plot_goals(plt, results, rows, styles, **_):
    """Per goal task, one panel per final distance and one for the success rate, against env
    steps: mean over seeds, shaded min-max."""
    from matplotlib.ticker import FuncFormatter

    done = [r for r in results if _ok(r) and _is_goal(r)]
    tasks = sorted({r["task"] for r in done})
    panels = []
    for task in tasks:
        here = [r for r in done if r["task"] == task]
        keys = _final_keys([e for r in here for e in r["evals"]])
        keys += ["success_rate"] if any("success_rate" in e for r in here for e in r["evals"]) else []
        panels += [(task, k, here) for k in keys]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.3 * nrows), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (task, key, here) in zip(axes.ravel(), panels):
        for row in rows.sort(r["row"] for r in here):
            colour, style = styles[row]
            runs = [r["evals"] for r in here if r["row"] == row]
            steps, mean, low, high = _series(runs, key)
            (line,) = ax.plot(steps, mean, color=colour, linestyle=style, linewidth=1.8, label=row)
            if len(runs) > 1:
                ax.fill_between(steps, low, high, color=colour, alpha=0.13, linewidth=0)
            handles.setdefault(row, line)
        label = "success rate" if key == "success_rate" else key.removeprefix("final_").replace("_", " ") + " (m)"
        ax.set_title(f"{task}: {'success' if key == 'success_rate' else 'final ' + label}")
        ax.set_ylabel(label)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        ax.set_ylim(bottom=0, top=1.0 if key == "success_rate" else None)
        ax.grid(alpha=0.3)
    for ax in list(axes.ravel())[len(panels) :]:
        ax.remove()
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Goal tasks at the end of each evaluation episode (mean over seeds, shaded: min-max)", fontsize=11)
    fig.tight_layout()
    return fig


def _colour_of(label: str, styles: dict[str, tuple[Any, Any]], rows: _Rows) -> Any:
    """A probe entry's colour: its row's, else that of any row of the same method."""
    if label in styles:
        return styles[label][0]
    return next((style[0] for row, style in styles.items() if rows.method(row) == label), "tab:blue")


def _probe_panels(probes: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The data sets ``probes.png`` draws: those with a trained encoder's R^2. The random_encoder
    row alone is a dotted line with no bar to compare it with, so it draws no panel (its score
    is in ``summary.md``'s probe table)."""
    return [
        (data, entries)
        for data, entries in probes.items()
        if any("r2" in e["scores"] for label, e in entries.items() if label != LOWER)
    ]


def _plot_probes(plt, probes, styles, rows, **_):
    """Per data set, probe R^2 of each method trained (solid) beside its random-init encoder
    (hatched); the random_encoder row (the first method, untrained) as a dotted line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = _probe_panels(probes)
    heights = [0.6 + 0.42 * max(1, sum(1 for label in e if label != LOWER)) for _, e in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7.5, 0.9 * len(panels) + sum(heights)), squeeze=False, height_ratios=heights
    )
    floor = -1.5  # R^2 below this (worse than useless) is drawn to the axis' edge, its value written beside it
    legend = [Patch(facecolor="#777777", label="trained")]
    if any(
        e["scores"]["r2"]["random"] is not None
        for _, entries in panels
        for e in entries.values()
        if "r2" in e["scores"]
    ):
        legend.append(Patch(facecolor="white", edgecolor="#555555", hatch="///", label="random-init, same method"))
    clipped = False
    for ax, (data, entries) in zip(axes[:, 0], panels):
        labels = [label for label in entries if label != LOWER and "r2" in entries[label]["scores"]]
        values = []
        for y, label in enumerate(labels):
            score, colour = entries[label]["scores"]["r2"], _colour_of(label, styles, rows)
            bars = [(score["trained"], {"color": colour})]
            if score["random"] is not None:
                bars.append((score["random"], {"color": "white", "edgecolor": colour, "hatch": "///"}))
            height = 0.8 / len(bars)
            for k, (value, kw) in enumerate(bars):
                at = y - 0.4 + height * (k + 0.5)
                shown = max(value, floor)
                clipped |= shown != value
                ax.barh(at, shown, height=height * 0.92, **kw)
                ax.annotate(
                    f"{value:.3f}" + (" (clipped)" if shown != value else ""),
                    (max(shown, 0.0), at),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
                values.append(shown)
        if LOWER in entries and "r2" in entries[LOWER]["scores"]:
            x = max(entries[LOWER]["scores"]["r2"]["trained"], floor)
            ax.axvline(x, color="#555555", linestyle=":", linewidth=1.6)
            values.append(x)
            method = entries[LOWER]["method"]
            line = Line2D([], [], color="#555555", linestyle=":", label=f"random_encoder row (untrained {method})")
            if all(h.get_label() != line.get_label() for h in legend):
                legend.append(line)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        low, high = min([0.0] + values), max([0.0] + values)
        span = max(high - low, 0.1)
        ax.set_xlim(low - 0.04 * span, high + 0.22 * span)  # room for the values at the bars' ends
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"data: {data}", loc="left")
        ax.grid(axis="x", alpha=0.3)
    note = f"; values below {floor} clipped" if clipped else ""
    axes[-1, 0].set_xlabel(f"linear-probe R² on held-out episodes (1 is perfect, 0 predicts the mean{note})")
    fig.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(legend), frameon=False)
    fig.tight_layout()
    return fig
