"""One prepared check for a GPU machine: does everything run there, and how fast against the CPU?

    python -m ssrl.benchmarks.device_check [--out outputs/benchmarks/device_check.json]
        [--updates 200] [--pretrain-steps 100] [--env-steps 4000]

Meant to be run as one short job when a GPU machine is lent (issue 16), then the test suite
(``python -m pytest -q -x``) in the same session. It records:

* the machine: torch's device, its name and bf16 support, ``MUJOCO_GL``, and whether MuJoCo
  renders there (a Push frame that is not blank; which GL driver drew it is not recorded: Mesa's
  software EGL would pass too);
* pixel SAC updates per second at DrQ's sizes (84x84x9, the DMC encoder, batch 512, K = M = 2)
  on the accelerator and on one CPU thread, from the same replay;
* ``ssrl pretrain`` steps per second of ATC (the DMC encoder, batch 256) on both, from the same
  data set;
* a short ``ssrl train`` from pixels on cartpole-swingup on the accelerator (``device="cuda"``,
  which fails loudly if torch cannot use it): env steps per second with updates.

On a machine without a GPU it runs everything on the CPU (the accelerator rows are then the CPU's)
and says so.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time


def _pixel_sac_updates(device: str, updates: int) -> float:
    import numpy as np

    from ssrl.agents import SAC
    from ssrl.envs import make

    env = make("ssrl/cartpole-swingup-v0")
    agent = SAC(env, device=device, seed=0, buffer_size=2000)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    agent.replay.start_episode(obs)
    for _ in range(600):  # random transitions: the update's cost does not depend on their values
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        agent.replay.add(action, reward, terminated, obs)
        if terminated or truncated:
            obs, _ = env.reset()
            agent.replay.start_episode(obs)
    env.close()
    agent.update(agent.replay.sample(agent.config.batch_size))  # warm-up (cuDNN autotuning, allocations)
    _sync(device)
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(agent.replay.sample(agent.config.batch_size))
    _sync(device)
    return updates / (time.perf_counter() - start)


def _pretrain_steps(device: str, data: pathlib.Path, out: pathlib.Path, steps: int) -> float:
    from ssrl.representations.pretrain import pretrain

    _, summary = pretrain("atc", data, out=out, steps=steps, batch_size=256, device=device, progress=False)
    return float(summary["steps_per_s"])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/benchmarks/device_check.json")
    parser.add_argument("--updates", type=int, default=200, help="timed pixel SAC updates on the accelerator")
    parser.add_argument("--cpu-updates", type=int, default=10, help="timed pixel SAC updates on one CPU thread")
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--env-steps", type=int, default=4000, help="the short pixel ssrl train run")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np
    import torch

    from ssrl.benchmarks.common import print_table, save_results
    from ssrl.envs import make
    from ssrl.envs.rollouts import collect

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    facts = {
        "device": device,
        "name": torch.cuda.get_device_name(0) if gpu else "no GPU: the accelerator rows are the CPU's",
        "bf16": bool(torch.cuda.is_bf16_supported()) if gpu else None,
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "torch": torch.__version__,
    }
    env = make("ssrl/Push-v0")
    obs, _ = env.reset(seed=0)
    facts["egl_renders"] = bool(np.asarray(obs["observation"]).std() > 0)
    env.close()

    results: dict = {"facts": facts}
    threads = torch.get_num_threads()
    results["pixel_sac_updates_per_s"] = {device: _pixel_sac_updates(device, args.updates)}
    torch.set_num_threads(1)
    results["pixel_sac_updates_per_s"]["cpu_1_thread"] = _pixel_sac_updates("cpu", args.cpu_updates)
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = collect("ssrl/cartpole-swingup-v0", policy="sticky_random", episodes=4, out=tmp / "data", progress=False)
        results["atc_pretrain_steps_per_s"] = {
            device: _pretrain_steps(device, data.path, tmp / "p-acc", args.pretrain_steps)
        }
        torch.set_num_threads(1)
        results["atc_pretrain_steps_per_s"]["cpu_1_thread"] = _pretrain_steps(
            "cpu", data.path, tmp / "p-cpu", max(args.pretrain_steps // 20, 2)
        )
        torch.set_num_threads(threads)

        from ssrl.agents.run import train_run

        start = time.perf_counter()
        summary = train_run(
            tmp / "run",
            "ssrl/cartpole-swingup-v0",
            env_steps=args.env_steps,
            hyperparams={"learning_starts": 100},
            eval_episodes=1,
            eval_every=args.env_steps,
            device=device,
            progress=False,
            tensorboard=False,
        )
        results["pixel_train"] = {
            "env_steps": summary["env_steps"],
            "updates": summary["updates"],
            "env_steps_per_s": summary["env_steps"] / (time.perf_counter() - start),
            "device": device,
        }

    rows = []
    for what in ("pixel_sac_updates_per_s", "atc_pretrain_steps_per_s"):
        acc, cpu = results[what][device], results[what]["cpu_1_thread"]
        rows.append([what, f"{acc:.1f}", f"{cpu:.2f}", f"{acc / cpu:.1f}x"])
    print_table(["measure", device, "cpu, 1 thread", "ratio"], rows)
    print(f"facts: {facts}; short pixel train: {results['pixel_train']}")
    save_results(args.out, "device_check", results, vars(args))
    return results


if __name__ == "__main__":
    main()
