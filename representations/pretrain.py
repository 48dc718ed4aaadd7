"""``ssrl pretrain``: train a representation on a rollout data set, resumably.

The output folder holds::

    model.pt / model.json    the representation (weights + config; .json readable without torch)
    state.pt                 optimiser, step and RNG states, for resuming
    metrics.jsonl            the loss (and the method's metrics) every ``log_every`` steps
    final.json               written at the end: steps, time, steps/s, first and last loss

Both files are written atomically every ``checkpoint_every`` steps; ``state.pt`` holds the
weights too, so a killed run resumes from it alone, with the same data stream (the sampling
RNG is saved). A finished run is not overwritten unless asked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import sys
import time
from typing import Any

import numpy as np
import torch

from ssrl.utils import atomic_path, write_json

from .core import Representation, build_config, get
from .data import RolloutData


def build(method: str, data: RolloutData, **config: Any) -> Representation:
    """A representation whose input matches the data's frames and the config's frame stack."""
    cls = get(method)
    if "action_dim" in {f.name for f in dataclasses.fields(cls.Config)} and "action_dim" not in config:
        config = dict(config, action_dim=int(data.action.shape[1]))  # models of (s, a) take the data's actions
    cfg = build_config(cls.Config, config)
    c, h, w = data.frame_shape
    rep = cls(cfg, (c * getattr(cfg, "frame_stack", 1), h, w))
    rep.check_data(data)
    return rep


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
    checkpoint_every: int = 500,
    log_every: int = 50,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> tuple[Representation, dict[str, Any]]:
    """Train ``method`` on ``data`` for ``steps`` gradient steps; returns (model, summary)."""
    if not isinstance(data, RolloutData):
        data = RolloutData(data)
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    config = dict(config or {})
    out = pathlib.Path(out) if out is not None else None
    torch.manual_seed(seed)
    rep = build(method, data, **config).to(device)
    batch_size = batch_size or rep.config.batch_size
    lr = lr or rep.config.lr
    optimizer = torch.optim.Adam(rep.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    step, first_loss = 0, None
    if out is not None:
        if (out / "final.json").exists():
            if not overwrite:
                raise FileExistsError(f"{out} holds a finished pretraining run; pass --overwrite or choose another --out")
            shutil.rmtree(out)
        if (out / "state.pt").exists():
            state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
            if state["method"] != method or state["config"] != config or state["seed"] != seed:
                raise FileExistsError(f"{out} holds a different pretraining run; choose another --out or pass --overwrite")
            rep.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            step, first_loss = state["step"], state["first_loss"]
            _truncate_log(out / "metrics.jsonl", step)
        out.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc=f"pretrain {method}", unit="step",
                   mininterval=1.0 if sys.stderr.isatty() else 60.0)
    start, start_step = time.perf_counter(), step
    rep.train()
    last: dict[str, float] = {}
    while step < steps:
        batch = rep.to_batch(rep.sample_batch(data, batch_size, rng))
        loss, metrics = rep.loss(batch)
        if not torch.isfinite(loss):
            raise PretrainDiverged(f"{method} loss is {loss.item()} at step {step}; the last good checkpoint is in {out}")
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
        if out is not None and (step % log_every == 0 or step == steps):
            with (out / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(last) + "\n")
        if out is not None and (step % checkpoint_every == 0 or step == steps):
            _checkpoint(out, rep, optimizer, rng, step, first_loss, method, config, seed)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    if hasattr(rep, "fit_prior"):
        # Methods that imagine goals (the VAEs) fit their prior to the encodings of the data
        # (RIG's step 3); the prior is part of the saved model.
        rep.eval()
        with torch.no_grad():
            rep.fit_prior(data)
        if out is not None:
            rep.save(out / "model.pt")
    summary = {"method": method, "steps": step, "batch_size": batch_size, "lr": lr,
               "steps_per_s": (step - start_step) / elapsed if elapsed > 0 else math.nan,
               "first_loss": first_loss, "last": last, "wall_time": elapsed}
    if out is not None:
        write_json(out / "final.json", summary)
    rep.eval()
    return rep, summary


def _checkpoint(out, rep, optimizer, rng, step, first_loss, method, config, seed) -> None:
    rep.save(out / "model.pt")
    state = {"method": method, "config": config, "seed": seed, "step": step, "first_loss": first_loss, "model": rep.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    with atomic_path(out / "state.pt", suffix=".pt") as tmp:
        torch.save(state, tmp)


def _truncate_log(path: pathlib.Path, step: int) -> None:
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))
