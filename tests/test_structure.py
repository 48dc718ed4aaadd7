"""The seams: a method is one class (no driver edits), one run-folder mechanism, held-out probes,
atomic writes that keep the umask's permissions, and layering."""

import dataclasses
import json
import os
import pathlib
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import ssrl
from ssrl.cli import main as cli
from ssrl.envs.rollouts import collect
from ssrl.representations import BaseConfig, Need, Representation, RolloutData, load_representation, names, register
from ssrl.representations.backbones import make_encoder
from ssrl.representations.pretrain import episode_ids, pretrain, probe_split
from ssrl.runs import RunFolder, RunFolderError, config_diff, truncate_records
from ssrl.utils import atomic_path, write_json

SIZE = 32


# -- a throwaway method, defined here and nowhere else -----------------------------------------------


@dataclasses.dataclass
class MeanColourConfig(BaseConfig):
    arch: str = "fast"
    latent_dim: int = 8
    frame_stack: int = 1
    batch_size: int = 16


@register
class MeanColour(Representation):
    """Predicts a frame's mean colour from its embedding: a real objective, small enough for a test."""

    name = "test-mean-colour"
    needs = Need.FRAMES
    Config = MeanColourConfig

    def __init__(self, config, obs_shape):
        super().__init__(config, obs_shape)
        self.encoder = make_encoder(config.arch, obs_shape[0], obs_shape[1:], config.latent_dim)
        self.head = nn.Linear(config.latent_dim, obs_shape[0])
        self.register_buffer("frames_seen_after", torch.zeros(()))

    def sample_batch(self, data, batch_size, rng):
        return {"obs": data.stack(data.sample_frames(batch_size, rng), k=self.config.frame_stack)}

    def _target(self, obs):
        return obs.float().mean(dim=(2, 3)) / 255.0

    def loss(self, batch):
        error = ((self.head(self.encoder(batch["obs"])) - self._target(batch["obs"])) ** 2).mean()
        return error, {"mse": error.detach()}

    def after_pretraining(self, data):
        self.frames_seen_after.fill_(len(data))

    def extra_scores(self, data):
        obs = data.stack(np.arange(len(data)), k=self.config.frame_stack)
        pred = self.map_batches(lambda x: self.head(self.encoder(x)), obs)
        return {"colour_mse": float(((pred - self._target(torch.as_tensor(obs)).numpy()) ** 2).mean())}


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cartpole"
    collect("ssrl/cartpole-swingup-v0", episodes=5, out=out, size=SIZE, max_steps=20, seed=0, progress=False)
    return out


def test_a_method_defined_in_a_test_runs_through_pretrain_probe_and_a_bench_cell(cartpole, tmp_path):
    from ssrl.benchmarks.bench import run_bench

    assert "test-mean-colour" in names()
    rep, summary = pretrain("test-mean-colour", cartpole, out=tmp_path / "pre", steps=30, progress=False)
    assert summary["last"]["loss"] < summary["first_loss"]
    # after_pretraining ran on the training episodes only (4 of 5 with the default holdout), and
    # what it set was saved with the model.
    train_frames = len(RolloutData(cartpole).split(0.2)[0])
    assert load_representation(tmp_path / "pre" / "model.pt").frames_seen_after.item() == train_frames

    suite = {
        "name": "throwaway",
        "tasks": ["cartpole-swingup"],
        "env": {"size": SIZE},
        "collect": {"episodes": 3, "max_steps": 16},
        "pretrain": {"steps": 3, "batch_size": 8},
        "methods": {"test-mean-colour": {}},
        "references": ["random_encoder"],
        "rl": {
            "env_steps": 64,
            "eval_every": 64,
            "eval_episodes": 1,
            "hyperparams": {"learning_starts": 4, "batch_size": 8, "hidden_dims": [8]},
        },
    }
    out = tmp_path / "bench"
    summary = run_bench(suite, out=out, workers=1, display=False)
    rows = {r["row"]: r for r in summary["rows"]}
    assert set(rows) == {"test-mean-colour", "random_encoder"}
    # The method's own score reaches the result and the report without any driver knowing it.
    assert rows["test-mean-colour"]["probe_colour_mse"] != "-"
    result = json.loads((out / "cells" / "test-mean-colour__cartpole-swingup__s0" / "result.json").read_text())
    assert result["probe"]["colour_mse"] >= 0 and result["rl"]["env_steps"] == 64
    assert "colour_mse" in (out / "summary.md").read_text()


def test_no_driver_names_a_method():
    """Drivers dispatch through the Representation class, never on a method's name."""
    root = pathlib.Path(ssrl.__file__).parent
    drivers = [
        "cli.py",
        "agents/run.py",
        "representations/pretrain.py",
        "representations/probe.py",
        "benchmarks/bench.py",
        "benchmarks/cells.py",
        "benchmarks/runner.py",
        "benchmarks/executor.py",
        "benchmarks/suite.py",
        "benchmarks/report.py",
        "benchmarks/pretrain_speed.py",
    ]
    for driver in drivers:
        text = (root / driver).read_text()
        for method in names():
            assert not re.search(rf"[\"']{re.escape(method)}[\"']", text), f"{driver} names the method {method!r}"
    assert "hasattr(rep" not in (root / "representations/pretrain.py").read_text()


# -- the run folder ------------------------------------------------------------------------------------


def test_config_diff_names_every_nested_key_with_both_values():
    there = {"config": {"lr": 1e-3, "arch": "fast"}, "seed": 0, "dims": (16, 16)}
    asked = {"config": {"lr": 2e-3, "arch": "fast"}, "seed": 0, "dims": [16, 16], "extra": 1}
    assert config_diff(there, asked) == [
        "config.lr: 0.001 in the folder, 0.002 asked",
        "extra: (absent) in the folder, 1 asked",
    ]
    assert config_diff(there, there) == []


def test_run_folder_resumes_refuses_and_overwrites(tmp_path):
    folder = RunFolder(tmp_path / "run", "ssrl thing")
    identity = {"lr": 0.1, "seed": 1}
    assert folder.check(identity) is False and not folder.started
    folder.start(identity, budget=10)
    assert folder.check(identity, budget=10, budget_key="budget") is True
    with pytest.raises(RunFolderError, match="lr: 0.1 in the folder, 0.2 asked"):
        folder.check({"lr": 0.2, "seed": 1})
    folder.finish({"budget": 10})
    with pytest.raises(RunFolderError, match="is finished"):
        folder.check(identity, budget=10, budget_key="budget")
    assert folder.check(identity, budget=20, budget_key="budget") is True  # a larger budget continues it
    assert folder.check(identity, budget=10, budget_key="budget", refuse_finished=False) is True
    assert folder.check({"lr": 0.2}, overwrite=True) is False
    assert [p.name for p in (tmp_path / "run").iterdir()] in ([], [".lock"])  # emptied: a new run
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="corrupt"):
        RunFolder(tmp_path / "bad", "ssrl thing").check(identity)


def test_truncate_records_keeps_what_a_resume_keeps(tmp_path):
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"step": s}) + "\n" for s in (10, 20, 30)))
    truncate_records(jsonl, "step", lambda s: s <= 20)
    assert [json.loads(line)["step"] for line in jsonl.read_text().splitlines()] == [10, 20]
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("env_steps,ret\n0,1.5\n100,2.5\n200,3.5\n")
    truncate_records(csv_path, "env_steps", lambda s: s <= 100)
    assert csv_path.read_text().splitlines() == ["env_steps,ret", "0,1.5", "100,2.5"]


def test_pretrain_resume_names_the_option_that_changed(cartpole, tmp_path):
    out = tmp_path / "pre"
    pretrain("test-mean-colour", cartpole, out=out, steps=4, checkpoint_every=2, progress=False)
    # Before, a changed --lr or --batch-size resumed silently (only method, config and seed were compared).
    with pytest.raises(FileExistsError, match=r"lr: 0.001 in the folder, 0.01 asked"):
        pretrain("test-mean-colour", cartpole, out=out, steps=8, lr=1e-2, progress=False)
    with pytest.raises(FileExistsError, match=r"batch_size: 16 in the folder, 4 asked"):
        pretrain("test-mean-colour", cartpole, out=out, steps=8, batch_size=4, progress=False)
    with pytest.raises(FileExistsError, match="is finished"):
        pretrain("test-mean-colour", cartpole, out=out, steps=4, progress=False)
    _, summary = pretrain("test-mean-colour", cartpole, out=out, steps=6, progress=False)  # continues to 6
    assert summary["steps"] == 6
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [4, 6]


# -- held-out probes -------------------------------------------------------------------------------------


def test_cli_probe_scores_only_episodes_the_encoder_never_saw(cartpole, tmp_path, capsys):
    model = tmp_path / "pre" / "model.pt"
    assert (
        cli(["pretrain", "test-mean-colour", "--data", str(cartpole), "--steps", "2", "--out", str(tmp_path / "pre")])
        == 0
    )
    rep = load_representation(model)
    data = RolloutData(cartpole)
    train, test = probe_split(rep, data)
    assert not set(episode_ids(test)) & set(rep.trained_on)
    assert set(episode_ids(test)) == set(episode_ids(data)) - set(rep.trained_on)
    capsys.readouterr()
    assert cli(["probe", str(model), "--data", str(cartpole)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["trained"]["n_test"] == len(test)  # scored on the held-out episode's frames, not a fresh split
    saved = json.loads((tmp_path / "pre" / f"probe-{cartpole.name}.json").read_text())
    assert saved["trained"] == printed["trained"] and saved["random_init"]["n_test"] == len(test)
    assert saved["trained"]["colour_mse"] >= 0  # the method's extra scores come along
    assert "random_init" in saved["meaning"]

    # An encoder that trained on every episode cannot be probed on them: refused, with what to do.
    assert (
        cli(
            [
                "pretrain",
                "test-mean-colour",
                "--data",
                str(cartpole),
                "--steps",
                "2",
                "--holdout",
                "0",
                "--out",
                str(tmp_path / "all"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli(["probe", str(tmp_path / "all" / "model.pt"), "--data", str(cartpole)]) == 2
    assert "pretrained on every episode" in capsys.readouterr().err


def test_probe_split_of_another_data_set_is_a_plain_split(cartpole, tmp_path):
    other = tmp_path / "other"
    collect("ssrl/cartpole-swingup-v0", episodes=3, out=other, size=SIZE, max_steps=10, seed=100, progress=False)
    rep, _ = pretrain("test-mean-colour", cartpole, steps=1, progress=False)
    train, test = probe_split(rep, RolloutData(other))
    assert train.num_episodes + test.num_episodes == 3 and test.num_episodes >= 1


# -- validation happens before a run folder is claimed ----------------------------------------------


def test_a_train_start_that_fails_validation_leaves_no_run_json(tmp_path):
    from ssrl.agents.run import train_run

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown SACConfig option"):
        train_run(
            out,
            "ssrl/cartpole-swingup-v0",
            env_steps=16,
            env_kwargs={"from_pixels": False},
            hyperparams={"batch_sise": 8},
            eval_episodes=0,
            progress=False,
            tensorboard=False,
        )
    assert not (out / "run.json").exists()
    # The corrected command runs in the same folder (before, it was refused as "a different run").
    summary = train_run(
        out,
        "ssrl/cartpole-swingup-v0",
        env_steps=48,
        env_kwargs={"from_pixels": False},
        hyperparams={"batch_size": 4, "learning_starts": 4},
        eval_episodes=0,
        progress=False,
        tensorboard=False,
    )
    assert summary["env_steps"] == 48 and (out / "run.json").exists()


def test_collect_with_a_policy_that_does_not_fit_records_nothing_and_append_checks_the_policy(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(ValueError, match="push_expert"):
        collect(
            "ssrl/cartpole-swingup-v0",
            policy="push_expert",
            episodes=1,
            out=out,
            size=SIZE,
            max_steps=4,
            progress=False,
        )
    assert not (out / "meta.json").exists()
    collect("ssrl/cartpole-swingup-v0", policy="random", episodes=1, out=out, size=SIZE, max_steps=4, progress=False)
    with pytest.raises(ValueError, match="policy: 'random' in the folder, 'sticky_random' asked"):
        collect(
            "ssrl/cartpole-swingup-v0",
            policy="sticky_random",
            episodes=1,
            out=out,
            size=SIZE,
            max_steps=4,
            append=1,
            progress=False,
        )


# -- atomic writes ---------------------------------------------------------------------------------------------


def test_atomic_writes_keep_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"1")
        os.umask(0o077)
        write_json(tmp_path / "c.json", {})
    finally:
        os.umask(previous)
    # mkstemp alone makes 0600 whatever the umask.
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600


# -- typed configs ------------------------------------------------------------------------------------


def test_every_config_default_passes_its_own_type_check():
    """A config field whose type the checker cannot read would make every user value of it fail."""
    import typing

    from ssrl.agents import SACConfig, TD3Config
    from ssrl.configs import coerce
    from ssrl.representations import get

    for cls in [SACConfig, TD3Config] + [get(n).Config for n in names()]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert coerce(hints[f.name], f.default, cls.__name__, f.name) == f.default


def test_config_values_of_the_wrong_type_are_named_and_yaml_numbers_are_read_as_meant(tmp_path, capsys):
    from ssrl.agents import SAC
    from ssrl.benchmarks.suite import SuiteError, parse_suite
    from ssrl.configs import ConfigError
    from ssrl.envs import make_dmc

    env = make_dmc("cartpole", "swingup", from_pixels=False)
    with pytest.raises(ConfigError, match="SACConfig: batch_size must be a whole number, got 'abc'"):
        SAC(env, batch_size="abc")
    assert SAC(env, learning_starts=1e3).config.learning_starts == 1000  # --set learning_starts=1e3
    assert SAC(env, hidden_dims=[16, 16]).config.hidden_dims == (16, 16)
    with pytest.raises(ConfigError, match=r"hidden_dims\[1\] must be a whole number"):
        SAC(env, hidden_dims=[16, "x"])
    # The same checker reads suites, at every level: a typo in a nested key is not accepted.
    base = {"name": "t", "tasks": ["cartpole-swingup"], "rl": {"env_steps": 10}}
    for section, typo in (
        ("rl", {"env_steps": 10, "eval_evry": 5}),
        ("collect", {"episode": 3}),
        ("pretrain", {"step": 3}),
    ):
        with pytest.raises(SuiteError, match=rf"{section}: unknown field\(s\) \['(eval_evry|episode|step)'\]"):
            parse_suite(dict(base, **{section: typo}))
    with pytest.raises(SuiteError, match="rl.env_steps must be a whole number"):
        parse_suite(dict(base, rl={"env_steps": "many"}))
    # And the command line reports it as an error of the command, not a traceback.
    code = cli(
        [
            "train",
            "--env",
            "ssrl/cartpole-swingup-v0",
            "-o",
            "from_pixels=false",
            "--set",
            "batch_size=abc",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "batch_size must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "r" / "run.json").exists()


@pytest.mark.parametrize(
    "algo, value, message",
    [
        ("sac", {"gamma": 2}, r"SACConfig.gamma must be in \(0, 1\], got 2"),
        ("sac", {"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ("sac", {"actor_lr": -1e-3}, "actor_lr must be >= 0"),
        ("sac", {"alpha_lr": -1}, "alpha_lr must be >= 0"),
        ("sac", {"init_alpha": 0}, "init_alpha must be positive"),
        ("td3", {"reward_scale": 0}, "TD3Config.reward_scale must be positive, got 0"),
        ("sac", {"her_ratio": 1.0}, r"her_ratio must be in \[0, 1\)"),
        ("sac", {"learning_starts": -1}, "learning_starts must be >= 0"),
        ("sac", {"hidden_dims": [64, 0]}, "hidden_dims must be one or more positive widths"),
        ("sac", {"log_std_bounds": [2, -5]}, "low < high"),
        ("td3", {"policy_noise": -0.2}, "TD3Config.policy_noise must be >= 0"),
        ("td3", {"policy_delay": 0}, "policy_delay must be >= 1"),
    ],
)
def test_hyper_parameters_out_of_range_are_refused_by_name(algo, value, message):
    from ssrl.agents.sac import SACConfig
    from ssrl.agents.td3 import TD3Config

    config = {"sac": SACConfig, "td3": TD3Config}[algo]
    with pytest.raises(ValueError, match=message):
        config(**value)
    config(gamma=1.0, encoder_lr=None, encoder_tau=None, her_ratio=0.0, actor_lr=0.0)  # allowed edges (lr 0 freezes)


def test_a_budget_inside_the_warm_up_warns_that_nothing_will_train(tmp_path):
    from ssrl.agents.run import train_run

    with pytest.warns(UserWarning, match="will not be updated at all"):
        train_run(
            tmp_path / "r",
            "ssrl/cartpole-swingup-v0",
            env_steps=80,
            env_kwargs={"from_pixels": False},
            hyperparams={"batch_size": 8},
            eval_episodes=0,
            progress=False,
            tensorboard=False,
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough budget: no warning
        train_run(
            tmp_path / "s",
            "ssrl/cartpole-swingup-v0",
            env_steps=80,
            env_kwargs={"from_pixels": False},
            hyperparams={"batch_size": 8, "learning_starts": 4},
            eval_episodes=0,
            progress=False,
            tensorboard=False,
        )


def test_a_resumed_run_keeps_its_clock_and_writes_strict_json(tmp_path):
    from ssrl.agents.run import train_run

    run = dict(
        env_kwargs={"from_pixels": False, "task_kwargs": {"time_limit": 0.5}},
        eval_every=40,
        eval_episodes=1,
        hyperparams={"batch_size": 8, "learning_starts": 4},
        progress=False,
        tensorboard=False,
    )
    train_run(tmp_path / "r", "ssrl/cartpole-swingup-v0", env_steps=80, **run)
    train_run(tmp_path / "r", "ssrl/cartpole-swingup-v0", env_steps=160, **run)  # continues the run

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    records = [
        json.loads(line, parse_constant=strict) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["env_steps"] for r in evals] == [0, 40, 80, 120, 160]
    times = [r["wall_time"] for r in evals]
    assert times == sorted(times)  # the resumed run's clock starts where the first one stopped


def test_global_options_work_after_the_subcommand_and_help_shows_defaults(capsys):
    from ssrl.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--threads", "2", "demo"]).threads == 2
    assert parser.parse_args(["demo", "--threads", "2"]).threads == 2  # refused before
    assert parser.parse_args(["demo"]).threads == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 10000)" in text and "--seed SEED" in text and "(default: 0)" in text
    flat = " ".join(text.split())  # argparse wraps the epilog wherever the words fall
    assert "--set keys (SAC):" in flat and "learning_starts" in flat and "TD3 also: policy_delay" in flat
    assert "``" not in parser.format_help()


def test_threads_reach_the_renderer_unless_the_user_set_its_own(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LP_NUM_THREADS", "placeholder")  # restored after the test
    monkeypatch.delenv("LP_NUM_THREADS")
    out = str(tmp_path / "data")
    assert cli(["--threads", "2", "collect", "ssrl/no-such-v0", "--out", out]) == 2  # fails before any work
    assert os.environ["LP_NUM_THREADS"] == "2"
    monkeypatch.setenv("LP_NUM_THREADS", "3")
    cli(["collect", "ssrl/no-such-v0", "--out", out])
    assert os.environ["LP_NUM_THREADS"] == "3"
    torch.set_num_threads(1)  # as the suite runs
    assert "unknown env id 'ssrl/no-such-v0'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # the typo left no empty data set (with its lock) behind


def test_env_options_are_checked_by_name_and_type(tmp_path, capsys):
    from ssrl.envs import make

    with pytest.raises(ValueError, match=r"takes no option \['from_pixel'\]; its options: .*from_pixels"):
        make("ssrl/cartpole-swingup-v0", from_pixel=False)
    with pytest.raises(ValueError, match="from_pixels must be true or false, got 'nope'"):
        make("ssrl/cartpole-swingup-v0", from_pixels="nope")
    with pytest.raises(ValueError, match=r"takes no option \['n_object'\]; its options: .*n_objects"):
        make("ssrl/PushMultiObject-v0", n_object=2)
    assert make("ssrl/cartpole-swingup-v0", from_pixels=False).observation_space.shape == (5,)
    code = cli(["train", "--env", "ssrl/cartpole-swingup-v0", "-o", "from_pixel=false", "--out", str(tmp_path / "r")])
    assert code == 2 and "takes no option ['from_pixel']" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_refuses_and_a_killed_one_leaves_no_lock(tmp_path):
    import subprocess
    import sys
    import time

    folder = RunFolder(tmp_path / "run", "ssrl thing")
    with folder.locked():
        with pytest.raises(RunFolderError, match=rf"in use by another ssrl thing \(process {os.getpid()}\)"):
            with RunFolder(tmp_path / "run", "ssrl thing").locked():
                pass
    with folder.locked():  # released at the end of the block
        pass
    # A process holding the lock is killed (SIGKILL): the OS releases its lock with it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ssrl.runs import RunFolder\n"
            f"with RunFolder({str(tmp_path / 'run')!r}, 'x').locked():\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderError, match=f"process {holder.pid}"):
        with folder.locked():
            pass
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    with folder.locked():
        pass


@pytest.mark.filterwarnings("ignore:this run ends")  # a 16-step run, on purpose
def test_train_pretrain_and_collect_refuse_a_folder_in_use(cartpole, tmp_path):
    from ssrl.agents.run import train_run

    for out, call in (
        (
            tmp_path / "t",
            lambda out: train_run(
                out,
                "ssrl/cartpole-swingup-v0",
                env_steps=16,
                progress=False,
                env_kwargs={"from_pixels": False},
                eval_episodes=0,
            ),
        ),
        (tmp_path / "p", lambda out: pretrain("test-mean-colour", cartpole, out=out, steps=1, progress=False)),
        (
            tmp_path / "c",
            lambda out: collect(
                "ssrl/cartpole-swingup-v0", episodes=1, out=out, size=SIZE, max_steps=2, progress=False
            ),
        ),
    ):
        with RunFolder(out, "other").locked():
            with pytest.raises(RunFolderError, match="in use by another"):
                call(out)
        call(out)  # free again: the same command runs
