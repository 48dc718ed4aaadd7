"""Instance grasping with grasp2vec's goal embeddings (Jang, Devin et al. 2018, Sec. 5).

``ssrl/GraspGoal-v0`` from pixels shows the bin and asks for one object by an image of it.
:class:`EmbeddedGraspGoals` keeps the bin image as the observation (the agent's own conv encoder
reads it, as the paper's QT-Opt network reads the raw scene) and replaces both goal images by
the object embedding ``phi_o`` of a representation (grasp2vec's object tower):

* ``desired_goal = phi_o(g)``, the embedding of the goal image (once per episode);
* ``achieved_goal = phi_o(o)`` when something was lifted (``o``: the lifted object held up to the
  hand camera), a zero vector when the grasp failed. Whether the gripper holds something is the
  one fact taken from the robot, as a real gripper's closing width tells it; which object it
  holds is not.

Rewards (``reward``), one function everywhere (a step's and a relabelled row's):

* ``"embedding"`` (grasp2vec): ``r = phi_o(g) . phi_o(o)``, the source text's formula, 0 after a
  failed grasp; no object id is read.
* ``"cosine"``: the same embeddings with their norms divided out,
  ``r = phi_o(g) . phi_o(o) / (||phi_o(g)|| ||phi_o(o)||)``, 0 after a failed grasp. Ours (the
  source text and the public code write the plain product; the paper's RL code is not public):
  grasp2vec's n-pairs loss leaves the norm free, and on our objects the norm varies widely
  (9.0 +- 3.3 for the grasping suite's model) while telling objects apart less than the
  direction does: two lifts of one object against two different objects of a bin are told apart
  with AUC 0.84 by the product and 0.99 by the cosine (``benchmarks/grasp_reward_check.py``), so
  the product can pay an object of the wrong kind more than the asked one.
* ``"any"`` (indiscriminate grasping, the paper's first baseline): 1 when anything was lifted.
* ``"oracle"`` (the paper's oracle labels): 1 when the goal object itself was lifted, from the
  simulator's ids. The ids travel as side entries (``label_achieved_goal``: the lifted object,
  one-hot; ``label_desired_goal``: the goal, one-hot) that the agent stores but never reads, so
  relabelled rows are scored on them (``reward_keys``).

Every grasp is one episode (``terminated`` after each attempt; the env draws a new bin at
reset): the contextual bandit the issue allows for SAC, so Q estimates a grasp's expected reward
and no value is bootstrapped across attempts. The env's own success (the goal object lifted)
stays in ``info["is_success"]`` for evaluation only.

Relabelling, with the agent's replay: HER's "future" strategy on one-step episodes draws the
next slot's achieved goal, the object this very grasp lifted, which is the paper's *posthoc
labelling* (a successful grasp of any object stored with that object as its goal; a failed one
gets the zero goal and reward 0). *Auxiliary goals* are the replay's imagined goals
(``imagined_goal_ratio``): :meth:`EmbeddedGraspGoals.sample_goals` gives each relabelled row the
goal of another row of the same batch (another episode's goal object, mostly not the one grasped),
scored by the same embedding reward. Departure from the paper: its auxiliary goals are drawn
from a pool of past goals per training iteration; ours from the batch, which needs no state
outside the replay (so resume stays exact).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

INSTANCE_REWARDS = ("embedding", "cosine", "any", "oracle")
LABEL_KEYS = ("label_achieved_goal", "label_desired_goal")
# ``ssrl train --goal-reward`` -> the instance-grasping reward: the representation's (latent), its
# cosine, the simulator's object ids (env: the paper's oracle labels) or any lift (indiscriminate
# grasping).
GOAL_REWARDS = {"latent_distance": "embedding", "cosine": "cosine", "env": "oracle", "any": "any"}


def is_instance_grasping(env: gym.Env) -> bool:
    """Whether ``env`` is goal-conditioned grasping (``ssrl/GraspGoal-v0``; plain ``Grasp-v0`` is not)."""
    return bool(getattr(env.unwrapped, "goal_conditioned", False))


def instance_grasping(env: gym.Env, embed: nn.Module, reward: str = "latent_distance") -> EmbeddedGraspGoals:
    """``env`` with goals embedded by ``embed`` and the reward ``--goal-reward`` names (a key of
    :data:`GOAL_REWARDS`)."""
    if reward not in GOAL_REWARDS:
        raise ValueError(
            f"instance grasping rewards are {', '.join(GOAL_REWARDS)} (embedding, its cosine, oracle labels, "
            "any lift), "
            f"got {reward!r}"
        )
    return EmbeddedGraspGoals(env, embed, reward=GOAL_REWARDS[reward])


class UnitLength(nn.Module):
    """``encoder``'s output scaled to unit length (a dot product of two is their cosine)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_shape = getattr(encoder, "input_shape", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.encoder(x).float(), dim=-1)


class EmbeddedGraspGoals(gym.Wrapper):
    """GraspGoal-v0 (pixels) with goals embedded by ``embed`` (see the module docstring).

    Args:
        env: a pixel ``ssrl/GraspGoal-v0`` (dict observation: image ``observation``, image goals).
        embed: image -> embedding, e.g. grasp2vec's ``object`` tower; frozen here (eval mode, no
            gradient). Its ``input_shape`` must be the goal images' shape (the env's
            ``triplet_size``).
        reward: ``"embedding"``, ``"cosine"``, ``"any"`` or ``"oracle"``.
    """

    def __init__(self, env: gym.Env, embed: nn.Module, reward: str = "embedding") -> None:
        super().__init__(env)
        if reward not in INSTANCE_REWARDS:
            raise ValueError(f"unknown instance-grasping reward {reward!r}; use one of {', '.join(INSTANCE_REWARDS)}")
        spaces = getattr(env.observation_space, "spaces", {})
        if not {"observation", "achieved_goal", "desired_goal"} <= set(spaces) or not is_instance_grasping(env):
            raise ValueError("EmbeddedGraspGoals wraps ssrl/GraspGoal-v0 (goal-conditioned grasping)")
        goal_shape = tuple(spaces["desired_goal"].shape)
        if len(goal_shape) != 3:
            raise ValueError("EmbeddedGraspGoals needs image goals: make ssrl/GraspGoal-v0 with from_pixels=True")
        want = tuple(getattr(embed, "input_shape", goal_shape))
        if want != goal_shape:
            raise ValueError(
                f"the embedding takes images of shape {want}, the env's goal images are {goal_shape}: "
                + (
                    f"make the env with triplet_size={want[-1]}"
                    if want[0] == goal_shape[0]
                    else "goal images are single frames: pretrain the representation with frame_stack=1"
                )
            )
        self.embed = embed.eval().requires_grad_(False)
        self.device = next(embed.parameters()).device
        self.reward_type = reward
        with torch.no_grad():
            dim = int(self._embed(np.zeros((1, *goal_shape), np.uint8)).shape[-1])
        vector = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        new = {"observation": spaces["observation"], "achieved_goal": vector, "desired_goal": vector}
        self.reward_keys = ("achieved_goal", "desired_goal")  # the entries every reward is computed from
        if reward == "oracle":
            labels = gym.spaces.Box(0.0, 1.0, (env.unwrapped.n_objects,), np.float32)
            new.update(dict.fromkeys(LABEL_KEYS, labels))
            self.reward_keys = LABEL_KEYS
        self.observation_space = gym.spaces.Dict(new)
        self._desired: np.ndarray | None = None

    @torch.no_grad()
    def _embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(images)).to(self.device)
        return self.embed(x).float().cpu().numpy()

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """Vectorised over leading dimensions: the dot product (``"embedding"``), its cosine
        (``"cosine"``; 0 where either embedding is zero, as after a failed grasp), whether
        anything was lifted (``"any"``: a non-zero achieved embedding), or, on the one-hot id
        labels, whether the goal object was (``"oracle"``)."""
        a = np.asarray(achieved_goal, np.float32)
        if self.reward_type == "any":
            return np.any(a != 0, axis=-1).astype(np.float32)
        d = np.asarray(desired_goal, np.float32)
        product = np.sum(a * d, axis=-1)
        if self.reward_type == "cosine":
            norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(d, axis=-1)
            return np.where(norms > 0, product / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
        return (product > 0.5).astype(np.float32) if self.reward_type == "oracle" else product.astype(np.float32)

    @property
    def can_imagine_goals(self) -> bool:
        return True

    def sample_goals(self, n: int, rng: np.random.Generator, like: np.ndarray | None = None) -> np.ndarray:
        """Auxiliary goals: each of the ``n`` rows gets the goal of another row of ``like`` (the
        relabelled rows' own goals), a random derangement when there are two or more."""
        if like is None or len(like) == 0:
            raise ValueError("auxiliary grasp goals are other rows' goals: sample_goals needs like=")
        like = np.asarray(like, np.float32).reshape(len(like), -1)
        if len(like) == 1:
            return like.copy()
        shift = rng.integers(1, len(like), size=len(like))  # never 0: never a row's own goal
        return like[(np.arange(len(like)) + shift) % len(like)]

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._desired = self._embed(obs["desired_goal"][None])[0]
        return self._observation(obs, None), info

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)
        obs = self._observation(obs, info)
        achieved, desired = self.reward_keys
        reward = self.compute_reward(obs[achieved], obs[desired], info)
        return obs, float(reward), True, False, info  # one grasp, one episode

    def _observation(self, obs: dict[str, np.ndarray], info: dict[str, Any] | None) -> dict[str, np.ndarray]:
        lifted = info is not None and bool(info["grasp_success"])
        achieved = self._embed(obs["achieved_goal"][None])[0] if lifted else np.zeros_like(self._desired)
        out = {"observation": obs["observation"], "achieved_goal": achieved, "desired_goal": self._desired.copy()}
        if self.reward_type == "oracle":
            n = self.env.unwrapped.n_objects
            held, goal = np.zeros(n, np.float32), np.zeros(n, np.float32)
            if lifted and info["object_id"] >= 0:
                held[int(info["object_id"])] = 1.0
            goal[int(self.env.unwrapped.goal_id)] = 1.0
            out.update(zip(LABEL_KEYS, (held, goal)))
        return out
