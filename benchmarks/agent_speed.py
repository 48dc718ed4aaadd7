"""SAC update throughput and replay memory: ssrl's agent against Stable-Baselines3's SAC.

    python -m ssrl.benchmarks.agent_speed [--threads 1 2] [--rounds 3] [--skip-pixels] [--out PATH]

Both agents get the same inputs, network sizes, batch size and thread count, and are measured
in rounds that alternate between them; the table gives updates per second (median over rounds)
and the ratio. Replay sampling is included for both (it is part of an update's cost).

* latents: 50-d observations, 6-d actions, MLPs 256x256, batch 256. The FLOPs of one of our
  updates are counted with torch's FlopCounterMode and divided by the fp32 matmul rate measured
  in the same run (a 256x256x256 matmul), giving the update's compute floor and the fraction
  of it reached.
* pixels: 84x84x9 frame stacks, the suite's conv encoder (given to SB3 as its features
  extractor), MLPs 1024x1024, batch 128 (DrQ's sizes).
* replay bytes per transition at 84x84x9, measured from both buffers' arrays.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _fill_ours(agent, obs_fn, n, rng, episode=500):
    """Random transitions; ``obs_fn(rng, previous)`` makes the next observation (None at a reset)."""
    obs = obs_fn(rng, None)
    agent.replay.start_episode(obs)
    for i in range(n):
        obs = obs_fn(rng, obs)
        agent.replay.add(rng.uniform(-1, 1, agent.action_dim), float(rng.standard_normal()), False, obs)
        if (i + 1) % episode == 0:
            agent.replay.end_episode()
            obs = obs_fn(rng, None)
            agent.replay.start_episode(obs)
    agent.replay.end_episode()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latent-updates", type=int, default=200, help="updates per round (latents)")
    parser.add_argument("--pixel-updates", type=int, default=4, help="updates per round (pixels)")
    parser.add_argument("--skip-pixels", action="store_true")
    parser.add_argument("--out", default="outputs/benchmarks/agent_speed.json")
    args = parser.parse_args(argv)

    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.buffers import ReplayBuffer as SB3Replay
    from torch.utils.flop_counter import FlopCounterMode

    from ssrl.agents import SAC
    from ssrl.agents.sb3 import SSRLEncoderExtractor
    from ssrl.benchmarks.common import alternate, print_table, save_results

    class Dummy(gym.Env):
        def __init__(self, obs_space, act_space):
            self.observation_space, self.action_space = obs_space, act_space

        def reset(self, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    rng = np.random.default_rng(0)
    act_space = gym.spaces.Box(-1, 1, (6,), np.float32)
    lat_space = gym.spaces.Box(-np.inf, np.inf, (50,), np.float32)
    pix_space = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    results: dict = {"latents": {}, "pixels": {}}
    rows = []

    def sb3_model(space, policy, batch, net_arch, kwargs):
        model = SB3SAC(
            policy,
            Dummy(space, act_space),
            batch_size=batch,
            buffer_size=2000,
            learning_starts=0,
            device="cpu",
            policy_kwargs=dict(net_arch=net_arch, **kwargs),
            seed=0,
        )
        model.learn(1100 if space is lat_space else 300)  # fills its replay (and runs a few updates)
        return model

    def timed(fn, n):
        def run():
            start = time.perf_counter()
            fn(n)
            return n / (time.perf_counter() - start)

        return run

    for threads in args.threads:
        torch.set_num_threads(threads)
        # -- latents -------------------------------------------------------------------------
        # fp32 and bf16 asked for by name (the default, "auto", is bf16 on CPUs that have it).
        ours, ours_bf16 = (
            SAC(
                None,
                observation_space=lat_space,
                action_space=act_space,
                buffer_size=2000,
                batch_size=256,
                seed=0,
                precision=precision,
            )
            for precision in ("fp32", "bf16")
        )
        for agent in (ours, ours_bf16):
            _fill_ours(agent, lambda r, _: r.standard_normal(50).astype(np.float32), 1500, rng)
        sb3 = sb3_model(lat_space, "MlpPolicy", 256, [256, 256], {})

        def ours_fn(agent):
            return lambda n: [agent.update(agent.replay.sample(256)) for _ in range(n)]

        with FlopCounterMode(display=False) as counter:
            ours.update(ours.replay.sample(256))
        flops = counter.get_total_flops()
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        start = time.perf_counter()
        for _ in range(300):
            a @ b
        peak = 2 * 256**3 * 300 / (time.perf_counter() - start)
        n = args.latent_updates
        res = alternate(
            {
                "ssrl SAC fp32": timed(ours_fn(ours), n),
                "ssrl SAC bf16": timed(ours_fn(ours_bf16), n),
                "SB3 SAC": timed(lambda k: sb3.train(gradient_steps=k, batch_size=256), n),
            },
            args.rounds,
        )
        med = {k: statistics.median(v) for k, v in res.items()}
        floor_ups = peak / flops
        results["latents"][threads] = {
            "updates_per_s": med,
            "runs": res,
            "flops_per_update": flops,
            "fp32_matmul_flops_per_s": peak,
            "floor_updates_per_s": floor_ups,
        }
        for name, value in med.items():
            frac = f"{value / floor_ups:.0%}" if name != "SB3 SAC" else ""
            rows.append([f"latents 50-d, {threads} thread(s)", name, value, f"{value / med['SB3 SAC']:.2f}x", frac])

        # -- pixels --------------------------------------------------------------------------
        if args.skip_pixels:
            continue
        # The legacy preset (no K/M augmentation averaging, as SB3 has none): the same work as SB3's
        # update, so the ratio compares implementations, not algorithms.
        pix = SAC(
            None,
            observation_space=pix_space,
            action_space=act_space,
            buffer_size=600,
            seed=0,
            frame_stack=3,
            pixel_preset="legacy",
            precision="fp32",
        )
        _fill_ours(pix, _next_stack, 500, rng, episode=125)
        pix_bf16 = SAC(
            None,
            observation_space=pix_space,
            action_space=act_space,
            buffer_size=600,
            seed=0,
            frame_stack=3,
            precision="bf16",
            pixel_preset="legacy",
        )
        pix_bf16.replay = pix.replay
        sb3_pix = sb3_model(
            pix_space,
            "CnnPolicy",
            128,
            [1024, 1024],
            dict(
                features_extractor_class=SSRLEncoderExtractor,
                features_extractor_kwargs=dict(arch="dmc", feature_dim=50),
            ),
        )
        n = args.pixel_updates
        res = alternate(
            {
                "ssrl SAC fp32": timed(lambda k: [pix.update(pix.replay.sample(128)) for _ in range(k)], n),
                "ssrl SAC bf16": timed(lambda k: [pix_bf16.update(pix_bf16.replay.sample(128)) for _ in range(k)], n),
                "SB3 SAC": timed(lambda k: sb3_pix.train(gradient_steps=k, batch_size=128), n),
            },
            args.rounds,
        )
        med = {k: statistics.median(v) for k, v in res.items()}
        results["pixels"][threads] = {"updates_per_s": med, "runs": res}
        for name, value in med.items():
            rows.append([f"pixels 84x84x9, {threads} thread(s)", name, value, f"{value / med['SB3 SAC']:.2f}x", ""])

    # -- replay memory ---------------------------------------------------------------------------
    capacity = 1000
    ours_buf = SAC(
        None, observation_space=pix_space, action_space=act_space, buffer_size=capacity, frame_stack=3
    ).replay
    sb3_buf = SB3Replay(capacity, pix_space, act_space, device="cpu", handle_timeout_termination=True)
    sb3_bytes = sum(
        getattr(sb3_buf, k).nbytes
        for k in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
    )
    frame = 3 * 84 * 84
    # Our slots hold one frame per instant; an episode of T transitions uses T+1 slots.
    episode_len = 125  # cartpole at action repeat 8; longer episodes cost less
    ours_per_transition = ours_buf.bytes_per_transition() * (episode_len + 1) / episode_len
    results["replay"] = {
        "frame_bytes": frame,
        "ssrl_bytes_per_transition": ours_per_transition,
        "sb3_bytes_per_transition": sb3_bytes / capacity,
        "episode_length": episode_len,
    }
    print()
    print_table(["setting", "agent", "updates/s", "vs SB3", "of fp32 floor"], rows)
    print()
    print_table(
        ["replay (84x84x9)", "bytes/transition", "frames (84x84x3)"],
        [
            ["ssrl", ours_per_transition, f"{ours_per_transition / frame:.3f}"],
            ["SB3", sb3_bytes / capacity, f"{sb3_bytes / capacity / frame:.2f}"],
        ],
    )
    save_results(args.out, "agent_speed", results, vars(args))
    return results


def _next_stack(rng, previous):
    """A 3-frame stack of random frames, shifted by one new frame (a reset repeats the first)."""
    import numpy as np

    frame = rng.integers(0, 256, (3, 84, 84), dtype=np.uint8)
    if previous is None:
        return np.concatenate([frame, frame, frame])
    return np.concatenate([previous[3:], frame])


if __name__ == "__main__":
    main()
