"""Compare training runs across seeds, with intervals: ``ssrl compare``.

    ssrl compare "ATC decoupled=outputs/atc-decoupled-s*" "pixel SAC=outputs/pixel-sac-s*" [--at 100000]
        [--metric return_mean] [--last 1] [--out DIR]

``ssrl bench`` reports the cells of one suite; runs started by hand (``ssrl train --seed N``, one
folder per seed) or taken from several bench folders had no report. A *row* is ``NAME=PATH[,PATH...]``:
each ``PATH`` a run folder of ``ssrl train`` (its evaluations in ``metrics.jsonl``, as
:func:`ssrl.runs.read_evaluations` reads them) or a bench cell folder (its
``run/``), shell patterns expanded to the folders they match, sorted. Each run is one seed.

At ``S`` env steps (``--at``):

- a run's score is its ``--metric`` (an evaluation field, as ``eval.csv``'s columns:
  ``return_mean``, ``success_rate``, ``final_puck_distance``, ...) at ``S``, or with ``--last K``
  the mean of its last ``K``
  evaluations up to ``S`` (a steadier number than one evaluation of 10 episodes);
- a row gives its runs' scores, their mean and sample standard deviation (n - 1; ``ssrl bench``'s
  report gives numpy's n), and the IQM with a 95% percentile-bootstrap interval over runs (as
  ``ssrl bench``'s report, rliable's method);
- every pair of rows gives the difference of their means with a 95% percentile-bootstrap interval
  (each row's runs resampled independently, 10,000 times; no correction for several pairs) and
  what it supports: ``A higher`` or ``A lower`` when the interval excludes 0, else ``not
  distinguishable``; a row of one run supports no claim;
- a curve table gives each row's mean at every evaluation step up to ``S`` that all its runs
  reached.

The default ``S`` is the last step that every run has evaluated at; the output names the runs
that held it back and the runs without ``final.json`` (unfinished). A run's evaluations must
have increasing env steps; a NaN score is an error naming the file and step.

Printed as Markdown; with ``--out`` also ``compare.md``, ``compare.json`` and ``curves.png`` (the
mean of each row, its runs' range shaded), each written atomically. Runs of different envs are
refused unless ``--mixed-envs``: their metrics are not on one scale.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssrl.runs import read_evaluations
from ssrl.utils import atomic_path, write_json

from .report import _series, stratified_bootstrap_ci

DIFF_REPS = 10_000


@dataclass
class Run:
    """One seed: where it is, what it ran and its evaluations (the records of its metrics.jsonl)."""

    path: pathlib.Path
    env_id: str | None
    seed: int | None
    evals: list[dict[str, float | None]]

    finished: bool = True

    def steps(self, metric: str) -> list[int]:
        """The env steps of the evaluations that have a ``metric`` value."""
        return [int(e["env_steps"]) for e in self.evals if e.get(metric) is not None]

    def score(self, metric: str, at: int, last: int = 1) -> float:
        """The mean of ``metric`` over the last ``last`` evaluation lines at or before ``at`` env
        steps; the evaluation at ``at`` must exist, and every one of those lines needs a finite value."""
        upto = [e for e in self.evals if int(e["env_steps"]) <= at]
        if not upto or int(upto[-1]["env_steps"]) != at or upto[-1].get(metric) is None:
            raise ValueError(
                f"{self.path} has no {metric} evaluation at {at} env steps (its evaluations: "
                f"{_step_list(self.steps(metric))}); pick --at from them"
            )
        if len(upto) < last:
            raise ValueError(f"{self.path} has {len(upto)} evaluations up to {at} env steps, fewer than --last {last}")
        for e in upto[-last:]:
            value = e.get(metric)
            if value is None or not math.isfinite(value):  # the log holds NaN as null
                raise ValueError(f"{self.path}: {metric} at {int(e['env_steps'])} env steps is missing ({value})")
        return float(np.mean([e[metric] for e in upto[-last:]]))


def _step_list(steps: list[int]) -> str:
    if not steps:
        return "none"
    return ", ".join(str(s) for s in steps) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def load_run(path: str | pathlib.Path) -> Run:
    """A run folder (``ssrl train``'s) or a bench cell folder (whose run is in ``run/``)."""
    path = pathlib.Path(path)
    folder = path / "run" if (path / "run" / "metrics.jsonl").exists() else path
    log = folder / "metrics.jsonl"
    if not log.exists():
        raise ValueError(f"{path} is not a run folder: it has no metrics.jsonl (nor run/metrics.jsonl)")
    try:
        evals = read_evaluations(folder)
    except json.JSONDecodeError as err:
        raise ValueError(f"{log} is not a log of JSON records: {err}") from None
    if not evals or any(not isinstance(e.get("env_steps"), (int, float)) for e in evals):
        raise ValueError(f"{log} has no evaluations (or one without env_steps)")
    steps = [int(e["env_steps"]) for e in evals]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        # The trainer never writes this (a resumed run truncates its log to its checkpoint first).
        raise ValueError(f"{log}: env_steps must increase from line to line; got {_step_list(steps)}")
    env_id = seed = None
    if (folder / "run.json").exists():
        try:
            spec = json.loads((folder / "run.json").read_text())
            env_id, seed = spec.get("env_id"), spec.get("seed")
        except json.JSONDecodeError as err:
            raise ValueError(f"{folder / 'run.json'} is not valid JSON: {err}") from None
    return Run(folder, env_id, seed, evals, finished=(folder / "final.json").exists())


def parse_row(spec: str) -> tuple[str, list[pathlib.Path]]:
    """``NAME=PATH[,PATH...]`` -> (name, paths), patterns expanded (sorted), each path once."""
    name, sep, paths = spec.partition("=")
    if not sep or not name.strip() or not paths.strip():
        raise ValueError(f"a row is NAME=PATH[,PATH...], e.g. 'pixel SAC=outputs/pixel-sac-s*'; got {spec!r}")
    found: list[pathlib.Path] = []
    for pattern in (p.strip() for p in paths.split(",") if p.strip()):
        # A pattern keeps the folders it matches (outputs/run-s* also matches outputs/run-s2.log).
        matches = (
            sorted(m for m in glob.glob(pattern) if pathlib.Path(m).is_dir()) if glob.has_magic(pattern) else [pattern]
        )
        if not matches:
            raise ValueError(f"row {name.strip()!r}: {pattern!r} matches nothing")
        for m in matches:
            if not pathlib.Path(m).exists():
                raise ValueError(f"row {name.strip()!r}: {m} does not exist")
            if pathlib.Path(m).resolve() not in [p.resolve() for p in found]:
                found.append(pathlib.Path(m))
    return name.strip(), found


def bootstrap_difference(
    a: Sequence[float], b: Sequence[float], reps: int = DIFF_REPS, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): the percentile interval of the difference of means when each
    sample's runs are resampled with replacement, independently."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), size=(reps, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(reps, len(b)))].mean(axis=1)
    diffs = means_a - means_b
    alpha = (1 - confidence) / 2
    return float(a.mean() - b.mean()), float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


def compare_runs(
    rows: dict[str, list[Run]],
    metric: str = "return_mean",
    at: int | None = None,
    last: int = 1,
    mixed_envs: bool = False,
) -> dict[str, Any]:
    """The comparison as a JSON-able dict: ``at``, ``metric``, ``rows`` (per row its runs, scores,
    mean, std, IQM and interval, curve) and ``pairs`` (per pair of rows the difference of means,
    its interval and what it supports)."""
    if not rows or any(not runs for runs in rows.values()):
        raise ValueError("give at least one row, each with at least one run")
    if last < 1:
        raise ValueError(f"--last must be at least 1, got {last}")
    runs = [r for rs in rows.values() for r in rs]
    envs = sorted({r.env_id for r in runs if r.env_id})
    if len(envs) > 1 and not mixed_envs:
        raise ValueError(
            f"the runs are of different envs ({', '.join(envs)}); pass --mixed-envs to compare them anyway"
        )
    for r in runs:
        if not r.steps(metric):
            fields = {k for e in r.evals for k, v in e.items() if isinstance(v, (int, float))}
            fields -= {"env_steps", "agent_steps", "wall_time"}
            raise ValueError(f"{r.path} has no {metric!r} values; its evaluations have {', '.join(sorted(fields))}")
    if at is None:
        common = set.intersection(*(set(r.steps(metric)) for r in runs))
        if not common:
            raise ValueError(f"the runs have no {metric} evaluation step in common; pass --at")
        at = max(common)
    notes = []
    beyond = [r for r in runs if max(r.steps(metric)) > at]
    if beyond:
        short = [f"{r.path} ({max(r.steps(metric))})" for r in runs if max(r.steps(metric)) <= at]
        notes.append(
            f"At {at} env steps, the last evaluation all runs share; runs that end there or earlier: "
            f"{', '.join(short)}; {len(beyond)} run(s) reach up to {max(max(r.steps(metric)) for r in beyond)}."
        )
    unfinished = [str(r.path) for r in runs if not r.finished]
    if unfinished:
        notes.append(f"Not finished (no final.json): {', '.join(unfinished)}.")
    for name, rs in rows.items():
        seeds = [r.seed for r in rs if r.seed is not None]
        twice = sorted({x for x in seeds if seeds.count(x) > 1})
        if twice:
            notes.append(f"Row {name!r} has seed {', '.join(map(str, twice))} more than once (on other machines?).")
    out_rows: dict[str, Any] = {}
    for name, rs in rows.items():
        scores = [r.score(metric, at, last) for r in rs]
        point, low, high = stratified_bootstrap_ci(np.array(scores)[:, None])
        common = sorted(set.intersection(*(set(r.steps(metric)) for r in rs)))  # the curve's steps
        out_rows[name] = {
            "runs": [str(r.path) for r in rs],
            "seeds": [r.seed for r in rs],
            "envs": sorted({r.env_id for r in rs if r.env_id}),
            "scores": scores,
            "mean": float(np.mean(scores)),
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "iqm": point,
            "iqm_ci95": [low, high] if len(scores) > 1 else None,
            "curve": {
                str(s): float(np.mean([e[metric] for r in rs for e in r.evals if int(e["env_steps"]) == s]))
                for s in common
                if s <= at
            },
            "unfinished": [str(r.path) for r in rs if not r.finished],
        }
    pairs = []
    for a, b in itertools.combinations(out_rows, 2):
        sa, sb = out_rows[a]["scores"], out_rows[b]["scores"]
        diff, low, high = bootstrap_difference(sa, sb)
        if len(sa) < 2 or len(sb) < 2:
            verdict = "one run: no claim"
        elif low > 0:
            verdict = f"{a} higher"
        elif high < 0:
            verdict = f"{a} lower"
        else:
            verdict = "not distinguishable"
        pairs.append({"a": a, "b": b, "difference": diff, "ci95": [low, high], "supports": verdict})
    envs_text = ", ".join(envs) if envs else "unknown (no run.json)"
    return {
        "metric": metric,
        "at": at,
        "last": last,
        "envs": envs_text,
        "notes": notes,
        "rows": out_rows,
        "pairs": pairs,
    }


def _formatter(result: dict[str, Any]):
    """One number format for the whole comparison, by the largest score or curve value: no
    decimals from 100 up (DMC returns), 1 from 10, else 3 (rates, distances in metres). A
    non-zero number that would print as 0 gets two significant digits, so an interval's bound
    keeps its sign."""
    largest = max(abs(s) for r in result["rows"].values() for s in [*r["scores"], *r["curve"].values()])
    decimals = 0 if largest >= 100 else 1 if largest >= 10 else 3

    def f(x: float | None) -> str:
        if x is None:
            return "-"
        text = f"{x:.{decimals}f}"
        return f"{x:.2g}" if x != 0 and float(text) == 0 else text

    return f


def _cell(name: str) -> str:
    return name.replace("|", "\\|")


def markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: what is compared, the rows, the pairs, the curves."""
    metric, at, last = result["metric"], result["at"], result["last"]
    _f = _formatter(result)
    what = f"{metric} at {at} env steps" if last == 1 else f"{metric}, mean of the last {last} evaluations up to {at}"
    lines = [f"# {what}", "", f"Env: {result['envs']}."]
    lines += [f"{note}" for note in result["notes"]]
    if min(len(r["scores"]) for r in result["rows"].values()) < 5:
        lines.append("(With fewer than 5 runs in a row, bootstrap intervals are too narrow: read them as indicative.)")
    lines += ["", "| row | runs (seeds) | scores | mean ± sd (n - 1) | IQM [95% CI] |", "|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        seeds = ", ".join("?" if s is None else str(s) for s in r["seeds"])
        spread = _f(r["mean"]) if r["std"] is None else f"{_f(r['mean'])} ± {_f(r['std'])}"
        ci = f" [{_f(r['iqm_ci95'][0])}, {_f(r['iqm_ci95'][1])}]" if r["iqm_ci95"] else ""
        scores = ", ".join(_f(s) for s in r["scores"])
        lines.append(f"| {_cell(name)} | {len(r['scores'])} ({seeds}) | {scores} | {spread} | {_f(r['iqm'])}{ci} |")
    if result["pairs"]:
        lines += ["", "Differences of means (A - B), 95% bootstrap interval over runs (each pair on its own, with"]
        lines += ["no correction for making several comparisons):", ""]
        lines += ["| A | B | A - B [95% CI] | supports |", "|---|---|---|---|"]
        for p in result["pairs"]:
            low, high = p["ci95"]
            single = min(len(result["rows"][p["a"]]["scores"]), len(result["rows"][p["b"]]["scores"])) < 2
            difference = _f(p["difference"]) + ("" if single else f" [{_f(low)}, {_f(high)}]")
            lines.append(f"| {_cell(p['a'])} | {_cell(p['b'])} | {difference} | {_cell(p['supports'])} |")
    steps = sorted({int(s) for r in result["rows"].values() for s in r["curve"]})
    if steps:
        lines += [
            "",
            f"Mean {metric} per evaluation up to {at} env steps, at the steps every run of a row reached:",
            "",
        ]
        lines += ["| row | " + " | ".join(_k(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
        for name, r in result["rows"].items():
            lines.append(f"| {_cell(name)} | " + " | ".join(_f(r["curve"].get(str(s))) for s in steps) + " |")
    return "\n".join(lines) + "\n"


def _k(steps: int) -> str:
    return f"{steps / 1000:g}k" if steps >= 1000 else str(steps)


def plot(result: dict[str, Any], rows: dict[str, list[Run]], path: pathlib.Path) -> None:
    """Each row's mean ``metric`` against env steps (the curve table's steps), its runs' min-max
    shaded; a dotted line at ``at``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, rs) in enumerate(rows.items()):
        shown = set(map(int, result["rows"][name]["curve"]))  # steps every run of the row reached, up to at
        steps, mean, low, high = _series([[e for e in r.evals if int(e["env_steps"]) in shown] for r in rs], key=metric)
        colour = colours[i % len(colours)]
        ax.plot(steps, mean, color=colour, linewidth=1.8, label=f"{name} ({len(rs)} run{'s' if len(rs) > 1 else ''})")
        if len(rs) > 1:
            ax.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
    ax.axvline(result["at"], color="0.5", linestyle=":", linewidth=1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    ax.set_title(f"{metric}: mean over runs, shaded: min-max over runs", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run_compare(
    specs: Sequence[str],
    metric: str = "return_mean",
    at: int | None = None,
    last: int = 1,
    out: str | pathlib.Path | None = None,
    mixed_envs: bool = False,
) -> dict[str, Any]:
    """``ssrl compare``: parse the rows, compare, write ``--out`` if given; returns the result."""
    rows: dict[str, list[Run]] = {}
    seen: dict[pathlib.Path, str] = {}
    for spec in specs:
        name, paths = parse_row(spec)
        if name in rows:
            raise ValueError(f"row {name!r} is given twice")
        for p in paths:
            if p.resolve() in seen:  # one run in two rows would be compared with itself
                raise ValueError(f"{p} is in rows {seen[p.resolve()]!r} and {name!r}; a run belongs to one row")
            seen[p.resolve()] = name
        rows[name] = [load_run(p) for p in paths]
    result = compare_runs(rows, metric=metric, at=at, last=last, mixed_envs=mixed_envs)
    result["markdown"] = markdown(result)
    if out is not None:
        out = pathlib.Path(out)
        with atomic_path(out / "compare.md") as tmp:
            tmp.write_text(result["markdown"])
        write_json(out / "compare.json", {k: v for k, v in result.items() if k != "markdown"})
        plot(result, rows, out / "curves.png")
    return result
