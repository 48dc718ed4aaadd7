"""Stable-Baselines3 on ssrl envs, four ways (a runnable, documented example).

    python -m ssrl.agents.sb3_example [--steps 3000]

1. SB3's SAC from pixels, with the suite's conv encoder as its features extractor
   (:class:`~ssrl.agents.sb3.SSRLEncoderExtractor`);
2. SB3's TD3 on state observations of a DMC task;
3. SB3's SAC on the latents of a frozen encoder: ``EncodedObservation(env, encoder)`` and a plain
   ``MlpPolicy`` (here a random-init encoder; in practice ``load_representation(path).encoder``);
4. SB3's SAC + ``HerReplayBuffer`` on ``ssrl/Push-v0`` (state goals, vectorised ``compute_reward``).

Each trains for ``--steps`` env steps and prints its mean evaluation return; with a few thousand
steps these only show that the pieces fit together, not good policies.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch

import ssrl  # noqa: F401  (registers the ssrl/ envs)
from ssrl.agents.sb3 import SSRLEncoderExtractor
from ssrl.representations import EncodedObservation, make_encoder


def sac_pixels_model(size: int = 84, learning_starts: int = 500, **extractor_kwargs):
    """SB3's SAC from pixels on cartpole-swingup with :class:`SSRLEncoderExtractor`, untrained.

    ``extractor_kwargs`` go to the extractor (default ``arch="fast", feature_dim=50``; pass
    ``encoder=pretrained, freeze=True`` for a frozen pretrained encoder)."""
    from stable_baselines3 import SAC

    env = gym.make("ssrl/cartpole-swingup-v0", size=size)
    extractor_kwargs = dict(dict(arch="fast", feature_dim=50), **extractor_kwargs)
    model = SAC(
        "CnnPolicy",
        env,
        buffer_size=10_000,
        learning_starts=learning_starts,
        batch_size=64,
        device="auto",
        policy_kwargs=dict(
            features_extractor_class=SSRLEncoderExtractor,
            features_extractor_kwargs=extractor_kwargs,
            net_arch=[256, 256],
        ),
    )
    return model, env


def sac_from_pixels(steps: int, size: int = 84):
    model, env = sac_pixels_model(size, learning_starts=min(500, steps // 2))
    return model.learn(steps), env


def td3_from_states(steps: int):
    from stable_baselines3 import TD3

    env = gym.make("ssrl/cheetah-run-v0", from_pixels=False, action_repeat=1)
    model = TD3("MlpPolicy", env, learning_starts=min(1000, steps // 2), device="auto")
    return model.learn(steps), env


def sac_on_frozen_latents(steps: int, encoder: torch.nn.Module | None = None, size: int = 84):
    from stable_baselines3 import SAC

    env = gym.make("ssrl/cartpole-swingup-v0", size=size)
    encoder = encoder or make_encoder("fast", 9, size, 50)
    wrapped = EncodedObservation(env, encoder)
    model = SAC("MlpPolicy", wrapped, learning_starts=min(500, steps // 2), device="auto")
    return model.learn(steps), wrapped


def sac_her_push(steps: int):
    from stable_baselines3 import SAC, HerReplayBuffer

    env = gym.make("ssrl/Push-v0", from_pixels=False)
    model = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future"),
        learning_starts=max(200, min(1000, steps // 2)),
        device="auto",
    )
    return model.learn(steps), env


def mean_return(model, env, episodes: int = 3) -> float:
    from stable_baselines3.common.evaluation import evaluate_policy

    mean, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    return float(mean)


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for name, fn in [
        ("SAC from pixels (ssrl encoder as extractor)", sac_from_pixels),
        ("TD3 from states", td3_from_states),
        ("SAC on frozen-encoder latents", sac_on_frozen_latents),
        ("SAC + HER on Push", sac_her_push),
    ]:
        model, env = fn(args.steps)
        results[name] = mean_return(model, env)
        print(f"{name}: mean return {results[name]:.1f} after {args.steps} steps")
    return results


if __name__ == "__main__":
    main()
