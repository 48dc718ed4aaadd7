"""Shared plumbing of the performance benchmarks: core pinning, tables, JSON results."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from ssrl.utils import machine_info, write_json


def pin_cores(n: int) -> list[int]:
    """Restrict this process (and the threads it starts later) to ``n`` cores.

    Mesa's llvmpipe and torch both start worker threads; pinning plus one thread each is what
    "on one core" means in our figures. Call before importing mujoco or torch.
    """
    available = sorted(os.sched_getaffinity(0))
    if n > len(available):
        raise ValueError(f"asked for {n} cores, this machine lets us use {len(available)}")
    cores = available[:n]
    os.sched_setaffinity(0, cores)
    os.environ.setdefault("LP_NUM_THREADS", str(n))  # llvmpipe rasteriser threads
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return cores


def rate(fn: Callable[[], Any], n: int) -> float:
    """Calls per second of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def alternate(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Measure each candidate ``rounds`` times, interleaved, so drift in machine load hits all
    of them alike. Each callable returns one measurement."""
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            results[name].append(fn())
    return results


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain Markdown table (so it pastes into the README as is)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    text = "\n".join(lines)
    print(text)
    return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def save_results(path: str | os.PathLike, name: str, results: dict[str, Any], config: dict[str, Any]) -> pathlib.Path:
    """Write a benchmark's figures with the machine, versions, date and its own config."""
    path = write_json(path, {"benchmark": name, "config": config, "machine": machine_info(), "results": results})
    print(f"results written to {path}")
    return path
