"""Pretraining speed of every representation on its natural data, on 1 and 2 cores.

    python -m ssrl.benchmarks.pretrain_speed [--threads 1 2] [--archs fast dmc] [--precisions fp32 bf16]
        [--steps 10] [--batch-size N] [--out PATH]

Each method trains on the data its objective needs, collected here by our own envs (cached
under ``--data``) from the env its class names (``Representation.example_env``): multi-view
cartpole-swingup rollouts (TCN, mfTCN, DeepMDP, DBC), Push with a new object every episode
(beta-VAE, CC-VAE), Grasp triplets (grasp2vec). A step is one
optimiser step at the method's default batch size (``--batch-size``: one size for all, as a
suite's ``pretrain.batch_size`` sets it): sampling the batch from the data set,
forward, backward and Adam, as ``ssrl pretrain`` runs it. The table gives steps per second
(median of ``--rounds``, each ``--steps`` steps after one warm-up step) for each backbone
(``fast``: the stride-2 CPU variant; ``dmc``: the published methods' encoder), torch thread
count and precision (``ssrl pretrain --precision``: bf16 runs the loss under bfloat16 autocast),
the speed-up of 2 threads over 1 and, with two precisions, of bf16 over fp32 (on the most
threads); the rounds of the two precisions alternate, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics

# How to collect each env's data (a method's ``example_env`` says which env suits it). Ten
# cartpole episodes hold 160 of mfTCN's spaced pairs: a batch of 128, as the dmc6 suite asks.
DATA = {
    "ssrl/cartpole-swingup-v0": dict(policy="sticky_random", episodes=10, cameras=["fixed", "lookatcart"]),
    "ssrl/PushRandomObject-v0": dict(policy="push_explore", episodes=6, cameras=["push"]),
    "ssrl/Grasp-v0": dict(policy="random_grasp", episodes=16, cameras=["bin"]),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from ssrl.representations import get, names

    parser.add_argument("--methods", nargs="+", default=names(), choices=names())
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--archs", nargs="+", default=["fast", "dmc"], choices=["fast", "dmc", "resnet"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None, help="one batch size for every method")
    parser.add_argument("--data", default="outputs/benchmarks/pretrain_speed_data")
    parser.add_argument("--out", default="outputs/benchmarks/pretrain_speed.json")
    args = parser.parse_args(argv)
    args.precisions = list(dict.fromkeys(args.precisions))  # each once

    from ssrl.benchmarks.common import alternate, pin_cores, print_table, rate, save_results

    cores = pin_cores(max(args.threads))

    import numpy as np
    import torch

    import ssrl  # noqa: F401
    from ssrl.envs.rollouts import collect
    from ssrl.representations.data import RolloutData
    from ssrl.representations.pretrain import build
    from ssrl.utils import autocast

    def dataset(env_id: str) -> RolloutData:
        if env_id not in DATA:
            raise SystemExit(f"no collection settings for {env_id}; add them to DATA in {__file__}")
        spec = DATA[env_id]
        path = pathlib.Path(args.data) / env_id.removeprefix("ssrl/").removesuffix("-v0")
        # collect resumes: it collects only the episodes still missing from the cache.
        ds = collect(
            env_id,
            policy=spec["policy"],
            episodes=spec["episodes"],
            out=path,
            cameras=spec["cameras"],
            seed=0,
            progress=False,
        )
        return RolloutData(ds)

    data_of = {m: get(m).example_env for m in args.methods}
    datasets = {env_id: dataset(env_id) for env_id in sorted(set(data_of.values()))}
    results: dict[str, dict] = {}
    rows = []
    for method in args.methods:
        data = datasets[data_of[method]]
        for arch in args.archs:
            rates = {}
            for threads in args.threads:
                torch.set_num_threads(threads)
                timed = {}
                for precision in args.precisions:
                    torch.manual_seed(0)
                    rep = build(method, data, arch=arch)
                    optimizer = torch.optim.Adam(rep.parameters(), lr=1e-4)
                    rng = np.random.default_rng(0)
                    batch_size = args.batch_size or rep.config.batch_size

                    def step(rep=rep, optimizer=optimizer, rng=rng, precision=precision, batch_size=batch_size):
                        with autocast("cpu", precision):
                            loss, _ = rep.loss(rep.to_batch(rep.sample_batch(data, batch_size, rng)))
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()

                    step()  # warm-up: allocator, one-off kernel choices
                    timed[precision] = lambda step=step: rate(step, args.steps)
                for precision, runs in alternate(timed, args.rounds).items():
                    rates[threads, precision] = statistics.median(runs)
                    print(
                        f"{method} {arch} {threads} thread(s) {precision}: {rates[threads, precision]:.2f} steps/s",
                        flush=True,
                    )
            key = f"{method}/{arch}"
            results[key] = {
                "data": data_of[method],
                "batch_size": batch_size,
                "steps_per_s": {f"{t}/{p}": r for (t, p), r in rates.items()},
            }
            first, most = min(args.threads), max(args.threads)
            speedups = [rates[most, p] / rates[first, p] for p in args.precisions] if most != first else []
            if len(args.precisions) > 1:
                speedups.append(rates[most, "bf16"] / rates[most, "fp32"])
            cells = [rates[t, p] for t in args.threads for p in args.precisions]
            rows.append([method, data_of[method], arch, batch_size, *cells, *speedups])
    first, most = min(args.threads), max(args.threads)
    headers = [
        "method",
        "data",
        "arch",
        "batch",
        *(f"steps/s, {t} thread(s), {p}" for t in args.threads for p in args.precisions),
        *(f"{most} vs {first} threads, {p}" for p in args.precisions if most != first),
        *([f"bf16 vs fp32, {most} thread(s)"] if len(args.precisions) > 1 else []),
    ]
    print(f"\nPretraining steps per second ({len(cores)} pinned core(s))")
    table = print_table(headers, rows)
    save_results(args.out, "pretrain_speed", dict(results, table=table), dict(vars(args), cores=cores))
    return results


if __name__ == "__main__":
    main()
