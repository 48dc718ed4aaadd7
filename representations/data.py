"""Rollout data in memory, and the samplers each objective needs.

:class:`RolloutData` loads episodes of a data set written by ``ssrl collect``
(:mod:`ssrl.envs.rollouts`) into flat arrays: all frames of a camera end to end, with the
episode and time index of each. On top of that it draws what the objectives eat:

* frame stacks at given instants (``stack``), rebuilt like the replay buffer does: the k frames
  ending at t, clamped at the episode's first frame;
* synchronised views: the same instant from two cameras;
* the instants of an n-pairs batch (``spaced_frames``): episodes drawn without replacement, the
  instants of one episode at least ``min_gap`` frames apart;
* transitions (s, a, r, s', discount);
* instants with a frame ``delta`` steps later in the same episode (``sample_frames_ahead``: ATC's pairs);
* grasp records (the per-step ``info/`` arrays of ``ssrl/Grasp-v0``);
* per-step images recorded in ``info`` (Grasp's ``o``, the lifted object) as one more view: the
  image a step recorded at the frame after it, black at each episode's first frame (``view``),
  so a frame-based method can train on them (an autoencoder of grasped objects: ``camera: o``);
* the episode's first frame (the context of CC-VAE);
* how much each frame moved since the previous one (``motion``: the video methods' high-motion
  windows).

``split(fraction)`` holds out whole episodes, so probes are scored on episodes the encoder never
saw.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from ssrl.envs.rollouts import DatasetError, RolloutDataset

from .core import Need


class RolloutData:
    """Episodes of a data set as flat arrays (see the module docstring).

    Args:
        episodes: a data set path, a :class:`RolloutDataset`, or a list of :class:`Episode`.
        cameras: the cameras to load (default all).
        max_episodes: load at most this many episodes.
    """

    def __init__(self, episodes, cameras: Sequence[str] | None = None, max_episodes: int | None = None) -> None:
        if isinstance(episodes, (str, pathlib.Path)):
            episodes = RolloutDataset(episodes)
        self.meta = episodes.meta if isinstance(episodes, RolloutDataset) else {}
        if isinstance(episodes, RolloutDataset):
            episodes = episodes.load(max_episodes)
        elif max_episodes is not None:
            episodes = episodes[:max_episodes]
        episodes = list(episodes)
        if not episodes:
            raise DatasetError("the data set holds no episode")
        available = list(episodes[0].frames)
        cameras = list(cameras) if cameras else available
        missing = [c for c in cameras if c not in available]
        if missing:
            raise DatasetError(f"the data set has no camera {missing}; it has {available}")
        self.cameras = cameras
        self.episodes = episodes
        lengths = np.array([len(e) for e in episodes])
        self.ep_len = lengths  # transitions per episode
        self.ep_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])  # first frame of each episode
        self.frames = {c: np.concatenate([e.frames[c] for e in episodes]) for c in cameras}
        self.state = np.concatenate([e.state for e in episodes])
        has_features = all(e.features is not None for e in episodes)
        self.features = np.concatenate([e.features for e in episodes]) if has_features else None
        n = len(self.state)
        self.frame_episode = np.repeat(np.arange(len(episodes)), lengths + 1)
        self.frame_t = np.concatenate([np.arange(t + 1) for t in lengths])
        action_dim = episodes[0].action.shape[1] if episodes[0].action.ndim == 2 else 0
        # Per-frame arrays for what happens *after* frame k (undefined at an episode's last frame).
        self.action = np.zeros((n, action_dim), np.float32)
        self.reward = np.zeros(n, np.float32)
        self.terminated = np.zeros(n, bool)
        self.has_next = np.zeros(n, bool)
        for e, ep in zip(range(len(episodes)), episodes):
            s = self.ep_start[e]
            self.action[s : s + len(ep)] = ep.action
            self.reward[s : s + len(ep)] = ep.reward
            self.terminated[s : s + len(ep)] = ep.terminated
            self.has_next[s : s + len(ep)] = True
        self.info = {k: np.concatenate([e.info[k] for e in episodes]) for k in episodes[0].info}

    # -- shape and checks ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.state)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.frames[self.cameras[0]].shape[1:])

    def view(self, name: str | None = None) -> np.ndarray:
        """Per-frame images ``(frames, 3, H, W)`` of camera ``name`` (default the first), or of a
        per-step image in ``info`` (e.g. Grasp's ``o``): the image recorded by step t at frame
        t + 1, zeros (black, as GraspGoal's ``achieved_goal`` before any lift) at each episode's
        first frame (``sample_frames(view=name)`` leaves those out). Built once per name."""
        name = name or self.cameras[0]
        if name in self.frames:
            return self.frames[name]
        images = {k for k, v in self.info.items() if v.ndim == 4 and v.dtype == np.uint8}
        if name not in images:
            raise DatasetError(
                f"the data set has no camera or per-step image {name!r}; cameras: {self.cameras}"
                + (f", per-step images: {sorted(images)}" if images else "")
            )
        cache = self.__dict__.setdefault("_views", {})
        if name not in cache:
            steps = self.info[name]
            frames = np.zeros((len(self), *steps.shape[1:]), steps.dtype)
            frames[np.flatnonzero(self.has_next) + 1] = steps  # step t's image at frame t + 1
            cache[name] = frames
        return cache[name]

    def view_shape(self, name: str | None = None) -> tuple[int, ...]:
        """The shape of one image of :meth:`view` ``name``."""
        return tuple(self.view(name).shape[1:])

    def require(self, needs: Need, method: str = "this method") -> None:
        problems = []
        if Need.VIEWS in needs and len(self.cameras) < 2:
            problems.append(
                f"synchronised views from at least 2 cameras (the data has {self.cameras}; collect with --cameras a,b)"
            )
        if Need.GRASPS in needs and not {"s_pre", "s_post", "o"} <= set(self.info):
            problems.append("grasp records (s_pre, s_post, o): collect them from ssrl/Grasp-v0")
        if Need.TRANSITIONS in needs and not self.has_next.any():
            problems.append("transitions (episodes with at least one step)")
        if problems:
            raise DatasetError(f"{method} needs " + "; and ".join(problems))

    def require_cameras(self, names, method: str = "this method") -> None:
        """Refuse camera ``names`` (a method's configured views) that the data set lacks."""
        missing = [n for n in names or () if n not in self.cameras]
        if missing:
            raise DatasetError(f"{method} asks for cameras {missing}; the data set has {self.cameras}")

    def probe_target(self) -> tuple[str, np.ndarray]:
        """What probes regress: the env's state observation (``features``) when recorded, else
        the physical state."""
        if self.features is not None:
            return "features", self.features
        return "state", self.state

    def split(self, holdout: float = 0.2, seed: int = 0) -> tuple[RolloutData, RolloutData]:
        """(train, held-out) by whole episodes; at least one episode each."""
        if self.num_episodes < 2:
            raise DatasetError("need at least 2 episodes to hold some out")
        order = np.random.default_rng(seed).permutation(self.num_episodes)
        n_test = min(max(1, int(round(holdout * self.num_episodes))), self.num_episodes - 1)
        test, train = sorted(order[:n_test]), sorted(order[n_test:])
        return self.subset(train), self.subset(test)

    def subset(self, episodes: Sequence[int]) -> RolloutData:
        """These episodes (by index) as a new data set; the data set's meta is kept (what it was
        collected in: needed to render its ground-truth masks again)."""
        part = RolloutData([self.episodes[i] for i in episodes], self.cameras)
        part.meta = self.meta
        return part

    def motion(self, camera: str | None = None) -> np.ndarray:
        """Per frame, the mean absolute change of its pixels since the previous frame of its
        episode, in [0, 1] (0 for an episode's first frame): where a video moves, found from the
        video itself (the high-motion windows of the video pretext methods). Computed once per
        camera."""
        camera = camera or self.cameras[0]
        cache = self.__dict__.setdefault("_motion", {})
        if camera not in cache:
            frames = self.view(camera)
            diff = np.zeros(len(frames), np.float32)
            for start in range(1, len(frames), 1024):
                a = frames[start - 1 : start + 1023].astype(np.int16)
                diff[start : start + len(a) - 1] = np.abs(a[1:] - a[:-1]).mean(axis=(1, 2, 3)) / 255.0
            diff[self.ep_start] = 0.0
            cache[camera] = diff
        return cache[camera]

    # -- sampling --------------------------------------------------------------------------------

    def sample_frames(
        self, n: int, rng: np.random.Generator, with_next: bool = False, view: str | None = None
    ) -> np.ndarray:
        """Uniform frame indices (only those with a next frame if ``with_next``; only those that
        hold an image of ``view`` if it is a per-step image, not an episode's black first frame)."""
        if view is not None and view not in self.frames:
            self.view(view)  # (checks the name)
            has_image = self.frame_t > 0
            valid = np.flatnonzero(has_image & self.has_next if with_next else has_image)
            return valid[rng.integers(0, len(valid), n)]
        if with_next:
            valid = np.flatnonzero(self.has_next)
            return valid[rng.integers(0, len(valid), n)]
        return rng.integers(0, len(self), n)

    def sample_frames_ahead(self, n: int, rng: np.random.Generator, delta: int) -> np.ndarray:
        """``n`` uniform frame indices t whose frame ``delta`` steps later is in the same episode,
        so ``idx + delta`` indexes it (``delta=1`` draws as ``sample_frames(with_next=True)``)."""
        if delta < 0:
            raise ValueError(f"delta must be >= 0 steps, got {delta}")
        valid = np.flatnonzero(self.frame_t + delta <= self.ep_len[self.frame_episode])
        if not len(valid):
            longest = int(self.ep_len.max())
            raise DatasetError(f"no episode has a frame {delta} steps after another (the longest has {longest} steps)")
        return valid[rng.integers(0, len(valid), n)]

    def stack_indices(self, idx: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
        """(B, k) frame indices of the stacks ending at ``idx``, oldest first, clamped at the
        episode's first frame (what the env's frame stack shows at a reset)."""
        idx = np.asarray(idx)
        start = self.ep_start[self.frame_episode[idx]]
        offsets = np.arange(k - 1, -1, -1) * stride
        return np.maximum(idx[:, None] - offsets[None, :], start[:, None])

    def stack(self, idx: np.ndarray, camera: str | None = None, k: int = 1, stride: int = 1) -> np.ndarray:
        """Frame stacks ``(B, 3k, H, W)`` ending at frames ``idx`` (``B = 0`` gives an empty array
        of that shape)."""
        frames = self.view(camera)[self.stack_indices(idx, k, stride)]  # (B, k, 3, H, W)
        return frames.reshape(len(frames), k * frames.shape[2], *frames.shape[3:])

    def spaced_frames(self, n: int, min_gap: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` distinct frame indices, those of one episode pairwise at least ``min_gap`` frames
        apart (the instants of an n-pairs batch, whose other pairs are its negatives).

        Episodes are drawn without replacement, in random order; each gives as many instants as
        it holds at that spacing, ``T // min_gap + 1`` for T transitions (uniformly among such
        sets), or what the batch still needs, until ``n`` are drawn. So an episode gives several
        instants (hard, same-scene negatives) and no instant appears twice in a batch.

        Raises ValueError when all episodes together hold fewer than ``n`` such instants.
        """
        if min_gap < 1:
            raise ValueError(f"min_gap must be >= 1 frame, got {min_gap}")
        capacity = self.ep_len // min_gap + 1
        if capacity.sum() < n:
            lo, hi = int(self.ep_len.min()) + 1, int(self.ep_len.max()) + 1
            frames = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ValueError(
                f"a batch of {n} instants at least {min_gap} frames apart within an episode needs more data: "
                f"the {self.num_episodes} episode(s) of {frames} frames hold {int(capacity.sum())}; "
                "lower the batch size or min_gap, or collect more or longer episodes"
            )
        parts, need = [], n
        for ep in rng.permutation(self.num_episodes):
            if need == 0:
                break
            count = int(min(need, capacity[ep]))
            parts.append(self.ep_start[ep] + _spaced_times(self.ep_len[ep] + 1, count, min_gap, rng))
            need -= count
        return np.concatenate(parts)

    def first_frame(self, idx: np.ndarray, camera: str | None = None) -> np.ndarray:
        """The first frame of each index's episode, ``(B, 3, H, W)``."""
        return self.view(camera)[self.ep_start[self.frame_episode[np.asarray(idx)]]]

    def transitions(self, idx: np.ndarray, camera: str | None = None, k: int = 1) -> dict[str, np.ndarray]:
        """(s, a, r, s', discount) at frames ``idx`` (which must have a next frame)."""
        idx = np.asarray(idx)
        if not self.has_next[idx].all():
            raise ValueError("some indices are the last frame of their episode (no transition)")
        return {
            "obs": self.stack(idx, camera, k),
            "action": self.action[idx],
            "reward": self.reward[idx],
            "next_obs": self.stack(idx + 1, camera, k),
            "discount": 1.0 - self.terminated[idx].astype(np.float32),
        }

    def transition_index(self, frame_idx: np.ndarray) -> np.ndarray:
        """Index into the per-step ``info`` arrays of the step leaving frame ``frame_idx``."""
        frame_idx = np.asarray(frame_idx)
        return frame_idx - self.frame_episode[frame_idx]


def _spaced_times(n_frames: int, count: int, min_gap: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` sorted times in [0, n_frames), consecutive ones at least ``min_gap`` apart, drawn
    uniformly among such sets: ``count`` sorted distinct slots of the n_frames - (count-1)(min_gap-1)
    free ones, the k-th shifted by k (min_gap - 1). Needs count <= (n_frames - 1) // min_gap + 1."""
    free = n_frames - (count - 1) * (min_gap - 1)
    if count < 0 or free < count:
        raise ValueError(f"{count} times at least {min_gap} apart do not fit in {n_frames} frames")
    slots = np.sort(rng.choice(free, count, replace=False))
    return slots + np.arange(count) * (min_gap - 1)
