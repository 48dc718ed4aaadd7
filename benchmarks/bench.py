"""``ssrl bench``: which representation serves control best, on which task, at what cost.

A *suite* (YAML under ``benchmarks/suites/``) names tasks, methods, reference rows and budgets.
It expands into independent *cells* (row, task, seed). A cell of a pretrained method runs

    collect (shared by all rows of a task) -> pretrain (cached by config hash) -> probe
    -> SAC (or TD3) on the frozen encoder's latents through EncodedObservation -> evaluation

and the reference rows run beside them: ``state_sac`` (upper bound), ``pixel_sac`` (end to end,
random shift), ``dbc_joint`` / ``deepmdp_joint`` (the objective trained with the critic), and
``random_encoder`` (a frozen random-init encoder of the same backbone: the lower bound). A
suite's ``probes`` part adds probe-only cells: a method pretrained on the data of any env (our
Push and Grasp scenes, or a DMC task) and scored against a random-init encoder of the same
method (grasp2vec's retrieval accuracy and TCN's alignment error among the scores).

Cells run in a local process pool (``--workers``, spawned processes with one torch thread each)
or as Ray tasks on an existing cluster (``--ray ADDRESS``). Every stage writes its output
atomically and resumes from it, so a killed ``ssrl bench`` re-run skips finished cells and
resumes running ones. Results go to the output folder (see :mod:`ssrl.benchmarks.report`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any

import yaml

from ssrl.utils import write_json

SUITES_DIR = pathlib.Path(__file__).parent / "suites"
REFERENCE_ROWS = ("random_encoder", "state_sac", "pixel_sac", "dbc_joint", "deepmdp_joint")
JOINT = {"dbc_joint": "dbc", "deepmdp_joint": "deepmdp"}
_SUITE_KEYS = {"name", "note", "tasks", "seeds", "env", "collect", "pretrain", "rl", "pixel_rl", "methods", "references",
               "probes", "distractor", "report_steps", "published"}


class SuiteError(ValueError):
    """A suite file or a command-line selection that cannot be run."""


class CellsFailed(RuntimeError):
    """Some cells raised; the others finished and are in the report."""


# -- suites ---------------------------------------------------------------------------------------


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> dict[str, Any]:
    """Read and validate a suite by name (``quick``) or path; errors name the field."""
    path = pathlib.Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SuiteError(f"no suite {name_or_path!r}; available suites: {', '.join(available_suites())} (or a path to a YAML file)")
    try:
        suite = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"suite file {path} is not valid YAML: {err}") from err
    if not isinstance(suite, dict):
        raise SuiteError(f"suite file {path} must be a mapping of fields, got {type(suite).__name__}")
    validate_suite(suite, str(path))
    return suite


def validate_suite(suite: dict[str, Any], where: str = "suite") -> None:
    from ssrl.envs import suite_tasks
    from ssrl.representations import names as method_names

    unknown = sorted(set(suite) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(_SUITE_KEYS)}")
    for key in ("name", "tasks"):
        if key not in suite:
            raise SuiteError(f"{where}: missing field {key!r}")
    if suite["tasks"] and "rl" not in suite:
        raise SuiteError(f"{where}: missing field 'rl' (the RL budget of the task cells)")
    known_tasks = {f"{d}-{t}" for d, t in suite_tasks()}
    for task in suite["tasks"]:
        if task not in known_tasks:
            raise SuiteError(f"{where}: unknown task {task!r}; tasks are DOMAIN-TASK of the DMC suite, e.g. cartpole-swingup")
    methods = suite.get("methods") or {}
    if not isinstance(methods, dict):
        raise SuiteError(f"{where}: 'methods' must map method names to option dicts")
    valid = method_names()
    for method in methods:
        if method not in valid:
            raise SuiteError(f"{where}: unknown method {method!r}; valid methods: {', '.join(valid)}")
    for row in suite.get("references") or []:
        if row not in REFERENCE_ROWS:
            raise SuiteError(f"{where}: unknown reference row {row!r}; valid rows: {', '.join(REFERENCE_ROWS)}")
    rl = suite.get("rl", {"env_steps": 1})
    if not isinstance(rl, dict) or int(rl.get("env_steps", 0)) <= 0:
        raise SuiteError(f"{where}: rl.env_steps must be a positive number of env steps")
    if rl.get("algo", "sac") not in ("sac", "td3"):
        raise SuiteError(f"{where}: rl.algo must be 'sac' or 'td3', got {rl.get('algo')!r}")
    for part, spec in (suite.get("probes") or {}).items():
        if "env" not in spec:
            raise SuiteError(f"{where}: probes.{part}: missing field 'env' (the env id to collect data from)")
        for method in spec.get("methods", []):
            if method not in valid:
                raise SuiteError(f"{where}: probes.{part}: unknown method {method!r}; valid methods: {', '.join(valid)}")


# -- cells ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    """One unit of work: a row of the table (method or reference) on a task, with a seed."""

    row: str
    task: str
    seed: int
    kind: str  # "frozen", "random", "state", "pixel", "joint", "probe"
    spec: dict[str, Any]  # everything the cell needs, resolved from the suite

    @property
    def id(self) -> str:
        return f"{self.row}__{self.task}__s{self.seed}"


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def plan(suite: dict[str, Any], methods: list[str] | None = None, tasks: list[str] | None = None,
         seeds: int | None = None, rl_steps: int | None = None, pretrain_steps: int | None = None) -> list[Cell]:
    """Expand a suite (optionally narrowed, or its budgets changed, by the command line) into cells."""
    suite = copy.deepcopy(suite)
    if rl_steps is not None and "rl" in suite:
        suite["rl"]["env_steps"] = int(rl_steps)
    if pretrain_steps is not None:
        suite.setdefault("pretrain", {})["steps"] = int(pretrain_steps)
        for part in (suite.get("probes") or {}).values():
            part.pop("steps", None)
    all_methods = dict(suite.get("methods") or {})
    references = list(suite.get("references") or [])
    if methods:
        valid = set(all_methods) | set(references) | {m for p in (suite.get("probes") or {}).values() for m in p.get("methods", [])}
        bad = [m for m in methods if m not in valid]
        if bad:
            raise SuiteError(f"--methods {bad} not in suite {suite['name']!r}; its rows: {', '.join(sorted(valid))}")
        all_methods = {m: o for m, o in all_methods.items() if m in methods}
        references = [r for r in references if r in methods]
    task_list = list(suite["tasks"])
    if tasks:
        bad = [t for t in tasks if t not in task_list]
        if bad:
            raise SuiteError(f"--tasks {bad} not in suite {suite['name']!r}; its tasks: {', '.join(task_list)}")
        task_list = [t for t in task_list if t in tasks]
    n_seeds = int(seeds if seeds is not None else suite.get("seeds", 1))
    env_opts = dict(suite.get("env") or {})
    if suite.get("distractor"):
        env_opts["distractor"] = suite["distractor"]
    collect_cfg = dict(suite.get("collect") or {})
    pretrain_cfg = dict(suite.get("pretrain") or {})
    rl = dict(suite.get("rl") or {})
    pixel_rl = dict(suite.get("pixel_rl") or {})
    cells = []
    for task in task_list:
        data_key = f"{task}-{_hash([env_opts, collect_cfg])}"
        for seed in range(n_seeds):
            base = {"env_id": f"ssrl/{task}-v0", "env": env_opts, "collect": collect_cfg, "data_key": data_key, "rl": rl}
            for method, options in all_methods.items():
                config = dict(pretrain_cfg.get("config") or {}, **(options or {}))
                spec = dict(base, method=method, pretrain={"steps": pretrain_cfg.get("steps", 1000), "config": config,
                                                          "batch_size": pretrain_cfg.get("batch_size")})
                cells.append(Cell(method, task, seed, "frozen", spec))
            for row in references:
                if row == "random_encoder":
                    config = dict(pretrain_cfg.get("config") or {})
                    cells.append(Cell(row, task, seed, "random", dict(base, method="tcn", pretrain={"steps": 0, "config": config})))
                elif row == "state_sac":
                    cells.append(Cell(row, task, seed, "state", base))
                elif row == "pixel_sac":
                    cells.append(Cell(row, task, seed, "pixel", dict(base, pixel_rl=pixel_rl)))
                else:
                    cells.append(Cell(row, task, seed, "joint", dict(base, pixel_rl=pixel_rl, aux=JOINT[row])))
    for part, mspec in (suite.get("probes") or {}).items():
        data_key = f"{part}-{_hash(mspec)}"
        for method in mspec.get("methods", []):
            if methods and method not in methods:
                continue
            config = dict(pretrain_cfg.get("config") or {}, **(mspec.get("config", {}).get(method, {})))
            for seed in range(n_seeds):
                spec = {"env_id": mspec["env"], "env": {}, "collect": {k: v for k, v in mspec.items() if k not in ("env", "methods", "config")},
                        "data_key": data_key, "method": method,
                        "pretrain": {"steps": mspec.get("steps", pretrain_cfg.get("steps", 1000)), "config": config,
                                     "batch_size": pretrain_cfg.get("batch_size")}}
                cells.append(Cell(method, part, seed, "probe", spec))
    return cells


# -- running one cell (in a worker) ---------------------------------------------------------------


class Progress:
    """A cell's live status, written atomically for the parent's display."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.path = folder / "progress.json"
        self.state: dict[str, Any] = {"phase": "queued", "started": time.time()}

    def update(self, **fields: Any) -> None:
        self.state.update(fields, updated=time.time())
        write_json(self.path, self.state)


def _data(out: pathlib.Path, cell: Cell, progress: Progress):
    """The cell's collected data set (collected before the cells start; see run_bench)."""
    from ssrl.representations import RolloutData

    progress.update(phase="load data")
    return RolloutData(out / "data" / cell.spec["data_key"])


def collect_data(out: pathlib.Path, env_id: str, env_opts: dict, collect_cfg: dict, data_key: str) -> pathlib.Path:
    """Collect (or finish collecting) a task's data set; idempotent."""
    _worker_init()
    from ssrl.envs.rollouts import RolloutDataset, collect

    import ssrl.envs as envs_mod

    path = out / "data" / data_key
    episodes = int(collect_cfg.get("episodes", 20))
    have = len(RolloutDataset(path)) if (path / "meta.json").exists() else 0
    if have >= episodes:
        return path
    cameras = collect_cfg.get("cameras")
    if cameras is None and env_id.startswith("ssrl/") and "-" in env_id:
        domain, task = env_id[5:-3].split("-", 1)
        if (domain, task) in envs_mod.suite_tasks():
            from ssrl.envs.render import camera_names

            env = envs_mod.make_dmc(domain, task, from_pixels=False)
            cameras = camera_names(env.model)[:2]  # two synchronised views for multi-view methods
            env.close()
    kwargs = {k: v for k, v in env_opts.items() if k not in ("size",)}
    collect(env_id, policy=collect_cfg.get("policy", "sticky_random"), episodes=episodes - have, out=path,
            cameras=cameras, size=int(env_opts.get("size", 84)), seed=int(collect_cfg.get("seed", 0)),
            env_kwargs=kwargs or None, max_steps=collect_cfg.get("max_steps"), append=have > 0, progress=False)
    return path


def _pretrained(out: pathlib.Path, cell: Cell, data, progress: Progress) -> pathlib.Path:
    """Pretrain (or reuse) the cell's representation; returns its checkpoint path."""
    from ssrl.representations.pretrain import build, pretrain

    pre = cell.spec["pretrain"]
    key = _hash([cell.spec["method"], cell.spec["data_key"], pre, cell.seed])
    folder = out / "models" / f"{cell.spec['method']}-{cell.task}-{key}-s{cell.seed}"
    if (folder / "final.json").exists():
        return folder / "model.pt"
    if pre["steps"] == 0:  # the random-init lower bound: an untrained encoder of the same family
        import torch

        torch.manual_seed(cell.seed)
        rep = build(cell.spec["method"], data, **pre["config"])
        rep.save(folder / "model.pt")
        write_json(folder / "final.json", {"steps": 0, "steps_per_s": None, "wall_time": 0.0})
        return folder / "model.pt"
    progress.update(phase="pretrain", pretrain_steps=pre["steps"])
    train, _ = data.split(0.2, seed=0)
    pretrain(cell.spec["method"], train, out=folder, steps=pre["steps"], batch_size=pre.get("batch_size"),
             seed=cell.seed, config=pre["config"], progress=False)
    return folder / "model.pt"


def _probe(model: pathlib.Path, data, progress: Progress, method: str, against_random: bool = False) -> dict[str, Any]:
    """Probe scores of a checkpoint on held-out episodes; with ``against_random``, also those of
    an untrained encoder of the same method and config (keys suffixed ``_random``)."""
    import torch

    from ssrl.representations import load_representation, make
    from ssrl.representations.probe import probe

    progress.update(phase="probe")
    rep = load_representation(model)
    train, test = data.split(0.2, seed=0)
    candidates = {"": rep}
    if against_random:
        torch.manual_seed(12345)
        candidates["_random"] = make(rep.name, rep.obs_shape, **dataclasses.asdict(rep.config)).eval()
    scores: dict[str, Any] = {}
    for suffix, model_ in candidates.items():
        part = probe(model_, train, test)
        if method == "grasp2vec":
            from ssrl.representations.control.grasp2vec import retrieval_accuracy

            part["retrieval_acc"] = retrieval_accuracy(model_, test)
        if method == "tcn" and len(data.cameras) > 1:
            from ssrl.representations.control.tcn import alignment_error

            part["alignment_error"] = alignment_error(model_, test)
        scores.update({f"{k}{suffix}": v for k, v in part.items() if not (suffix and k in ("target", "n_train", "n_test"))})
    return scores


def run_cell(cell_dict: dict[str, Any], out: str) -> dict[str, Any]:
    """Run one cell to completion (or resume it); returns and writes its result.

    A cell that fails returns an ``error`` instead of raising, so the other cells go on; it
    writes no result, so the next ``ssrl bench`` retries it (resuming what it had done).
    """
    _worker_init()
    try:
        return _run_cell(cell_dict, out)
    except Exception as err:  # noqa: BLE001 - reported in the summary, retried on the next run
        import traceback

        cell = Cell(**cell_dict)
        folder = pathlib.Path(out) / "cells" / cell.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        Progress(folder).update(phase="failed", error=str(err))
        return {"cell": cell.id, "row": cell.row, "task": cell.task, "seed": cell.seed, "kind": cell.kind,
                "error": f"{type(err).__name__}: {err}", "wall_time": 0.0}


def _run_cell(cell_dict: dict[str, Any], out: str) -> dict[str, Any]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    import ssrl  # noqa: F401
    from ssrl.agents.run import train_run

    cell = Cell(**cell_dict)
    out = pathlib.Path(out)
    folder = out / "cells" / cell.id
    folder.mkdir(parents=True, exist_ok=True)
    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    progress = Progress(folder)
    start = time.perf_counter()
    result: dict[str, Any] = {"cell": cell.id, "row": cell.row, "task": cell.task, "seed": cell.seed, "kind": cell.kind}
    spec = cell.spec
    encoder = None
    pretrain_time = 0.0
    if cell.kind in ("frozen", "random", "probe"):
        data = _data(out, cell, progress)
        t0 = time.perf_counter()
        model = _pretrained(out, cell, data, progress)
        pretrain_time = time.perf_counter() - t0
        final = json.loads((model.parent / "final.json").read_text())
        result["pretrain"] = {"steps": final.get("steps"), "steps_per_s": final.get("steps_per_s"),
                              "wall_time": final.get("wall_time")}
        result["probe"] = _probe(model, data, progress, spec["method"], against_random=cell.kind == "probe")
        encoder = str(model)
    if cell.kind != "probe":
        rl = spec["rl"]
        env_kwargs = dict(spec["env"])
        hyper = dict(rl.get("hyperparams") or {})
        aux = None
        if cell.kind == "state":
            env_kwargs = {k: v for k, v in env_kwargs.items() if k not in ("size", "distractor", "frame_stack")}
            env_kwargs["from_pixels"] = False
        elif cell.kind in ("pixel", "joint"):
            hyper.update(spec.get("pixel_rl", {}).get("hyperparams") or {})
            if cell.kind == "joint":
                aux = spec["aux"]
                hyper.setdefault("encoder_tanh", False)  # DBC's and DeepMDP's encoders end at LayerNorm
        progress.update(phase="rl", env_steps=0, budget=rl["env_steps"])

        def report(status: dict[str, Any]) -> None:
            progress.update(phase="rl", env_steps=status["env_steps"], budget=status["budget"],
                            eval_return=status["eval_return"], env_steps_per_s=status["env_steps_per_s"])

        t0 = time.perf_counter()
        summary = train_run(folder / "run", spec["env_id"], algo=rl.get("algo", "sac"), env_steps=int(rl["env_steps"]),
                            seed=cell.seed, env_kwargs=env_kwargs, hyperparams=hyper, encoder=encoder, aux=aux,
                            eval_every=int(rl.get("eval_every", 10_000)), eval_episodes=int(rl.get("eval_episodes", 10)),
                            progress=False, tensorboard=False, callback=report)
        rl_time = time.perf_counter() - t0
        evals = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        evals = [e for e in evals if e["kind"] == "eval"]
        result["evals"] = [{"env_steps": e["env_steps"], "return_mean": e["return_mean"], "returns": e["returns"]} for e in evals]
        result["final_return"] = evals[-1]["return_mean"] if evals else None
        result["rl"] = {"env_steps": summary["env_steps"], "updates": summary["updates"], "wall_time": rl_time,
                        "updates_per_s": summary["updates"] / rl_time if rl_time > 0 else None}
    result["wall_time"] = time.perf_counter() - start
    result["pretrain_wall_time"] = pretrain_time
    write_json(result_path, result)
    progress.update(phase="done")
    return result


# -- running a suite ------------------------------------------------------------------------------


def run_bench(
    suite: str = "quick",
    out: str | pathlib.Path | None = None,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: int | None = None,
    workers: int = 2,
    ray_address: str | None = None,
    rl_steps: int | None = None,
    pretrain_steps: int | None = None,
    overwrite: bool = False,
    display: bool = True,
    ray_gpus: float = 0.0,
) -> dict[str, Any]:
    """Plan, run (resuming what is there) and report a suite; returns the summary."""
    from .report import write_report

    spec = load_suite(suite)
    out = pathlib.Path(out or f"outputs/bench-{spec['name']}")
    if overwrite and out.exists():
        shutil.rmtree(out)
    cells = plan(spec, methods, tasks, seeds, rl_steps, pretrain_steps)
    if not cells:
        raise SuiteError("the selection leaves no cell to run")
    out.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in dict(methods=methods, tasks=tasks, seeds=seeds, rl_steps=rl_steps,
                                        pretrain_steps=pretrain_steps).items() if v is not None}
    (out / "suite.yaml").write_text(yaml.safe_dump(dict(spec, command_line_overrides=overrides), sort_keys=False))
    start = time.perf_counter()
    # Data first, once per task (cells of a task share it): in parallel across tasks.
    datasets = {}
    for cell in cells:
        if cell.kind in ("frozen", "random", "probe"):
            datasets.setdefault(cell.spec["data_key"], (cell.spec["env_id"], cell.spec["env"], cell.spec["collect"]))
    jobs = [(collect_data, (out, env_id, env, col, key)) for key, (env_id, env, col) in datasets.items()]
    _run_all(jobs, workers, ray_address, out, [], display=False)
    cell_jobs = [(run_cell, (dataclasses.asdict(c), str(out))) for c in cells]
    # On Ray, cells that train a conv net (all but state SAC) may ask for a share of a GPU.
    gpus = [ray_gpus if c.kind != "state" else 0.0 for c in cells]
    results = _run_all(cell_jobs, workers, ray_address, out, cells, display=display, gpus=gpus)
    summary = write_report(out, dict(spec, command_line_overrides=overrides), results, wall_time=time.perf_counter() - start)
    failed = [r for r in results if r.get("error")]
    if failed:
        details = "; ".join(f"{r['cell']}: {r['error']}" for r in failed)
        raise CellsFailed(f"{len(failed)} of {len(results)} cells failed ({details}); see cells/*/error.txt in {out}. "
                          "Re-running the same command retries them and keeps the finished ones.")
    return summary


def _run_all(jobs, workers: int, ray_address: str | None, out: pathlib.Path, cells, display: bool, gpus=None):
    """Run (function, args) jobs in a local spawn pool or on Ray (``gpus``: each job's GPU
    request there); returns results in order."""
    if not jobs:
        return []
    if ray_address:
        return _run_ray(jobs, ray_address, out, cells, display, gpus or [0.0] * len(jobs))
    if workers <= 1:
        results = []
        for fn, args in jobs:
            results.append(fn(*args))
        return results
    import concurrent.futures as cf
    import multiprocessing as mp

    # spawn, not fork: forking after the parent made an EGL context hangs (see ARCHITECTURE).
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                initializer=_worker_init) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        _watch(futures, out, cells, display, done=lambda f: f.done())
        return [f.result() for f in futures]


def _worker_init() -> None:
    """One thread per worker for torch, OpenMP and Mesa (set before they start threads)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["LP_NUM_THREADS"] = "1"
    os.environ.setdefault("MUJOCO_GL", "egl")


def _run_ray(jobs, address: str, out: pathlib.Path, cells, display: bool, gpus):
    """Each job a Ray task. Cells exchange data through ``out`` (data sets, pretrained models),
    so on a multi-node cluster ``out`` must be on a file system every node sees."""
    try:
        import ray
    except ImportError as err:
        raise SuiteError("--ray needs Ray installed: pip install 'ssrl[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    # One CPU per cell (the cell itself sets one torch thread and headless EGL), as a local
    # worker, plus its share of a GPU (Ray sets CUDA_VISIBLE_DEVICES; torch then uses it).
    remote = {fn: ray.remote(fn) for fn in {fn for fn, _ in jobs}}
    refs = [remote[fn].options(num_cpus=1, num_gpus=g).remote(*args) for (fn, args), g in zip(jobs, gpus)]
    _watch(refs, out, cells, display, done=lambda r: bool(ray.wait([r], timeout=0)[0]))
    return ray.get(refs)


def _watch(handles, out: pathlib.Path, cells, display: bool, done) -> None:
    """The live display: one line per running cell (phase, env steps, latest return, ETA)."""
    tty = sys.stdout.isatty()
    last_print, start, lines_drawn = 0.0, time.time(), 0
    while not all(done(h) for h in handles):
        time.sleep(1.0)
        if not display or not cells:
            continue
        now = time.time()
        if not tty and now - last_print < 60:
            continue
        lines = status_lines(out, cells, now - start)
        if tty and lines_drawn:
            sys.stdout.write(f"\x1b[{lines_drawn}F\x1b[J")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        lines_drawn, last_print = len(lines), now


def status_lines(out: pathlib.Path, cells, elapsed: float) -> list[str]:
    """Text of the live display (also used by tests)."""
    done, running, lines = 0, [], []
    total_steps = done_steps = 0.0
    for cell in cells:
        folder = out / "cells" / cell.id
        if (folder / "result.json").exists():
            done += 1
            budget = cell.spec.get("rl", {}).get("env_steps", 0) if cell.kind != "probe" else 0
            total_steps += budget
            done_steps += budget
            continue
        budget = cell.spec.get("rl", {}).get("env_steps", 0) if cell.kind != "probe" else 0
        total_steps += budget
        try:
            state = json.loads((folder / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        done_steps += state.get("env_steps", 0) or 0
        running.append((cell, state))
    fraction = done_steps / total_steps if total_steps else done / max(len(cells), 1)
    eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else float("nan")
    lines.append(f"bench: {done}/{len(cells)} cells done, {elapsed / 60:.1f} min elapsed, ETA {_minutes(eta)}")
    for cell, state in running:
        phase = state.get("phase", "?")
        detail = ""
        if phase == "rl":
            ret = state.get("eval_return")
            ret = "-" if ret is None or ret != ret else f"{ret:.0f}"
            rate = state.get("env_steps_per_s")
            cell_eta = (state["budget"] - state["env_steps"]) / rate if rate else float("nan")
            detail = f"{state.get('env_steps', 0):>7}/{state.get('budget', 0)} env steps  return {ret:>5}  ETA {_minutes(cell_eta)}"
        lines.append(f"  {cell.id:<45} {phase:<10} {detail}")
    return lines


def _minutes(seconds: float) -> str:
    return "?" if seconds != seconds else f"{seconds / 60:.1f} min"
