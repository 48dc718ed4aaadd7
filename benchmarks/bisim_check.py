"""Do the latent distances of a jointly trained DBC encoder track reward differences?

    python -m ssrl.benchmarks.bisim_check --run runs/dbc-joint-cartpole-s0 [--compare runs/pixel-sac-cartpole-s0]

Loads the agent of a ``ssrl train --aux dbc`` run, collects held-out transitions in its env
(half the episodes with its own policy, half with held random actions, new seeds), and for
random pairs of them reports the Pearson and Spearman correlations between the L1 latent
distance ||phi(s_i) - phi(s_j)||_1 and the reward difference |r_i - r_j|, for the DBC encoder,
for the encoders of the ``--compare`` runs (e.g. pixel SAC without the bisimulation loss) and
for a random-init encoder of the same architecture. Bisimulation asks for a high correlation.
"""

from __future__ import annotations

import argparse
import json
import pathlib


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder of `ssrl train --aux dbc`")
    parser.add_argument("--compare", nargs="*", default=[], help="other run folders whose encoders to score too")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--out", default="outputs/benchmarks/bisim_check.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ssrl.agents import SAC
    from ssrl.agents.run import make_env
    from ssrl.benchmarks.common import print_table, save_results
    from ssrl.envs.policies import StickyRandomPolicy
    from ssrl.representations.backbones import encoder_from_config
    from ssrl.representations.control.dbc import bisimulation_correlation

    run = pathlib.Path(args.run)
    spec = json.loads((run / "run.json").read_text())
    env = make_env(spec["env_id"], spec["env_kwargs"])
    agent = SAC.load(run / "checkpoint" / "agent.pt", env=env)

    # Held-out transitions: new seeds, the agent's policy and held random actions.
    obs_list, rewards = [], []
    explorer = StickyRandomPolicy(env)
    for e in range(args.episodes):
        obs, _ = env.reset(seed=10_000 + e)
        explorer.reset(10_000 + e)
        done = False
        while not done:
            action = agent.act(obs, deterministic=True) if e % 2 == 0 else explorer(obs, {})
            next_obs, reward, terminated, truncated, _ = env.step(action)
            obs_list.append(obs)
            rewards.append(reward)
            obs, done = next_obs, terminated or truncated
    transitions = {"obs": np.stack(obs_list), "reward": np.asarray(rewards, np.float32)}

    def encode_with(encoder):
        def encode(batch):
            with torch.no_grad():
                return np.concatenate(
                    [encoder(torch.as_tensor(batch[i : i + 256])).float().numpy() for i in range(0, len(batch), 256)]
                )

        return encode

    encoders = {f"DBC joint ({run.name})": agent.encoder}
    for other in args.compare:
        other = pathlib.Path(other)
        other_env = make_env(json.loads((other / "run.json").read_text())["env_id"], spec["env_kwargs"])
        encoders[f"{other.name}"] = SAC.load(other / "checkpoint" / "agent.pt", env=other_env).encoder
    torch.manual_seed(0)
    encoders["random-init encoder"] = encoder_from_config(agent.encoder.config)
    results = {}
    for name, encoder in encoders.items():
        encoder.eval()
        results[name] = bisimulation_correlation(encode_with(encoder), transitions, pairs=args.pairs)
    print(f"\n{len(transitions['reward'])} held-out transitions of {spec['env_id']}, {args.pairs} random pairs")
    print_table(
        ["encoder", "Pearson(L1 latent dist, |dr|)", "Spearman"],
        [[k, f"{v['pearson']:.3f}", f"{v['spearman']:.3f}"] for k, v in results.items()],
    )
    save_results(args.out, "bisim_check", results, vars(args))
    return results


if __name__ == "__main__":
    main()
