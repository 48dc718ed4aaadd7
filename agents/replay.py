"""Replay buffer that stores every observation once.

A pixel observation of a DMC env is a stack of the last k frames, and transition t's next
observation is transition t+1's observation. Storing ``(obs, next_obs)`` per transition, as
Stable-Baselines3 does, keeps each frame 2k times (127 kB per transition at 84x84x9). Here the
buffer keeps a circular array of *slots*, one per instant of an episode (the reset observation
and every next observation), each holding only the newest frame. Transition ``a`` is the pair of
slots ``(a, a + 1)`` of the same episode; its frame stacks are rebuilt at sample time from the
slots ``a - k + 1 .. a + 1``, clamped at the episode's first slot (the env fills a reset stack
with copies of the first frame, and so does this). Memory per transition is one frame plus one
frame per episode plus a few bytes.

Episodes cut by a time limit keep their final observation, so the last transition bootstraps
from it (only ``terminated`` stops bootstrapping). For goal envs (dict observations with
``achieved_goal`` and ``desired_goal``), ``her_ratio`` of every batch gets the "future" strategy
of hindsight experience replay: the goal is replaced by the achieved goal of a later instant of
the same episode and the reward recomputed with the env's ``compute_reward``; with a
``goal_sampler`` (an env that imagines goals, e.g. a beta-VAE's prior in RIG) the next
``imagined_ratio`` of the batch gets imagined goals instead. The rest keep the rollout's goal.

With ``reward_keys`` other than the goals (``EncodedObservation(reward="env")``: the env's reward
on the images behind latent goals), relabelled rows are rewarded on those entries: the achieved
image of the next slot against the new goal's image (a future slot's image, or an imagined
goal's picture from ``goal_images``). Where those entries are sampled, not side entries (the
goal an asymmetric critic reads, ``AgentConfig.critic_keys``), a relabelled row's desired entry
holds its new value, so what the critic reads and what it is rewarded on agree.

Image observations (uint8 frames of shape ``(3, H, W)``) also keep, per slot, the frame's
*motion*: the mean absolute change of its pixels since the previous slot of its episode, in
[0, 1] (0 at an episode's first slot), as ``RolloutData.motion`` defines it. It costs one frame
difference per step when written (about 20 us at 84x84) instead of one per frame of every clip
the video objectives draw (about 20 ms per update at 8 runs of 100 frames: ``python -m
ssrl.benchmarks.input_speed``); it is not saved, but recomputed from the frames on
:meth:`ReplayBuffer.load`.

With ``views`` (an env of several cameras seen through ``AgentCamera``: the agent observes the
first, ``info["views"]`` holds the others' newest frames), each slot also keeps every other
camera's frame of the same instant; :meth:`ReplayBuffer.sample_segments` serves them beside the
agent's, for multi-view objectives (TCN) trained on the replay. Batches for the agent never hold
them.

``side_keys`` are entries stored and saved but never sampled: the images behind latent entries
(``EncodedObservation(keep_images=True)``), from which :meth:`ReplayBuffer.refresh` re-encodes
every slot held when the encoder has changed (RIG's online fine-tuning), recomputing the
stored rewards with the new latents.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from ssrl.utils import atomic_path, write_json

GOAL_KEYS = ("achieved_goal", "desired_goal")


@dataclasses.dataclass
class Batch:
    """A sampled batch (numpy arrays; the agent moves them to its device)."""

    obs: np.ndarray | dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray | dict[str, np.ndarray]
    discount: np.ndarray  # 0 where the transition ended in a terminal state, else 1


class ReplayBuffer:
    """Circular replay of observation slots.

    Args:
        capacity: number of slots (about the number of transitions kept).
        observation_space: a ``Box`` (a frame stack of ``frame_stack`` frames along axis 0, or a
            plain vector/image with ``frame_stack=1``) or a ``Dict`` of Boxes (goal envs).
        action_space: a ``Box``.
        frame_stack: frames per observation; only the newest is stored.
        reward_fn: ``compute_reward(achieved, desired, info)`` of a goal env, for HER.
        her_ratio: fraction of each batch relabelled with future achieved goals (goal envs only;
            SB3's ``n_sampled_goal=4`` is 0.8).
        goal_sampler: ``sample_goals(n, rng, like) -> (n, *goal_shape)`` of an env that imagines
            goals; ``like`` holds the rows' current goals (CC-RIG keeps each row's context).
        imagined_ratio: fraction of each batch relabelled with ``goal_sampler``'s goals (RIG's
            0.5); ``her_ratio + imagined_ratio`` is at most 1.
        seed: seed of the sampling generator.
        side_keys: dict entries stored (and saved) but left out of sampled batches.
        reward_keys: the (achieved, desired) entries ``reward_fn`` compares; the goals by default.
        goal_images: ``decode(z) -> images`` of imagined goals, when ``reward_keys`` are images.
        views: ``{camera: frame shape}`` of the other cameras' frames each slot keeps (image
            observations only; see the module docstring).
        agent_camera: the name of the camera the observations come from (served with the views).
    """

    def __init__(
        self,
        capacity: int,
        observation_space: gym.Space,
        action_space: gym.spaces.Box,
        frame_stack: int = 1,
        reward_fn: Callable | None = None,
        her_ratio: float = 0.0,
        goal_sampler: Callable | None = None,
        imagined_ratio: float = 0.0,
        seed: int = 0,
        side_keys: tuple[str, ...] = (),
        reward_keys: tuple[str, str] = GOAL_KEYS,
        goal_images: Callable | None = None,
        views: dict[str, tuple[int, ...]] | None = None,
        agent_camera: str | None = None,
    ) -> None:
        if capacity < 2:
            raise ValueError(f"replay capacity must be at least 2, got {capacity}")
        self.capacity = int(capacity)
        self.frame_stack = int(frame_stack)
        self.is_dict = isinstance(observation_space, gym.spaces.Dict)
        spaces = dict(observation_space.spaces) if self.is_dict else {"obs": observation_space}
        if self.is_dict and self.frame_stack != 1:
            raise ValueError("frame stacks of dict observations are not supported; use frame_stack=1")
        self.goal_env = self.is_dict and all(k in spaces for k in GOAL_KEYS)
        unknown = sorted(set(side_keys) - set(spaces))
        if unknown:
            raise ValueError(f"side keys {unknown} are not entries of the observation ({sorted(spaces)})")
        self.side_keys = tuple(side_keys)
        self.reward_keys = tuple(reward_keys)
        if self.goal_env and not set(self.reward_keys) <= set(spaces):
            raise ValueError(f"reward keys {self.reward_keys} are not entries of the observation ({sorted(spaces)})")
        if imagined_ratio and self.reward_keys != GOAL_KEYS and goal_images is None:
            raise ValueError(
                f"imagined goals rewarded on {self.reward_keys} (not on the goals) need goal_images, which gives "
                "those entries for an imagined goal (a decoder of latent goals); this env has none"
            )
        self.goal_images = goal_images
        if her_ratio and not self.goal_env:
            raise ValueError(
                "hindsight relabelling needs a goal env (dict observation with achieved_goal and desired_goal)"
            )
        if her_ratio and reward_fn is None:
            raise ValueError("hindsight relabelling needs the env's compute_reward as reward_fn")
        if not 0.0 <= her_ratio < 1.0:
            raise ValueError(f"her_ratio must be in [0, 1), got {her_ratio}")
        if not 0.0 <= imagined_ratio <= 1.0 - her_ratio:
            raise ValueError(
                f"imagined_ratio must be in [0, 1 - her_ratio] = [0, {1 - her_ratio:g}], got {imagined_ratio}"
            )
        if imagined_ratio and not self.goal_env:
            raise ValueError("imagined goals need a goal env (dict observation with achieved_goal and desired_goal)")
        if imagined_ratio and (goal_sampler is None or reward_fn is None):
            raise ValueError("imagined goals need the env's sample_goals as goal_sampler and its compute_reward")
        self.reward_fn = reward_fn
        self.her_ratio = float(her_ratio)
        self.goal_sampler = goal_sampler
        self.imagined_ratio = float(imagined_ratio)

        self.frame_shapes: dict[str, tuple[int, ...]] = {}
        self.obs_shapes: dict[str, tuple[int, ...]] = {}
        self.store: dict[str, np.ndarray] = {}
        for key, space in spaces.items():
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"observation {key!r} is a {type(space).__name__}; the replay stores Box observations")
            shape = tuple(space.shape)
            if shape[0] % self.frame_stack:
                raise ValueError(
                    f"observation of shape {shape} is not a stack of {self.frame_stack} frames along axis 0"
                )
            frame = (shape[0] // self.frame_stack, *shape[1:])
            self.obs_shapes[key] = shape
            self.frame_shapes[key] = frame
            self.store[key] = np.zeros((self.capacity, *frame), space.dtype)
        self.action = np.zeros((self.capacity, *action_space.shape), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, bool)
        self.has_next = np.zeros(self.capacity, bool)  # slot is the first of a stored transition
        self.ep_pos = np.zeros(self.capacity, np.int64)  # index of the slot within its episode
        self.ep_end = np.full(self.capacity, -1, np.int64)  # absolute index of the episode's last slot
        image = not self.is_dict and self.store["obs"].dtype == np.uint8 and len(self.frame_shapes["obs"]) == 3
        self.motion = np.zeros(self.capacity, np.float32) if image else None  # see the module docstring
        if views and not image:
            raise ValueError("other cameras' views are kept beside image observations (3, H, W frames) only")
        self.views = {name: np.zeros((self.capacity, *shape), np.uint8) for name, shape in (views or {}).items()}
        if agent_camera in self.views:
            raise ValueError(f"the agent's camera {agent_camera!r} is also among the views {sorted(self.views)}")
        self.agent_camera = agent_camera
        self.total = 0  # slots ever written (absolute index of the next slot)
        self._episode_start: int | None = None
        self._saved = 0  # slots already persisted by save()
        self.rng = np.random.default_rng(seed)

    # -- writing -------------------------------------------------------------------------------

    def start_episode(self, obs, views: dict[str, np.ndarray] | None = None) -> None:
        """Store the reset observation of a new episode (and the other cameras' ``views`` of it,
        when the buffer keeps them)."""
        self._check_views(views)  # before anything is written
        if self._episode_start is not None:
            self.end_episode()
        self._episode_start = self.total
        self._write_slot(obs, ep_pos=0, check_stack=False, views=views)

    def add(
        self, action, reward: float, terminated: bool, next_obs, views: dict[str, np.ndarray] | None = None
    ) -> None:
        """Store one step: ``action`` taken in the latest observation, and what followed (with the
        other cameras' ``views`` of it, when the buffer keeps them)."""
        if self._episode_start is None:
            raise RuntimeError("call start_episode(obs) before add()")
        self._check_views(views)  # before anything is written
        slot = (self.total - 1) % self.capacity
        self.action[slot] = action
        self.reward[slot] = reward
        self.terminated[slot] = terminated
        self.has_next[slot] = True
        self._write_slot(next_obs, ep_pos=int(self.ep_pos[slot]) + 1, check_stack=True, views=views)

    def end_episode(self) -> None:
        """Close the running episode (its slots learn where it ends, for HER)."""
        if self._episode_start is None:
            return
        slots = np.arange(max(self._episode_start, self.total - self.capacity), self.total) % self.capacity
        self.ep_end[slots] = self.total - 1
        self._episode_start = None

    def _check_views(self, views: dict[str, np.ndarray] | None) -> None:
        if set(views or {}) != set(self.views):
            raise ValueError(
                f"this replay keeps the views of cameras {sorted(self.views)} beside each observation; "
                f"it was given views of {sorted(views or {})}"
            )
        for name, frame in (views or {}).items():
            if np.shape(frame) != self.views[name].shape[1:]:
                raise ValueError(
                    f"view {name!r} of shape {np.shape(frame)}, the buffer keeps {self.views[name].shape[1:]}"
                )

    def _write_slot(self, obs, ep_pos: int, check_stack: bool, views: dict[str, np.ndarray] | None) -> None:
        slot = self.total % self.capacity  # (views checked by the callers, before any write)
        for name, frame in (views or {}).items():
            self.views[name][slot] = frame
        items = obs.items() if self.is_dict else (("obs", obs),)
        for key, value in items:
            value = np.asarray(value)
            if value.shape != self.obs_shapes[key]:
                raise ValueError(
                    f"observation {key!r} of shape {value.shape}, the buffer stores {self.obs_shapes[key]}"
                )
            frames = value.reshape(self.frame_stack, *self.frame_shapes[key])
            if check_stack and self.frame_stack > 1:
                # The new stack must be the previous one shifted by a frame, else frames would be
                # rebuilt wrongly at sample time.
                prev = self._stack_at(self.total - 1, key)
                if not np.array_equal(frames[:-1], prev[1:]):
                    raise ValueError(
                        f"observations are not stacks of {self.frame_stack} frames with the newest last; "
                        "build the replay with frame_stack=1 for this env"
                    )
            self.store[key][slot] = frames[-1]
        self.has_next[slot] = False
        self.terminated[slot] = False
        self.ep_pos[slot] = ep_pos
        self.ep_end[slot] = -1
        if self.motion is not None:
            self._set_motion(np.asarray([self.total]))
        self.total += 1

    def _set_motion(self, a: np.ndarray) -> None:
        """Per-slot motion (module docstring) of the slots with absolute indices ``a``."""
        slots = a % self.capacity
        frames = self.store["obs"]
        change = np.abs(frames[slots].astype(np.int16) - frames[(a - 1) % self.capacity].astype(np.int16))
        # The integer sums are exact in float64 in any order, so this equals RolloutData.motion.
        self.motion[slots] = np.where(self.ep_pos[slots] > 0, change.mean(axis=(1, 2, 3)) / 255.0, 0.0)

    def _stack_at(self, a: int, key: str) -> np.ndarray:
        start = a - int(self.ep_pos[a % self.capacity])
        idx = np.maximum(a - np.arange(self.frame_stack - 1, -1, -1), start) % self.capacity
        return self.store[key][idx]

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Transitions available to sample."""
        lo = self._lowest_valid()
        if self.total - 1 <= lo:
            return 0
        idx = np.arange(lo, self.total - 1) % self.capacity
        return int(self.has_next[idx].sum())

    def _lowest_valid(self) -> int:
        # A transition's stack reaches k-1 slots back; those must not have been overwritten.
        return max(0, self.total - self.capacity + self.frame_stack - 1)

    def sample(self, batch_size: int) -> Batch:
        lo, hi = self._lowest_valid(), self.total - 1  # transitions a in [lo, hi)
        if hi - lo <= 0:
            raise RuntimeError("the replay buffer holds no complete transition yet")
        chosen: list[np.ndarray] = []
        need, draws = batch_size, 0
        while need > 0:
            cand = self.rng.integers(lo, hi, size=max(2 * need, 16))
            cand = cand[self.has_next[cand % self.capacity]]
            chosen.append(cand[:need])
            need -= len(chosen[-1])
            draws += 1
            # Scanning the whole buffer costs O(capacity); do it only when draws keep missing.
            if draws == 8 and need > 0 and not self.has_next[np.arange(lo, hi) % self.capacity].any():
                raise RuntimeError("the replay buffer holds no complete transition yet")
        a = np.concatenate(chosen)
        slots = a % self.capacity
        start = a - self.ep_pos[slots]
        # Slots a+1-k .. a+1, clamped to the episode's first slot: obs uses the first k,
        # next_obs the last k.
        offsets = np.arange(self.frame_stack, -1, -1)
        idx = np.maximum(a[:, None] + 1 - offsets[None, :], start[:, None]) % self.capacity
        obs, next_obs = {}, {}
        for key, store in self.store.items():
            if key in self.side_keys:
                continue
            frames = store[idx]  # (B, k+1, *frame)
            shape = (len(a), *self.obs_shapes[key])
            obs[key] = frames[:, :-1].reshape(shape)
            next_obs[key] = frames[:, 1:].reshape(shape)
        reward = self.reward[slots].copy()
        if self.her_ratio or self.imagined_ratio:
            reward = self._relabel(a, obs, next_obs, reward)
        discount = 1.0 - self.terminated[slots].astype(np.float32)
        if not self.is_dict:
            obs, next_obs = obs["obs"], next_obs["obs"]
        return Batch(obs=obs, action=self.action[slots].copy(), reward=reward, next_obs=next_obs, discount=discount)

    def _run_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(absolute indices of the held slots, per slot the number of consecutive held instants
        of its episode that end at it)."""
        lo = max(0, self.total - self.capacity)
        held = np.arange(lo, self.total)
        return held, np.minimum(self.ep_pos[held % self.capacity], held - lo) + 1

    def longest_run(self) -> int:
        """The most consecutive instants of one episode the buffer holds (0 when empty)."""
        runs = self._run_lengths()[1]
        return int(runs.max()) if len(runs) else 0

    def sample_segments(self, n: int, max_length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` runs of ``length = min(max_length, longest_run())`` consecutive instants of one
        episode each (the clips of the video objectives in the decoupled and joint regimes),
        drawn uniformly among the runs the buffer holds whole, the running episode's included:

        * ``frames``: ``(n, length, *frame)``, each slot's newest frame, in time order;
        * ``action``, ``reward``, ``terminated``: of the ``length - 1`` steps between them;
        * ``motion``: ``(n, length)``, each frame's motion since the previous one (0 for a run's
          first frame), on image observations only;
        * ``views``: ``{camera: (n, length, *frame)}``, the other cameras' frames of the same
          instants, and ``camera``: the name of the observations' camera, when the buffer keeps
          views.

        ``rng`` is the caller's (an objective's own sampling stream, saved with it); runs are
        drawn with replacement. Raises ValueError on dict observations or an empty buffer."""
        if self.is_dict:
            raise ValueError("runs of consecutive frames are served from image observations, not dict ones")
        if max_length < 1 or n < 1:
            raise ValueError(f"need n >= 1 runs of length >= 1, got n={n}, max_length={max_length}")
        held, runs = self._run_lengths()
        if not len(held):
            raise ValueError("the replay buffer holds no frame yet")
        length = min(max_length, int(runs.max()))
        # One pass over the buffer (about 1 ms at 100k slots) keeps the draw exactly uniform
        # however rare runs of this length are: every slot ending one is the last of a run.
        starts = held[runs >= length] - (length - 1)
        s = starts[rng.integers(0, len(starts), n)]
        slots = (s[:, None] + np.arange(length)[None, :]) % self.capacity
        steps = slots[:, :-1]
        runs = {
            "frames": self.store["obs"][slots],
            "action": self.action[steps],
            "reward": self.reward[steps],
            "terminated": self.terminated[steps],
        }
        if self.motion is not None:
            runs["motion"] = self.motion[slots]
            runs["motion"][:, 0] = 0.0
        if self.views:
            runs["views"] = {name: frames[slots] for name, frames in self.views.items()}
            runs["camera"] = self.agent_camera
        return runs

    def _relabel(self, a: np.ndarray, obs: dict, next_obs: dict, reward: np.ndarray) -> np.ndarray:
        """Rows ``[0, n_future)``: HER "future", goal <- achieved goal of a uniformly drawn later
        instant of the episode (next included); rows ``[n_future, n_future + n_imagined)``: goals
        from ``goal_sampler``; rewards recomputed for both."""
        n_future = int(round(self.her_ratio * len(a)))
        n_imagined = int(round(self.imagined_ratio * len(a)))
        n = min(n_future + n_imagined, len(a))
        if n == 0:
            return reward
        rows = np.arange(n)
        futures = rows[:n_future]
        end = self.ep_end[a[futures] % self.capacity]
        end = np.where(end < 0, self.total - 1, end)  # the running episode ends (for now) at the newest slot
        future = self.rng.integers(a[futures] + 1, end + 1)
        new_goal = np.empty((n, *self.frame_shapes["desired_goal"]), self.store["desired_goal"].dtype)
        new_goal[:n_future] = self.store["achieved_goal"][future % self.capacity]
        if n > n_future:
            like = obs["desired_goal"][n_future:n]  # the rows' own goals (CC-RIG keeps their context)
            new_goal[n_future:] = np.asarray(self.goal_sampler(n - n_future, self.rng, like)).reshape(
                n - n_future, *self.frame_shapes["desired_goal"]
            )
        obs["desired_goal"][rows] = new_goal
        next_obs["desired_goal"][rows] = new_goal
        if self.reward_keys == GOAL_KEYS:
            achieved, target = next_obs["achieved_goal"][rows], new_goal
        else:  # rewarded on the images behind the goals (side entries, read here only)
            achieved_key, desired_key = self.reward_keys
            achieved = self.store[achieved_key][(a[rows] + 1) % self.capacity]
            target = np.empty((n, *self.frame_shapes[desired_key]), self.store[desired_key].dtype)
            target[:n_future] = self.store[achieved_key][future % self.capacity]
            if n > n_future:
                target[n_future:] = self.goal_images(new_goal[n_future:])
            if desired_key in obs:  # sampled (an asymmetric critic's goal): it holds the new goal too
                obs[desired_key][rows] = target
                next_obs[desired_key][rows] = target
        reward = reward.copy()
        reward[rows] = np.asarray(self.reward_fn(achieved, target, [{}] * n), np.float32).reshape(n)
        return reward

    # -- re-encoding (an encoder fine-tuned online) ----------------------------------------------

    def held_slots(self) -> np.ndarray:
        """Absolute indices of the slots the buffer holds, oldest first."""
        return np.arange(max(0, self.total - self.capacity), self.total)

    def refresh(
        self, encode: Callable[[np.ndarray], np.ndarray], sources: dict[str, str], batch_size: int = 512
    ) -> None:
        """Re-encode every slot held: ``store[key] = encode(store[source])`` for each ``key:
        source`` of ``sources`` (entries sharing a source are encoded once), in batches of
        ``batch_size``; then, on a goal env with a ``reward_fn``, every stored transition's
        reward becomes ``reward_fn(achieved', desired')`` of its next slot, as the env wrapper
        would have returned it with the new encoder. Call between episodes."""
        if self._episode_start is not None:
            raise RuntimeError("refresh the replay buffer between episodes (call end_episode first)")
        slots = self.held_slots() % self.capacity
        by_source: dict[str, list[str]] = {}
        for key, source in sources.items():
            if key not in self.store or source not in self.store:
                raise ValueError(f"cannot refresh {key!r} from {source!r}: the buffer holds {sorted(self.store)}")
            by_source.setdefault(source, []).append(key)
        for source, keys in by_source.items():
            for start in range(0, len(slots), batch_size):
                part = slots[start : start + batch_size]
                z = np.asarray(encode(self.store[source][part]))
                for key in keys:
                    self.store[key][part] = z.reshape(len(part), *self.frame_shapes[key])
        # Rewards of re-encoded entries change with them; rewards on images (reward="env") do not.
        if self.goal_env and self.reward_fn is not None and set(self.reward_keys) <= set(sources):
            held = self.held_slots()
            a = held[self.has_next[held % self.capacity]]
            for start in range(0, len(a), batch_size):
                part = a[start : start + batch_size]
                nxt = (part + 1) % self.capacity
                achieved, desired = (self.store[k][nxt] for k in self.reward_keys)
                self.reward[part % self.capacity] = np.asarray(
                    self.reward_fn(achieved, desired, [{}] * len(part)), np.float32
                ).reshape(len(part))

    def snapshot(self, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The entries ``keys`` and the rewards of every slot held (oldest first), to put back
        with :meth:`restore` after a :meth:`load` whose chunks were saved before a refresh."""
        slots = self.held_slots() % self.capacity
        state = {f"obs/{k}": self.store[k][slots].copy() for k in keys}
        state["reward"] = self.reward[slots].copy()
        state["total"] = np.asarray(self.total)
        return state

    def restore(self, snapshot: dict[str, np.ndarray]) -> None:
        if int(snapshot["total"]) != self.total:
            raise ValueError(
                f"the snapshot is of a buffer at slot {int(snapshot['total'])}, this one is at {self.total}"
            )
        slots = self.held_slots() % self.capacity
        for name, values in snapshot.items():
            if name.startswith("obs/"):
                self.store[name[4:]][slots] = values
        self.reward[slots] = snapshot["reward"]

    @property
    def nbytes(self) -> int:
        arrays = [
            *self.store.values(),
            self.action,
            self.reward,
            self.terminated,
            self.has_next,
            self.ep_pos,
            self.ep_end,
            *([self.motion] if self.motion is not None else []),
            *self.views.values(),
        ]
        return int(sum(a.nbytes for a in arrays))

    def bytes_per_transition(self) -> float:
        """Memory per transition when full (episodes of typical length add one slot each)."""
        return self.nbytes / self.capacity

    # -- persistence (for resumable runs) ------------------------------------------------------

    _PER_SLOT = ("action", "reward", "terminated", "has_next", "ep_pos", "ep_end")

    def save(self, folder: str | pathlib.Path, prune: bool = True) -> dict:
        """Persist the slots written since the last save, as one more chunk file (two when they
        wrap around the ring); returns the
        save's meta data (``total`` and the sampling RNG state), also written to ``replay.json``.

        Call between episodes. Chunks are written atomically and the meta file last, so a crash
        leaves the previous save intact. ``prune`` removes chunks entirely older than the
        capacity; a caller that records the meta elsewhere (the trainer, in the agent's
        checkpoint) prunes only once that record is written (:meth:`prune`), so the previous
        checkpoint stays loadable until then.
        """
        if self._episode_start is not None:
            raise RuntimeError("save the replay buffer between episodes (call end_episode first)")
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        first, last = max(self._saved, self.total - self.capacity), self.total
        # One chunk per stretch that does not wrap around the ring, written from slices: views
        # that np.savez streams in 16 MiB pieces. Fancy indexing across the wrap would copy the
        # whole chunk first, a transient of the chunk's size at every checkpoint (a pixel soak's
        # RSS peaks came from it).
        while first < last:
            end = min(last, (first // self.capacity + 1) * self.capacity)
            part = slice(first % self.capacity, (end - 1) % self.capacity + 1)
            arrays = {f"obs/{k}": v[part] for k, v in self.store.items()}
            arrays.update({f"view/{k}": v[part] for k, v in self.views.items()})
            arrays.update({name: getattr(self, name)[part] for name in self._PER_SLOT})
            with atomic_path(folder / f"chunk_{first:012d}_{end:012d}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            first = end
        self._saved = last
        meta = {"total": self.total, "rng": self.rng.bit_generator.state}
        write_json(folder / "replay.json", meta)
        if prune:
            self.prune(folder)
        return meta

    def prune(self, folder: str | pathlib.Path) -> None:
        """Remove saved chunks that the buffer has entirely overwritten since."""
        for chunk in pathlib.Path(folder).glob("chunk_*.npz"):
            if int(chunk.stem.split("_")[2]) <= self.total - self.capacity:
                chunk.unlink()

    def load(self, folder: str | pathlib.Path, meta: dict | None = None) -> None:
        """Restore a :meth:`save` into this (empty) buffer: the last one, or the one whose
        returned ``meta`` is given (chunks written after it are discarded)."""
        folder = pathlib.Path(folder)
        meta = meta or json.loads((folder / "replay.json").read_text())
        total = int(meta["total"])
        covered = max(0, total - self.capacity)  # the slots [covered, total) must be on disk
        for first, last in sorted(tuple(int(x) for x in c.stem.split("_")[1:]) for c in folder.glob("chunk_*.npz")):
            if first <= covered < last <= total:
                covered = last
        if covered < total:
            raise ValueError(
                f"{folder} lacks replay chunks for slots {covered}..{total}: the replay save is incomplete"
            )
        chunks = sorted(folder.glob("chunk_*.npz"))
        for chunk in chunks:
            first, last = (int(x) for x in chunk.stem.split("_")[1:])
            if last > total:
                chunk.unlink()  # written after the meta file we trust (a crash mid-save)
                continue
            with np.load(chunk) as data:
                idx = np.arange(first, last) % self.capacity
                for key in self.store:
                    self.store[key][idx] = data[f"obs/{key}"]
                for key in self.views:
                    if f"view/{key}" not in data:
                        raise ValueError(f"{chunk} holds no view of camera {key!r}: a run without that camera saved it")
                    self.views[key][idx] = data[f"view/{key}"]
                for name in self._PER_SLOT:
                    getattr(self, name)[idx] = data[name]
        self.total = self._saved = total
        self._episode_start = None
        self.rng.bit_generator.state = meta["rng"]
        if self.motion is not None:
            held = self.held_slots()
            for start in range(0, len(held), 1024):  # bounded temporaries
                self._set_motion(held[start : start + 1024])
