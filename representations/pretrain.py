"""``ssrl pretrain``: train a representation on a rollout data set, resumably.

The output folder (a :class:`ssrl.runs.RunFolder`, like every long-running command's) holds::

    run.json                 the whole configuration (method, data and its training episodes,
                             resolved method config, batch size, lr, seed, holdout) and budget
    model.pt / model.json    the representation (weights + config + the episodes it trained on)
    state.pt                 optimiser, step and RNG states, for resuming
    metrics.jsonl            the loss (and the method's metrics) every ``log_every`` steps
    final.json               written at the end: steps, time, steps/s, first and last loss

Held-out episodes: with ``holdout > 0`` (default 0.2) pretraining trains on all but a held-out
fraction of the episodes (``RolloutData.split(holdout, seed=0)``, the split ``ssrl bench`` uses)
and the model records the episodes it trained on, so ``ssrl probe`` scores it only on episodes
it never saw (:func:`probe_split`), or refuses and says why.

Both files are written atomically every ``checkpoint_every`` steps; ``state.pt`` holds the
weights too, so a killed run resumes from it alone, with the same data stream (the sampling
RNG is saved). Resuming checks the whole configuration and names any key that differs; a
finished run is not overwritten unless asked, and a larger ``steps`` continues it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np
import torch

from ssrl.runs import RunFolder, truncate_records
from ssrl.utils import (
    atomic_path,
    autocast,
    build_config,
    check_whole,
    read_torch_file,
    resolve_device,
    resolve_precision,
)

from .core import Representation, get
from .data import RolloutData

SPLIT_SEED = 0  # every driver holds out the same episodes of a data set


def build(method: str, data: RolloutData, **config: Any) -> Representation:
    """A representation whose input matches the data's frames and the config's frame stack."""
    cls = get(method)
    if "action_dim" in {f.name for f in dataclasses.fields(cls.Config)} and "action_dim" not in config:
        config = dict(config, action_dim=int(data.action.shape[1]))  # models of (s, a) take the data's actions
    cfg = build_config(cls.Config, config)
    c, h, w = data.view_shape(getattr(cfg, "camera", None))  # the camera (or per-step image) it trains on
    rep = cls(cfg, (c * getattr(cfg, "frame_stack", 1), h, w))
    rep.check_data(data)
    return rep


def episode_ids(data: RolloutData) -> list[str] | None:
    """A stable id per episode: ``<hash of its data set's meta.json>/<file name>``, so the same
    episode is recognised whatever path the data set is read from; ``None`` for episodes built
    in memory (no file)."""
    hashes: dict[pathlib.Path, str] = {}
    ids = []
    for episode in data.episodes:
        if episode.path is None:
            return None
        folder = pathlib.Path(episode.path).resolve().parent.parent
        if folder not in hashes:
            meta = folder / "meta.json"
            hashes[folder] = hashlib.sha1(meta.read_bytes()).hexdigest()[:12] if meta.exists() else str(folder)
        ids.append(f"{hashes[folder]}/{pathlib.Path(episode.path).name}")
    return ids


def probe_split(rep: Representation, data: RolloutData, holdout: float = 0.2) -> tuple[RolloutData, RolloutData]:
    """(probe-train, probe-test) episodes of ``data`` for scoring ``rep``: the test episodes are
    ones the encoder never trained on.

    * The model records no training episodes (built in memory, or untrained): a plain split.
    * None of ``data``'s episodes was trained on (another data set): a plain split.
    * Some were: the others are the test set (the probe's regression fits on the rest).
    * All were: refused, with what to do instead.
    """
    seen = set(rep.trained_on or ())
    ids = episode_ids(data) if seen else None
    if not seen or ids is None or not seen.intersection(ids):
        return data.split(holdout, seed=SPLIT_SEED)
    unseen = [i for i, e in enumerate(ids) if e not in seen]
    if not unseen:
        raise ValueError(
            f"the encoder was pretrained on every episode of {data.meta.get('env_id', 'this data set')!r} given; "
            "a probe on them would not be held out. Collect fresh episodes for the probe "
            "(ssrl collect ... --seed N), or pretrain with --holdout 0.2 to keep some episodes from the encoder"
        )
    if len(unseen) == len(ids):
        return data.split(holdout, seed=SPLIT_SEED)
    return data.subset([i for i in range(len(ids)) if i not in set(unseen)]), data.subset(unseen)


class PretrainDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def pretrain(
    method: str,
    data: str | pathlib.Path | RolloutData,
    out: str | pathlib.Path | None = None,
    steps: int = 2000,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    holdout: float = 0.2,
    checkpoint_every: int = 500,
    log_every: int = 50,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    precision: str = "fp32",
) -> tuple[Representation, dict[str, Any]]:
    """Train ``method`` on ``data`` for ``steps`` gradient steps; returns (model, summary).

    ``holdout``: the fraction of episodes kept from the encoder (0 trains on all of them).
    ``precision``: ``"fp32"``, ``"bf16"`` (the loss computed under bfloat16 autocast: matmuls and
    convolutions in bfloat16; weights, Adam's states and the saved model in float32) or
    ``"auto"`` (bf16 where the hardware has it natively, :func:`ssrl.utils.resolve_precision`).
    A run resumes only in the precision it started in.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    for name, value, minimum in (
        ("steps", steps, 0),
        ("batch_size", batch_size, 1),
        ("checkpoint_every", checkpoint_every, 1),
    ):
        if value is not None:
            check_whole(f"pretrain {name}", value, minimum)
    if lr is not None and not lr > 0:
        raise ValueError(f"pretrain lr must be positive, got {lr!r}")
    source = str(pathlib.Path(data).resolve()) if isinstance(data, (str, pathlib.Path)) else None
    if not isinstance(data, RolloutData):
        data = RolloutData(data)
    if holdout > 0:
        data, _ = data.split(holdout, seed=SPLIT_SEED)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    torch.manual_seed(seed)
    rep = build(method, data, **dict(config or {})).to(device)
    rep.trained_on = episode_ids(data)
    batch_size = batch_size or rep.config.batch_size
    lr = lr or rep.config.lr
    identity = {
        "method": method,
        "config": dataclasses.asdict(rep.config),
        "batch_size": batch_size,
        "lr": lr,
        "seed": int(seed),
        "holdout": holdout,
        "episodes": rep.trained_on,
        "precision": precision,
    }
    optimizer = torch.optim.Adam(rep.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    step, first_loss = 0, None
    folder = RunFolder(out, "ssrl pretrain") if out is not None else None
    # A second ssrl pretrain on this --out refuses while this one runs.
    with folder.locked() if folder is not None else contextlib.nullcontext():
        if folder is not None:
            # (runs from before the precision option ran in fp32)
            resuming = folder.check(
                identity, budget=steps, budget_key="steps", overwrite=overwrite, defaults={"precision": "fp32"}
            )
            if resuming and (folder.path / "state.pt").exists():
                state = read_torch_file(folder.path / "state.pt", "pretraining state")
                rep.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                rng.bit_generator.state = state["rng"]
                torch.set_rng_state(state["torch_rng"])
                step, first_loss = state["step"], state["first_loss"]
            # A killed run's records past its checkpoint are written again (none kept on a fresh start).
            truncate_records(folder.path / "metrics.jsonl", "step", lambda s: s <= step if step else False)
            folder.start(identity, steps=int(steps), data=source)

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=steps,
                initial=step,
                desc=f"pretrain {method}",
                unit="step",
                mininterval=1.0 if sys.stderr.isatty() else 60.0,
            )
        start, start_step = time.perf_counter(), step
        rep.train()
        last: dict[str, float] = {}
        while step < steps:
            batch = rep.to_batch(rep.sample_batch(data, batch_size, rng))
            with autocast(device, precision):
                loss, metrics = rep.loss(batch)
            if not torch.isfinite(loss):
                raise PretrainDiverged(
                    f"{method} loss is {loss.item()} at step {step}; the last good checkpoint is in {out}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            first_loss = value if first_loss is None else first_loss
            last = {"step": step, "loss": value, **{k: float(v) for k, v in metrics.items()}}
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            if folder is not None and (step % log_every == 0 or step == steps):
                with (folder.path / "metrics.jsonl").open("a") as fh:
                    fh.write(json.dumps(last) + "\n")
            if folder is not None and (step % checkpoint_every == 0 or step == steps):
                _checkpoint(folder.path, rep, optimizer, rng, step, first_loss)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        with rep.evaluating(), torch.no_grad():
            rep.after_pretraining(data)  # e.g. the VAEs' prior (RIG's step 3): part of the saved model
        if folder is not None:
            rep.save(folder.path / "model.pt")
        summary = {
            "method": method,
            "steps": step,
            "batch_size": batch_size,
            "lr": lr,
            "precision": precision,
            "steps_per_s": (step - start_step) / elapsed if elapsed > 0 else math.nan,
            "first_loss": first_loss,
            "last": last,
            "wall_time": elapsed,
        }
        if folder is not None:
            folder.finish(summary)
        rep.eval()
        return rep, summary


def _checkpoint(out: pathlib.Path, rep, optimizer, rng, step: int, first_loss: float | None) -> None:
    rep.save(out / "model.pt")
    state = {
        "step": step,
        "first_loss": first_loss,
        "model": rep.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(out / "state.pt", suffix=".pt") as tmp:
        torch.save(state, tmp)
