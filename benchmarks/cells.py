"""Cells: the units of work a suite expands into, and the planner that expands it.

A cell is one row of the table (a method or a reference row) on one task with one seed. What a
cell does follows from its fields, never from a method's name:

* ``pretrain`` set: it collects ``data`` (shared by the cells of a task), pretrains ``method``
  on it (``pretrain.steps == 0``: the untrained encoder, the random-init lower bound) and probes
  it on held-out episodes;
* ``rl`` set: it trains SAC/TD3 on the state (``state=True``), or from pixels: end to end
  (no ``method``), or with ``method`` serving the agent in ``regime`` (``frozen`` and
  ``finetune`` use the pretrained encoder; ``decoupled`` and ``joint`` use the pretrained one
  when the cell pretrains, else a fresh one with ``method_options``; see
  :mod:`ssrl.representations.regimes`).

Rows: a method in the frozen regime is its name (``tcn``); in another regime
``METHOD:REGIME`` (``tcn:finetune``); the reference rows keep their names (``dbc_joint`` is
``dbc`` in the joint regime, from scratch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .suite import JOINT_ROW_SUFFIX, CollectSpec, PretrainSpec, RLSpec, Suite, SuiteError, parse_suite

# Reference rows that differ from the first method's frozen row only in the goal reward (a run's
# --goal-reward): the env's own, or any lift.
REWARD_ROWS = {"pixel_reward": "env", "oracle_reward": "env", "any_reward": "any"}


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
        return f"{name}-{_hash([self.env, self.collect_identity()])}"

    def collect_identity(self) -> dict[str, Any]:
        """The collect spec as it decides the data; an empty ``env`` is left out, as in every data
        set from before collect.env existed (same key, same cell identity). An ``agent:`` policy
        adds its checkpoint's fingerprint (``agents``): a retrained expert is new data."""
        from ssrl.agents.policy import agent_fingerprints

        collect = dataclasses.asdict(self.collect)
        if not collect["env"]:
            del collect["env"]
        agents = agent_fingerprints(self.collect.policy)
        if agents:
            collect["agents"] = agents
        return collect


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
    state: bool = False  # RL on the true state (no pixels)
    regime: str | None = None  # how ``method`` serves the agent
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # a fresh method's config
    # Goal tasks seen through an encoder: None (the latent reward), "cosine", "env" or "any".
    goal_reward: str | None = None

    def __post_init__(self) -> None:
        if self.pretrain is not None and (self.method is None or self.data is None):
            raise ValueError(f"cell {self.id}: pretraining needs a method and data")
        if self.rl is not None and self.env_id is None:
            raise ValueError(f"cell {self.id}: RL needs an env id")
        if self.rl is not None and self.method is not None and self.regime is None:
            raise ValueError(f"cell {self.id}: RL with a method needs a regime")
        if self.regime in ("frozen", "finetune") and self.pretrain is None:
            raise ValueError(f"cell {self.id}: the {self.regime} regime needs a pretrained encoder")

    @property
    def id(self) -> str:
        return f"{self.row}__{self.task}__s{self.seed}"

    @property
    def kind(self) -> str:
        """A label for tables and the live display."""
        if self.rl is None:
            return "probe"
        if self.state:
            return "state"
        if self.method is None:
            return "pixel"
        if self.regime == "frozen" and self.pretrain.steps == 0:
            return "random"
        return self.regime

    @property
    def pixels(self) -> bool:
        """Whether the agent trains a conv net (end to end, or a method's encoder)."""
        return self.rl is not None and not self.state and (self.method is None or self.regime != "frozen")

    @property
    def budget(self) -> int:
        """RL env steps of the cell (0 for probe cells)."""
        return self.rl.env_steps if self.rl is not None else 0

    def identity(self) -> dict[str, Any]:
        """Everything that decides the cell's result (a JSON-able dict). ``rl.online`` counts only
        where it is used (decoupled cells), so other cells, and every cell from before it
        existed, keep their identity."""
        identity = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        if isinstance(identity.get("rl"), dict) and not (self.regime == "decoupled" and identity["rl"].get("online")):
            identity["rl"].pop("online", None)
        for key in ("held_out", "held_out_sets"):
            if isinstance(identity.get("rl"), dict) and not identity["rl"].get(key):
                identity["rl"].pop(key, None)  # (as every cell from before it existed)
        if isinstance(identity.get("rl"), dict):
            identity["rl"].pop("view_cameras", None)  # what it changes is in the cell's env
        if identity["goal_reward"] is None:  # (as every cell from before it existed)
            identity.pop("goal_reward")
        if self.pretrain is not None:
            identity["pretrain"] = json.loads(json.dumps(self.pretrain.identity(), default=str))
        if self.data is not None:
            identity["data"]["collect"] = json.loads(json.dumps(self.data.collect_identity(), default=str))
        return identity


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
    regimes: list[str] | None = None,
) -> list[Cell]:
    """Expand a suite (optionally narrowed, or its budgets changed, by the command line) into cells."""
    if not isinstance(suite, Suite):
        suite = parse_suite(suite)
    suite = override_budgets(suite, rl_steps, pretrain_steps)
    from ssrl.utils import resolve_device, resolve_precision

    if suite.pretrain.precision == "auto":  # resolved here, so a cell's identity says what it ran
        precision = resolve_precision("auto", resolve_device("auto"))
        suite = dataclasses.replace(suite, pretrain=dataclasses.replace(suite.pretrain, precision=precision))
    # The agents' precision (their default is "auto") likewise: written into the RL spec unless it
    # resolves to fp32, so cells from before the default changed (fp32, no precision in their
    # identity) are reused on fp32 machines and never mixed with bf16 ones on the others.
    if suite.rl is not None and suite.rl.hyperparams.get("precision", "auto") == "auto":
        resolved = resolve_precision("auto", resolve_device("auto"))
        hyper = {k: v for k, v in suite.rl.hyperparams.items() if k != "precision"}
        if resolved != "fp32":
            hyper["precision"] = resolved
        suite = dataclasses.replace(suite, rl=dataclasses.replace(suite.rl, hyperparams=hyper))
    if regimes:
        present = list(dict.fromkeys([*suite.regimes, *(r for rs in suite.method_regimes.values() for r in rs)]))
        bad = [r for r in regimes if r not in present]
        if bad:
            raise SuiteError(f"--regimes {bad} not in suite {suite.name!r}; its regimes: {', '.join(present)}")
        suite = dataclasses.replace(
            suite,
            regimes=[r for r in suite.regimes if r in regimes],
            method_regimes={m: [r for r in rs if r in regimes] for m, rs in suite.method_regimes.items()},
        )
    rows = _selected_rows(suite, methods)
    task_list, probe_parts = list(suite.tasks), dict(suite.probes)
    if tasks:  # RL tasks and probe data sets (the probes' names) alike
        bad = [t for t in tasks if t not in task_list and t not in probe_parts]
        if bad:
            known = ", ".join(task_list + [f"{p} (probes)" for p in probe_parts])
            raise SuiteError(f"--tasks {bad} not in suite {suite.name!r}; its tasks: {known}")
        task_list = [t for t in task_list if t in tasks]
        probe_parts = {p: spec for p, spec in probe_parts.items() if p in tasks}
    n_seeds = int(seeds if seeds is not None else suite.seeds)
    env_opts = dict(suite.env)
    if suite.distractor:
        env_opts["distractor"] = suite.distractor

    def pixel_rl_of(regime: str | None = None):
        """The RL spec of a pixel cell of ``regime`` (None: pixel SAC): ``pixel_rl``'s hyper-parameters
        and the regime's own on top of ``rl``'s."""
        if suite.rl is None:
            return None
        hyperparams = dict(suite.rl.hyperparams, **suite.pixel_rl.for_regime(regime))
        return dataclasses.replace(suite.rl, hyperparams=hyperparams)

    pixel_rl = pixel_rl_of()
    views = list(suite.rl.view_cameras) if suite.rl is not None else []

    def replay_env(method: str, options: dict[str, Any], rl_env: dict[str, Any]) -> dict[str, Any] | None:
        """The env of ``method``'s decoupled or joint cell (with the suite's view cameras when
        it learns from synchronised views), or None when an agent's replay cannot serve it."""
        if replay_refusal(method, options) is None:
            return rl_env
        if views and replay_refusal(method, options, tuple(views)) is None:
            env = {k: v for k, v in rl_env["env"].items() if k != "camera"}
            return dict(rl_env, env=dict(env, cameras=views))
        return None

    cells = []
    for task in task_list:
        env_id = f"ssrl/{task}-v0"
        data = DataSpec(env_id, env_opts, suite.collect)
        rl_env = dict(env_id=env_id, env=env_opts)
        for seed in range(n_seeds):
            for method in rows["methods"]:
                pre = _pretrain_spec(suite, method)
                for regime in suite.regimes_of(method):
                    row = method if regime == "frozen" else f"{method}:{regime}"
                    if regime == "frozen":
                        cells.append(Cell(row, task, seed, data, method, pre, rl=suite.rl, regime=regime, **rl_env))
                    elif regime == "finetune":
                        rl = pixel_rl_of(regime)
                        cells.append(Cell(row, task, seed, data, method, pre, rl=rl, regime=regime, **rl_env))
                    elif regime == "decoupled" and suite.rl is not None and suite.rl.online:
                        # Online fine-tuning (RIG): the decoupled regime starts from the pretrained encoder.
                        rl = pixel_rl_of(regime)
                        cells.append(Cell(row, task, seed, data, method, pre, rl=rl, regime=regime, **rl_env))
                    elif (env := replay_env(method, pre.config, rl_env)) is not None:  # decoupled, joint: from scratch
                        cells.append(
                            Cell(
                                row,
                                task,
                                seed,
                                method=method,
                                rl=pixel_rl_of(regime),
                                regime=regime,
                                method_options=pre.config,
                                **env,
                            )
                        )
            for row in rows["variants"]:
                variant = suite.variants[row]
                hyper = dict(suite.rl.hyperparams, **variant.hyperparams)
                rl = dataclasses.replace(suite.rl, hyperparams=hyper)
                pre = _pretrain_spec(suite, variant.method)
                reward = None if variant.goal_reward in (None, "latent") else variant.goal_reward
                frozen = dict(rl=rl, regime="frozen", goal_reward=reward)
                cells.append(Cell(row, task, seed, data, variant.method, pre, **frozen, **rl_env))
            for row in rows["references"]:
                if row == "random_encoder":
                    # The lower bound: the untrained encoder of the suite's first method.
                    first = next(iter(suite.methods))
                    spec = dataclasses.replace(_pretrain_spec(suite, first), steps=0)
                    cells.append(Cell(row, task, seed, data, first, spec, rl=suite.rl, regime="frozen", **rl_env))
                elif row in REWARD_ROWS:
                    # The first method's pretrained encoder with another goal reward: the env's own
                    # on the images behind the latents (RIG's pixel-distance ablation on Push, the
                    # oracle labels on GraspGoal), or any lift (indiscriminate grasping).
                    first = next(iter(suite.methods))
                    pre = _pretrain_spec(suite, first)
                    reward = REWARD_ROWS[row]
                    cells.append(
                        Cell(
                            row,
                            task,
                            seed,
                            data,
                            first,
                            pre,
                            rl=suite.rl,
                            regime="frozen",
                            goal_reward=reward,
                            **rl_env,
                        )
                    )
                elif row == "state_sac":
                    cells.append(Cell(row, task, seed, rl=suite.rl, state=True, **rl_env))
                elif row == "pixel_sac":
                    cells.append(Cell(row, task, seed, rl=pixel_rl, **rl_env))
                else:  # METHOD_joint: the method's loss with the critic's, from scratch
                    method = row.removesuffix(JOINT_ROW_SUFFIX)
                    options = _pretrain_spec(suite, method).config
                    cells.append(
                        Cell(
                            row,
                            task,
                            seed,
                            method=method,
                            rl=pixel_rl_of("joint"),
                            regime="joint",
                            method_options=options,
                            **rl_env,
                        )
                    )
    for part, spec in probe_parts.items():
        data = DataSpec(spec.env, {}, spec.collect)
        for method in spec.methods:
            if methods and method not in methods:
                continue
            pre = dataclasses.replace(
                suite.pretrain,
                steps=spec.steps if spec.steps is not None else suite.pretrain.steps,
                config=dict(suite.pretrain.config, **spec.config.get(method, {})),
            )
            for seed in range(n_seeds):
                cells.append(Cell(method, part, seed, data, method, pre, probe_against_random=True))
    return cells


def replay_refusal(method: str, options: dict[str, Any], cameras: tuple[str, ...] = ()) -> str | None:
    """Why ``method`` (with these config options) cannot learn from an agent's replay (the
    decoupled and joint regimes; a replay keeping these ``cameras``, the agent's first, or the
    agent's alone), or None if it can."""
    from ssrl.envs.rollouts import DatasetError
    from ssrl.representations.regimes import RepresentationObjective, fresh_representation

    rep = fresh_representation(method, (9, 84, 84), 1, **dict(options, arch="fast", latent_dim=2))
    try:
        RepresentationObjective(rep, "decoupled", action_dim=1, cameras=cameras)
    except DatasetError as err:
        return str(err)
    return None


def unservable(suite: Suite) -> list[str]:
    """The suite's (method, regime) rows the planner leaves out, each with the reason."""
    out = []
    cameras = tuple(suite.rl.view_cameras) if suite.rl is not None else ()
    for method in suite.methods:
        for regime in sorted(set(suite.regimes_of(method)) & {"decoupled", "joint"}):
            reason = replay_refusal(method, _pretrain_spec(suite, method).config, cameras)
            if reason is not None:
                out.append(f"{method}:{regime}: {reason}")
    return sorted(out)


def _pretrain_spec(suite: Suite, method: str) -> PretrainSpec:
    return dataclasses.replace(suite.pretrain, config=dict(suite.pretrain.config, **suite.methods.get(method, {})))


def _selected_rows(suite: Suite, selection: list[str] | None) -> dict[str, list[str]]:
    methods, references, variants = list(suite.methods), list(suite.references), list(suite.variants)
    if selection:
        valid = set(methods) | set(references) | set(variants) | {m for p in suite.probes.values() for m in p.methods}
        bad = [m for m in selection if m not in valid]
        if bad:
            raise SuiteError(f"--methods {bad} not in suite {suite.name!r}; its rows: {', '.join(sorted(valid))}")
        methods = [m for m in methods if m in selection]
        references = [r for r in references if r in selection]
        variants = [v for v in variants if v in selection]
    return {"methods": methods, "references": references, "variants": variants}
