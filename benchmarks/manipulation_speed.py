"""Speed of the manipulation envs and the grasp success rates that make grasp2vec data affordable.

    python -m ssrl.benchmarks.manipulation_speed [--cores 1] [--rounds 3] [--attempts 300] [--out PATH]

Figures, all on ``--cores`` pinned cores (one by default):

* Push: env steps per second at 84x84 from pixels (one physics step of 25 x 2 ms, one render of
  the observation; the goal image costs one more render per reset), and from states;
* Grasp: attempts per second, from pixels (observation + s_pre/s_post/o renders), from states
  with the triplets (what ``ssrl collect`` runs) and physics alone;
* grasp success rates on a full bin (6 objects, 10 attempts per episode, then a fresh bin):
  random grasps (uniform over the bin floor, uniform yaw) and grasps centred on a random object
  (uniform yaw), over ``--attempts`` attempts each, with exact (Clopper-Pearson) 95% intervals.

Speeds are medians over ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--push-steps", type=int, default=1000, help="Push steps per round")
    parser.add_argument("--grasp-attempts", type=int, default=100, help="grasp attempts per speed round")
    parser.add_argument("--attempts", type=int, default=300, help="attempts per success-rate estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/benchmarks/manipulation_speed.json")
    args = parser.parse_args(argv)

    from ssrl.benchmarks.common import alternate, pin_cores, print_table, save_results

    cores = pin_cores(args.cores)

    import numpy as np
    from scipy.stats import binomtest

    import ssrl  # noqa: F401
    from ssrl.envs.manipulation import GraspEnv, PushEnv
    from ssrl.envs.policies import make_policy

    rng = np.random.default_rng(args.seed)

    def push_runner(**kwargs):
        env = PushEnv(**kwargs)
        env.reset(seed=args.seed)

        def run() -> float:
            start = time.perf_counter()
            for _ in range(args.push_steps):
                *_, truncated, _ = env.step(rng.uniform(-1, 1, 2))
                if truncated:
                    env.reset()
            return args.push_steps / (time.perf_counter() - start)

        return run

    def grasp_runner(**kwargs):
        env = GraspEnv(**kwargs)
        env.reset(seed=args.seed)

        def run() -> float:
            start = time.perf_counter()
            for _ in range(args.grasp_attempts):
                *_, truncated, _ = env.step(rng.uniform(-1, 1, 3))
                if truncated:
                    env.reset()
            return args.grasp_attempts / (time.perf_counter() - start)

        return run

    candidates = {
        "Push, pixels 84x84": push_runner(),
        "Push, states": push_runner(from_pixels=False),
        "Grasp, pixels 84x84 + triplets": grasp_runner(),
        "Grasp, states + triplets (collect)": grasp_runner(from_pixels=False),
        "Grasp, states, physics only": grasp_runner(from_pixels=False, record_triplets=False),
    }
    speeds = alternate(candidates, args.rounds)
    units = {name: ("env steps/s" if name.startswith("Push") else "attempts/s") for name in candidates}
    speed_rows = [[name, statistics.median(v), units[name]] for name, v in speeds.items()]

    # Success rates: same physics as the pixel env, no rendering needed.
    env = GraspEnv(from_pixels=False, record_triplets=False)
    rates = {}
    for name in ("random_grasp", "centred_grasp"):
        policy = make_policy(name, env)
        hits = attempts = episode = 0
        while attempts < args.attempts:
            seed = args.seed * 100_000 + episode
            obs, info = env.reset(seed=seed)
            policy.reset(seed)
            episode += 1
            while attempts < args.attempts:
                obs, reward, terminated, truncated, info = env.step(policy(obs, info))
                hits += bool(info["grasp_success"])
                attempts += 1
                if terminated or truncated:
                    break
        ci = binomtest(hits, attempts).proportion_ci(0.95, method="exact")
        rates[name] = {"successes": hits, "attempts": attempts, "rate": hits / attempts, "ci95": [ci.low, ci.high]}
    rate_rows = [
        [name, r["attempts"], f"{r['rate']:.1%}", f"[{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]"]
        for name, r in rates.items()
    ]

    print(f"\nmanipulation envs, {args.cores} core(s) {cores}, median of {args.rounds} rounds")
    print_table(["what", "rate", "unit"], speed_rows)
    print(f"\ngrasp success on a full bin ({env.n_objects} objects, {env.max_attempts} attempts per bin)")
    print_table(["policy", "attempts", "success", "95% interval (exact)"], rate_rows)
    results = {
        "speed": {name: {"median": statistics.median(v), "runs": v, "unit": units[name]} for name, v in speeds.items()},
        "grasp_success": rates,
    }
    save_results(args.out, "manipulation_speed", results, vars(args))
    return results


if __name__ == "__main__":
    main()
