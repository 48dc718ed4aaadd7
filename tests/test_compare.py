"""`ssrl compare`: runs read from their folders, scored at the asked step, and intervals and
verdicts worked out by hand."""

import json

import numpy as np
import pytest

from ssrl.agents.trainer import Logger
from ssrl.benchmarks.compare import bootstrap_difference, compare_runs, load_run, markdown, parse_row
from ssrl.cli import main


def make_run(folder, returns, env_id="ssrl/cartpole-swingup-v0", seed=0, every=10000, success=None):
    """A run folder as the trainer writes it: run.json, and its evaluations through the trainer's
    own Logger (metrics.jsonl and eval.csv)."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"env_id": env_id, "seed": seed}))
    logger = Logger(folder, tensorboard=False)
    for i, r in enumerate(returns):
        record = {"kind": "eval", "env_steps": i * every, "return_mean": float(r), "returns": [float(r)]}
        record.update(return_std=1.0, wall_time=i * 5.0)
        if success is not None:
            record["success_rate"] = success[i]
        logger.write(record)
    return folder


def test_bootstrap_difference_by_hand():
    assert bootstrap_difference([1, 1], [0, 0]) == (1.0, 1.0, 1.0)
    # a = (0, 2): a resample's mean is 0, 1 or 2 with p = 1/4, 1/2, 1/4; b = (0) always 0. The
    # 2.5% and 97.5% quantiles of the difference are therefore 0 and 2.
    assert bootstrap_difference([0, 2], [0]) == (1.0, 0.0, 2.0)


def test_a_run_is_scored_at_the_asked_step_or_by_its_last_evaluations(tmp_path):
    run = load_run(make_run(tmp_path / "r", [0, 10, 20, 60]))
    assert run.seed == 0 and run.env_id == "ssrl/cartpole-swingup-v0"
    assert run.score("return_mean", 30000) == 60
    assert run.score("return_mean", 20000) == 20
    assert run.score("return_mean", 30000, last=2) == 40
    with pytest.raises(ValueError, match=r"no return_mean evaluation at 25000 env steps \(its evaluations: 0, 10000"):
        run.score("return_mean", 25000)
    with pytest.raises(ValueError, match="fewer than --last 5"):
        run.score("return_mean", 30000, last=5)
    # A bench cell folder holds its run in run/.
    make_run(tmp_path / "cell" / "run", [5, 7])
    assert load_run(tmp_path / "cell").score("return_mean", 10000) == 7
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a run folder: it has no metrics.jsonl"):
        load_run(tmp_path / "empty")


def test_rows_expand_patterns_to_folders_once(tmp_path):
    for s in (1, 2):
        make_run(tmp_path / f"atc-s{s}", [0, s])
    (tmp_path / "atc-s2.log").write_text("a log, not a run")
    name, paths = parse_row(f"ATC decoupled={tmp_path}/atc-s*,{tmp_path}/atc-s1")
    assert name == "ATC decoupled" and [p.name for p in paths] == ["atc-s1", "atc-s2"]
    with pytest.raises(ValueError, match="a row is NAME=PATH"):
        parse_row(str(tmp_path / "atc-s1"))
    with pytest.raises(ValueError, match="matches nothing"):
        parse_row(f"x={tmp_path}/nothing-*")
    with pytest.raises(ValueError, match="does not exist"):
        parse_row(f"x={tmp_path}/atc-s9")


def rows_of(tmp_path, finals: dict[str, list[float]], **kwargs):
    return {
        name: [load_run(make_run(tmp_path / f"{name}-{i}", [0, f / 2, f], seed=i, **kwargs)) for i, f in enumerate(fs)]
        for name, fs in finals.items()
    }


def test_verdicts_follow_the_interval_of_the_difference(tmp_path):
    rows = rows_of(tmp_path, {"high": [800, 820, 810], "low": [100, 120, 110], "wide": [50, 900, 400], "one": [500]})
    result = compare_runs(rows)
    assert result["at"] == 20000
    high = result["rows"]["high"]
    assert high["scores"] == [800, 820, 810] and high["mean"] == 810 and high["std"] == pytest.approx(10.0)
    assert high["iqm"] == 810 and 800 <= high["iqm_ci95"][0] <= high["iqm_ci95"][1] <= 820
    assert high["curve"] == {"0": 0.0, "10000": 405.0, "20000": 810.0}
    verdict = {(p["a"], p["b"]): p["supports"] for p in result["pairs"]}
    assert verdict[("high", "low")] == "high higher"
    assert verdict[("low", "wide")] == "not distinguishable"  # wide's resampled means span 50..900
    assert verdict[("high", "one")] == "one run: no claim"
    text = markdown(result)
    assert "| high | low | 700 [" in text and "| high | one | 310 | one run: no claim |" in text  # no interval
    diff = next(p for p in result["pairs"] if (p["a"], p["b"]) == ("high", "low"))
    assert diff["difference"] == 700 and 680 <= diff["ci95"][0] <= diff["ci95"][1] <= 720


def test_the_iqm_trims_a_quarter_of_the_runs_each_side(tmp_path):
    result = compare_runs(rows_of(tmp_path, {"four": [0, 10, 11, 100]}))
    row = result["rows"]["four"]
    assert row["mean"] == 30.25 and row["iqm"] == 10.5  # the mean of the middle two


def test_bad_tables_are_errors_naming_file_and_step(tmp_path):
    run = load_run(make_run(tmp_path / "nan", [0, "nan", 20]))
    assert run.score("return_mean", 20000) == 20
    with pytest.raises(ValueError, match=r"nan: return_mean at 10000 env steps is missing \(None\)"):
        run.score("return_mean", 20000, last=2)  # before, the NaN line was skipped and step 0 counted
    folder = make_run(tmp_path / "twice", [0, 5])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "env_steps": 10000, "return_mean": 6.0}) + "\n")  # logs joined by hand
    with pytest.raises(ValueError, match="env_steps must increase from line to line; got 0, 10000, 10000"):
        load_run(folder)


def test_default_step_is_the_last_that_every_run_reached_and_envs_must_agree(tmp_path):
    rows = rows_of(tmp_path, {"a": [10, 20]})
    rows["short"] = [load_run(make_run(tmp_path / "short", [0, 4]))]  # evaluated to 10k only
    assert compare_runs(rows)["at"] == 10000
    with pytest.raises(ValueError, match="short has no return_mean evaluation at 20000"):
        compare_runs(rows, at=20000)
    result = compare_runs(rows)
    assert result["notes"][0].startswith("At 10000 env steps, the last evaluation all runs share; runs that end")
    assert f"{tmp_path / 'short'} (10000)" in result["notes"][0] and "2 run(s) reach up to 20000" in result["notes"][0]
    # Runs evaluated every 10k and every 15k share 0 and 30k: the default is 30k, not an error.
    sparse = [load_run(make_run(tmp_path / "every15k", [0, 1, 2], every=15000))]
    dense = [load_run(make_run(tmp_path / "every10k", [0, 1, 2, 3]))]
    assert compare_runs({"dense": dense, "sparse": sparse})["at"] == 30000
    rows["reacher"] = [load_run(make_run(tmp_path / "reacher", [0, 4], env_id="ssrl/reacher-easy-v0"))]
    with pytest.raises(ValueError, match="different envs .*--mixed-envs"):
        compare_runs(rows)
    assert compare_runs(rows, mixed_envs=True)["at"] == 10000
    with pytest.raises(
        ValueError, match="no 'final_puck_distance' values; its evaluations have return_mean, return_std"
    ):
        compare_runs(rows, metric="final_puck_distance", mixed_envs=True)


def test_success_rates_are_compared_like_returns(tmp_path):
    a = [load_run(make_run(tmp_path / f"a{i}", [0, 0], success=[0.0, s])) for i, s in enumerate([0.9, 1.0])]
    b = [load_run(make_run(tmp_path / f"b{i}", [0, 0], success=[0.0, s])) for i, s in enumerate([0.1, 0.0])]
    result = compare_runs({"a": a, "b": b}, metric="success_rate")
    assert result["rows"]["a"]["mean"] == pytest.approx(0.95) and result["pairs"][0]["supports"] == "a higher"


def test_cli_prints_the_tables_and_writes_its_files(tmp_path, capsys):
    for s in (0, 1):
        make_run(tmp_path / f"p-s{s}", [0, 300 + 100 * s, 500 + 100 * s], seed=s)
        make_run(tmp_path / f"q-s{s}", [0, 100, 200 + 10 * s], seed=s)
    out = tmp_path / "cmp"
    code = main(["compare", f"pixel SAC={tmp_path}/p-s*", f"ATC={tmp_path}/q-s*", "--last", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# return_mean, mean of the last 2 evaluations up to 20000")
    assert "| pixel SAC | 2 (0, 1) | 400, 500 | 450 ± 71 |" in printed  # (300+500)/2, (400+600)/2
    assert "| pixel SAC | ATC | 298 [" in printed  # 450 - (150 + 155) / 2 = 297.5
    assert (out / "compare.md").read_text() == printed
    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"]["ATC"]["scores"] == [150.0, 155.0] and np.isclose(saved["pairs"][0]["difference"], 297.5)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Env: ssrl/cartpole-swingup-v0." in printed and "(With fewer than 5 runs in a row" in printed
    assert main(["compare", f"x={tmp_path}/none-*"]) == 2
    assert "matches nothing" in capsys.readouterr().err
    assert main(["compare", f"a={tmp_path}/p-s0", f"b={tmp_path}/p-s*"]) == 2
    assert "p-s0 is in rows 'a' and 'b'; a run belongs to one row" in capsys.readouterr().err
