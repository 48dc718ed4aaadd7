"""``ssrl bench``: which representation serves control best, on which task, at what cost.

A *suite* (YAML under ``benchmarks/suites/``, schema in :mod:`.suite`) names tasks, methods,
reference rows and budgets. It expands into independent *cells* (row, task, seed; see
:mod:`.cells`). A cell of a pretrained method runs (:mod:`.runner`)

    collect (shared by all rows of a task) -> pretrain (cached by config hash) -> probe
    -> SAC (or TD3) on the frozen encoder's latents through EncodedObservation -> evaluation

and the reference rows run beside them: ``state_sac`` (upper bound), ``pixel_sac`` (end to end,
random shift), ``dbc_joint`` / ``deepmdp_joint`` (the objective trained with the critic), and
``random_encoder`` (a frozen random-init encoder of the suite's first method: the lower bound).
A suite's ``probes`` part adds probe-only cells: a method pretrained on the data of any env (our
Push and Grasp scenes, or a DMC task) and scored against a random-init encoder of the same
method, with the method's own extra scores (``Representation.extra_scores``) beside the probe's.

Cells run in a local process pool (``--workers``, spawned processes with one torch thread each)
or as Ray tasks on an existing cluster (``--ray ADDRESS``; :mod:`.executor`). Every stage writes
its output atomically and resumes from it, so a killed ``ssrl bench`` re-run skips finished cells
and resumes running ones. Results go to the output folder (see :mod:`ssrl.benchmarks.report`).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import yaml

from ssrl.runs import RunFolder

from .cells import Cell, plan, unservable
from .executor import run_all, status_lines
from .runner import collect_data, run_cell
from .suite import REFERENCE_ROWS, Suite, SuiteError, available_suites, load_suite, parse_suite

__all__ = [
    "CellsFailed",
    "Cell",
    "REFERENCE_ROWS",
    "Suite",
    "SuiteError",
    "available_suites",
    "load_suite",
    "parse_suite",
    "plan",
    "run_bench",
    "status_lines",
]


class CellsFailed(RuntimeError):
    """Some cells raised; the others finished and are in the report."""


def run_bench(
    suite: str | Suite | dict[str, Any] = "quick",
    out: str | pathlib.Path | None = None,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: int | None = None,
    workers: int = 2,
    ray_address: str | None = None,
    rl_steps: int | None = None,
    pretrain_steps: int | None = None,
    overwrite: bool = False,
    display: bool = True,
    ray_gpus: float = 0.0,
    regimes: list[str] | None = None,
) -> dict[str, Any]:
    """Plan, run (resuming what is there) and report a suite (a name, a YAML path, a
    :class:`Suite` or a mapping of its fields); returns the summary. ``methods``, ``tasks`` and
    ``regimes`` narrow the suite to those rows, tasks and regimes."""
    spec = load_suite(suite) if isinstance(suite, (str, pathlib.Path)) else parse_suite(suite)
    out = pathlib.Path(out or f"outputs/bench-{spec.name}")
    cells = plan(spec, methods, tasks, seeds, rl_steps, pretrain_steps, regimes)
    if not cells:
        raise SuiteError("the selection leaves no cell to run")
    bench_folder = RunFolder(out, "ssrl bench")
    with bench_folder.locked():  # a second ssrl bench on this --out refuses while this one runs
        if overwrite:
            bench_folder.check({}, overwrite=True)  # empties the folder, all but the lock
        return _run_locked(
            spec, out, cells, methods, tasks, seeds, rl_steps, pretrain_steps, workers, ray_address, ray_gpus, display,
            regimes,
        )  # fmt: skip


def _run_locked(
    spec, out, cells, methods, tasks, seeds, rl_steps, pretrain_steps, workers, ray_address, ray_gpus, display, regimes
) -> dict[str, Any]:
    from .report import write_report

    overrides = {
        k: v
        for k, v in dict(
            methods=methods, tasks=tasks, regimes=regimes, seeds=seeds, rl_steps=rl_steps, pretrain_steps=pretrain_steps
        ).items()
        if v is not None
    }
    # Rows the planner leaves out (a method whose data an agent's replay cannot give), with why.
    described = dict(spec.as_dict(), command_line_overrides=overrides, not_run=unservable(spec))
    (out / "suite.yaml").write_text(yaml.safe_dump(described, sort_keys=False))
    start = time.perf_counter()
    # Data first, once per data set (the cells of a task share it): in parallel across tasks.
    datasets = {c.data.key: c.data for c in cells if c.data is not None}
    run_all([(collect_data, (out, d)) for d in datasets.values()], workers, ray_address, out, [], display=False)
    # On Ray, cells that train a conv net (all but state SAC) may ask for a share of a GPU.
    gpus = [ray_gpus if c.pixels or c.pretrain is not None else 0.0 for c in cells]
    results = run_all(
        [(run_cell, (c, str(out))) for c in cells], workers, ray_address, out, cells, display=display, gpus=gpus
    )
    summary = write_report(out, described, results, wall_time=time.perf_counter() - start)
    failed = [r for r in results if r.get("error")]
    if failed:
        details = "; ".join(f"{r['cell']}: {r['error']}" for r in failed)
        raise CellsFailed(
            f"{len(failed)} of {len(results)} cells failed ({details}); see cells/*/error.txt in {out}. "
            "Re-running the same command retries them and keeps the finished ones."
        )
    return summary
