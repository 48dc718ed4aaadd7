"""ssrl bench: a tiny suite end to end, resume, errors, Ray, and the statistics."""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ssrl.benchmarks.bench import SuiteError, load_suite, plan, run_bench, status_lines
from ssrl.benchmarks.report import iqm, stratified_bootstrap_ci

TINY = {
    "name": "tiny",
    "note": "test budgets",
    "tasks": ["cartpole-swingup"],
    "seeds": 1,
    "env": {"size": 48},
    "collect": {"episodes": 3, "policy": "sticky_random", "max_steps": 24},
    "pretrain": {"steps": 4, "batch_size": 8, "config": {"arch": "fast", "latent_dim": 8}},
    "methods": {"tcn": {}, "deepmdp": {}},
    "references": ["state_sac"],
    "rl": {
        "algo": "sac",
        "env_steps": 160,
        "eval_every": 80,
        "eval_episodes": 1,
        "hyperparams": {"learning_starts": 5, "batch_size": 8, "hidden_dims": [16]},
    },
}


@pytest.fixture
def tiny_suite(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_tiny_suite_runs_end_to_end_and_writes_every_artefact(tiny_suite, tmp_path):
    out = tmp_path / "bench"
    summary = run_bench(str(tiny_suite), out=out, workers=2, display=False)
    for name in ("runs.jsonl", "summary.md", "summary.csv", "curves.png", "probes.png", "bench.json", "suite.yaml"):
        assert (out / name).exists(), name
    rows = {r["row"]: r for r in summary["rows"]}
    assert set(rows) == {"tcn", "deepmdp", "state_sac"}
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["row"] for r in runs} == {"tcn", "deepmdp", "state_sac"}
    assert sorted({r["env_steps"] for r in runs}) == [0, 80, 160]
    for row in rows:
        cell = out / "cells" / f"{row}__cartpole-swingup__s0"
        result = json.loads((cell / "result.json").read_text())
        # The report's numbers are the cell's: its last evaluation in the RL run's own log ...
        evals = [json.loads(line) for line in (cell / "run" / "metrics.jsonl").read_text().splitlines()]
        last = [e for e in evals if e["kind"] == "eval"][-1]
        assert result["final_return"] == last["return_mean"] and last["env_steps"] == 160
        assert rows[row]["final_return"] == f"{last['return_mean']:.1f}"
        # ... one seed and one task: the IQM is that return / 1000, with a degenerate interval.
        assert summary["aggregates"][row]["iqm"] == pytest.approx(last["return_mean"] / 1000)
        assert summary["aggregates"][row]["ci95"] == pytest.approx([last["return_mean"] / 1000] * 2)
        if row != "state_sac":  # ... and the probe's R^2 on held-out episodes
            assert rows[row]["probe_r2"] == f"{result['probe']['r2']:.3f}"
            assert result["probe"]["n_test"] == 25  # one held-out episode of 3: 24 steps + the reset frame
    assert "probe_r2" not in rows["state_sac"]
    assert "test budgets" in (out / "summary.md").read_text()

    # Resume: finished cells are skipped (their results are not rewritten); a cell whose result
    # is gone runs again and reuses its cached pretrained model.
    tcn_result = out / "cells" / "tcn__cartpole-swingup__s0" / "result.json"
    state_result = out / "cells" / "state_sac__cartpole-swingup__s0" / "result.json"
    before = state_result.stat().st_mtime_ns
    models = sorted((out / "models").iterdir())
    model_mtime = (models[0] / "model.pt").stat().st_mtime_ns
    tcn_result.unlink()
    shutil.rmtree(out / "cells" / "tcn__cartpole-swingup__s0" / "run")
    run_bench(str(tiny_suite), out=out, workers=1, display=False)
    assert state_result.stat().st_mtime_ns == before
    assert tcn_result.exists()
    assert (models[0] / "model.pt").stat().st_mtime_ns == model_mtime


def test_bad_suites_and_selections_name_the_valid_choices(tmp_path, tiny_suite):
    with pytest.raises(SuiteError, match="available suites: .*quick"):
        load_suite("nonexistent")
    bad = dict(TINY, methods={"tcn": {}, "bisim": {}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SuiteError, match="unknown method 'bisim'; valid methods: .*dbc"):
        load_suite(str(path))
    path.write_text(yaml.safe_dump(dict(TINY, tasks=["cartpole-swingdown"])))
    with pytest.raises(SuiteError, match="unknown task"):
        load_suite(str(path))
    path.write_text(yaml.safe_dump(dict(TINY, rl_budget=3)))
    with pytest.raises(SuiteError, match="unknown field.*rl_budget"):
        load_suite(str(path))
    path.write_text("tasks: [unclosed")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(str(path))
    with pytest.raises(SuiteError, match="its rows: .*state_sac"):
        plan(load_suite(str(tiny_suite)), methods=["dbc"])


def test_every_shipped_suite_is_valid_quick_covers_every_control_method_and_some_suite_every_method():
    import ssrl.representations as reps
    from ssrl.benchmarks.bench import available_suites

    assert {"quick", "dmc6", "distracting", "manipulation", "representations", "pretext"} <= set(available_suites())
    methods_in_suites = set()
    for name in available_suites():
        cells = plan(load_suite(name))
        assert cells
        methods_in_suites |= {c.method for c in cells}
    assert set(reps.core.BUILTIN) <= methods_in_suites  # (names() also holds methods tests register)
    quick = plan(load_suite("quick"))
    control = {name for name, module in reps.core.BUILTIN.items() if ".control." in module}
    assert control <= {c.method for c in quick}  # under SAC or probed
    rl_rows = {c.row for c in quick if c.rl is not None}
    assert {"state_sac", "pixel_sac", "random_encoder", "atc:decoupled", "curl:joint"} <= rl_rows
    assert {c.seed for c in quick} == {0, 1}  # two seeds: the headline's intervals can separate rows


def test_tasks_narrow_rl_tasks_and_probe_data_sets_alike():
    quick = load_suite("quick")  # RL on cartpole-swingup; probes on cartpole, push and grasp data
    assert {c.task for c in plan(quick, tasks=["cartpole-swingup"])} == {"cartpole-swingup"}
    assert {c.task for c in plan(quick, tasks=["grasp"])} == {"grasp"}
    assert {c.task for c in plan(quick, tasks=["push", "cartpole-swingup"])} == {"push", "cartpole-swingup"}
    with pytest.raises(SuiteError, match=r"its tasks: cartpole-swingup, cartpole \(probes\), push \(probes\)"):
        plan(quick, tasks=["reacher-easy"])


def test_status_lines_show_phase_steps_and_return(tmp_path):
    cells = plan(TINY)
    folder = tmp_path / "cells" / cells[0].id
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(
        json.dumps({"phase": "rl", "env_steps": 80, "budget": 160, "eval_return": 12.5, "env_steps_per_s": 40.0})
    )
    lines = status_lines(tmp_path, cells, elapsed=60.0)
    assert "0/3 cells done" in lines[0]
    assert "80/160 env steps" in lines[1] and "return    12" in lines[1]


def test_iqm_and_stratified_bootstrap_by_hand():
    assert iqm(np.arange(8.0)) == pytest.approx(np.mean([2, 3, 4, 5]))
    scores = np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7], [0.4, 0.8]])  # 4 runs x 2 tasks
    point, low, high = stratified_bootstrap_ci(scores, reps=500)
    assert point == pytest.approx(np.mean([0.3, 0.4, 0.5, 0.6]))
    assert low < point < high and low >= 0.1 and high <= 0.8
    # Stratified: a task's column only ever resamples its own runs.
    constant = np.array([[0.0, 1.0]] * 5)
    assert stratified_bootstrap_ci(constant, reps=50)[1:] == (0.5, 0.5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_path_runs_a_cell(tiny_suite, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not imported here: Ray reads the env below at import
        pytest.skip("ray is not installed")
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    # A throwaway single-node cluster on loopback only: Ray's "no cluster" switch makes it bind
    # 127.0.0.1 instead of the machine's address, and a local test cluster needs no auth token.
    ray_env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ, **ray_env)
    # Output to a file, not a pipe: the daemons `ray start` leaves behind would hold a pipe open.
    with open(tmp_path / "ray.log", "w") as log:
        subprocess.run(
            [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
            check=True,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    try:
        summary = run_bench(
            str(tiny_suite),
            out=tmp_path / "bench",
            methods=["state_sac"],
            ray_address=f"127.0.0.1:{port}",
            display=False,
        )
        assert [r["row"] for r in summary["rows"]] == ["state_sac"]
        result = json.loads(
            (tmp_path / "bench" / "cells" / "state_sac__cartpole-swingup__s0" / "result.json").read_text()
        )
        assert result["rl"]["env_steps"] == 160
    finally:
        import ray

        ray.shutdown()
        subprocess.run(
            [ray_bin, "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
        )


def test_a_method_can_have_its_own_regimes():
    suite = dict(
        TINY,
        methods={"atc": {}, "curl": {}, "rotation": {}},
        regimes=["frozen"],
        method_regimes={"atc": ["frozen", "decoupled"], "curl": ["joint"]},
    )
    rows = [c.row for c in plan(suite)]
    assert [r for r in rows if r.split(":")[0] in ("atc", "curl", "rotation")] == [
        "atc",
        "atc:decoupled",
        "curl:joint",
        "rotation",
    ]
    narrowed = {c.row for c in plan(suite, regimes=["decoupled", "joint"])}
    assert {"atc:decoupled", "curl:joint"} <= narrowed and not {"atc", "rotation"} & narrowed
    with pytest.raises(
        SuiteError, match=r"--regimes \['finetune'\] not in suite 'tiny'; its regimes: frozen, decoupled"
    ):
        plan(suite, regimes=["finetune"])
    with pytest.raises(SuiteError, match="method_regimes.curl: unknown regime 'jointly'"):
        plan(dict(suite, method_regimes={"curl": ["jointly"]}))
    with pytest.raises(SuiteError, match=r"method_regimes gives \['curl'\] no regime"):
        plan(dict(suite, method_regimes={"curl": []}))
    with pytest.raises(SuiteError, match=r"method_regimes names \['dbc'\], which are not among its methods"):
        plan(dict(suite, method_regimes={"dbc": ["joint"]}))


def test_pixel_rl_regimes_add_hyperparameters_to_one_regimes_cells_only():
    suite = dict(
        TINY,
        methods={"atc": {}},
        regimes=["finetune", "decoupled"],
        references=["pixel_sac", "deepmdp_joint"],
        pixel_rl={
            "hyperparams": {"encoder_arch": "fast"},
            "regimes": {"decoupled": {"rl_head": True}, "finetune": {"encoder_lr": 1e-4}},
        },
    )
    cells = {c.row: c.rl.hyperparams for c in plan(suite)}
    assert cells["atc:decoupled"]["rl_head"] is True and "encoder_lr" not in cells["atc:decoupled"]
    assert cells["atc:finetune"]["encoder_lr"] == 1e-4 and "rl_head" not in cells["atc:finetune"]
    for row in ("pixel_sac", "deepmdp_joint"):
        assert cells[row] == dict(TINY["rl"]["hyperparams"], encoder_arch="fast")
    with pytest.raises(SuiteError, match="pixel_rl.regimes: 'frozen' is not a regime whose agent reads pixels"):
        plan(dict(suite, pixel_rl={"regimes": {"frozen": {}}}))
    # rl_head needs the decoupled regime's critic, which leaves the encoder alone
    with pytest.raises(SuiteError, match=r"pixel_rl.regimes.joint .*rl_head.*critic_trains_encoder=False"):
        plan(dict(suite, pixel_rl={"regimes": {"joint": {"rl_head": True}}}))
    with pytest.raises(SuiteError, match="pixel_rl.regimes.decoupled.*rl_hed"):
        plan(dict(suite, pixel_rl={"regimes": {"decoupled": {"rl_hed": True}}}))
    # With RIG's online fine-tuning the decoupled cells learn from latents: no trunk for a head
    online = dict(suite, rl=dict(TINY["rl"], online={"every_episodes": 5}))
    with pytest.raises(SuiteError, match="rl_head needs a pixel agent, but with rl.online"):
        plan(online)


def test_regimes_axis_names_rows_skips_what_a_replay_cannot_serve_and_runs_a_decoupled_cell(tmp_path):
    from ssrl.benchmarks.cells import unservable

    suite = dict(
        TINY, methods={"rotation": {}, "tcn": {}}, regimes=["frozen", "finetune", "decoupled"], references=["dbc_joint"]
    )
    cells = {c.row: c for c in plan(suite)}
    assert set(cells) == {"rotation", "rotation:finetune", "rotation:decoupled", "tcn", "tcn:finetune", "dbc_joint"}
    assert cells["rotation:decoupled"].pretrain is None and cells["rotation:decoupled"].pixels
    assert cells["tcn:finetune"].pretrain is not None and cells["tcn"].kind == "frozen"
    assert (cells["dbc_joint"].method, cells["dbc_joint"].regime) == ("dbc", "joint")
    assert unservable(load_suite_dict(suite)) == [
        "tcn:decoupled: multi-view TCN needs views, which an agent's replay does not hold (it holds frame stacks of "
        "the agent's camera, transitions and clips, and other cameras' views when the env renders them: "
        "-o cameras=[A,B]); use it pretrained and frozen or fine-tuned instead"
    ]
    # With view cameras the decoupled TCN cell renders both, the agent seeing the first; other
    # cells (and every cell's identity but through its env) are unchanged.
    viewed = dict(suite, rl=dict(TINY["rl"], view_cameras=["fixed", "lookatcart"]))
    with_views = {c.row: c for c in plan(viewed)}
    assert with_views["tcn:decoupled"].env == dict(cells["rotation:decoupled"].env, cameras=["fixed", "lookatcart"])
    assert with_views["rotation:decoupled"].identity() == cells["rotation:decoupled"].identity()
    assert unservable(load_suite_dict(viewed)) == []
    with pytest.raises(SuiteError, match=r"rl.view_cameras lists the agent's camera first.*got \['fixed'\]"):
        plan(dict(suite, rl=dict(TINY["rl"], view_cameras=["fixed"])))
    with pytest.raises(SuiteError, match="unknown regime 'tuned'"):
        plan(dict(suite, regimes=["tuned"]))
    with pytest.raises(SuiteError, match=r"--regimes \['joint'\] not in suite 'tiny'; its regimes: frozen, finetune"):
        run_bench(suite, out=tmp_path / "b", regimes=["joint"], display=False)
    summary = run_bench(
        suite, out=tmp_path / "b", methods=["rotation"], regimes=["finetune", "decoupled"], workers=1, display=False,
        rl_steps=48,
    )  # fmt: skip
    rows = {r["row"]: r for r in summary["rows"]}
    assert {"rotation:finetune", "rotation:decoupled"} == set(rows)  # the frozen regime left out
    result = json.loads(
        (tmp_path / "b" / "cells" / "rotation:decoupled__cartpole-swingup__s0" / "result.json").read_text()
    )
    assert result["regime"] == "decoupled" and result["rl"]["env_steps"] == 48 and "probe" not in result
    run = json.loads(
        (tmp_path / "b" / "cells" / "rotation:decoupled__cartpole-swingup__s0" / "run" / "run.json").read_text()
    )
    assert (run["method"], run["regime"], run["method_kwargs"]["arch"]) == ("rotation", "decoupled", "fast")
    assert "tcn:decoupled" in (tmp_path / "b" / "summary.md").read_text()


def load_suite_dict(suite):
    from ssrl.benchmarks.suite import parse_suite

    return parse_suite(suite)


def test_a_push_suite_runs_rig_rows_and_reports_success_and_final_distances(tmp_path):
    suite = {
        "name": "tiny-push",
        "tasks": ["Push"],
        "seeds": 2,
        "env": {"size": 48},
        "collect": {"episodes": 3, "policy": "random", "max_steps": 20, "cameras": ["push"]},
        "pretrain": {"steps": 4, "batch_size": 8, "config": {"arch": "fast", "latent_dim": 4}},
        "methods": {"beta-vae": {}},
        "regimes": ["frozen", "decoupled"],  # RIG, and RIG with online fine-tuning
        "references": ["random_encoder", "state_sac", "pixel_reward"],
        "rl": {
            "online": {"every_episodes": 1, "steps": 2, "data": "pretraining"},
            "held_out": {"max_episode_steps": 3},  # a second evaluation in a changed env
            "held_out_sets": {"short": {"max_episode_steps": 2}},  # and a named third
            "algo": "sac",
            "env_steps": 120,
            "eval_every": 60,
            "eval_episodes": 2,
            "hyperparams": {
                "learning_starts": 20,
                "batch_size": 8,
                "hidden_dims": [16],
                "her_ratio": 0.4,
                "imagined_goal_ratio": 0.5,
                "normalize_obs": True,
            },
        },
    }
    path = tmp_path / "push.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "bench"
    summary = run_bench(str(path), out=out, workers=1, display=False)
    assert (out / "goals.png").exists()
    # Its returns are not plotted either (before, an empty curves.png: its axis started at 0,
    # every Push return is negative).
    assert "curves.png" not in summary["figures"] and not (out / "curves.png").exists()
    goals = summary["goal_tasks"]["Push"]
    assert set(goals["rows"]) == {"beta-vae", "beta-vae:decoupled", "random_encoder", "state_sac", "pixel_reward"}
    for row in ("beta-vae:decoupled", "pixel_reward"):  # pictured through the encoder and reward they ran with
        assert (out / "cells" / f"{row}__Push__s0" / "pictures" / "goals_reached.png").exists()
    assert goals["metrics"] == ["final_puck_distance", "final_hand_distance"]  # the env's order: its measure first
    assert summary["aggregates"] == {}  # Push returns are not on DMC's scale: no IQM of them
    for row, entry in goals["rows"].items():
        per_seed = []
        for seed in (0, 1):
            cell = out / "cells" / f"{row}__Push__s{seed}"
            evals = [json.loads(line) for line in (cell / "run" / "metrics.jsonl").read_text().splitlines()]
            per_seed.append([e for e in evals if e["kind"] == "eval"][-1])
        assert entry["final_puck_distance"]["per_seed"] == [e["final_puck_distance"] for e in per_seed]
        assert entry["final_puck_distance"]["mean"] == pytest.approx(np.mean(entry["final_puck_distance"]["per_seed"]))
        hits = sum(round(e["success_rate"] * 2) for e in per_seed)
        assert entry["success"]["successes"] == hits and entry["success"]["episodes"] == 4
        # The held-out evaluation: each seed's ssrl evaluate result, pooled.
        held = [json.loads((out / "cells" / f"{row}__Push__s{seed}" / "held_out.json").read_text()) for seed in (0, 1)]
        assert all(len(h["returns"]) == 2 and h["env_overrides"] == {"max_episode_steps": 3} for h in held)
        assert entry["held_out"]["success"]["successes"] == sum(h["success"]["successes"] for h in held)
        assert entry["held_out"]["final_puck_distance"]["per_seed"] == [h["final_puck_distance"] for h in held]
        short = [json.loads((out / "cells" / f"{row}__Push__s{s}" / "held_out_short.json").read_text()) for s in (0, 1)]
        assert all(h["env_overrides"] == {"max_episode_steps": 2} for h in short)
        assert entry["held_out_short"]["final_puck_distance"]["per_seed"] == [h["final_puck_distance"] for h in short]
        lo, hi = entry["success"]["ci95"]
        assert lo <= hits / 4 <= hi
    text = (out / "summary.md").read_text()
    assert "## Goal tasks: success and final distances" in text and "### Push" in text
    assert "held-out success" in text and 'env options {"max_episode_steps": 3}' in text
    assert "held-out short success" in text and 'env options {"max_episode_steps": 2}' in text
    # The headline ranks the rows by success and gives the task's own measure (it said "No RL cell
    # finished" for a suite of goal tasks only).
    (line,) = [x for x in headline_of(text).splitlines() if x.startswith("- **Push**")]
    rates = {row: e["success"]["successes"] / 4 for row, e in goals["rows"].items()}
    order = re.findall(r"`([\w:-]+)` \d+/4", line)
    assert sorted(order) == sorted(rates) and [rates[r] for r in order] == sorted(rates.values(), reverse=True)
    mean = goals["rows"][order[0]]["final_puck_distance"]["mean"]
    assert f"puck distance {100 * mean:.1f} cm" in line and "No RL cell finished" not in text


def test_pool_workers_die_with_the_bench_process(tmp_path):
    # A parent that starts a pool worker (spawn_pool, as the bench and collections do), then is
    # SIGKILLed: the worker must not live on (before, orphaned workers kept training and locked
    # the cells).
    script = tmp_path / "parent.py"
    pidfile = tmp_path / "worker.pid"
    script.write_text(
        "import os, time\n"
        "from ssrl.utils import spawn_pool\n"
        "def job(path):\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    pool = spawn_pool(1)\n"
        f"    pool.submit(job, {str(pidfile)!r})\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    for _ in range(1200):  # starting a spawn worker imports torch: seconds on a busy machine
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    worker = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        pytest.fail("the pool worker outlived the killed bench process")


def test_cells_run_in_the_bench_process_do_not_die_with_its_parent(tmp_path):
    # `ssrl bench --workers 1` runs collections and cells in its own process. They used to set
    # the pool workers' die-with-parent signal there too, so `nohup ssrl bench ... &` was ended
    # silently (SIGTERM, no traceback) when the shell that started it exited.
    script = (
        "import ctypes, pathlib, sys, types\n"
        "from ssrl.benchmarks.runner import collect_data, run_cell\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "def pdeathsig():\n"
        "    sig = ctypes.c_int(-1)\n"
        "    libc.prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG\n"
        "    return sig.value\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "collect_data(out, types.SimpleNamespace(key='empty', collect=types.SimpleNamespace(episodes=0)))\n"
        "after_collect = pdeathsig()\n"
        "cell = types.SimpleNamespace(id='broken', row='r', task='t', seed=0, kind='rl')\n"
        "assert 'error' in run_cell(cell, out)  # fails at once, after the cell's set-up\n"
        "print(after_collect, pdeathsig())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]


def test_a_larger_rl_budget_continues_finished_cells_instead_of_redoing_them(tiny_suite, tmp_path):
    out = tmp_path / "bench"
    run_bench(str(tiny_suite), out=out, workers=1, display=False, methods=["state_sac"])
    cell = out / "cells" / "state_sac__cartpole-swingup__s0"
    first = [json.loads(line) for line in (cell / "run" / "metrics.jsonl").read_text().splitlines()]
    summary = run_bench(str(tiny_suite), out=out, workers=1, display=False, methods=["state_sac"], rl_steps=240)
    evals = [json.loads(line) for line in (cell / "run" / "metrics.jsonl").read_text().splitlines()]
    # The run went on from 160 env steps: its first records are kept as they were, one more
    # evaluation follows, and the result is the new last one.
    assert evals[: len(first)] == first
    assert [e["env_steps"] for e in evals if e["kind"] == "eval"] == [0, 80, 160, 240]
    result = json.loads((cell / "result.json").read_text())
    assert result["rl"]["env_steps"] == 240
    assert summary["rows"][0]["final_return"] == f"{evals[-1]['return_mean']:.1f}"
    # The same budget again reuses the result; a smaller one too (it already went further).
    mtime = (cell / "result.json").stat().st_mtime_ns
    run_bench(str(tiny_suite), out=out, workers=1, display=False, methods=["state_sac"], rl_steps=240)
    run_bench(str(tiny_suite), out=out, workers=1, display=False, methods=["state_sac"])
    assert (cell / "result.json").stat().st_mtime_ns == mtime


def test_a_bench_folder_moved_with_its_models_continues_its_encoder_cells(tiny_suite, tmp_path):
    # Before, a frozen-encoder cell's run compared the encoder's path, which names the bench
    # folder, so a renamed folder failed every such cell ("differs in encoder").
    old, new = tmp_path / "bench", tmp_path / "renamed"
    run_bench(str(tiny_suite), out=old, workers=1, display=False, methods=["tcn"])
    old.rename(new)
    run_bench(str(tiny_suite), out=new, workers=1, display=False, methods=["tcn"], rl_steps=240)
    cell = new / "cells" / "tcn__cartpole-swingup__s0"
    evals = [json.loads(line) for line in (cell / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["env_steps"] for e in evals if e["kind"] == "eval"] == [0, 80, 160, 240]  # continued, not redone
    spec = json.loads((cell / "run" / "run.json").read_text())
    assert pathlib.Path(spec["encoder"]).is_relative_to(new)  # the run reads the moved models now


def test_the_push_suite_runs_rig_with_and_without_online_finetuning_and_only_decoupled_cells_carry_its_options():
    from ssrl.benchmarks.cells import plan
    from ssrl.benchmarks.suite import SuiteError, load_suite, parse_suite

    cells = {c.id: c for c in plan(load_suite("push"), seeds=1)}
    frozen, online = cells["beta-vae__Push__s0"], cells["beta-vae:decoupled__Push__s0"]
    assert online.regime == "decoupled" and online.pretrain == frozen.pretrain  # the same pretrained VAE
    assert online.identity()["rl"]["online"] == {"every_episodes": 50, "steps": 200, "data": "pretraining"}
    # Frozen cells keep the identity they had before online fine-tuning existed (no "online").
    assert "online" not in frozen.identity()["rl"] and "online" not in cells["state_sac__Push__s0"].identity()["rl"]
    # RIG's pixel-distance ablation: the same pretrained VAE, the env's reward on images.
    pixel = cells["pixel_reward__Push__s0"]
    assert (pixel.method, pixel.pretrain, pixel.regime, pixel.goal_reward) == (
        "beta-vae",
        frozen.pretrain,
        "frozen",
        "env",
    )
    assert pixel.identity()["goal_reward"] == "env" and "goal_reward" not in frozen.identity()
    raw = yaml.safe_load((pathlib.Path(__file__).parents[1] / "benchmarks/suites/push.yaml").read_text())
    raw["rl"]["online"] = {"every_episode": 5}
    with pytest.raises(SuiteError, match=r"rl.online.*unknown OnlineConfig option\(s\) \['every_episode'\]"):
        parse_suite(raw)


def headline_of(text):
    return text.split("## Headline", 1)[1].split("\n## ", 1)[0]


def test_collect_env_options_apply_to_collection_only_and_leave_earlier_data_keys_alone():
    from ssrl.benchmarks.cells import plan
    from ssrl.benchmarks.suite import load_suite

    suite = load_suite("push")
    cells = {c.id: c for c in plan(suite, seeds=1)}
    # The key of the push suite's data set as it was before collect.env existed (outputs/bench-push).
    assert cells["beta-vae__Push__s0"].data.key == "Push-06098df9bd"
    assert "env" not in cells["beta-vae__Push__s0"].identity()["data"]["collect"]
    raw = yaml.safe_load((pathlib.Path(__file__).parents[1] / "benchmarks/suites/push.yaml").read_text())
    raw["collect"]["env"] = {"start_like_goal": True}
    goal_cells = {c.id: c for c in plan(raw, seeds=1)}
    cell = goal_cells["beta-vae__Push__s0"]
    assert cell.data.key != "Push-06098df9bd" and cell.identity()["data"]["collect"]["env"] == {"start_like_goal": True}
    assert cell.env == cells["beta-vae__Push__s0"].env  # the RL env keeps its own options


def test_cells_that_share_a_model_pretrain_it_once_when_they_start_together(tmp_path, monkeypatch):
    """grasp2vec's variants on seed 0 share grasp2vec's model; on two workers they start at once.
    The second cell waits for the first's pretraining and reuses its model (it used to find the
    model folder locked and fail)."""
    import threading
    import time

    import ssrl.representations.pretrain as pretrain_module
    from ssrl.benchmarks.runner import pretrained_model

    calls = []

    def slow_pretrain(method, data, out, **kwargs):  # writes what a finished pretraining leaves
        calls.append(out)
        time.sleep(0.3)
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(out) / "final.json").write_text("{}")

    monkeypatch.setattr(pretrain_module, "pretrain", slow_pretrain)
    cells = {c.row: c for c in plan(load_suite("grasping"), seeds=1)}
    quiet = type("Quiet", (), {"update": lambda *a, **k: None})()
    paths, errors = [], []

    def run(cell):
        try:
            paths.append(pretrained_model(tmp_path, cell, None, quiet))
        except Exception as err:  # noqa: BLE001 - the test reports it below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(cells[row],)) for row in ("grasp2vec-cos", "grasp2vec-cos+aux")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert paths[0] == paths[1] == pathlib.Path(calls[0]) / "model.pt"


def test_a_cell_that_fails_then_succeeds_keeps_no_stale_traceback(tmp_path, monkeypatch):
    import ssrl.benchmarks.runner as runner

    cell = plan(load_suite("grasping"), seeds=1, methods=["grasp2vec-cos"])[0]
    tries = iter([RuntimeError("the model folder was locked"), {"cell": cell.id}])

    def one_try(cell, out):
        outcome = next(tries)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(runner, "_run_cell", one_try)
    error = tmp_path / "cells" / cell.id / "error.txt"
    failed = runner.run_cell(cell, tmp_path)
    assert "locked" in failed["error"] and "RuntimeError" in error.read_text()
    assert runner.run_cell(cell, tmp_path) == {"cell": cell.id} and not error.exists()


def test_pretraining_precision_is_a_suite_option_that_leaves_fp32_models_and_cells_as_they_were(tmp_path, monkeypatch):
    import ssrl.representations.pretrain as pretrain_module
    from ssrl.benchmarks.runner import pretrained_model

    asked = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *args, **kwargs: asked.append(kwargs))

    def model_folder(cell):  # where the bench keeps (or trains) the cell's model, and in what precision
        asked.clear()
        pretrained_model(tmp_path, cell, None, type("Quiet", (), {"update": lambda *a, **k: None})())
        return pathlib.Path(asked[0]["out"]).name, asked[0]["precision"]

    suite = load_suite("pretext")
    cell = {c.id: c for c in plan(suite, methods=["tracking"], tasks=["cartpole-swingup"], regimes=["finetune"])}[
        "tracking:finetune__cartpole-swingup__s0"
    ]
    # The model folder and cell identity of this cell as the bench wrote them before the option
    assert model_folder(cell) == ("tracking-cartpole-swingup-3195f0883e-s0", "fp32")
    assert cell.identity()["pretrain"] == {
        "steps": 1000,
        "batch_size": 32,
        "config": {"arch": "fast", "latent_dim": 50},
    }
    raw = yaml.safe_load((pathlib.Path(__file__).parents[1] / "benchmarks/suites/pretext.yaml").read_text())
    raw["pretrain"]["precision"] = "bf16"
    bf16 = {c.id: c for c in plan(raw, methods=["tracking"], tasks=["cartpole-swingup"], regimes=["finetune"])}[cell.id]
    folder, precision = model_folder(bf16)
    assert precision == "bf16" and folder != "tracking-cartpole-swingup-3195f0883e-s0"
    assert bf16.identity()["pretrain"]["precision"] == "bf16"
    probes = yaml.safe_load((pathlib.Path(__file__).parents[1] / "benchmarks/suites/pretext_probes.yaml").read_text())
    probes["pretrain"]["precision"] = "bf16"
    assert {c.pretrain.precision for c in plan(probes)} == {"bf16"}  # probe-only cells too
    from ssrl.utils import resolve_precision

    raw["pretrain"]["precision"] = "auto"  # resolved when planned: a cell's identity says what it ran in
    resolved = {c.pretrain.precision for c in plan(raw, methods=["tracking"], tasks=["cartpole-swingup"])}
    assert resolved == {resolve_precision("auto", "cpu")}
    # The agents' default precision ("auto") too: absent from the identity where it is fp32 (as
    # before the default changed), written out where it is bf16; a pixel row's own setting wins.
    state = {c.id: c for c in plan(raw, methods=["tracking"], tasks=["cartpole-swingup"], regimes=["frozen"])}
    assert all("precision" not in c.rl.hyperparams for c in state.values() if c.rl and not c.pixels)
    import ssrl.utils

    monkeypatch.setattr(ssrl.utils, "cpu_flags", lambda: {"avx512_bf16"})
    bf16_cells = plan(raw, methods=["tracking"], tasks=["cartpole-swingup"], regimes=["frozen"])
    assert {c.rl.hyperparams["precision"] for c in bf16_cells if c.rl} == {"bf16"}
    assert {c.id for c in bf16_cells} == set(state)
    changed = [c for c in bf16_cells if c.rl and c.identity() != state[c.id].identity()]
    assert changed and not any(c.pixels for c in changed)  # pretext's pixel rows pin bf16 already
    raw["pretrain"]["precision"] = "fp16"
    with pytest.raises(SuiteError, match="pretrain.precision must be one of 'fp32', 'bf16', 'auto', got 'fp16'"):
        plan(raw)


def test_collect_env_options_reach_the_collecting_env(tmp_path):
    from ssrl.benchmarks.cells import DataSpec
    from ssrl.benchmarks.runner import collect_data
    from ssrl.benchmarks.suite import CollectSpec
    from ssrl.representations import RolloutData

    spec = DataSpec(
        "ssrl/Push-v0",
        {"size": 32},
        CollectSpec(episodes=4, policy="random", max_steps=2, cameras=["push"], env={"start_like_goal": True}),
    )
    data = RolloutData(collect_data(tmp_path, spec))
    starts = data.state[data.ep_start, 9:11]  # the puck's xy at each reset
    assert np.all(np.linalg.norm(starts, axis=1) > 1e-3)  # not the middle, where Push always starts it


def test_a_cell_whose_run_finished_but_whose_later_steps_failed_completes_without_training_again(tmp_path):
    suite = {
        "name": "finish",
        "tasks": ["cartpole-swingup"],
        "references": ["state_sac"],
        "rl": {"env_steps": 40, "eval_every": 40, "eval_episodes": 1, "hyperparams": {"learning_starts": 2}},
    }
    out = tmp_path / "bench"
    run_bench(suite, out=out, workers=1, display=False)
    cell = out / "cells" / "state_sac__cartpole-swingup__s0"
    metrics, final = (cell / "run" / "metrics.jsonl").read_bytes(), (cell / "run" / "final.json").read_bytes()
    (cell / "result.json").unlink()  # as if the pictures or the held-out evaluation had failed after training
    summary = run_bench(suite, out=out, workers=1, display=False)
    assert (cell / "result.json").exists() and not summary["failed"]
    # ssrl train would have refused the finished run; the cell reads it instead of training again.
    assert (cell / "run" / "metrics.jsonl").read_bytes() == metrics and (
        cell / "run" / "final.json"
    ).read_bytes() == final


def test_a_variant_is_a_methods_frozen_row_again_with_its_own_rl_hyperparameters():
    """grasp2vec + auxiliary goals beside grasp2vec: the same pretrained model (same data and
    pretraining, so one cached model), an agent with its own hyper-parameters on top."""
    suite = dict(TINY, variants={"deepmdp+big": {"method": "deepmdp", "hyperparams": {"batch_size": 16}}})
    cells = {c.row: c for c in plan(suite)}
    variant, base = cells["deepmdp+big"], cells["deepmdp"]
    assert (variant.method, variant.regime) == ("deepmdp", "frozen")
    assert (variant.data, variant.pretrain) == (base.data, base.pretrain)
    assert variant.rl.hyperparams == dict(base.rl.hyperparams, batch_size=16)
    assert {c.row for c in plan(suite, methods=["deepmdp+big"])} == {"deepmdp+big"}
    with pytest.raises(
        SuiteError, match=r"variants.x: method 'dbc' is not among the suite's methods \['tcn', 'deepmdp'\]"
    ):
        plan(dict(TINY, variants={"x": {"method": "dbc"}}))
    with pytest.raises(SuiteError, match="variants.state_sac: a variant needs a row name of its own"):
        plan(dict(TINY, variants={"state_sac": {"method": "tcn"}}))
    assert "grasp2vec+aux" in {c.row for c in plan(load_suite("grasping"))}


def test_a_variant_may_change_the_goal_reward_and_only_that():
    """grasp2vec's cosine beside its product: the same model and agent, the cell's goal reward (what
    ``ssrl train --goal-reward`` sets) changed, so the two cells differ in identity by that alone."""
    grasping = {c.row: c for c in plan(load_suite("grasping"), seeds=1)}
    cos, dot = grasping["grasp2vec-cos"], grasping["grasp2vec"]
    assert (cos.goal_reward, dot.goal_reward) == ("cosine", None)
    assert (cos.data, cos.pretrain, cos.rl) == (dot.data, dot.pretrain, dot.rl)
    differ = {k for k in cos.identity() if cos.identity().get(k) != dot.identity().get(k)}
    assert differ == {"row", "goal_reward"}
    assert grasping["grasp2vec-cos+aux"].rl == grasping["grasp2vec+aux"].rl
    with pytest.raises(SuiteError, match=r"variants.x: unknown goal_reward 'ids'; valid: latent, cosine, env, any"):
        plan(dict(TINY, variants={"x": {"method": "tcn", "goal_reward": "ids"}}))
