"""Do the latents hold what pushing needs? Clone the state oracle's policy from them and push.

    python -m ssrl.benchmarks.rig_policy_probe --oracle RUN_DIR --encoder VAE --out FILE.json
        [--episodes 400] [--noise 0.3] [--steps 6000] [--eval-episodes 20] [--size 48] [--seed 0]

A linear or kNN probe says how well a latent encodes the hand and the puck, not whether a policy
can act on it. This probe asks the question RL asks, without RL's credit assignment: the state
oracle (a finished ``ssrl train --env ssrl/Push-v0 -o from_pixels=false`` run) pushes on the
pixel env while its deterministic action, with Gaussian noise of std ``--noise`` added so the data
covers recoveries, is recorded beside three inputs of the same instants:

* ``latent``: the encoder's latents of the frame and of the goal image (what RIG's agent sees);
* ``positions``: hand and puck positions and their goals (no velocities, as one frame holds none);
* ``state``: the oracle's own input (positions, velocities, goals).

One MLP per input (256, 256, ReLU, tanh output; inputs standardised by the training data's mean
and std) is fitted by mean squared error to the oracle's noiseless actions for ``--steps`` Adam
steps (lr 1e-3, batch 256); the last tenth of the episodes is held out for the validation error.
Each clone then pushes on ``--eval-episodes`` evaluation goals (env seeds 0, 1, ...; the data's
episodes use seeds from 10,000 on), and so does the oracle: final puck distance and success
(within 5 cm).
If the latent clone pushes as well as the positions clone, the latents hold what the policy needs
and a slow latent agent is slow for RL's reasons, not the representation's.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np

SOURCES = ("latent", "positions", "state")
SUCCESS = 0.05  # m: Push's success threshold on the puck


def collect(env, oracle, episodes: int, noise: float, seed: int) -> dict[str, np.ndarray]:
    """Roll the oracle out on ``env`` (Push seen through ``EncodedObservation``) with action noise;
    per step the three inputs, the oracle's noiseless action and the episode index."""
    rng = np.random.default_rng([seed, 7])
    rows: dict[str, list] = {k: [] for k in (*SOURCES, "action", "episode")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 1_000_000 + episode)  # apart from the evaluation seeds
        done = False
        while not done:
            inputs, state = inputs_of(env, obs)
            action = oracle_action(oracle, state)
            for key in SOURCES:
                rows[key].append(inputs[key])
            rows["action"].append(action)
            rows["episode"].append(episode)
            noisy = np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0).astype(np.float32)
            obs, _, terminated, truncated, _ = env.step(noisy)
            done = terminated or truncated
    return {k: np.asarray(v, np.float32 if k != "episode" else np.int64) for k, v in rows.items()}


def inputs_of(env, obs: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The three inputs of this instant, and the oracle's state observation dict."""
    state = env.unwrapped.state_observation()
    goal_dim = len(state["desired_goal"])  # [hand_xy, puck_xy]: the layout of the positions
    inputs = {
        "latent": np.concatenate([obs["observation"], obs["desired_goal"]]),
        "positions": np.concatenate([state["observation"][:goal_dim], state["desired_goal"]]),
        "state": np.concatenate([state["observation"], state["desired_goal"]]),
    }
    return inputs, state


def oracle_action(oracle, state: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(oracle.act(state, deterministic=True), np.float32)


def fit_clone(x: np.ndarray, y: np.ndarray, steps: int, seed: int):
    """An MLP from standardised ``x`` to actions ``y`` in [-1, 1], fitted by MSE; returns
    ``(predict, first_loss, last_loss)``."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    mean, std = x_t.mean(0), x_t.std(0) + 1e-3
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    net.append(nn.Linear(256, y.shape[1])).append(nn.Tanh())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        i = torch.randint(len(x_t), (256,), generator=generator)
        loss = (net((x_t[i] - mean) / std) - y_t[i]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    @torch.no_grad()
    def predict(inputs: np.ndarray) -> np.ndarray:
        return net((torch.from_numpy(np.atleast_2d(inputs).astype(np.float32)) - mean) / std).numpy()

    return predict, losses[0], float(np.mean(losses[-100:]))


def evaluate(env, act, episodes: int) -> list[float]:
    """Final puck distances of ``act(inputs, state) -> action`` on evaluation seeds 0..episodes-1."""
    finals = []
    for episode in range(episodes):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            inputs, state = inputs_of(env, obs)
            obs, _, terminated, truncated, info = env.step(act(inputs, state))
            done = terminated or truncated
        achieved, desired = np.asarray(info["state_achieved_goal"]), np.asarray(info["state_desired_goal"])
        finals.append(float(np.linalg.norm(achieved[2:4] - desired[2:4])))
    return finals


def _summary(finals: list[float]) -> dict[str, Any]:
    """Mean and median final puck distance (a clone that pushes the puck far off in a few
    episodes moves the mean, not the median), successes, and every episode's distance."""
    return {
        "final_puck_distance": float(np.mean(finals)),
        "median_final_puck_distance": float(np.median(finals)),
        "successes": int(sum(d < SUCCESS for d in finals)),
        "episodes": len(finals),
        "finals": [float(d) for d in finals],
    }


def run(oracle_dir, encoder_path, episodes=400, noise=0.3, steps=6000, eval_episodes=20, size=48, seed=0):
    import torch

    from ssrl.agents.policy import AgentPolicy
    from ssrl.envs import make
    from ssrl.representations import EncodedObservation, load_representation

    if episodes < 2:
        raise ValueError(
            f"the probe holds out the last tenth of the episodes (at least one): use >= 2 episodes, got {episodes}"
        )
    torch.set_num_threads(1)
    state_env = make("ssrl/Push-v0", from_pixels=False)
    oracle = AgentPolicy(oracle_dir, state_env).agent  # refuses a pixel or latent agent, another env
    state_env.close()
    encoder = load_representation(encoder_path).eval().encoder
    env = EncodedObservation(make("ssrl/Push-v0", size=size), encoder)  # the env's goals, no imagined ones
    data = collect(env, oracle, episodes, noise, seed)
    held_out = data["episode"] >= episodes - max(1, episodes // 10)
    train = ~held_out
    results: dict[str, Any] = {
        "oracle": str(oracle_dir),
        "encoder": str(encoder_path),
        "episodes": episodes,
        "steps_of_data": int(len(data["action"])),
        "noise": noise,
        "fit_steps": steps,
        "oracle_eval": _summary(evaluate(env, lambda inputs, state: oracle_action(oracle, state), eval_episodes)),
    }
    for key in SOURCES:
        predict, first, last = fit_clone(data[key][train], data["action"][train], steps, seed)
        validation = float(np.mean((predict(data[key][held_out]) - data["action"][held_out]) ** 2))
        finals = evaluate(env, lambda inputs, state, p=predict, k=key: p(inputs[k])[0], eval_episodes)
        results[key] = {"first_mse": first, "train_mse": last, "validation_mse": validation, **_summary(finals)}
    env.close()
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", required=True, help="run folder of a state agent on ssrl/Push-v0")
    parser.add_argument("--encoder", required=True, help="a representation checkpoint (RIG's VAE)")
    parser.add_argument("--episodes", type=int, default=400, help="oracle episodes recorded")
    parser.add_argument("--noise", type=float, default=0.3, help="std of the Gaussian noise on the executed action")
    parser.add_argument("--steps", type=int, default=6000, help="Adam steps per clone")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--size", type=int, default=48, help="image size (the encoder's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="a JSON file")
    args = parser.parse_args(argv)
    from ssrl.utils import write_json

    results = run(
        args.oracle, args.encoder, args.episodes, args.noise, args.steps, args.eval_episodes, args.size, args.seed
    )
    write_json(pathlib.Path(args.out), results)
    n = args.eval_episodes
    print(f"{'input':<10} {'val. mse':>9} {'final puck: mean':>17} {'median':>9} {'successes':>10}")
    for key in (*SOURCES, "oracle_eval"):
        r = results[key]
        mse = f"{r['validation_mse']:>9.4f}" if "validation_mse" in r else " " * 9
        mean, median = 100 * r["final_puck_distance"], 100 * r["median_final_puck_distance"]
        name = "oracle" if key == "oracle_eval" else key
        print(f"{name:<10} {mse} {mean:>14.1f} cm {median:>6.1f} cm {r['successes']:>6}/{n}")
    print(json.dumps({"written": args.out}))
    return results


if __name__ == "__main__":
    main()
