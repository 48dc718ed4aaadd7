"""Soak: does memory stay flat over long runs? State SAC for 1M env steps, and pixel SAC until its
replay is full and ``--pixel-beyond`` env steps more.

    python -m ssrl.benchmarks.soak [--out outputs/soak] [--state-env-steps 1000000]
        [--pixel-capacity 10000] [--pixel-beyond 50000]

Each run is an ordinary ``ssrl train`` run (folders ``OUT/state`` and ``OUT/pixels``, resumable)
whose progress callback samples the process's resident memory (VmRSS) every ``--every`` env
steps, with the replay's ``nbytes`` beside it. After the replay is full nothing should grow:
the target is an RSS within 5% of its value at the moment the replay filled, to the end. The
state run uses SAC's defaults (a 1M-transition replay: on cartpole's action repeat of 8, 1M env
steps are 125k transitions, so it never fills; its figure is the growth per update). The pixel
run is 84x84 cartpole with DrQ's preset but a replay of ``--pixel-capacity`` transitions, the
``fast`` encoder, 64-unit MLPs and batch 32, so that a CPU gets past the full replay (80k env
steps at cartpole's action repeat of 8) and 50k env steps beyond in under an hour (at DrQ's own
sizes an update takes 0.5 s here); each setting is printed with the result.
Samples go to ``OUT/<run>/rss.jsonl`` (appended, so a resumed run continues its curve, each
sample with its process id; flatness is judged within the last process, since a resumed run
reloads its replay) and the figure to ``OUT/soak.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource


def rss_mib() -> float:
    """Resident set size of this process now, in MiB (Linux /proc)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def soak(out: pathlib.Path, env_kwargs: dict, hyperparams: dict, env_steps: int, every: int) -> list[dict]:
    from ssrl.agents.run import train_run

    out.mkdir(parents=True, exist_ok=True)
    log = out / "rss.jsonl"
    samples = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    next_sample = [samples[-1]["env_steps"] + every if samples else 0]

    def callback(status: dict) -> None:
        if status["env_steps"] < next_sample[0]:
            return
        sample = {
            "pid": os.getpid(),  # a resumed soak is another process: its RSS is compared within itself
            "env_steps": status["env_steps"],
            "updates": status["updates"],
            "rss_mib": round(rss_mib(), 1),
            "replay_mib": round(status["replay_nbytes"] / 2**20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        samples.append(sample)
        with open(log, "a") as fh:
            fh.write(json.dumps(sample) + "\n")
        print(json.dumps(sample), flush=True)
        next_sample[0] = status["env_steps"] + every

    train_run(
        out / "run",
        "ssrl/cartpole-swingup-v0",
        env_steps=env_steps,
        env_kwargs=env_kwargs,
        hyperparams=hyperparams,
        eval_every=max(env_steps // 5, 1),
        eval_episodes=2,
        progress=False,
        tensorboard=False,
        callback=callback,
    )
    return samples


def flatness(samples: list[dict], full_at: int | None) -> dict:
    """RSS growth after the replay filled (env step ``full_at``; the replay's arrays are
    allocated up front, but the OS maps their pages only as they are written, so RSS rises
    until then), or over the second half of a run whose replay never fills."""
    if not samples:
        return {}
    # Only the last process's samples: a resumed run reloads its replay, so RSS before and after a
    # resume measure different processes.
    last = samples[-1].get("pid")
    first = next(i for i, s in enumerate(samples) if s.get("pid") == last)
    samples = samples[first:]
    start = next((i for i, s in enumerate(samples) if s["env_steps"] >= full_at), None) if full_at else None
    since = "replay full" if start is not None else "half-way"
    start = start if start is not None else len(samples) // 2
    base, rest = samples[start]["rss_mib"], samples[start:]
    growth = max(s["rss_mib"] for s in rest) / base - 1
    return {
        "since": since,
        "since_env_steps": samples[start]["env_steps"],
        "rss_then_mib": base,
        "rss_end_mib": samples[-1]["rss_mib"],
        "max_growth_pct": round(100 * growth, 2),
        "peak_rss_mib": samples[-1]["peak_rss_mib"],
        "replay_nbytes_mib": samples[-1]["replay_mib"],
        "flat_within_5pct": growth <= 0.05,
    }


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        x = [s["env_steps"] / 1000 for s in r["samples"]]
        ax.plot(x, [s["rss_mib"] for s in r["samples"]], label="process RSS")
        ax.plot(x, [s["replay_mib"] for s in r["samples"]], label="replay nbytes (allocated up front)")
        if r["summary"].get("since") == "replay full":
            ax.axvline(r["summary"]["since_env_steps"] / 1000, color="grey", ls="--", label="replay full")
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylabel("MiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name}: max growth {r['summary'].get('max_growth_pct')}% since {r['summary'].get('since')}")
        ax.legend(loc="center right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/soak")
    parser.add_argument("--runs", nargs="+", default=["state", "pixels"], choices=["state", "pixels"])
    parser.add_argument("--state-env-steps", type=int, default=1_000_000)
    parser.add_argument("--pixel-capacity", type=int, default=10_000, help="replay transitions")
    parser.add_argument("--pixel-beyond", type=int, default=50_000, help="env steps after the replay is full")
    parser.add_argument("--every", type=int, default=10_000, help="env steps between RSS samples")
    args = parser.parse_args(argv)

    from ssrl.utils import one_thread, write_json

    one_thread()  # as a bench cell (before torch starts its threads)
    import torch

    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    repeat = 8  # cartpole's action repeat (PlaNet's setting, the env's default)
    runs = {
        "state": (
            {"from_pixels": False},
            {},
            args.state_env_steps,
        ),
        "pixels": (
            {},
            {
                "buffer_size": args.pixel_capacity,
                "encoder_arch": "fast",
                "hidden_dims": [64, 64],
                "batch_size": 32,
                "learning_starts": 1000,
            },
            args.pixel_capacity * repeat + args.pixel_beyond,
        ),
    }
    results = {}
    results_path = out / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
    for name in args.runs:
        env_kwargs, hyper, steps = runs[name]
        print(f"{name}: {steps} env steps, env {env_kwargs}, hyperparams {hyper}", flush=True)
        samples = soak(out / name, env_kwargs, hyper, steps, args.every)
        full = hyper["buffer_size"] * repeat if "buffer_size" in hyper else None
        results[name] = {
            "env_kwargs": env_kwargs,
            "hyperparams": hyper,
            "env_steps": steps,
            "summary": flatness(samples, full),
            "samples": samples,
        }
        print(name, json.dumps(results[name]["summary"]), flush=True)
        write_json(results_path, results)
    plot(results, out / "soak.png")
    return results


if __name__ == "__main__":
    main()
