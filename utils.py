"""Small shared helpers: atomic writes, videos, run metadata, configs, devices and spaces.

Everything here is used by more than one layer (envs, agents, representations, benchmarks) and
imports nothing of ssrl, so any module may import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import pathlib
import platform
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    A reader never sees a half-written file, and a crash mid-write leaves the old file intact.
    ``suffix`` keeps the extension for writers that look at it (imageio, torch does not care).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    # mkstemp makes the file 0600; give it what open() would have (0666 less the umask), so a
    # checkpoint or a data set is as readable by a group or a web server as any other output.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        # A full disk surfaces as ENOSPC, or as torch's stream writer failing ("[enforce fail at
        # inline_container.cc] unexpected pos", "file write failed"), naming no file.
        if _looks_like_full_disk(err, path.parent):
            raise DiskFullError(
                errno.ENOSPC,
                f"the disk holding {path} is full ({_free_bytes(path.parent)} bytes free), so it could not be "
                f"written ({err}); the files written before are intact: free some space and run the same "
                "command again to resume",
            ) from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# Below this many free bytes after a torch write failed, the failure is taken for a full disk.
DISK_FULL_BYTES = 1 << 20


def _looks_like_full_disk(err: BaseException, folder: pathlib.Path) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(err)
    if "unexpected pos" in text or "file write failed" in text:  # torch's zip writer
        free = _free_bytes(folder)
        return free is not None and free < DISK_FULL_BYTES
    return False


class DiskFullError(OSError):
    """A write failed because the disk is full (the message names the file)."""


def _free_bytes(folder: pathlib.Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def check_whole(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int if it is a whole number (Python or numpy, not a bool) >= ``minimum``;
    else a ValueError naming ``name``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def build_config(config_cls: type, values: dict[str, Any], preset: dict[str, Any] | None = None) -> Any:
    """``config_cls(**preset, **values)`` with the user's keys checked by name and their values
    by type first (:mod:`ssrl.configs`), so a typo or ``batch_size=abc`` gets a message naming the
    option instead of a ``TypeError`` from deep inside: unknown options list the valid ones."""
    import typing

    from ssrl.configs import coerce

    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {config_cls.__qualname__} option(s) {unknown}; valid options: {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    checked = {k: coerce(hints[k], v, config_cls.__qualname__, k) for k, v in values.items()}
    return config_cls(**dict(preset or {}, **checked))


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"``: the GPU when torch sees one, else the CPU; anything else as ``torch.device``."""
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16", "auto")
# /proc/cpuinfo flags of CPUs with native bfloat16 matmuls: AVX-512 BF16 (Cooper Lake, Zen 4 and
# later) and AMX (Sapphire Rapids and later).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where it cannot be read.
    ``SSRL_CPU_FLAGS`` (space-separated, may be empty) replaces them, for this process and the
    workers it starts: ``SSRL_CPU_FLAGS=`` makes ``precision="auto"`` fp32 on any CPU (the tests
    run so)."""
    if "SSRL_CPU_FLAGS" in os.environ:
        return set(os.environ["SSRL_CPU_FLAGS"].split())
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_precision(value: str, device: Any) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``precision`` setting on ``device``.

    ``"auto"`` is ``"bf16"`` on a CPU with AVX-512 BF16 or AMX (the ``/proc/cpuinfo`` flags
    ``avx512_bf16``, ``amx_bf16``: :func:`cpu_flags`) and on a CUDA GPU with native bfloat16
    (``torch.cuda.is_bf16_supported``, emulation not counted), else ``"fp32"``; ``"fp32"`` and
    ``"bf16"`` are returned as they are.

    :raises ValueError: any other value.
    """
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {value!r}")
    if value != "auto":
        return value
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "fp32"
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation argument
            native = torch.cuda.is_bf16_supported()
        return "bf16" if native else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_flags() & set(CPU_BF16_FLAGS) else "fp32"
    return "fp32"


def autocast(device: Any, precision: str):
    """The context in which a network runs at ``precision`` (``"fp32"`` or ``"bf16"``, resolved)
    on ``device``: bfloat16 matmuls and convolutions under torch's autocast; fp32 weights,
    optimiser states and the ops autocast keeps in float32 (softmax, losses, norms)."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def is_image_space(space: Any) -> bool:
    """A uint8 ``(C, H, W)`` Box: what the suite's encoders take."""
    import gymnasium as gym

    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def file_fingerprint(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256: what a run depends on in a checkpoint it reads,
    wherever the file lies (a moved or renamed folder keeps it; retrained weights change it)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return pathlib.Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pathlib.Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_torch_file(
    path: str | os.PathLike, what: str, format_version: int | None = None, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``torch.load`` a checkpoint dict safely (weights only), with errors that name the file:
    FileNotFoundError if missing; ValueError if corrupt, truncated, not a dict, of another
    ``format_version`` (its ``"format"`` entry) or without the ``required`` entries."""
    import torch

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        raise ValueError(f"{path} is not a readable {what} (corrupt or truncated?): {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an ssrl {what}")
    if format_version is not None and state.get("format") != format_version:
        raise ValueError(f"{path} is not an ssrl {what} of format {format_version} (it has {state.get('format')!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{path} is not an ssrl {what}: it lacks {', '.join(missing)}")
    return state


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = 30) -> pathlib.Path:
    """Write (H, W, 3) uint8 frames to an mp4 (H.264), atomically."""
    import imageio.v2 as imageio

    path = pathlib.Path(path)
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    # H.264 wants even sizes; pad by one row/column where needed.
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with atomic_path(path, suffix=path.suffix) as tmp:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, format="FFMPEG") as writer:
            for frame in frames:
                writer.append_data(np.pad(frame, pad) if any(p[1] for p in pad) else frame)
    return path


def image_grid(rows: list[list[np.ndarray]], gap: int = 2, scale: int = 1) -> np.ndarray:
    """Images ``(3, H, W)`` or ``(H, W, 3)`` uint8, row by row, each enlarged ``scale`` times
    (nearest neighbour: pixels stay sharp), tiled into one ``(H', W', 3)`` picture with white gaps
    of ``gap`` pixels (rows may have different lengths)."""
    as_hwc = [
        [np.asarray(im).transpose(1, 2, 0) if np.asarray(im).shape[0] == 3 else np.asarray(im) for im in row]
        for row in rows
    ]
    if scale < 1:
        raise ValueError(f"image_grid: scale must be a whole number >= 1, got {scale}")
    if scale > 1:
        as_hwc = [[im.repeat(scale, 0).repeat(scale, 1) for im in row] for row in as_hwc]
    h, w = as_hwc[0][0].shape[:2]
    cols = max(len(row) for row in as_hwc)
    grid = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(as_hwc):
        for c, im in enumerate(row):
            grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = im
    return grid


def write_png(path: str | os.PathLike, image: np.ndarray) -> pathlib.Path:
    """An ``(H, W, 3)`` uint8 image to a PNG, atomically."""
    import imageio.v2 as imageio

    path = pathlib.Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        imageio.imwrite(tmp, np.asarray(image, np.uint8), format="PNG")
    return path


def machine_info() -> dict[str, Any]:
    """What a result file records about where it was measured."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "mujoco", "dm-control", "gymnasium", "stable-baselines3", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def one_thread() -> None:
    """One thread for OpenMP and Mesa in this process (set before they start threads) and
    headless EGL: what a bench cell or collection sets wherever it runs (a pool worker, a Ray
    task, or ``ssrl bench --workers 1`` in the bench's own process)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["LP_NUM_THREADS"] = "1"
    os.environ.setdefault("MUJOCO_GL", "egl")


def worker_init(parent: int | None = None) -> None:
    """A pool worker's start: :func:`one_thread`, and on Linux the worker is terminated when its
    parent dies. (Killing ``ssrl bench`` used to leave its pool workers training on: a rerun then
    found the cells' folders locked by them.) Only pool workers: in the bench's own process
    (``--workers 1``) it would end ``nohup ssrl bench ... &`` when its shell exits, silently."""
    one_thread()
    _die_with_parent(parent)


def _die_with_parent(parent: int | None = None) -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM): the kernel sends SIGTERM when the parent exits, and a
    killed bench cell or collection resumes on the next run. If the parent (``parent``, the pid
    that started this worker; unknown: init's pid 1) is already gone, the worker ends at once.
    Linux only; elsewhere a no-op."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    # The parent died before prctl: do not outlive it. (With ``parent`` known this compares with
    # its pid, not with init's 1, so a bench that is itself pid 1, as in a container started
    # without an init, keeps its pool.)
    orphaned = os.getppid() != parent if parent is not None else os.getppid() == 1
    if orphaned:
        os.kill(os.getpid(), signal.SIGTERM)


def spawn_pool(workers: int, initializer: Any = None, initargs: tuple = ()):
    """A process pool of ``workers`` spawned processes, each running :func:`worker_init` and then
    ``initializer(*initargs)``. Spawned, not forked: a process forked after its parent opened an
    EGL context hangs in MuJoCo rendering."""
    import concurrent.futures as cf
    import multiprocessing as mp

    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def _init_worker(parent: int, initializer: Any, initargs: tuple) -> None:
    worker_init(parent)
    if initializer is not None:
        initializer(*initargs)
