"""Running one cell, in a worker process: collect -> pretrain -> probe -> RL -> result.

Every stage writes its output atomically and resumes from it: data sets (``data/KEY``, shared by
a task's cells), pretrained models (``models/...``, cached by their configuration), the RL run
(``cells/ID/run``), and the result (``cells/ID/result.json``). A cell folder is a
:class:`ssrl.runs.RunFolder` whose identity (``cell.json``) is the whole cell: a finished cell is
reused only when it was run with the same configuration, and a different one is refused with the
keys that differ.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import traceback
from typing import Any

from ssrl.runs import RunFolder, one_at_a_time, read_evaluations
from ssrl.utils import one_thread, write_json

from .cells import Cell, DataSpec, _hash


class Progress:
    """A cell's live status, written atomically for the parent's display."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.path = folder / "progress.json"
        self.state: dict[str, Any] = {"phase": "queued", "started": time.time()}

    def update(self, **fields: Any) -> None:
        self.state.update(fields, updated=time.time())
        write_json(self.path, self.state)


def collect_data(out: pathlib.Path, spec: DataSpec) -> pathlib.Path:
    """Collect (or finish collecting: ``collect`` resumes) a data set; idempotent."""
    one_thread()
    from ssrl.envs import make
    from ssrl.envs.pixels import state_mode_kwargs
    from ssrl.envs.rollouts import RolloutDataset, collect

    path = pathlib.Path(out) / "data" / spec.key
    have = len(RolloutDataset(path)) if (path / "meta.json").exists() else 0
    if have >= spec.collect.episodes:
        return path
    cameras = spec.collect.cameras
    if cameras is None:  # two synchronised views, for the multi-view methods
        env = make(spec.env_id, **state_mode_kwargs(spec.env))
        cameras = env.unwrapped.camera_names()[:2]
        env.close()
    env_kwargs = {k: v for k, v in {**spec.env, **spec.collect.env}.items() if k != "size"}  # size: the observer's
    collect(
        spec.env_id,
        policy=spec.collect.policy,
        episodes=spec.collect.episodes,
        out=path,
        cameras=cameras,
        size=int(spec.env.get("size", 84)),
        seed=spec.collect.seed,
        env_kwargs=env_kwargs or None,
        max_steps=spec.collect.max_steps,
        progress=False,
    )
    return path


def pretrained_model(out: pathlib.Path, cell: Cell, data, progress: Progress) -> pathlib.Path:
    """Pretrain (or reuse) the cell's representation; returns its checkpoint path. Cells that
    share a model (a method and its variants, with the same seed) may start together on two
    workers: the first pretrains it, the others wait and reuse it."""
    pre = cell.pretrain
    key = _hash([cell.method, cell.data.key, pre.identity(), cell.seed])
    folder = out / "models" / f"{cell.method}-{cell.task}-{key}-s{cell.seed}"
    if (folder / "final.json").exists():
        return folder / "model.pt"
    progress.update(phase="pretrain", pretrain_steps=pre.steps)
    with one_at_a_time(folder.with_name(folder.name + ".lock")):
        if not (folder / "final.json").exists():  # (another cell may have pretrained it meanwhile)
            _pretrain_model(folder, cell, data)
    return folder / "model.pt"


def _pretrain_model(folder: pathlib.Path, cell: Cell, data) -> None:
    from ssrl.representations.pretrain import build, pretrain

    pre = cell.pretrain
    if pre.steps == 0:  # the random-init lower bound: an untrained encoder of the same family
        import torch

        torch.manual_seed(cell.seed)
        build(cell.method, data, **pre.config).save(folder / "model.pt")
        write_json(folder / "final.json", {"steps": 0, "steps_per_s": None, "wall_time": 0.0})
        return
    pretrain(
        cell.method,
        data,
        out=folder,
        steps=pre.steps,
        batch_size=pre.batch_size,
        seed=cell.seed,
        config=pre.config,
        progress=False,
        precision=pre.precision,
    )


def probe_scores(
    model: pathlib.Path, data, progress: Progress, against_random: bool = False, pictures: pathlib.Path | None = None
) -> dict[str, Any]:
    """Probe scores (and the method's own extra scores) of a checkpoint on episodes it never
    trained on; with ``against_random``, also those of an untrained encoder of the same method
    and config (keys suffixed ``_random``)."""
    import torch

    from ssrl.representations import load_representation, make
    from ssrl.representations.pretrain import probe_split
    from ssrl.representations.probe import probe

    progress.update(phase="probe")
    rep = load_representation(model)
    train, test = probe_split(rep, data)
    candidates = {"": rep}
    if against_random:
        torch.manual_seed(12345)
        candidates["_random"] = make(rep.name, rep.obs_shape, **dataclasses.asdict(rep.config)).eval()
    scores: dict[str, Any] = {}
    for suffix, candidate in candidates.items():
        part = dict(probe(candidate, train, test), **candidate.extra_scores(test))
        scores.update(
            {f"{k}{suffix}": v for k, v in part.items() if not (suffix and k in ("target", "n_train", "n_test"))}
        )
    if pictures is not None:  # what the method does, for a person to look at (Representation.pictures)
        scores["pictures"] = [str(path.relative_to(pictures.parent)) for path in rep.pictures(test, pictures)]
    return scores


def run_cell(cell: Cell, out: str | pathlib.Path) -> dict[str, Any]:
    """Run one cell to completion (or resume it); returns and writes its result.

    A cell that fails returns an ``error`` instead of raising, so the other cells go on; it
    writes no result, so the next ``ssrl bench`` retries it (resuming what it had done). A retry
    that succeeds removes the failed try's ``error.txt``.
    """
    one_thread()
    folder = pathlib.Path(out) / "cells" / cell.id
    try:
        result = _run_cell(cell, pathlib.Path(out))
        (folder / "error.txt").unlink(missing_ok=True)
        return result
    except Exception as err:  # noqa: BLE001 - reported in the summary, retried on the next run
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        Progress(folder).update(phase="failed", error=str(err))
        return {
            "cell": cell.id,
            "row": cell.row,
            "task": cell.task,
            "seed": cell.seed,
            "kind": cell.kind,
            "error": f"{type(err).__name__}: {err}",
            "wall_time": 0.0,
        }


def _run_cell(cell: Cell, out: pathlib.Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    import ssrl  # noqa: F401  (registers the envs)

    run = RunFolder(out / "cells" / cell.id, "bench cell", identity_file="cell.json", finished_file="result.json")
    identity, budget = _identity_and_budget(cell, run)
    run.check(identity, refuse_finished=False)
    finished = run.read(run.finished_path)
    if finished is not None:
        reached = (finished.get("rl") or {}).get("env_steps")
        if budget is None or reached is None or reached >= budget:
            return finished
        run.finished_path.unlink()  # a larger RL budget: the cell's run continues where it ended
    run.start(identity)
    progress = Progress(run.path)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "cell": cell.id,
        "row": cell.row,
        "task": cell.task,
        "seed": cell.seed,
        "kind": cell.kind,
        "method": cell.method,
        "regime": cell.regime,
    }
    encoder, pretrain_time = None, 0.0
    if cell.pretrain is not None:
        from ssrl.representations import RolloutData

        progress.update(phase="load data")
        data = RolloutData(out / "data" / cell.data.key)
        t0 = time.perf_counter()
        model = pretrained_model(out, cell, data, progress)
        pretrain_time = time.perf_counter() - t0
        final = json.loads((model.parent / "final.json").read_text())
        result["pretrain"] = {k: final.get(k) for k in ("steps", "steps_per_s", "wall_time")}
        result["probe"] = probe_scores(
            model, data, progress, against_random=cell.probe_against_random, pictures=run.path / "pictures"
        )
        encoder = str(model)
    if cell.rl is not None:
        data_dir = out / "data" / cell.data.key if cell.data is not None else None
        result.update(_train(cell, run.path, encoder, progress, data_dir))
    result["wall_time"] = time.perf_counter() - start
    result["pretrain_wall_time"] = pretrain_time
    run.finish(result)
    progress.update(phase="done")
    return result


def _finished_run(run: pathlib.Path, env_steps: int) -> dict[str, Any] | None:
    """The summary (``final.json``) of a run that reached ``env_steps``, else None."""
    path = run / "final.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("env_steps", 0) >= env_steps else None


def _identity_and_budget(cell: Cell, run: RunFolder) -> tuple[dict[str, Any], int | None]:
    """The cell's identity without its RL budget, and that budget: a cell asked for more env
    steps than it ran (``ssrl bench --rl-steps``) continues its run instead of being refused.
    Cell folders written before this kept the budget in ``cell.json``; it is dropped there."""
    identity = cell.identity()
    budget = None
    if identity.get("rl"):
        identity["rl"] = dict(identity["rl"])
        budget = int(identity["rl"].pop("env_steps"))
    previous = run.read(run.identity_path)
    if previous and isinstance(previous.get("rl"), dict) and "env_steps" in previous["rl"]:
        previous["rl"] = {k: v for k, v in previous["rl"].items() if k != "env_steps"}
        write_json(run.identity_path, previous)
    return identity, budget


def _train(
    cell: Cell, folder: pathlib.Path, encoder: str | None, progress: Progress, data_dir: pathlib.Path | None = None
) -> dict[str, Any]:
    """The cell's RL run (``ssrl train`` in ``folder/run``) and what the report needs of it;
    ``data_dir``: the cell's pretraining data (``rl.online``'s ``data: pretraining``)."""
    from ssrl.agents.run import train_run
    from ssrl.envs.pixels import state_mode_kwargs

    rl = cell.rl
    env_kwargs = dict(cell.env)
    hyper = dict(rl.hyperparams)
    if cell.state:
        env_kwargs = state_mode_kwargs(env_kwargs)
    # A pretrained encoder serves the agent in the cell's regime; without one (decoupled and
    # joint cells that do not pretrain) the run builds a fresh method with the cell's options.
    fresh = encoder is None and cell.method is not None
    online = dict(rl.online) if cell.regime == "decoupled" else {}  # only decoupled cells fine-tune online
    if online.get("data") == "pretraining":
        if data_dir is None:
            raise ValueError(f"cell {cell.id}: rl.online.data is 'pretraining' but the cell pretrains on no data")
        online["data"] = str(data_dir)  # D: what the encoder learnt from
    progress.update(phase="rl", env_steps=0, budget=rl.env_steps)

    def report(status: dict[str, Any]) -> None:
        progress.update(
            phase="rl",
            env_steps=status["env_steps"],
            budget=status["budget"],
            eval_return=status["eval_return"],
            env_steps_per_s=status["env_steps_per_s"],
        )

    t0 = time.perf_counter()
    final = _finished_run(folder / "run", rl.env_steps)
    # A run trained to this budget by an earlier attempt whose later steps (pictures, the held-out
    # evaluation) failed is not trained again: ssrl train would refuse a finished run anyway.
    summary = final or train_run(
        folder / "run",
        cell.env_id,
        algo=rl.algo,
        env_steps=rl.env_steps,
        seed=cell.seed,
        env_kwargs=env_kwargs,
        hyperparams=hyper,
        encoder=encoder,
        method=cell.method if fresh else None,
        regime=cell.regime,
        method_kwargs=cell.method_options if fresh else None,
        regime_kwargs=online or None,
        goal_reward=cell.goal_reward,
        eval_every=rl.eval_every,
        eval_episodes=rl.eval_episodes,
        progress=False,
        tensorboard=False,
        callback=report,
    )
    rl_time = float(final["wall_time"]) if final else time.perf_counter() - t0  # (the earlier attempt's)
    held_out = {}
    for key, overrides in rl.held_out_evaluations().items():  # evaluations in changed envs (held-out objects)
        from ssrl.agents.evaluate import evaluate_run

        progress.update(phase="held-out evaluation")
        result = evaluate_run(
            folder / "run", episodes=rl.eval_episodes, env_overrides=overrides, out=folder / f"{key}.json"
        )
        held_out[key] = {k: v for k, v in result.items() if k != "run"}
    from .goal_pictures import goal_pictures

    try:  # goal tasks: goals beside what was reached (a picture: its failure does not fail the cell)
        goal_pictures(folder / "run", folder / "pictures")
    except Exception as err:  # noqa: BLE001
        import warnings

        warnings.warn(f"cell {cell.id}: goal pictures not drawn: {type(err).__name__}: {err}", stacklevel=2)
    # Returns, and for goal tasks the success rate and the final distances the env reports.
    evals = [
        {
            k: v
            for k, v in e.items()
            if k in ("env_steps", "return_mean", "returns", "success_rate") or k.startswith("final_")
        }
        for e in read_evaluations(folder / "run")
    ]
    return {
        "evals": evals,
        **held_out,
        "final_return": evals[-1]["return_mean"] if evals else None,
        "rl": {
            "env_steps": summary["env_steps"],
            "updates": summary["updates"],
            "wall_time": rl_time,
            "updates_per_s": summary["updates"] / rl_time if rl_time > 0 else None,
        },
    }
