"""Cells: the units of work a suite expands into, and the planner that expands it.

A cell is one row of the table (a method or a reference row) on one task with one seed. What a
cell does follows from its fields, never from a method's name:

* ``data`` set: it collects (shared by the cells of a task) and loads a data set;
* ``method`` set: it pretrains that method on the data (``pretrain.steps == 0``: the untrained
  encoder, the random-init lower bound) and probes it on held-out episodes;
* ``rl`` set: it trains SAC/TD3 on ``observation`` = ``"state"``, ``"pixels"`` (end to end,
  with ``aux`` = a method whose objective trains the encoder jointly) or ``"latents"`` (of the
  pretrained encoder, frozen).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Literal

from .suite import JOINT_ROW_SUFFIX, CollectSpec, PretrainSpec, RLSpec, Suite, SuiteError, parse_suite

Observation = Literal["state", "pixels", "latents"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A data set to collect: ``env_id`` with ``env`` options, by ``collect``; stored under
    ``data/<key>`` of the bench folder (the key hashes the rest, so equal specs share it)."""

    env_id: str
    env: dict[str, Any]
    collect: CollectSpec

    @property
    def key(self) -> str:
        name = self.env_id.removeprefix("ssrl/").removesuffix("-v0")
        return f"{name}-{_hash([self.env, dataclasses.asdict(self.collect)])}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work (see the module docstring)."""

    row: str
    task: str
    seed: int
    data: DataSpec | None = None
    method: str | None = None
    pretrain: PretrainSpec | None = None
    probe_against_random: bool = False  # also score an untrained encoder of the same method
    env_id: str | None = None  # the RL env
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
    rl: RLSpec | None = None
    observation: Observation = "latents"
    aux: str | None = None

    def __post_init__(self) -> None:
        if self.method is not None and (self.data is None or self.pretrain is None):
            raise ValueError(f"cell {self.id}: a method needs data and a pretraining spec")
        if self.rl is not None and self.env_id is None:
            raise ValueError(f"cell {self.id}: RL needs an env id")
        if self.rl is not None and self.observation == "latents" and self.method is None:
            raise ValueError(f"cell {self.id}: RL on latents needs a method to encode them")

    @property
    def id(self) -> str:
        return f"{self.row}__{self.task}__s{self.seed}"

    @property
    def kind(self) -> str:
        """A label for tables and the live display."""
        if self.rl is None:
            return "probe"
        if self.observation == "latents":
            return "random" if self.pretrain is not None and self.pretrain.steps == 0 else "frozen"
        if self.observation == "pixels":
            return "joint" if self.aux else "pixel"
        return "state"

    @property
    def budget(self) -> int:
        """RL env steps of the cell (0 for probe cells)."""
        return self.rl.env_steps if self.rl is not None else 0

    def identity(self) -> dict[str, Any]:
        """Everything that decides the cell's result (a JSON-able dict)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def override_budgets(suite: Suite, rl_steps: int | None = None, pretrain_steps: int | None = None) -> Suite:
    """The suite with its RL or pretraining budget replaced (the command line's ``--rl-steps``,
    ``--pretrain-steps``; the latter also replaces the probe parts' own ``steps``)."""
    if rl_steps is not None and suite.rl is not None:
        suite = dataclasses.replace(suite, rl=dataclasses.replace(suite.rl, env_steps=int(rl_steps)))
    if pretrain_steps is not None:
        suite = dataclasses.replace(
            suite,
            pretrain=dataclasses.replace(suite.pretrain, steps=int(pretrain_steps)),
            probes={k: dataclasses.replace(p, steps=None) for k, p in suite.probes.items()},
        )
    return suite


def plan(
    suite: Suite | dict[str, Any],
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: int | None = None,
    rl_steps: int | None = None,
    pretrain_steps: int | None = None,
) -> list[Cell]:
    """Expand a suite (optionally narrowed, or its budgets changed, by the command line) into cells."""
    if not isinstance(suite, Suite):
        suite = parse_suite(suite)
    suite = override_budgets(suite, rl_steps, pretrain_steps)
    rows = _selected_rows(suite, methods)
    task_list = list(suite.tasks)
    if tasks:
        bad = [t for t in tasks if t not in task_list]
        if bad:
            raise SuiteError(f"--tasks {bad} not in suite {suite.name!r}; its tasks: {', '.join(task_list)}")
        task_list = [t for t in task_list if t in tasks]
    n_seeds = int(seeds if seeds is not None else suite.seeds)
    env_opts = dict(suite.env)
    if suite.distractor:
        env_opts["distractor"] = suite.distractor
    pixel_rl = (
        dataclasses.replace(suite.rl, hyperparams=dict(suite.rl.hyperparams, **suite.pixel_rl.hyperparams))
        if suite.rl is not None
        else None
    )
    cells = []
    for task in task_list:
        env_id = f"ssrl/{task}-v0"
        data = DataSpec(env_id, env_opts, suite.collect)
        rl_env = dict(env_id=env_id, env=env_opts)
        for seed in range(n_seeds):
            for method in rows["methods"]:
                cells.append(
                    Cell(method, task, seed, data, method, _pretrain_spec(suite, method), rl=suite.rl, **rl_env)
                )
            for row in rows["references"]:
                if row == "random_encoder":
                    # The lower bound: the untrained encoder of the suite's first method.
                    first = next(iter(suite.methods))
                    spec = dataclasses.replace(_pretrain_spec(suite, first), steps=0)
                    cells.append(Cell(row, task, seed, data, first, spec, rl=suite.rl, **rl_env))
                elif row == "state_sac":
                    cells.append(Cell(row, task, seed, rl=suite.rl, observation="state", **rl_env))
                elif row == "pixel_sac":
                    cells.append(Cell(row, task, seed, rl=pixel_rl, observation="pixels", **rl_env))
                else:
                    aux = row.removesuffix(JOINT_ROW_SUFFIX)
                    cells.append(Cell(row, task, seed, rl=pixel_rl, observation="pixels", aux=aux, **rl_env))
    for part, spec in suite.probes.items():
        data = DataSpec(spec.env, {}, spec.collect)
        for method in spec.methods:
            if methods and method not in methods:
                continue
            pre = PretrainSpec(
                spec.steps if spec.steps is not None else suite.pretrain.steps,
                suite.pretrain.batch_size,
                dict(suite.pretrain.config, **spec.config.get(method, {})),
            )
            for seed in range(n_seeds):
                cells.append(Cell(method, part, seed, data, method, pre, probe_against_random=True))
    return cells


def _pretrain_spec(suite: Suite, method: str) -> PretrainSpec:
    return dataclasses.replace(suite.pretrain, config=dict(suite.pretrain.config, **suite.methods.get(method, {})))


def _selected_rows(suite: Suite, selection: list[str] | None) -> dict[str, list[str]]:
    methods, references = list(suite.methods), list(suite.references)
    if selection:
        valid = set(methods) | set(references) | {m for p in suite.probes.values() for m in p.methods}
        bad = [m for m in selection if m not in valid]
        if bad:
            raise SuiteError(f"--methods {bad} not in suite {suite.name!r}; its rows: {', '.join(sorted(valid))}")
        methods = [m for m in methods if m in selection]
        references = [r for r in references if r in selection]
    return {"methods": methods, "references": references}
