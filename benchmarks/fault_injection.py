"""Fault injection: kill every long-running command at random moments and check that rerunning it
gives exactly what an uninterrupted run gives.

For each of ``ssrl collect``, ``ssrl pretrain``, ``ssrl train`` and ``ssrl bench`` (at tiny
budgets), the benchmark:

1. runs the command twice without interruption: the first run is the reference, the second says
   whether the command is deterministic at all and how long a warm run takes;
2. until N kills (``--kills``) have landed: in a fresh folder, starts the command, sends SIGKILL
   to its whole process group at a moment drawn uniformly from [0, warm run time], then reruns
   the same command until it exits (at most ``--max-reruns`` times); a run that ends before its
   kill moment does not count (at most 3N tries);
3. compares what the rerun left with the reference: every output a user keeps (episodes, model
   and agent weights with their optimiser and RNG states, metrics, evaluations, bench results),
   fingerprinted after dropping what is meant to differ (wall-clock times, speeds, machine facts);
4. checks that every file of the folder is readable, and that no work finished before the kill
   (an episode file, a bench cell's result) was changed or lost by the rerun;
5. once per command, starts a second copy on the same ``--out`` while a first (with a budget it
   cannot finish) holds the folder: the second must refuse (exit code 2, "in use"); then the first
   is killed, and its lock file must not block a new run.

It prints a table (command, warm run time, determinism, kills (a run that ended before its kill
moment is counted apart), kills that landed after the command had written something,
identical resumes, differing resumes with what differed, unreadable files, lost work, refused
reruns, the concurrent check) and writes ``results.json`` into ``--out``. The target: N of N
identical, zero of the rest. Commands already in ``results.json`` are skipped (``--redo`` to
run them again).

    python -m ssrl.benchmarks.fault_injection --kills 20 --out outputs/fault-injection
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from ssrl.utils import write_json

# Keys whose values are meant to differ between runs (clocks, speeds, the machine).
VOLATILE = ("wall", "time", "per_s", "elapsed", "machine", "date", "host", "pid", "eta", "speed", "python", "torch")

TINY_SUITE = """\
name: fault_injection
tasks: [cartpole-swingup]
seeds: 1
env: {size: 48}
collect: {episodes: 3, policy: sticky_random, max_steps: 20}
pretrain: {steps: 20, batch_size: 8, config: {arch: fast, latent_dim: 8}}
methods: {rotation: {}}
references: [state_sac]
rl:
  algo: sac
  env_steps: 1600
  eval_every: 800
  eval_episodes: 1
  hyperparams: {learning_starts: 20, batch_size: 16, hidden_dims: [32, 32]}
"""


def volatile(key: str) -> bool:
    key = key.lower()
    return any(v in key for v in VOLATILE)


def _digest(value, h) -> None:
    """Feed a canonical form of ``value`` (tensors, arrays, containers, scalars) into ``h``,
    skipping volatile dict keys."""
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        h.update(str((value.dtype, tuple(value.shape))).encode())
        h.update(value.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    elif isinstance(value, np.ndarray):
        h.update(str((value.dtype, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            if not volatile(str(k)):
                h.update(repr(k).encode())
                _digest(value[k], h)
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


def fingerprint(path: pathlib.Path) -> str:
    """A hash of what a file holds, volatile keys left out. Raises if the file is unreadable."""
    import torch

    h = hashlib.sha256()
    suffix = path.suffix
    if suffix == ".npz":
        with np.load(path) as arrays:
            _digest({k: arrays[k] for k in arrays.files}, h)
    elif suffix == ".pt":
        _digest(torch.load(path, map_location="cpu", weights_only=False), h)
    elif suffix == ".json":
        _digest(json.loads(path.read_text()), h)
    elif suffix == ".jsonl":
        _digest([json.loads(line) for line in path.read_text().splitlines() if line.strip()], h)
    elif suffix == ".csv":
        _digest(list(csv.DictReader(io.StringIO(path.read_text()))), h)
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


class Command:
    """One command under test: its argv for a folder, the outputs compared, and the finished
    pieces of work that must survive a kill."""

    def __init__(
        self,
        name: str,
        argv: Callable[[pathlib.Path], list[str]],
        outputs: list[str],
        finished: list[str],
        longer: list[str],
    ) -> None:
        self.name, self.argv, self.outputs, self.finished = name, argv, outputs, finished
        self.longer = longer  # options that make a run too long to end during the concurrent check

    def long_argv(self, folder: pathlib.Path) -> list[str]:
        return self.argv(folder) + self.longer

    def files(self, folder: pathlib.Path, patterns: list[str]) -> dict[str, pathlib.Path]:
        return {str(p.relative_to(folder)): p for pattern in patterns for p in sorted(folder.glob(pattern))}


def commands(work: pathlib.Path) -> dict[str, Command]:
    ssrl = [sys.executable, "-m", "ssrl.cli"]
    data = work / "data"  # collected once, read by pretrain
    suite = work / "suite.yaml"
    return {
        "collect": Command(
            "collect",
            lambda out: (
                ssrl
                + ["collect", "ssrl/cartpole-swingup-v0", "--policy", "sticky_random", "--episodes", "6"]
                + ["--max-steps", "25", "--size", "48", "--out", str(out)]
            ),
            ["meta.json", "episodes/*.npz"],
            ["episodes/*.npz"],
            ["--episodes", "100000"],
        ),
        "pretrain": Command(
            "pretrain",
            lambda out: (
                ssrl
                + ["pretrain", "rotation", "--data", str(data), "--steps", "60", "--batch-size", "8"]
                + ["--checkpoint-every", "10", "--set", "arch=fast", "--set", "latent_dim=8", "--threads", "1"]
                + ["--out", str(out)]
            ),
            ["model.pt", "metrics.jsonl", "final.json"],
            [],
            ["--steps", "1000000"],
        ),
        "train": Command(
            "train",
            lambda out: (
                ssrl
                + ["train", "--env", "ssrl/cartpole-swingup-v0", "-o", "from_pixels=false", "--env-steps", "3000"]
                + ["--eval-every", "1000", "--eval-episodes", "1", "--checkpoint-every", "500", "--threads", "1"]
                + ["--set", "learning_starts=100", "--set", "batch_size=32", "--set", "hidden_dims=[32,32]"]
                + ["--out", str(out)]
            ),
            ["checkpoint/agent.pt", "eval.csv", "metrics.jsonl", "final.json"],
            [],
            ["--env-steps", "100000000"],
        ),
        "bench": Command(
            "bench",
            lambda out: ssrl + ["bench", "--suite", str(suite), "--workers", "1", "--threads", "1", "--out", str(out)],
            ["cells/*/result.json", "cells/*/run/checkpoint/agent.pt", "models/*/model.pt", "data/*/episodes/*.npz"],
            ["cells/*/result.json", "data/*/episodes/*.npz"],
            ["--rl-steps", "100000000"],
        ),
    }


def run(argv: list[str], timeout: float) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    return proc.returncode, proc.stderr[-2000:]


def _env() -> dict[str, str]:
    return dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS="1")


def killed_at(argv: list[str], delay: float) -> bool:
    """Start ``argv`` in its own process group and SIGKILL the group after ``delay`` seconds;
    False if it ended by itself first."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=_env()
    )
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def unreadable(folder: pathlib.Path) -> list[str]:
    bad = []
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".npz", ".pt", ".json", ".jsonl", ".csv"):
            try:
                fingerprint(path)
            except Exception as err:  # noqa: BLE001 - any failure to read is the finding
                bad.append(f"{path.relative_to(folder)}: {type(err).__name__}")
    return bad


def concurrent_check(cmd: Command, folder: pathlib.Path, timeout: float) -> str:
    """Start the command with a budget too large to finish meanwhile (``long_argv``), wait until
    it holds the folder's lock, start a second copy on the same folder: it must refuse naming the
    lock. Then kill the first: its lock file stays behind and must not block a new run."""
    from ssrl.runs import LOCK_FILE

    first = subprocess.Popen(
        cmd.long_argv(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=_env()
    )
    deadline = time.time() + timeout
    while not (folder / LOCK_FILE).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    try:
        if first.poll() is not None:
            return f"not tested: the first run ended (exit {first.returncode}) before taking the lock"
        code, err = run(cmd.long_argv(folder), timeout)
        running = first.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    if not running:
        return "not tested: the first run ended while the second started"
    if not (code == 2 and ("lock" in err.lower() or "in use" in err.lower())):
        return f"NOT refused (exit {code}: {err.strip()[-200:]})"
    second = subprocess.Popen(
        cmd.long_argv(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=_env(),
    )
    try:
        _, err = second.communicate(timeout=30)
        stuck = second.returncode == 2 and "in use" in err.lower()
    except subprocess.TimeoutExpired:  # still working after 30 s: it got past the lock
        stuck = False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGKILL)
        second.wait()
    return "blocked by a killed run's lock" if stuck else "refused; a killed run's lock does not block"


def test_command(cmd: Command, work: pathlib.Path, kills: int, max_reruns: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ref = work / f"{cmd.name}-reference"
    shutil.rmtree(ref, ignore_errors=True)
    start = time.time()
    code, err = run(cmd.argv(ref), timeout=3600)
    duration = time.time() - start
    if code != 0:
        raise RuntimeError(f"the uninterrupted {cmd.name} run failed: {err}")
    reference = {k: fingerprint(p) for k, p in cmd.files(ref, cmd.outputs).items()}
    # A second uninterrupted run: is the command deterministic at all, and how long does a warm
    # run take (the first pays for compiling and caching, so its time would waste kills)?
    again = work / f"{cmd.name}-again"
    shutil.rmtree(again, ignore_errors=True)
    start = time.time()
    code, err = run(cmd.argv(again), timeout=3600)
    duration = min(duration, time.time() - start)
    repeat = {k: fingerprint(p) for k, p in cmd.files(again, cmd.outputs).items()}
    shutil.rmtree(again, ignore_errors=True)
    row = dict(
        command=cmd.name,
        reference_seconds=round(duration, 1),
        outputs_compared=len(reference),
        uninterrupted_twice_identical=code == 0 and repeat == reference,
        kills=0,
        ended_before_kill=0,
        landed_after_start=0,
        identical=0,
        differing=[],
        unreadable=[],
        lost_work=[],
        refused_reruns=0,
    )
    attempt = 0
    while row["kills"] < kills and attempt < 3 * kills:
        i, attempt = row["kills"], attempt + 1
        folder = work / f"{cmd.name}-kill"
        shutil.rmtree(folder, ignore_errors=True)
        delay = float(rng.uniform(0.0, duration))
        if not killed_at(cmd.argv(folder), delay):
            # This run was faster than the warm reference (a machine busy while the reference ran):
            # nothing to resume, so it does not count; draw another moment.
            row["ended_before_kill"] += 1
            continue
        row["kills"] += 1
        if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
            row["landed_after_start"] += 1
        finished_before = {k: fingerprint(p) for k, p in cmd.files(folder, cmd.finished).items()}
        for _ in range(max_reruns):
            code, err = run(cmd.argv(folder), timeout=3600)
            if code == 0 or (code == 2 and "is finished" in err):  # the kill came after it had finished
                break
        else:
            row["refused_reruns"] += 1
            row["differing"].append(f"kill {i} at {delay:.1f}s: rerun failed: {err.strip()[-300:]}")
            continue
        row["unreadable"] += [f"kill {i}: {u}" for u in unreadable(folder)]
        after = {k: fingerprint(p) for k, p in cmd.files(folder, cmd.outputs).items()}
        lost = [k for k, h in finished_before.items() if after.get(k, fingerprint_or_none(folder / k)) != h]
        row["lost_work"] += [f"kill {i} at {delay:.1f}s: {k}" for k in lost]
        diff = sorted(k for k in set(reference) | set(after) if reference.get(k) != after.get(k))
        if diff:
            row["differing"].append(f"kill {i} at {delay:.1f}s: {', '.join(diff)}")
        else:
            row["identical"] += 1
        print(
            f"  {cmd.name}: kill {i + 1}/{kills} at {delay:5.1f}s -> {'identical' if not diff else 'DIFFERS'}",
            flush=True,
        )
    row["concurrent"] = concurrent_check(cmd, work / f"{cmd.name}-concurrent", timeout=3600)
    shutil.rmtree(work / f"{cmd.name}-concurrent", ignore_errors=True)
    return row


def fingerprint_or_none(path: pathlib.Path) -> str | None:
    try:
        return fingerprint(path)
    except (OSError, ValueError):
        return None


def table(rows: list[dict]) -> str:
    head = (
        "| command | warm run s | deterministic | kills | ended before the kill | landed after start | identical "
        "| differing | unreadable files | lost work | refused reruns | second copy on the same --out |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        cells = [r["command"], r["reference_seconds"], r["uninterrupted_twice_identical"], r["kills"]]
        cells += [r["ended_before_kill"], r["landed_after_start"]]
        cells += [r["identical"], len(r["differing"]), len(r["unreadable"]), len(r["lost_work"]), r["refused_reruns"]]
        lines.append("| " + " | ".join(str(c) for c in cells + [r["concurrent"]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20, help="kills per command")
    parser.add_argument("--commands", nargs="+", default=["collect", "pretrain", "train", "bench"])
    parser.add_argument("--max-reruns", type=int, default=3, help="reruns after a kill before calling it refused")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/fault-injection")
    parser.add_argument("--redo", action="store_true", help="run commands already in results.json again")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "suite.yaml").write_text(TINY_SUITE)
    all_commands = commands(work)
    unknown = sorted(set(args.commands) - set(all_commands))
    if unknown:
        parser.error(f"unknown command(s) {unknown}; choose from {sorted(all_commands)}")
    if "pretrain" in args.commands and not (work / "data" / "meta.json").exists():
        code, err = run(all_commands["collect"].argv(work / "data"), timeout=3600)
        if code:
            raise RuntimeError(f"collecting the pretraining data failed: {err}")
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.commands:
        if name in results and not args.redo:
            print(f"{name}: done before (results.json); --redo to run it again")
            continue
        print(f"{name}: {args.kills} kills", flush=True)
        results[name] = test_command(all_commands[name], work, args.kills, args.max_reruns, args.seed)
        write_json(results_path, results)
    rows = [results[n] for n in args.commands if n in results]
    print(table(rows))
    for r in rows:
        for key in ("differing", "unreadable", "lost_work"):
            for line in r[key]:
                print(f"{r['command']} {key}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
