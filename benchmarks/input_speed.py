"""What the objectives' inputs cost: clip draws from an agent's replay, and Lab conversions.

    python -m ssrl.benchmarks.input_speed [--rounds 5] [--out PATH]

Two pairs, each a cached path against the computation it replaced, on one pinned core, in
alternating rounds (so a busy machine slows both alike), on cartpole-swingup frames from our
renderer (84x84, sticky-random actions):

* **clip draw**: one update's clips for a video objective (``CLIP_RUNS`` runs of
  ``CLIP_LENGTH`` instants from a 20k-slot replay, as :class:`ReplayClips` with its motion),
  with the motion the replay keeps per slot against motion found again in the served frames;
* **Lab**: :func:`frames_to_lab` of a batch of 128 frame stacks (3 frames) looked up per colour
  against :func:`rgb_to_lab`'s conversion (both float32, bit-identical: ``tests/test_colorization.py``).
  Real frames hold few colours, so the table's lookups stay in cache; random colours would miss.

Prints milliseconds per call (median of the rounds) and the ratio of each pair.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="outputs/benchmarks/input_speed.json")
    args = parser.parse_args(argv)

    from ssrl.benchmarks.common import alternate, pin_cores, print_table, save_results

    pin_cores(1)
    import gymnasium as gym
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ssrl.agents.replay import ReplayBuffer
    from ssrl.envs import make_dmc
    from ssrl.representations.pretext.image.colour import frames_to_lab, rgb_to_lab
    from ssrl.representations.regimes import CLIP_LENGTH, CLIP_RUNS, ReplayClips

    env = make_dmc("cartpole", "swingup", size=84)
    replay = ReplayBuffer(20_000, env.observation_space, gym.spaces.Box(-1, 1, (1,)), frame_stack=3)
    rng = np.random.default_rng(0)
    stacks = []
    while replay.total < replay.capacity:
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        replay.start_episode(obs)
        done, action = False, rng.uniform(-1, 1, 1)
        while not done:
            if rng.uniform() < 0.1:
                action = rng.uniform(-1, 1, 1)  # sticky random actions: varied states
            obs, reward, terminated, truncated, _ = env.step(action)
            replay.add(action, reward, terminated, obs)
            done = terminated or truncated
            if len(stacks) < 128 and rng.uniform() < 0.05:
                stacks.append(obs)
        replay.end_episode()
    env.close()
    frames = torch.as_tensor(np.stack(stacks))

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)

    def clips(kept: bool):
        runs = replay.sample_segments(CLIP_RUNS, CLIP_LENGTH, np.random.default_rng(1))
        if not kept:
            runs.pop("motion")
        return ReplayClips(runs).motion()

    def converted():
        with torch.autocast("cpu", enabled=False):
            return rgb_to_lab(frames.reshape(len(frames), 3, 3, 84, 84), dim=2)

    candidates = {
        "clip draw, motion kept": lambda: timed(lambda: clips(True)),
        "clip draw, motion found again": lambda: timed(lambda: clips(False)),
        "Lab, looked up": lambda: timed(lambda: frames_to_lab(frames)),
        "Lab, converted": lambda: timed(converted),
    }
    for fn in candidates.values():
        fn()  # warm-up: the Lab table is built once per process
    ms = {name: statistics.median(v) for name, v in alternate(candidates, args.rounds).items()}
    pairs = [("clip draw, motion kept", "clip draw, motion found again"), ("Lab, looked up", "Lab, converted")]
    rows = [[new, f"{ms[new]:.1f}", old, f"{ms[old]:.1f}", f"{ms[old] / ms[new]:.1f}x"] for new, old in pairs]
    print_table(["cached", "ms", "computed", "ms", "speed-up"], rows)
    results = {"ms": ms, "speedup": {new: ms[old] / ms[new] for new, old in pairs}}
    save_results(args.out, "input_speed", results, vars(args))
    return results


if __name__ == "__main__":
    main()
