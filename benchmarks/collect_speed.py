"""Collection throughput: ``ssrl collect`` with 1 and with N worker processes.

    python -m ssrl.benchmarks.collect_speed [--env ssrl/cartpole-swingup-v0] [--episodes 8]
        [--workers 2] [--rounds 2] [--out PATH]

Each round collects the same episodes (random policy, 84x84 frames of the env's default
cameras, ``--max-steps`` agent steps each) into a fresh folder, once with one process and once
with ``--workers`` spawned processes, the one after the other; it prints env steps per second of each and
their ratio (the parallel run's time includes starting its workers). The two data sets must be
identical file for file, or the benchmark fails: parallel collection is only worth having if it
gives the same data.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import tempfile
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ssrl/cartpole-swingup-v0")
    parser.add_argument("--policy", default="random")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=125, help="agent steps per episode")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="outputs/benchmarks/collect_speed.json")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be 2 or more (it is compared with one worker)")

    import numpy as np

    from ssrl.benchmarks.common import print_table, save_results
    from ssrl.envs.rollouts import collect

    work = pathlib.Path(tempfile.mkdtemp(prefix="collect_speed_"))
    rates: dict[int, list[float]] = {1: [], args.workers: []}
    steps = 0
    try:
        for r in range(args.rounds):
            folders = {}
            for workers in rates:
                folder = folders[workers] = work / f"r{r}_w{workers}"
                start = time.perf_counter()
                ds = collect(
                    args.env,
                    policy=args.policy,
                    episodes=args.episodes,
                    out=folder,
                    max_steps=args.max_steps,
                    progress=False,
                    workers=workers,
                )
                seconds = time.perf_counter() - start
                steps = ds.summary()["steps"] * ds.meta.get("action_repeat", 1)
                rates[workers].append(steps / seconds)
            one, many = (sorted((f / "episodes").glob("*.npz")) for f in folders.values())
            for a, b in zip(one, many, strict=True):
                with np.load(a) as x, np.load(b) as y:
                    if x.keys() != y.keys() or any(not np.array_equal(x[k], y[k]) for k in x):
                        raise SystemExit(f"{a.name}: the parallel collection differs from the serial one")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {w: statistics.median(v) for w, v in rates.items()}
    rows = [[f"{w} worker(s)", f"{median[w]:.0f}", f"{median[w] / median[1]:.2f}x"] for w in rates]
    print_table(["collect", "env steps/s", "vs 1 worker"], rows)
    results = {f"workers_{w}": {"env_steps_per_s": v, "median": median[w]} for w, v in rates.items()}
    results["env_steps_per_collection"] = steps
    save_results(args.out, "collect_speed", results, vars(args))
    return results


if __name__ == "__main__":
    main()
