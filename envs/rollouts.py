"""The rollout data set format of ssrl, its writer and reader, and ``collect``.

A data set is a folder::

    DATASET/
      meta.json                 what was collected: env id and options, cameras, image size,
                                policy, seed, format version (written once, checked on append)
      episodes/ep_000000.npz    one file per finished episode, written atomically
      episodes/ep_000001.npz
      ...

Each episode file is a plain ``numpy.savez`` archive with T steps:

====================  =====================  ==================================================
key                   shape, dtype           meaning
====================  =====================  ==================================================
``frames/<camera>``   (T+1, 3, H, W) uint8   one frame per camera per instant, channels-first;
                                             index 0 is the reset frame. All cameras of an
                                             index show the same instant.
``action``            (T, A) float32         action taken at step t
``reward``            (T,) float32           reward of step t
``terminated``        (T,) bool              the episode ended in a terminal state at step t
``truncated``         (T,) bool              the episode was cut at step t (time limit)
``state``             (T+1, S) float32       ground-truth physical state at each instant
``features``          (T+1, F) float32       the env's state *observation* (what state SAC sees:
                                             e.g. dm_control's features, with angles as cos/sin);
                                             the usual target of probes
``info/<key>``        (T, ...)               per-step extras an env declares (``record_keys``),
                                             e.g. the grasp triplets of ``ssrl/Grasp-v0``
====================  =====================  ==================================================

Frames are single frames: frame stacks are rebuilt by whoever samples them. Because an episode
file appears only once it is complete (temp file + rename), a killed collection leaves every
episode already written readable, and running the same collection again finishes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ssrl.runs import LOCK_FILE, RunFolder, RunFolderError
from ssrl.utils import atomic_path

FORMAT_VERSION = 1
_EPISODE_GLOB = "ep_*.npz"


class DatasetError(ValueError):
    """A data set folder that is missing, corrupt, or does not match what was asked."""


@dataclasses.dataclass
class Episode:
    """One episode of a data set, loaded in memory."""

    frames: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    state: np.ndarray
    info: dict[str, np.ndarray]
    path: pathlib.Path | None = None
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.action)

    def validate(self) -> None:
        t = len(self.action)
        where = f"episode {self.path}" if self.path else "episode"
        checks = {
            "reward": (self.reward.shape[:1], (t,)),
            "terminated": (self.terminated.shape[:1], (t,)),
            "truncated": (self.truncated.shape[:1], (t,)),
            "state": (self.state.shape[:1], (t + 1,)),
        }
        if self.features is not None:
            checks["features"] = (self.features.shape[:1], (t + 1,))
        checks.update({f"frames/{c}": (f.shape[:1], (t + 1,)) for c, f in self.frames.items()})
        checks.update({f"info/{k}": (v.shape[:1], (t,)) for k, v in self.info.items()})
        for key, (got, want) in checks.items():
            if got != want:
                raise DatasetError(f"{where}: {key} has {got[0] if got else 0} entries, expected {want[0]}")
        for camera, frames in self.frames.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
                raise DatasetError(
                    f"{where}: frames/{camera} must be uint8 (T+1, 3, H, W), got {frames.dtype} {frames.shape}"
                )

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"frames/{c}": f for c, f in self.frames.items()}
        arrays.update(
            action=self.action,
            reward=self.reward,
            terminated=self.terminated,
            truncated=self.truncated,
            state=self.state,
        )
        arrays.update({f"info/{k}": v for k, v in self.info.items()})
        if self.features is not None:
            arrays["features"] = self.features
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], path: pathlib.Path | None = None) -> Episode:
        missing = [k for k in ("action", "reward", "terminated", "truncated", "state") if k not in arrays]
        if missing:
            raise DatasetError(f"episode {path}: missing {', '.join(missing)}")
        episode = cls(
            frames={k.split("/", 1)[1]: arrays[k] for k in arrays if k.startswith("frames/")},
            action=arrays["action"],
            reward=arrays["reward"],
            terminated=arrays["terminated"],
            truncated=arrays["truncated"],
            state=arrays["state"],
            info={k.split("/", 1)[1]: arrays[k] for k in arrays if k.startswith("info/")},
            path=path,
            features=arrays.get("features"),
        )
        episode.validate()
        return episode


class EpisodeRecorder:
    """Accumulates one episode step by step; ``finish()`` returns an :class:`Episode`."""

    def __init__(self, frames: dict[str, np.ndarray], state: np.ndarray, features: np.ndarray | None = None) -> None:
        self._frames = {c: [f] for c, f in frames.items()}
        self._state = [state]
        self._features = None if features is None else [features]
        self._action: list[np.ndarray] = []
        self._reward: list[float] = []
        self._terminated: list[bool] = []
        self._truncated: list[bool] = []
        self._info: dict[str, list[Any]] = {}

    def add(
        self,
        action,
        reward,
        terminated,
        truncated,
        frames: dict[str, np.ndarray],
        state,
        info: dict[str, Any] | None = None,
        features: np.ndarray | None = None,
    ) -> None:
        self._action.append(np.asarray(action, np.float32))
        self._reward.append(float(reward))
        self._terminated.append(bool(terminated))
        self._truncated.append(bool(truncated))
        for camera, frame in frames.items():
            self._frames[camera].append(frame)
        self._state.append(state)
        if self._features is not None:
            self._features.append(features)
        for key, value in (info or {}).items():
            self._info.setdefault(key, []).append(value)

    def finish(self) -> Episode:
        return Episode(
            frames={c: np.stack(f).astype(np.uint8, copy=False) for c, f in self._frames.items()},
            action=np.stack(self._action) if self._action else np.zeros((0, 0), np.float32),
            reward=np.asarray(self._reward, np.float32),
            terminated=np.asarray(self._terminated, bool),
            truncated=np.asarray(self._truncated, bool),
            state=np.stack(self._state).astype(np.float32),
            info={k: np.stack([np.asarray(x) for x in v]) for k, v in self._info.items()},
            features=None if self._features is None else np.stack(self._features).astype(np.float32),
        )


class RolloutDataset:
    """Reads a data set folder written by :func:`collect` (or :class:`RolloutWriter`).

    ``len(ds)`` is the number of episodes; ``ds[i]`` loads episode ``i``; iterating loads them
    in order. ``ds.meta`` is the parsed ``meta.json``.
    """

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.path} is not an ssrl data set: no meta.json (make one with `ssrl collect`)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(f"{meta_path} is corrupt: {err}") from err
        if not isinstance(self.meta, dict):
            raise DatasetError(f"{meta_path} is corrupt: a JSON object was expected, got {type(self.meta).__name__}")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{self.path}: format version {self.meta.get('format_version')!r}, this ssrl reads {FORMAT_VERSION}"
            )
        self.files = sorted((self.path / "episodes").glob(_EPISODE_GLOB))

    @property
    def cameras(self) -> list[str]:
        return list(self.meta["cameras"])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Episode:
        path = self.files[index]
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise DatasetError(f"episode file {path} is corrupt or unreadable: {err}") from err
        episode = Episode.from_arrays(arrays, path)
        self._check_matches_meta(episode)
        return episode

    def _check_matches_meta(self, episode: Episode) -> None:
        """An episode must show the cameras and image size its data set's meta.json names (a file
        copied in from another data set would otherwise fail later, deep in a batch)."""
        cameras, size = self.meta.get("cameras"), self.meta.get("size")
        if cameras is not None and sorted(episode.frames) != sorted(cameras):
            raise DatasetError(
                f"episode {episode.path} has cameras {sorted(episode.frames)}; its data set's meta.json says {cameras}"
            )
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            for camera, frames in episode.frames.items():
                if tuple(frames.shape[2:]) != size:
                    raise DatasetError(
                        f"episode {episode.path}: camera {camera!r} frames are {tuple(frames.shape[2:])} pixels; "
                        f"its data set's meta.json says {tuple(size)}"
                    )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def load(self, max_episodes: int | None = None) -> list[Episode]:
        n = len(self) if max_episodes is None else min(max_episodes, len(self))
        return [self[i] for i in range(n)]

    def summary(self) -> dict[str, Any]:
        steps = 0
        for path in self.files:
            with np.load(path, allow_pickle=False) as archive:
                steps += len(archive["reward"])
        return {"episodes": len(self), "steps": steps, "cameras": self.cameras, "env_id": self.meta.get("env_id")}


class RolloutWriter:
    """Writes episodes into a data set folder, one atomic file each.

    ``meta`` describes the collection; when the folder already holds a data set, ``append=True``
    continues it (the meta must agree on every key of ``IDENTITY``) and ``append=False``
    refuses to touch it.
    """

    # What must agree for episodes to belong to one data set (``append`` checks them all).
    IDENTITY = (
        "env_id",
        "env_kwargs",
        "cameras",
        "size",
        "policy",
        "seed",
        "max_steps",
        "action_repeat",
        "record_keys",
    )

    def __init__(
        self, path: str | pathlib.Path, meta: dict[str, Any], append: bool = False, compress: bool = False
    ) -> None:
        self.path = pathlib.Path(path)
        self.compress = compress
        meta = dict(meta, format_version=FORMAT_VERSION)
        folder = RunFolder(self.path, "ssrl collect", identity_file="meta.json")
        if folder.started:
            if not append:
                raise FileExistsError(
                    f"{self.path} already holds a data set; pass --append to add episodes, or choose another --out"
                )
            RolloutDataset(self.path)  # a readable data set of this format
            try:
                folder.check({k: meta.get(k) for k in self.IDENTITY if k in meta})
            except RunFolderError as err:
                raise DatasetError(f"cannot append to {self.path}: {err}") from err
        else:
            if self.path.exists() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
                raise FileExistsError(f"{self.path} exists and is not an ssrl data set; choose an empty or new folder")
            folder.start(meta)
        (self.path / "episodes").mkdir(parents=True, exist_ok=True)
        self.meta = meta

    def indices(self) -> set[int]:
        """Indices of the episodes already written (a parallel collection killed midway may
        leave gaps; a rerun fills them)."""
        return {int(f.stem.split("_")[1]) for f in (self.path / "episodes").glob(_EPISODE_GLOB)}

    def next_index(self) -> int:
        return max(self.indices(), default=-1) + 1

    def write(self, episode: Episode, index: int | None = None) -> pathlib.Path:
        """Write ``episode`` as episode ``index`` (default: after the last one), atomically."""
        return write_episode(self.path, self.next_index() if index is None else index, episode, self.compress)


def write_episode(dataset: str | pathlib.Path, index: int, episode: Episode, compress: bool = False) -> pathlib.Path:
    """Write one episode file of a data set atomically (temp file + rename): readers and a
    killed writer never see half an episode."""
    episode.validate()
    path = pathlib.Path(dataset) / "episodes" / f"ep_{index:06d}.npz"
    save = np.savez_compressed if compress else np.savez
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        save(fh, **episode.to_arrays())
    return path


class EpisodeSource:
    """What one process needs to record episodes of a collection: the env on state observations,
    an observer rendering every requested camera over the same physics, and the policy.

    ``record(seed)`` resets env and policy with ``seed`` and returns the episode; it depends on
    nothing else, so episode ``i`` of a collection is the same whichever process records it and
    in whichever order (``collect --workers``).
    """

    def __init__(
        self,
        env_id: str,
        policy: str,
        cameras: Sequence[str] | None,
        size: int,
        env_kwargs: dict[str, Any],
        max_steps: int | None,
    ) -> None:
        from ssrl.envs import make
        from ssrl.envs.pixels import state_mode_kwargs
        from ssrl.envs.policies import make_policy

        # The env's own observation is not stored (the observer renders the frames), so it runs
        # in its cheapest form, on states; the pixel options go to the observer instead.
        self.env = make(env_id, **state_mode_kwargs(env_kwargs))
        self.observer = None
        try:
            self.base = self.env.unwrapped
            self.cameras = list(cameras) if cameras else self.base.default_cameras()
            self.observer = self.base.make_observer(
                size=size,
                cameras=self.cameras,
                quality=env_kwargs.get("quality", "fast"),
                distractor=env_kwargs.get("distractor"),
            )
            self.labels = self.observer.camera_labels
            self.record_keys = tuple(getattr(self.base, "record_keys", ()))
            self.agent = make_policy(policy, self.env)
        except BaseException:
            self.close()
            raise
        self.max_steps = max_steps

    def record(self, seed: int) -> Episode:
        env, base, observer, labels = self.env, self.base, self.observer, self.labels
        obs, info = env.reset(seed=seed)
        self.agent.reset(seed)
        recorder = EpisodeRecorder(
            _frames(observer.reset(base.data, base.np_random), labels), info["state"], _features(obs)
        )
        steps = 0
        while True:
            action = self.agent(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            cut = self.max_steps is not None and steps >= self.max_steps
            recorder.add(
                action,
                reward,
                terminated,
                truncated or cut,
                _frames(observer.step(base.data), labels),
                info["state"],
                {k: info[k] for k in self.record_keys},
                _features(obs),
            )
            if terminated or truncated or cut:
                return recorder.finish()

    def close(self) -> None:
        if self.observer is not None:
            self.observer.close()
            self.observer = None
        self.env.close()


_WORKER_SOURCE: EpisodeSource | None = None  # a collect worker's own env, observer and policy


def _start_collect_worker(source_args: tuple) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = EpisodeSource(*source_args)


def _record_in_worker(dataset: str, index: int, seed: int, compress: bool) -> tuple[int, int]:
    episode = _WORKER_SOURCE.record(seed)
    write_episode(dataset, index, episode, compress)
    return index, len(episode.reward)


def collect(
    env_id: str,
    policy: str = "random",
    episodes: int = 10,
    out: str | pathlib.Path = "data",
    cameras: Sequence[str] | None = None,
    size: int = 84,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
    append: int = 0,
    compress: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> RolloutDataset:
    """Run ``policy`` in ``env_id`` until ``out`` holds ``episodes`` episodes (or, with
    ``append=N``, N more than it holds), and return the data set.

    Like every long-running command, a collection resumes: run again, it collects only the
    episodes still missing, and it refuses a folder whose data set was collected differently
    (naming what differs). The env runs on state observations; the frames of every requested
    camera are rendered at each instant by a separate observer over the same physics, so they
    are synchronised and their cost does not double with the env's own observation.
    ``max_steps`` caps an episode. Episode ``i`` of a data set resets env and policy with seed
    ``seed + i`` and depends on nothing else, so ``workers`` > 1 (spawned processes, one episode
    at a time each, written by index) gives the same files as one worker.
    """
    from ssrl.envs import check_env_id
    from ssrl.utils import check_whole

    append = check_whole("append (episodes to add)", append, 0)
    if not append:
        episodes = check_whole("episodes", episodes, 1)
    workers = check_whole("workers", workers, 1)
    from tqdm import tqdm

    env_kwargs = dict(env_kwargs or {})
    check_env_id(env_id)  # before the folder is made: a typo leaves no empty data set behind
    held = contextlib.ExitStack()  # the folder's lock: a second collect on this --out refuses meanwhile
    held.enter_context(RunFolder(out, "ssrl collect", identity_file="meta.json").locked())
    source = None
    try:
        # Built here even with workers: it checks env, cameras and policy (a policy that does not
        # fit records nothing) and names the cameras for meta.json; it opens no GL context.
        source_args = (env_id, policy, cameras, size, env_kwargs, max_steps)
        source = EpisodeSource(*source_args)
        writer = RolloutWriter(
            out,
            meta={
                "env_id": env_id,
                "env_kwargs": env_kwargs,
                "cameras": source.labels,
                "size": [source.observer.height, source.observer.width],
                "policy": policy,
                "seed": seed,
                "max_steps": max_steps,
                "action_repeat": getattr(source.base, "action_repeat", 1),
                "record_keys": list(source.record_keys),
            },
            append=True,
            compress=compress,
        )
        done = writer.indices()
        total = len(done) + append if append else episodes
        todo = [i for i in range(max(total, 0)) if i not in done]
        bar = tqdm(total=total, initial=total - len(todo), desc=f"collect {env_id}", unit="ep", disable=not progress)
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                episode = source.record(seed + i)
                writer.write(episode, index=i)
                bar.update(1)
                bar.set_postfix(steps=len(episode.reward))
        else:
            import concurrent.futures as cf

            from ssrl.utils import spawn_pool

            source.close()
            source = None
            with spawn_pool(min(workers, len(todo)), _start_collect_worker, (source_args,)) as pool:
                jobs = {pool.submit(_record_in_worker, str(out), i, seed + i, compress): i for i in todo}
                try:
                    for job in cf.as_completed(jobs):
                        _, steps = job.result()
                        bar.update(1)
                        bar.set_postfix(steps=steps)
                except BaseException as err:
                    # Stop at once (queued episodes are dropped; finished ones stay on disk for a
                    # rerun) and say which episode failed, not only that a worker did.
                    pool.shutdown(wait=True, cancel_futures=True)
                    failed = next((jobs[j] for j in jobs if j.done() and not j.cancelled() and j.exception()), None)
                    if failed is None or isinstance(err, KeyboardInterrupt):
                        raise
                    raise RuntimeError(f"recording episode {failed} failed: {err}") from err
        bar.close()
    finally:
        if source is not None:
            source.close()
        held.close()
    return RolloutDataset(out)


def _features(obs) -> np.ndarray:
    """The env's state observation as a flat float vector (a goal env's ``observation`` entry)."""
    if isinstance(obs, dict):
        obs = obs["observation"]
    return np.asarray(obs, np.float32).ravel()


def _frames(obs, labels: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(obs, dict):
        return {label: obs[label] for label in labels}
    return {labels[0]: obs}
