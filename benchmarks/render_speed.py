"""Pixel env steps per second: ssrl's DMC env against dm_control's own render path.

    python -m ssrl.benchmarks.render_speed [--cores 1] [--rounds 5] [--out PATH]

One env step = one physics control step + an 84x84 render + the 3-frame stack. The baseline is
what a user of dm_control writes: ``env.step(a)`` then ``physics.render(84, 84, camera_id=0)``
(dm_control's defaults: shadows, reflections, skybox, 4x multisampling), stacked with numpy.
Both run with action repeat 1, interleaved in rounds, pinned to the same cores; the ratio is
taken round by round. A second row shows the default PlaNet setting (action repeat 4: four
physics steps per render), counted in env steps.
"""

from __future__ import annotations

import argparse
import statistics


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cheetah-run")
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000, help="ssrl steps per round")
    parser.add_argument("--baseline-steps", type=int, default=100, help="dm_control steps per round")
    parser.add_argument("--out", default="outputs/benchmarks/render_speed.json")
    args = parser.parse_args(argv)

    from ssrl.benchmarks.common import alternate, pin_cores, print_table, save_results

    cores = pin_cores(args.cores)

    import numpy as np
    from dm_control import suite

    import ssrl  # noqa: F401
    from ssrl.envs import DMCEnv

    domain, task = args.task.split("-", 1)
    rng = np.random.default_rng(0)

    def ssrl_runner(action_repeat: int, quality: str):
        env = DMCEnv(domain, task, action_repeat=action_repeat, quality=quality)
        env.reset(seed=0)
        shape = env.action_space.shape

        def run() -> float:
            import time

            start = time.perf_counter()
            for _ in range(args.steps):
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, shape))
                if term or trunc:
                    env.reset()
            return args.steps * action_repeat / (time.perf_counter() - start)

        return run

    def dm_control_runner():
        env = suite.load(domain, task, task_kwargs={"random": 0})
        env.reset()
        physics = env.physics
        spec = env.action_spec()
        stack = [physics.render(84, 84, camera_id=0)] * 3

        def run() -> float:
            import time

            nonlocal stack
            start = time.perf_counter()
            for _ in range(args.baseline_steps):
                time_step = env.step(rng.uniform(spec.minimum, spec.maximum))
                if time_step.last():
                    env.reset()
                stack = stack[1:] + [physics.render(84, 84, camera_id=0)]
                np.concatenate([f.transpose(2, 0, 1) for f in stack])
            return args.baseline_steps / (time.perf_counter() - start)

        run.physics = physics
        return run

    candidates = {
        "dm_control physics.render (baseline)": dm_control_runner(),
        "ssrl fast, action repeat 1": ssrl_runner(1, "fast"),
        "ssrl faithful, action repeat 1": ssrl_runner(1, "faithful"),
        "ssrl fast, action repeat 4 (PlaNet)": ssrl_runner(4, "fast"),
    }
    results = alternate(candidates, args.rounds)
    candidates["dm_control physics.render (baseline)"].physics.free()  # its GL context, before exit
    base = results["dm_control physics.render (baseline)"]
    rows, summary = [], {}
    for name, values in results.items():
        ratios = [v / b for v, b in zip(values, base)]
        summary[name] = {
            "env_steps_per_s": statistics.median(values),
            "runs": values,
            "ratio_to_baseline": statistics.median(ratios),
        }
        rows.append([name, statistics.median(values), f"{statistics.median(ratios):.1f}x"])
    print(f"\n{args.task}, 84x84, 3-frame stack, {args.cores} core(s) {cores}, median of {args.rounds} rounds")
    print_table(["path", "env steps/s", "vs dm_control"], rows)
    save_results(args.out, "render_speed", summary, vars(args))
    return summary


if __name__ == "__main__":
    main()
