"""Which half of RIG stops the push: what the agent observes, or what it is rewarded with?

    python -m ssrl.benchmarks.rig_factorial --encoder VAE --observe latent|state|pixels --reward latent|state
        --out FOLDER [--env-steps 100000] [--seed 0] [--size 48] [--hand-weight 1.0] [--reward-scale 1.0]
        [--no-velocities] [--frame-stack K] [--updates-per-step N] [--algo sac|td3] [--set KEY=VALUE ...]
        [--critic-observe latent|state] [--features mean|trunk]

RIG changes two things at once against the state oracle: the agent observes the VAE's latents
instead of the true state, and it is rewarded with the latent distance ``-||e(s) - e(g)||``
instead of a distance between true states. This script trains SAC (or TD3) + HER (HER's recipe, as
``ssrl train`` gives goal envs, with ``her_ratio=0.4`` and no imagined goals) on
``ssrl/Push-v0`` from pixels with each half set separately:

* ``--observe latent``: observation and goals are the encoder's latents of the frame and of the
  goal image (``EncodedObservation``); ``--observe state``: the state oracle's observation
  ``[hand_xy, puck_xy, hand_vel_xy, puck_vel_xy]`` and goals ``[hand_xy, puck_xy]``;
  ``--no-velocities`` drops the velocities, as a latent of one frame must (is it the missing
  motion that makes the latent observation slow?); ``--frame-stack K`` gives the latent
  observation the last K frames instead, each encoded, the K latents concatenated (the goals stay
  one frame's latent). ``--updates-per-step N``: N gradient updates per env step (RIG's pusher: 4).
  ``--algo td3``: TD3 instead of SAC (RIG's own agent). ``--set KEY=VALUE``: any other agent
  hyper-parameter, as ``ssrl train --set`` (e.g. ``critic_layer_norm=true``,
  ``critic_model_weight=1``, ``critic_hidden_dims=[256, 256, 256]``).
  ``--critic-observe state`` with ``--observe latent --reward state``: the critics read the
  state oracle's observation and state goals while the actor reads latents (an asymmetric
  actor-critic, ``AgentConfig.critic_keys``): is it the value function or the policy that learns
  slowly from latents? ``--observe state --reward latent --critic-observe latent`` is the
  reverse. The critics' source must be the reward's: their observation rides in the entry
  ``critic_observation``, their goal is the reward's desired entry (relabelled with it).
* ``--observe pixels``: the actor and critics read the frame itself through a copy of the VAE's
  encoder that the critics' gradient trains (the ``finetune`` regime: encoder learning rate 1e-4,
  the actor's gradient stopped at the encoder), while the goals stay the frozen VAE's latents of
  the goal images; everything else is the latent rows' agent (:func:`latent_agent_on_pixels`).
  Does a critic that shapes its own input from the VAE's start learn what the latent critic does
  not? Departure from the latent rows: pixel agents do not standardise their inputs (the goal
  latents enter raw). ``--features trunk``: every latent entry is the VAE encoder's conv trunk
  output flattened (288 features at 48x48) instead of its 32-d mean, which is a linear map of it:
  is the bottleneck what the critic lacks?
* ``--reward latent``: RIG's ``-||z_achieved - z_desired||``; ``--reward state``: multiworld's
  ``-||[w (hand - hand_g), puck - puck_g]||`` (``w = --hand-weight``; 1 is RIG's state oracle).
* ``--reward-scale c`` multiplies either reward by ``c``: the latent distance runs about 20 times
  the state distance in metres (0.2 latent units per cm of hand on the 32-latent VAE), and SAC's
  temperature starts the same for both, so scale alone may change how long the agent explores.

Where the reward's source differs from the observation's, the reward's achieved and desired
values ride along as entries the replay stores but the agent never reads (``reward_achieved``,
``reward_desired``), and relabelled rows are rewarded on those of the same instants, so one
reward function holds everywhere. Every episode pursues the env's goal image (no imagined
goals: they exist in latent space only). Evaluation: 20 episodes on the env's goals every 10k
env steps, final puck and hand distances in ``eval.csv``, like ``ssrl train``. A run resumes
from its folder.

``latent``/``latent`` is RIG exploring on the env's goals; ``state``/``state`` the oracle (seen
here through a pixel env, so it renders at every step as the others do).
"""

from __future__ import annotations

import argparse
import copy
import pathlib

import gymnasium as gym
import numpy as np
import torch

SOURCES = ("latent", "state")
OBSERVED = (*SOURCES, "pixels")  # the actor may also read the frame itself (pixels: the critic trains a VAE copy)
FEATURES = ("mean", "trunk")  # what a latent entry holds: the VAE's mean, or its conv trunk's output
REWARD_ENTRIES = ("reward_achieved", "reward_desired")
CRITIC_OBSERVATION = "critic_observation"


class ObserveAndReward(gym.Wrapper):
    """A Push env seen through ``EncodedObservation`` (latent entries; the env itself gives the
    true state, ``state_observation()``), re-served with the observation from one source and the
    reward from another."""

    def __init__(
        self,
        env: gym.Env,
        observe: str,
        reward: str,
        hand_weight: float = 1.0,
        reward_scale: float = 1.0,
        velocities: bool = True,
        critic: str | None = None,
    ) -> None:
        super().__init__(env)
        critic = observe if critic is None else critic
        checks = (("observe", observe, OBSERVED), ("reward", reward, SOURCES), ("critic", critic, OBSERVED))
        for name, value, valid in checks:
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if critic != observe and critic != reward:
            raise ValueError(
                f"a critic that observes {critic!r} while the actor observes {observe!r} reads the reward's goals "
                f"(relabelled with the reward), so it needs reward={critic!r}, got reward={reward!r}"
            )
        if observe == "pixels" and critic != "pixels":
            raise ValueError("a pixel actor's critics read its frames (they train its encoder): critic must be pixels")
        if (observe == "pixels") != bool(getattr(env, "observe_frames", False)):
            raise ValueError("observe='pixels' (and only it) serves the frame: encode with observe_frames=True")
        if not (np.isfinite(reward_scale) and reward_scale > 0):
            raise ValueError(f"reward_scale must be a finite number > 0, got {reward_scale!r}")
        if not velocities and observe != "state":
            raise ValueError("velocities=False drops the state observation's velocities; it needs observe='state'")
        self.observe, self.reward_source, self.hand_weight = observe, reward, float(hand_weight)
        self.critic_source = critic
        self.reward_scale = float(reward_scale)
        latent = env.observation_space.spaces
        goal_dim = self.env.unwrapped.state_desired_goal.shape[0]
        # [hand_xy, object_xy..., velocities...]: the positions are the goal's layout.
        self.state_dim = self.env.unwrapped.state_observation()["observation"].shape[0] if velocities else goal_dim

        def box(n: int) -> gym.spaces.Box:
            return gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)

        spaces = {  # (pixels: the encoding left the observation a frame)
            "latent": {k: latent[k] for k in ("observation", "achieved_goal", "desired_goal")},
            "pixels": {k: latent[k] for k in ("observation", "achieved_goal", "desired_goal")},
            "state": {
                "observation": box(self.state_dim),
                "achieved_goal": box(goal_dim),
                "desired_goal": box(goal_dim),
            },
        }
        served = dict(spaces[observe])
        if reward != observe:
            served.update(zip(REWARD_ENTRIES, (spaces[reward]["achieved_goal"], spaces[reward]["desired_goal"])))
        if critic != observe:
            served[CRITIC_OBSERVATION] = spaces[critic]["observation"]
        self.observation_space = gym.spaces.Dict(served)
        self.reward_keys = REWARD_ENTRIES if reward != observe else ("achieved_goal", "desired_goal")

    def _source(self, name: str, latent_obs: dict) -> dict:
        if name in ("latent", "pixels"):  # (pixels: the observation entry is the frame)
            return latent_obs
        state = self.env.unwrapped.state_observation()
        return dict(state, observation=state["observation"][: self.state_dim])

    def _serve(self, latent_obs: dict) -> dict:
        observed = self._source(self.observe, latent_obs)
        obs = {k: observed[k] for k in ("observation", "achieved_goal", "desired_goal")}
        if self.reward_source != self.observe:
            rewarded = self._source(self.reward_source, latent_obs)
            obs.update(zip(REWARD_ENTRIES, (rewarded["achieved_goal"], rewarded["desired_goal"])))
        if self.critic_source != self.observe:
            obs[CRITIC_OBSERVATION] = self._source(self.critic_source, latent_obs)["observation"]
        return obs

    def compute_reward(self, achieved_goal, desired_goal, info):
        """Minus the reward source's distance times ``reward_scale``, vectorised (latent: plain;
        state: the hand weighted)."""
        from ssrl.envs.manipulation.push import weighted_goal_distance

        weight = self.hand_weight if self.reward_source == "state" else 1.0
        return (-self.reward_scale * weighted_goal_distance(achieved_goal, desired_goal, weight)).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._serve(obs), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        obs = self._serve(obs)
        reward = float(self.compute_reward(obs[self.reward_keys[0]], obs[self.reward_keys[1]], info))
        return obs, reward, terminated, truncated, info


class TrunkFeatures(torch.nn.Module):
    """A VAE encoder's conv trunk, flattened: the features its mean is a linear map of (288 of
    them for the 48x48 fast encoder, against 32 latents)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.trunk, self.input_shape = encoder.trunk, encoder.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).flatten(1)


def make_env(
    encoder,
    observe: str,
    reward: str,
    size: int,
    hand_weight: float,
    reward_scale: float = 1.0,
    velocities: bool = True,
    frame_stack: int = 1,
    critic: str | None = None,
    features: str = "mean",
) -> gym.Env:
    from ssrl.envs import make
    from ssrl.representations import EncodedObservation

    if frame_stack > 1 and observe != "latent":
        raise ValueError("frame_stack stacks the latent observation's frames; it needs observe='latent'")
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if features == "trunk":
        encoder = TrunkFeatures(encoder)
    # No goal sampler: env goals. A stack of k frames is encoded frame by frame (k latents).
    frames = observe == "pixels"  # only the goals encoded; the observation stays the frame
    env = EncodedObservation(make("ssrl/Push-v0", size=size, frame_stack=frame_stack), encoder, observe_frames=frames)
    return ObserveAndReward(env, observe, reward, hand_weight, reward_scale, velocities, critic)


def latent_agent_on_pixels() -> dict:
    """Hyper-parameters that make a pixel agent the latent rows' agent: no pixel preset (the
    config's defaults: 256 x 2 networks, batch 256, one target and one loss), HER's goal preset
    on top as for the latent rows, no augmentation (the latent rows see none), and the encoder's
    learning rate at 1e-4 (the bench's ``finetune`` default: the encoder starts pretrained). The
    one difference left: the critics' gradient reaches the encoder."""
    return {"pixel_preset": "none", "augment": None, "encoder_lr": 1e-4}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="a beta-VAE checkpoint (the latents of both halves)")
    parser.add_argument("--observe", required=True, choices=OBSERVED)
    parser.add_argument(
        "--features", default="mean", choices=FEATURES, help="latent entries: the VAE's mean or its conv trunk"
    )
    parser.add_argument("--reward", required=True, choices=SOURCES)
    parser.add_argument("--hand-weight", type=float, default=1.0, help="the state reward's weight on the hand")
    parser.add_argument("--reward-scale", type=float, default=1.0, help="multiplies the reward")
    parser.add_argument(
        "--no-velocities", dest="velocities", action="store_false", help="observe=state: positions only"
    )
    parser.add_argument("--frame-stack", type=int, default=1, help="observe=latent: the last K frames' latents")
    parser.add_argument("--updates-per-step", type=int, default=1, help="gradient updates per env step")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="agent hyper-parameter, as ssrl train's"
    )
    parser.add_argument(
        "--critic-observe", choices=OBSERVED, help="what the critics read (default: what the actor observes)"
    )
    parser.add_argument("--algo", default="sac", choices=("sac", "td3"), help="the agent (RIG's: TD3)")
    parser.add_argument("--size", type=int, default=48, help="image size (the VAE's)")
    parser.add_argument("--env-steps", type=int, default=100_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from ssrl.agents import ALGOS, Trainer
    from ssrl.cli import parse_options
    from ssrl.representations import load_representation

    overrides = parse_options(args.set)  # a malformed option is refused before any work

    from ssrl.utils import one_thread

    one_thread()  # one torch, OpenMP and renderer thread, as a bench cell (before anything renders)
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    encoder = load_representation(args.encoder).eval().encoder
    # The pixel actor's encoder: a copy the critics train (the env's stays frozen for the goals).
    agent_encoder = copy.deepcopy(encoder).requires_grad_(True) if args.observe == "pixels" else None
    options = (
        args.observe,
        args.reward,
        args.size,
        args.hand_weight,
        args.reward_scale,
        args.velocities,
        args.frame_stack,
        args.critic_observe,
        args.features,
    )
    env, eval_env = make_env(encoder, *options), make_env(encoder, *options)
    checkpoint = out / "checkpoint" / "agent.pt"
    # An asymmetric critic: its own observation, the reward's goal.
    critic_keys = (CRITIC_OBSERVATION, REWARD_ENTRIES[1]) if env.critic_source != env.observe else None
    if checkpoint.exists():
        agent = ALGOS[args.algo].load(checkpoint, env=env, encoder=agent_encoder)
        if agent.config.critic_keys != critic_keys:
            raise ValueError(
                f"{out} holds a run whose critics read {agent.config.critic_keys or 'what the actor reads'}, not "
                f"{critic_keys or 'what the actor reads'}: resume it with its own --critic-observe"
            )
        agent.replay.load(out / "checkpoint" / "replay", agent.replay_meta)
    else:
        hyperparams = dict(her_ratio=0.4, imagined_goal_ratio=0.0, updates_per_step=args.updates_per_step)
        if args.observe == "pixels":
            hyperparams.update(latent_agent_on_pixels())
        if critic_keys:
            hyperparams["critic_keys"] = critic_keys
        agent = ALGOS[args.algo](env, seed=args.seed, encoder=agent_encoder, **{**hyperparams, **overrides})
    trainer = Trainer(agent, env, eval_env, eval_episodes=args.eval_episodes, run_dir=out, tensorboard=False)
    summary = trainer.train(args.env_steps)
    env.close()
    eval_env.close()
    return summary


if __name__ == "__main__":
    main()
