"""Where cells run: in this process, a local pool of spawned workers, or Ray tasks; and the live
display of their progress.

Workers are started with ``spawn`` (forking after the parent made an EGL context hangs) and run
torch, OpenMP and Mesa with one thread each: with two threads per process, a busy second core
slowed SAC updates 10-40x on our 2-core machines.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .cells import Cell
from .suite import SuiteError

Job = tuple[Callable[..., Any], tuple]


def run_all(
    jobs: Sequence[Job],
    workers: int,
    ray_address: str | None,
    out: pathlib.Path,
    cells: Sequence[Cell],
    display: bool,
    gpus: Sequence[float] | None = None,
) -> list[Any]:
    """Run ``(function, args)`` jobs in a local spawn pool or on Ray (``gpus``: each job's GPU
    request there); returns their results in order."""
    if not jobs:
        return []
    if ray_address:
        return _run_ray(jobs, ray_address, out, cells, display, gpus or [0.0] * len(jobs))
    if workers <= 1:
        return [fn(*args) for fn, args in jobs]
    from ssrl.utils import spawn_pool

    with spawn_pool(workers) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        _watch(futures, out, cells, display, done=lambda f: f.done())
        return [f.result() for f in futures]


def _run_ray(
    jobs: Sequence[Job], address: str, out: pathlib.Path, cells: Sequence[Cell], display: bool, gpus: Sequence[float]
) -> list[Any]:
    """Each job a Ray task. Cells exchange data through ``out`` (data sets, pretrained models),
    so on a multi-node cluster ``out`` must be on a file system every node sees."""
    try:
        import ray
    except ImportError as err:
        raise SuiteError("--ray needs Ray installed: pip install 'ssrl[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    # One CPU per cell (the cell itself sets one torch thread and headless EGL), as a local
    # worker, plus its share of a GPU (Ray sets CUDA_VISIBLE_DEVICES; torch then uses it).
    remote = {fn: ray.remote(fn) for fn in {fn for fn, _ in jobs}}
    refs = [remote[fn].options(num_cpus=1, num_gpus=g).remote(*args) for (fn, args), g in zip(jobs, gpus)]
    _watch(refs, out, cells, display, done=lambda r: bool(ray.wait([r], timeout=0)[0]))
    return ray.get(refs)


def _watch(handles, out: pathlib.Path, cells: Sequence[Cell], display: bool, done: Callable[[Any], bool]) -> None:
    """The live display: one line per running cell (phase, env steps, latest return, ETA)."""
    tty = sys.stdout.isatty()
    last_print, start, lines_drawn = 0.0, time.time(), 0
    while not all(done(h) for h in handles):
        time.sleep(1.0)
        if not display or not cells:
            continue
        now = time.time()
        if not tty and now - last_print < 60:
            continue
        lines = status_lines(out, cells, now - start)
        if tty and lines_drawn:
            sys.stdout.write(f"\x1b[{lines_drawn}F\x1b[J")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        lines_drawn, last_print = len(lines), now


def status_lines(out: pathlib.Path, cells: Sequence[Cell], elapsed: float) -> list[str]:
    """Text of the live display (also used by tests)."""
    done, running = 0, []
    total_steps = done_steps = 0.0
    for cell in cells:
        folder = pathlib.Path(out) / "cells" / cell.id
        total_steps += cell.budget
        if (folder / "result.json").exists():
            done += 1
            done_steps += cell.budget
            continue
        try:
            state = json.loads((folder / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        done_steps += state.get("env_steps", 0) or 0
        running.append((cell, state))
    fraction = done_steps / total_steps if total_steps else done / max(len(cells), 1)
    eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else float("nan")
    lines = [f"bench: {done}/{len(cells)} cells done, {elapsed / 60:.1f} min elapsed, ETA {_minutes(eta)}"]
    for cell, state in running:
        phase = state.get("phase", "?")
        detail = ""
        if phase == "rl":
            ret = state.get("eval_return")
            ret = "-" if ret is None or ret != ret else f"{ret:.0f}"
            rate = state.get("env_steps_per_s")
            cell_eta = (state["budget"] - state["env_steps"]) / rate if rate else float("nan")
            steps = f"{state.get('env_steps', 0):>7}/{state.get('budget', 0)} env steps"
            detail = f"{steps}  return {ret:>5}  ETA {_minutes(cell_eta)}"
        lines.append(f"  {cell.id:<45} {phase:<10} {detail}")
    return lines


def _minutes(seconds: float) -> str:
    return "?" if seconds != seconds else f"{seconds / 60:.1f} min"
