"""One run-folder mechanism for every long-running command: ``ssrl train``, ``pretrain``,
``collect`` and the cells of ``ssrl bench``.

A run folder holds an *identity file* (``run.json``, or a data set's ``meta.json``): the whole
configuration of the run, written once the run has really started (so a command that fails
validation leaves nothing behind that would refuse or mislabel the corrected command), and, when
the run reaches its budget, a *finished file* (``final.json``). Calling the same command again:

* on a folder with no identity file: a new run;
* with the same identity: resumes (the budget may grow; a finished run whose budget covers the
  one asked is refused unless ``overwrite``);
* with a different identity: refused always, naming every key that differs and both values,
  e.g. ``config.lr: 0.001 in the folder, 0.002 asked``; ``overwrite`` starts afresh.

Logs are appended as a run goes; on resume, :func:`truncate_records` drops the records a killed
run wrote after its last checkpoint, since the resumed run writes them again.

While a run works in its folder it holds a lock on ``.lock`` there (:meth:`RunFolder.locked`): a
second invocation on the same ``--out`` refuses at once, naming the process that holds it. The
operating system releases the lock when that process ends, however it ends, so a killed run
never leaves its folder locked.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import pathlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from ssrl.utils import atomic_path, write_json

LOCK_FILE = ".lock"


class OutputFolderError(ValueError):
    """An output folder that cannot be created or written (permissions, a read-only disk, a file
    in the way)."""


class RunFolderError(FileExistsError):
    """The folder holds a finished run, or a different one; the message says which and what to do."""


def config_diff(there: Any, asked: Any, prefix: str = "") -> list[str]:
    """The keys (dotted paths) where two JSON-like configurations differ, with both values.

    Values are compared as JSON would store them, so a tuple equals the list it was saved as.
    """
    there, asked = _jsonable(there), _jsonable(asked)
    if isinstance(there, dict) and isinstance(asked, dict):
        out = []
        for key in sorted(set(there) | set(asked), key=str):
            out += config_diff(there.get(key, _MISSING), asked.get(key, _MISSING), f"{prefix}{key}.")
        return out
    if there == asked:
        return []
    show = lambda v: "(absent)" if v is _MISSING else repr(v)  # noqa: E731
    return [f"{prefix.rstrip('.') or 'value'}: {show(there)} in the folder, {show(asked)} asked"]


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _jsonable(value: Any) -> Any:
    if value is _MISSING:
        return value
    return json.loads(json.dumps(value, default=str))


class RunFolder:
    """The output folder of one run (see the module docstring).

    Args:
        path: the folder (``--out``).
        command: what runs there, for messages (``"ssrl train"``).
        identity_file: the file holding the run's configuration.
        finished_file: the file written when the run reaches its budget.
    """

    def __init__(
        self, path: str | pathlib.Path, command: str, identity_file: str = "run.json", finished_file: str = "final.json"
    ) -> None:
        self.path = pathlib.Path(path)
        self.command = command
        self.identity_path = self.path / identity_file
        self.finished_path = self.path / finished_file

    def read(self, which: pathlib.Path) -> dict[str, Any] | None:
        """A JSON file of the folder, ``None`` if absent, a clear error if unreadable."""
        if not which.exists():
            return None
        try:
            value = json.loads(which.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(
                f"{which} is corrupt ({err}); pass --overwrite to start the run again, or choose another --out"
            ) from err
        if not isinstance(value, dict):
            raise RunFolderError(f"{which} does not hold a {self.command} run; choose another --out")
        return value

    @property
    def started(self) -> bool:
        return self.identity_path.exists()

    def check(
        self,
        identity: dict[str, Any],
        budget: float | None = None,
        budget_key: str = "",
        overwrite: bool = False,
        refuse_finished: bool = True,
        defaults: dict[str, Any] | None = None,
    ) -> bool:
        """Check the folder against the run asked; returns whether there is a run to resume.

        ``identity`` must equal the folder's on every key it holds (a key the folder lacks counts
        as its value in ``defaults``, if there: options added later, whose default is what older
        runs did); ``budget`` is compared with
        ``final.json[budget_key]``: a finished run that reached it is refused unless
        ``overwrite`` (which deletes the folder; nothing is deleted otherwise), or
        ``refuse_finished=False`` (a caller that reuses finished results, like bench cells).
        """
        if overwrite:
            if self.path.exists():
                for child in self.path.iterdir():  # all but the lock this process may hold
                    if child.name != LOCK_FILE:
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            return False
        previous = self.read(self.identity_path)
        if previous is None:
            return False
        defaults = defaults or {}
        diff = config_diff({k: previous.get(k, defaults.get(k, _MISSING)) for k in identity}, identity)
        if diff:
            raise RunFolderError(
                f"{self.path} holds a different {self.command} run; it differs in "
                + "; ".join(diff)
                + ". Choose another --out, or pass --overwrite to delete that run and start this one"
            )
        finished = self.read(self.finished_path)
        if finished is not None and refuse_finished:
            done = finished.get(budget_key) if budget_key else None
            if budget is None or done is None or done >= budget:
                reached = f" ({done} {budget_key.replace('_', ' ')})" if done is not None else ""
                raise RunFolderError(
                    f"the {self.command} run in {self.path} is finished{reached}; pass --overwrite to start it again, "
                    "ask for a larger budget to continue it, or choose another --out"
                )
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (creating the folder) for the ``with`` block; refuse at once,
        with the holder's process id, if another process holds it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - closed by the with below
        except OSError as err:  # checked before any work starts: nothing is lost
            raise OutputFolderError(
                f"cannot write to {self.path} ({err.strerror or err}); choose a folder you can write to with --out"
            ) from err
        with handle as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                raise RunFolderError(
                    f"{self.path} is in use by another {self.command} (process {holder}); wait for it to end, "
                    "or choose another --out"
                ) from None
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(str(os.getpid()))
                fh.flush()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def start(self, identity: dict[str, Any], **extra: Any) -> None:
        """Record the run's identity (and ``extra``, e.g. its budget); call once the run has
        passed validation and really starts. A larger budget on resume drops ``final.json``."""
        write_json(self.identity_path, dict(identity, **extra))
        if self.finished_path.exists():
            self.finished_path.unlink()

    def finish(self, summary: dict[str, Any]) -> None:
        write_json(self.finished_path, summary)


@contextlib.contextmanager
def one_at_a_time(path: str | pathlib.Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the ``with`` block, waiting for it where
    :meth:`RunFolder.locked` refuses: a second process blocks until the first is done, then does
    the block itself (e.g. finds the model the first pretrained). The lock goes with the process,
    so a killed holder frees it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_evaluations(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The evaluation records a run wrote to ``run_dir/metrics.jsonl``, in order: ``env_steps``,
    ``return_mean``, ``returns``, ``success_rate`` and ``final_*`` where the env has them (a metric
    that was NaN is None). The one reader of the format :class:`ssrl.agents.trainer.Logger` writes."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == "eval"]


def truncate_records(path: str | pathlib.Path, key: str, keep: Callable[[float], bool]) -> None:
    """Keep only the records of a ``.jsonl`` log (field ``key``) or ``.csv`` log (column ``key``)
    for which ``keep(value)`` holds; a missing file is left missing."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        column = rows[0].index(key)
        rows = rows[:1] + [r for r in rows[1:] if keep(float(r[column]))]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    with atomic_path(path) as tmp:  # a kill mid-write must not lose the records kept
        tmp.write_text("".join(line + "\n" for line in lines if keep(json.loads(line)[key])))
