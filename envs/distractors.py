"""Distracting backgrounds: the pixels behind the scene replaced by task-irrelevant images.

This is the natural-video setting of DBC (Zhang, McAllister, Calandra, Gal and Levine, "Learning
Invariant Representations for Reinforcement Learning without Reconstruction", ICLR 2021,
arXiv:2006.10742; code github.com/facebookresearch/deep_bisim4control, its vendored
``dmc2gym/wrappers.py`` and ``natural_imgsource.py``): the sky (and for some domains the floor)
shows a moving video, a random colour or noise, while the physics and the ground-truth state are
unchanged. DBC's videos are the ``driving_car`` class of Kinetics-400's train split, read in
grayscale. Two things differ from the public DBC code, on purpose:

* the background is found from the depth buffer (pixels where nothing was drawn), not by the
  colour test ``B > G and B > R``, which also catches blue parts of the robot;
* the background is re-drawn on every ``reset`` (DBC's code never resets its source, so one
  video plays for the whole run).

No data set is downloaded: ``video`` generates moving shapes procedurally, and ``folder`` plays
the videos or images of a folder the user gives.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Protocol

import numpy as np

KINDS: tuple[str, ...] = ("color", "noise", "video", "folder")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# Domains whose floor DBC replaced as well as the sky (their floor is the blue grid); DBC's
# vendored suite greys the floor of cheetah, walker, hopper and stacker, so for those (and any
# other domain) only the sky is replaced.
FLOOR_REPLACED_DOMAINS = frozenset({"cartpole", "reacher", "finger", "ball_in_cup"})


class Background(Protocol):
    """A source of background frames of one size; ``reset`` starts a new episode."""

    def reset(self, rng: np.random.Generator) -> None: ...

    def next_frame(self) -> np.ndarray:
        """The next (H, W, 3) uint8 frame."""


class ColorBackground:
    """One random colour per episode."""

    def __init__(self, height: int, width: int) -> None:
        self._frame = np.zeros((height, width, 3), np.uint8)

    def reset(self, rng: np.random.Generator) -> None:
        self._frame[:] = rng.integers(0, 256, size=3, dtype=np.uint8)

    def next_frame(self) -> np.ndarray:
        return self._frame


class NoiseBackground:
    """Fresh uniform noise in every frame."""

    def __init__(self, height: int, width: int) -> None:
        self._shape = (height, width, 3)
        self._rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = np.random.default_rng(rng.integers(2**63))

    def next_frame(self) -> np.ndarray:
        return self._rng.integers(0, 256, size=self._shape, dtype=np.uint8)


class ProceduralVideoBackground:
    """A generated video: coloured discs and boxes drifting over a colour gradient.

    Each episode draws new colours, shapes, sizes and velocities; the shapes bounce off the image
    borders, so the background moves all episode long, like the natural videos of DBC, without any
    download.
    """

    def __init__(self, height: int, width: int, n_shapes: int = 6) -> None:
        self.height, self.width, self.n_shapes = height, width, n_shapes
        self._yy, self._xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self._frame = np.zeros((height, width, 3), np.uint8)
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        h, w, n = self.height, self.width, self.n_shapes
        c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * self._xx / w + np.sin(angle) * self._yy / h + 1.0) / 2.0
        self._base = (c0 + (c1 - c0) * ramp[..., None]).astype(np.float32)
        self._pos = rng.uniform(0, 1, size=(n, 2)) * (h, w)
        speed = rng.uniform(0.5, 2.5, size=n) * max(h, w) / 84.0
        direction = rng.uniform(0, 2 * np.pi, size=n)
        self._vel = np.stack([np.sin(direction), np.cos(direction)], axis=1) * speed[:, None]
        self._radius = rng.uniform(0.08, 0.22, size=n) * min(h, w)
        self._is_box = rng.random(n) < 0.5
        self._colour = rng.uniform(0, 255, size=(n, 3)).astype(np.float32)

    def next_frame(self) -> np.ndarray:
        frame = self._base.copy()
        for i in range(self.n_shapes):
            dy = self._yy - self._pos[i, 0]
            dx = self._xx - self._pos[i, 1]
            if self._is_box[i]:
                inside = (np.abs(dy) < self._radius[i]) & (np.abs(dx) < self._radius[i])
            else:
                inside = dy * dy + dx * dx < self._radius[i] ** 2
            frame[inside] = self._colour[i]
        # Move and bounce off the borders.
        self._pos += self._vel
        for axis, limit in ((0, self.height), (1, self.width)):
            out = (self._pos[:, axis] < 0) | (self._pos[:, axis] > limit)
            self._vel[out, axis] *= -1
            self._pos[:, axis] = np.clip(self._pos[:, axis], 0, limit)
        np.copyto(self._frame, frame, casting="unsafe")
        return self._frame


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w, 3) uint8 image (area averaging is not needed for
    a background, and this keeps Pillow/OpenCV out of the hot path)."""
    rows = (np.arange(height) * frame.shape[0] / height).astype(int)
    cols = (np.arange(width) * frame.shape[1] / width).astype(int)
    return np.ascontiguousarray(frame[rows][:, cols, :3])


class FolderBackground:
    """Frames of the videos (and still images) in a user's folder, played in a loop.

    Every episode picks a random clip and a random start frame. Frames are decoded and resized
    once, at construction (at most ``max_frames`` in all), so stepping costs no decoding.
    """

    def __init__(self, path: str | pathlib.Path, height: int, width: int, max_frames: int = 5000) -> None:
        import imageio.v3 as iio

        folder = pathlib.Path(path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"distractor folder {str(folder)!r} does not exist or is not a folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"distractor folder {str(folder)!r} holds no video ({', '.join(VIDEO_SUFFIXES)}) "
                f"or image ({', '.join(IMAGE_SUFFIXES)}) files"
            )
        self.clips: list[np.ndarray] = []
        total = 0
        for file in files:
            if total >= max_frames:
                break
            try:
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    frames = [iio.imread(file)]
                else:
                    frames = []
                    for frame in iio.imiter(file):
                        frames.append(frame)
                        if total + len(frames) >= max_frames:
                            break
            except Exception as err:  # noqa: BLE001 - name the file that could not be read
                raise ValueError(f"could not read distractor file {str(file)!r}: {err}") from err
            clip = np.stack([_resize(_as_rgb(f), height, width) for f in frames])
            self.clips.append(clip)
            total += len(clip)
        self._clip = self.clips[0]
        self._t = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._clip = self.clips[rng.integers(len(self.clips))]
        self._t = int(rng.integers(len(self._clip)))

    def next_frame(self) -> np.ndarray:
        frame = self._clip[self._t % len(self._clip)]
        self._t += 1
        return frame


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame[..., :3]


@dataclasses.dataclass(frozen=True)
class DistractorSpec:
    """What to show behind the scene.

    ``kind`` is one of ``color``, ``noise``, ``video`` (generated) or ``folder`` (``path`` to a
    folder of videos or images). ``replace_floor`` also replaces the floor; ``None`` follows DBC
    (floor replaced for cartpole, reacher, finger and ball_in_cup only).
    """

    kind: str
    path: str | None = None
    replace_floor: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown distractor {self.kind!r}; use one of {KINDS} (folder as 'folder:PATH')")
        if self.kind == "folder" and not self.path:
            raise ValueError("the 'folder' distractor needs a path: distractor='folder:/path/to/videos'")

    @classmethod
    def parse(cls, spec: str | dict | DistractorSpec | None) -> DistractorSpec | None:
        """Accepts ``None``, ``'video'``, ``'folder:/path'``, a dict of fields, or a spec."""
        if spec is None or isinstance(spec, DistractorSpec):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        if isinstance(spec, str):
            kind, _, path = spec.partition(":")
            return cls(kind=kind, path=path or None)
        raise TypeError(f"distractor must be None, a string, a dict or a DistractorSpec, not {spec!r}")

    def floor_replaced(self, domain: str) -> bool:
        return domain in FLOOR_REPLACED_DOMAINS if self.replace_floor is None else self.replace_floor

    def build(self, height: int, width: int) -> Background:
        if self.kind == "color":
            return ColorBackground(height, width)
        if self.kind == "noise":
            return NoiseBackground(height, width)
        if self.kind == "video":
            return ProceduralVideoBackground(height, width)
        return FolderBackground(self.path, height, width)
