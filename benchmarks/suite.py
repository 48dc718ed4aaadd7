"""The schema of a bench suite: typed sections, validated when the suite is loaded.

A suite is a YAML file under ``benchmarks/suites/`` (or any path)::

    name: quick                      # required
    note: ...                        # printed at the top of the report
    tasks: [cartpole-swingup]        # RL tasks: DMC's DOMAIN-TASK, or a scene of ours (Push)
    seeds: 1
    env: {size: 84}                  # env options of every task (pixel and physics options)
    distractor: video                # shorthand for env.distractor
    collect: {episodes: 16, policy: sticky_random, max_steps: null, cameras: null, seed: 0,
              env: {}}               # env options for collecting only (Push: {start_like_goal: true})
    pretrain: {steps: 200, batch_size: 32, config: {arch: fast}}
    methods: {tcn: {}, dbc: {bisim_weight: 0.5}}    # method -> options of its Config
    regimes: [frozen, finetune, decoupled, joint]   # rows per method (default [frozen])
    method_regimes: {atc: [frozen, decoupled]}      # a method's own regimes, in place of `regimes`
    references: [random_encoder, state_sac, pixel_sac, dbc_joint, deepmdp_joint]
    variants: {grasp2vec+aux: {method: grasp2vec, hyperparams: {imagined_goal_ratio: 0.3}},
               grasp2vec-cos: {method: grasp2vec, goal_reward: cosine}}
                                     # a method's frozen row again, with RL hyper-parameters (or a
                                     # goal reward, as ssrl train --goal-reward) of its own
    rl: {algo: sac, env_steps: 16000, eval_every: 4000, eval_episodes: 5, hyperparams: {...},
         online: {every_episodes: 50, data: pretraining},  # RIG's online fine-tuning: decoupled
                                     # cells then start from the pretrained encoder (else from scratch, as ATC)
         view_cameras: [fixed, lookatcart]}  # what decoupled/joint multi-view cells (TCN) render
    pixel_rl: {hyperparams: {...},   # added to rl.hyperparams for end-to-end pixel rows
               regimes: {decoupled: {rl_head: true}}}   # and for one regime's cells only
    probes:                          # probe-only cells on the data of any env
      push: {env: ssrl/PushRandomObject-v0, episodes: 12, policy: push_explore,
             cameras: [push, front], steps: 150, methods: [tcn], config: {tcn: {...}}}
    report_steps: [100000, 500000]
    published: true

Every section is a dataclass; a key that is not a field, at any level, is an error naming the
valid keys, and so is a value of the wrong type or out of range.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import yaml

from ssrl.configs import ConfigError, from_dict

SUITES_DIR = pathlib.Path(__file__).parent / "suites"
# Reference rows: row name -> what the row is (the report's legend).
REFERENCE_ROWS = {
    "random_encoder": "frozen random-init encoder of the suite's first method (lower bound)",
    "state_sac": "SAC on the true state (upper bound)",
    "pixel_reward": "the first method's frozen encoder rewarded by the env's own reward on images (goal tasks)",
    "oracle_reward": "the first method's frozen encoder rewarded by the env's own reward: grasping's object ids",
    "any_reward": "the first method's frozen encoder, every lift rewarded (indiscriminate grasping)",
    "pixel_sac": "SAC from pixels end to end (random shift)",
    "dbc_joint": "pixel SAC with DBC's objective trained jointly",
    "deepmdp_joint": "pixel SAC with DeepMDP's objective trained jointly",
}
JOINT_ROW_SUFFIX = "_joint"  # "<method>_joint": pixel SAC with that method's joint objective


class SuiteError(ValueError):
    """A suite file or a command-line selection that cannot be run."""


@dataclasses.dataclass
class CollectSpec:
    """How a task's data set is collected (``ssrl collect``)."""

    episodes: int = 20
    policy: str = "sticky_random"
    max_steps: int | None = None
    cameras: list[str] | None = None  # None: two synchronised views of DMC tasks, the env's default elsewhere
    seed: int = 0
    # Env options for collecting only (not the RL runs), e.g. Push's {start_like_goal: true}:
    # RIG's VAE data, the puck spread over the goal space.
    env: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PretrainSpec:
    """Pretraining of every method (``ssrl pretrain``); ``config`` goes to each method's Config."""

    steps: int = 1000
    batch_size: int | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    precision: str = "fp32"  # "bf16" or "auto": the loss under bfloat16 autocast (ssrl pretrain --precision)

    def identity(self) -> dict[str, Any]:
        """What decides the pretrained model; ``precision`` only when not fp32, so models and
        cells from before the option keep their identity."""
        out = dataclasses.asdict(self)
        if out["precision"] == "fp32":
            del out["precision"]
        return out


@dataclasses.dataclass
class RLSpec:
    """The RL part of every task cell (``ssrl train``)."""

    env_steps: int
    algo: str = "sac"
    eval_every: int = 10_000
    eval_episodes: int = 10
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Online fine-tuning (the decoupled regime on goal tasks with image goals: RIG's), the fields
    # of ssrl.representations.online.OnlineConfig; ``data: pretraining`` mixes in the cell's own
    # pretraining data (RIG's "mixture of D and R").
    online: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Env options of a second evaluation after training (``ssrl evaluate -o``), e.g. held-out
    # object shapes: the report shows its success and final distances beside the run's own.
    held_out: dict[str, Any] = dataclasses.field(default_factory=dict)
    # More such evaluations, by name, each its own env options, file (held_out_NAME.json) and
    # report columns: ``{shapes: {object_shapes: [sphere]}, colours: {object_hues: [0.55]}}``.
    held_out_sets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def held_out_evaluations(self) -> dict[str, dict[str, Any]]:
        """Every held-out evaluation by its result key: ``held_out`` (the unnamed one, as
        results from before named sets have it), then ``held_out_NAME`` for each named set."""
        named = {f"held_out_{name}": options for name, options in self.held_out_sets.items()}
        return ({"held_out": self.held_out} if self.held_out else {}) | named

    # The cameras the decoupled and joint cells of multi-view methods (TCN, mfTCN) render: the
    # agent sees the first, its replay keeps the others' frames for the method's loss.
    view_cameras: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PixelRLSpec:
    """Hyper-parameters added to ``rl.hyperparams`` for the rows that train from pixels, and,
    per regime, for that regime's cells only (``regimes: {decoupled: {rl_head: true},
    finetune: {encoder_lr: 1e-4}}``)."""

    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    regimes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def for_regime(self, regime: str | None) -> dict[str, Any]:
        """The hyper-parameters a pixel cell of ``regime`` adds (None: pixel SAC's)."""
        return dict(self.hyperparams, **self.regimes.get(regime, {})) if regime else dict(self.hyperparams)


@dataclasses.dataclass
class VariantSpec:
    """A row that is one of the suite's methods, frozen, with RL hyper-parameters of its own on
    top of ``rl.hyperparams`` (grasp2vec with auxiliary goals beside grasp2vec) and, on a goal
    task, optionally another goal reward (``ssrl train --goal-reward``: grasp2vec's cosine
    beside its product): the same pretrained model, another agent."""

    method: str
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    goal_reward: str | None = None


@dataclasses.dataclass
class ProbeSpec:
    """Probe-only cells: methods pretrained on ``env``'s data, scored against random init."""

    env: str
    methods: list[str] = dataclasses.field(default_factory=list)
    episodes: int = 20
    policy: str = "sticky_random"
    max_steps: int | None = None
    cameras: list[str] | None = None
    seed: int = 0
    steps: int | None = None  # pretraining steps (default: the suite's pretrain.steps)
    config: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # method -> options

    @property
    def collect(self) -> CollectSpec:
        return CollectSpec(self.episodes, self.policy, self.max_steps, self.cameras, self.seed)


@dataclasses.dataclass
class Suite:
    """A whole suite (see the module docstring)."""

    name: str
    tasks: list[str] = dataclasses.field(default_factory=list)
    note: str = ""
    seeds: int = 1
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
    distractor: str | dict[str, Any] | None = None
    collect: CollectSpec = dataclasses.field(default_factory=CollectSpec)
    pretrain: PretrainSpec = dataclasses.field(default_factory=PretrainSpec)
    methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    regimes: list[str] = dataclasses.field(default_factory=lambda: ["frozen"])  # how each method serves the agent
    # A method's own regimes, in place of ``regimes`` (ATC decoupled, CURL joint, without every
    # method running every regime).
    method_regimes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    references: list[str] = dataclasses.field(default_factory=list)
    variants: dict[str, VariantSpec] = dataclasses.field(default_factory=dict)
    rl: RLSpec | None = None
    pixel_rl: PixelRLSpec = dataclasses.field(default_factory=PixelRLSpec)
    probes: dict[str, ProbeSpec] = dataclasses.field(default_factory=dict)
    report_steps: list[int] = dataclasses.field(default_factory=list)
    published: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def regimes_of(self, method: str) -> list[str]:
        """The regimes ``method`` runs in: its own ``method_regimes`` entry, else ``regimes``."""
        return list(self.method_regimes.get(method, self.regimes))


# -- loading and validation ------------------------------------------------------------------------


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite by name (``quick``) or path; errors name the field."""
    path = pathlib.Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SuiteError(
            f"no suite {name_or_path!r}; available suites: {', '.join(available_suites())} (or a path to a YAML file)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"suite file {path} is not valid YAML: {err}") from err
    return parse_suite(raw, str(path))


def parse_suite(raw: Any, where: str = "suite") -> Suite:
    """A :class:`Suite` from a mapping (a loaded YAML file), fully validated."""
    if isinstance(raw, Suite):
        raw = raw.as_dict()
    try:
        suite = from_dict(Suite, raw, where)
    except ConfigError as err:
        raise SuiteError(str(err)) from err
    _check_values(suite, where)
    return suite


def _check_values(suite: Suite, where: str) -> None:
    """What types alone cannot say: known tasks, methods, rows and algorithms; positive budgets."""
    from ssrl.envs import suite_tasks
    from ssrl.envs.manipulation import ENVS as MANIPULATION_ENVS
    from ssrl.representations import names as method_names

    known_tasks = {f"{d}-{t}" for d, t in suite_tasks()}
    scenes = [env_id.removeprefix("ssrl/").removesuffix("-v0") for env_id in MANIPULATION_ENVS]
    for task in suite.tasks:
        if task not in known_tasks and task not in scenes:
            raise SuiteError(
                f"{where}: unknown task {task!r}; tasks are DOMAIN-TASK of the DMC suite (e.g. cartpole-swingup) "
                f"or one of our scenes: {', '.join(scenes)}"
            )
    if suite.tasks and suite.rl is None:
        raise SuiteError(f"{where}: missing field 'rl' (the RL budget of the task cells)")
    valid = method_names()
    for method in suite.methods:
        if method not in valid:
            raise SuiteError(f"{where}: unknown method {method!r}; valid methods: {', '.join(valid)}")
    from ssrl.representations.regimes import REGIMES

    for label, regimes in [("regimes", suite.regimes)] + [
        (f"method_regimes.{m}", r) for m, r in suite.method_regimes.items()
    ]:
        for regime in regimes:
            if regime not in REGIMES:
                raise SuiteError(f"{where}: {label}: unknown regime {regime!r}; valid regimes: {', '.join(REGIMES)}")
    empty = sorted(m for m, regimes in suite.method_regimes.items() if not regimes)
    if empty:
        raise SuiteError(f"{where}: method_regimes gives {empty} no regime; list at least one, e.g. [frozen]")
    extra = sorted(set(suite.method_regimes) - set(suite.methods))
    if extra:
        raise SuiteError(
            f"{where}: method_regimes names {extra}, which are not among its methods {list(suite.methods)}"
        )
    pixel_regimes = [r for r in REGIMES if r != "frozen"]  # frozen rows learn from latents, not pixels
    for regime in suite.pixel_rl.regimes:
        if regime not in pixel_regimes:
            raise SuiteError(
                f"{where}: pixel_rl.regimes: {regime!r} is not a regime whose agent reads pixels; "
                f"valid: {', '.join(pixel_regimes)}"
            )
    if suite.rl is not None and len(suite.rl.view_cameras) == 1:
        raise SuiteError(
            f"{where}: rl.view_cameras lists the agent's camera first and at least one other whose views the "
            f"replay keeps, e.g. [fixed, lookatcart]; got {suite.rl.view_cameras}"
        )
    views = suite.rl.view_cameras if suite.rl is not None else []
    if views and "camera" in suite.env and suite.env["camera"] != views[0]:
        raise SuiteError(
            f"{where}: rl.view_cameras starts with {views[0]!r}, but the suite's agents see "
            f"env.camera {suite.env['camera']!r}: list that camera first, so every row sees the same one"
        )
    for row, variant in suite.variants.items():
        if variant.method not in suite.methods:
            raise SuiteError(
                f"{where}: variants.{row}: method {variant.method!r} is not among the suite's methods "
                f"{list(suite.methods)} (a variant reuses a method's pretrained model)"
            )
        if row in suite.methods or row in REFERENCE_ROWS or ":" in row:
            raise SuiteError(
                f"{where}: variants.{row}: a variant needs a row name of its own (not a method, a "
                "reference row or METHOD:REGIME)"
            )
        if variant.goal_reward is not None:
            from ssrl.agents.run import GOAL_REWARDS

            if variant.goal_reward not in GOAL_REWARDS:
                raise SuiteError(
                    f"{where}: variants.{row}: unknown goal_reward {variant.goal_reward!r}; valid: "
                    f"{', '.join(GOAL_REWARDS)} (as ssrl train --goal-reward)"
                )
    for row in suite.references:
        if row not in REFERENCE_ROWS:
            raise SuiteError(f"{where}: unknown reference row {row!r}; valid rows: {', '.join(REFERENCE_ROWS)}")
    if "random_encoder" in suite.references and not suite.methods:
        raise SuiteError(f"{where}: the random_encoder row is the untrained encoder of the first method; list a method")
    minimums = [
        ("seeds", suite.seeds, 1),
        ("collect.episodes", suite.collect.episodes, 1),
        ("pretrain.steps", suite.pretrain.steps, 0),
    ]
    if suite.rl is not None:
        minimums += [
            ("rl.env_steps", suite.rl.env_steps, 1),
            ("rl.eval_every", suite.rl.eval_every, 1),
            ("rl.eval_episodes", suite.rl.eval_episodes, 0),
        ]
        from ssrl.agents import ALGOS

        if suite.rl.algo not in ALGOS:
            raise SuiteError(f"{where}: rl.algo must be one of {', '.join(map(repr, ALGOS))}, got {suite.rl.algo!r}")
        for name, options in suite.rl.held_out_sets.items():
            if not (isinstance(name, str) and name.isidentifier()):
                raise SuiteError(
                    f"{where}: rl.held_out_sets: a set's name must be a plain word (it names a file), got {name!r}"
                )
            if not isinstance(options, dict) or not options:
                raise SuiteError(f"{where}: rl.held_out_sets.{name} must be env options (KEY: VALUE), got {options!r}")
    for part, spec in suite.probes.items():
        minimums.append((f"probes.{part}.episodes", spec.episodes, 2))  # one to train on, one held out
        for method in spec.methods:
            if method not in valid:
                raise SuiteError(
                    f"{where}: probes.{part}: unknown method {method!r}; valid methods: {', '.join(valid)}"
                )
        extra = sorted(set(spec.config) - set(spec.methods))
        if extra:
            raise SuiteError(
                f"{where}: probes.{part}.config names {extra}, which are not among its methods {spec.methods}"
            )
    if suite.pretrain.batch_size is not None:
        minimums.append(("pretrain.batch_size", suite.pretrain.batch_size, 1))
    from ssrl.utils import PRECISIONS

    if suite.pretrain.precision not in PRECISIONS:
        raise SuiteError(
            f"{where}: pretrain.precision must be one of {', '.join(map(repr, PRECISIONS))}, "
            f"got {suite.pretrain.precision!r}"
        )
    for name, value, minimum in minimums:
        if value < minimum:
            raise SuiteError(f"{where}: {name} must be at least {minimum}, got {value}")
    _check_options(suite, where)


def _check_options(suite: Suite, where: str) -> None:
    """Build every method's config and the agent's config from what the suite gives them, so a
    typo, a wrong type or an out-of-range value in a nested option stops the suite before any
    cell starts (before, it surfaced as a failed cell after the data were collected)."""
    from ssrl.representations import get
    from ssrl.utils import build_config

    def check(label: str, config_cls: type, values: dict[str, Any]) -> None:
        try:
            build_config(config_cls, values)
        except (ValueError, TypeError) as err:
            raise SuiteError(f"{where}: {label}: {err}") from err

    for method, options in suite.methods.items():
        check(f"methods.{method} (with pretrain.config)", get(method).Config, dict(suite.pretrain.config, **options))
    for part, spec in suite.probes.items():
        for method in spec.methods:
            values = dict(suite.pretrain.config, **spec.config.get(method, {}))
            check(f"probes.{part}.config.{method} (with pretrain.config)", get(method).Config, values)
    if suite.rl is not None:
        from ssrl.agents import ALGOS

        algo = ALGOS[suite.rl.algo].config_cls
        check("rl.hyperparams", algo, dict(suite.rl.hyperparams))
        from ssrl.representations.online import OnlineConfig

        check("rl.online", OnlineConfig, dict(suite.rl.online))
        check(
            "rl.hyperparams with pixel_rl.hyperparams", algo, dict(suite.rl.hyperparams, **suite.pixel_rl.hyperparams)
        )
        if suite.rl.online and "rl_head" in suite.pixel_rl.regimes.get("decoupled", {}):
            raise SuiteError(
                f"{where}: pixel_rl.regimes.decoupled: rl_head needs a pixel agent, but with rl.online the decoupled "
                "cells learn from latents (RIG's online fine-tuning); drop rl_head"
            )
        for regime in suite.pixel_rl.regimes:
            # As a pixel run builds it: only the decoupled regime's critic leaves the encoder alone.
            values = dict(suite.rl.hyperparams, critic_trains_encoder=regime != "decoupled")
            values.update(suite.pixel_rl.for_regime(regime))
            check(f"pixel_rl.regimes.{regime} (with the hyperparams)", algo, values)
