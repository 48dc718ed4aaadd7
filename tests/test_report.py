"""The bench report: its headline says what the intervals support, its tables put each number in its
cell, its figures are written, and its intervals are the ones worked out by hand."""

import csv
import re

import numpy as np
import pytest

from ssrl.benchmarks.report import (
    FIGURES,
    _plot_curves,
    _Rows,
    _styles,
    iqm,
    stratified_bootstrap_ci,
    stratified_bootstrap_ci_per_task,
    write_report,
)

TASK = "cartpole-swingup"


def rl_result(row, seed, final, task=TASK, kind="frozen", method=None, regime=None, probe=None):
    """A finished RL cell as runner.run_cell writes it (evaluations rising to ``final``)."""
    steps = [0, 4000, 8000]
    result = {
        "cell": f"{row}__{task}__s{seed}",
        "row": row,
        "task": task,
        "seed": seed,
        "kind": kind,
        "method": method,
        "regime": regime,
        "evals": [
            {"env_steps": s, "return_mean": final * (i + 1) / len(steps), "returns": [final * (i + 1) / len(steps)]}
            for i, s in enumerate(steps)
        ],
        "final_return": float(final),
        "rl": {"env_steps": 8000, "updates": 600, "wall_time": 120.0, "updates_per_s": 5.0},
        "wall_time": 150.0,
        "pretrain_wall_time": 30.0,
    }
    if probe is not None:
        result["pretrain"] = {"steps": 200, "steps_per_s": 10.0, "wall_time": 20.0}
        result["probe"] = dict(probe, n_train=100, n_test=25, target="features")
    return result


def failed_result(row, seed, task=TASK, kind="frozen"):
    return {
        "cell": f"{row}__{task}__s{seed}",
        "row": row,
        "task": task,
        "seed": seed,
        "kind": kind,
        "error": "RuntimeError: CUDA out of memory\n  while training",
        "wall_time": 0.0,
    }


SUITE = {
    "name": "fake",
    "tasks": [TASK],
    "methods": {"tcn": {}, "beta-vae": {}, "rotation": {}},
    "references": ["random_encoder", "state_sac", "pixel_sac", "dbc_joint"],
}

# Three seeds, one task: the IQM of three runs is their mean (int(0.25 * 3) = 0 trimmed), and a
# bootstrap mean of three runs lies within their range. So tcn's interval ([0.6, 0.8] at most)
# lies wholly above random_encoder's ([0.1, 0.3] at most); beta-vae's straddles it.
RETURNS = {
    "random_encoder": [100, 200, 300],
    "tcn": [600, 700, 800],
    "beta-vae": [150, 250, 350],
    "pixel_sac": [500, 600, 700],
    "state_sac": [800, 850, 900],
}
KINDS = {"random_encoder": "random", "pixel_sac": "pixel", "state_sac": "state"}


def headline_results(seeds=3):
    return [
        rl_result(row, seed, values[seed], kind=KINDS.get(row, "frozen"), regime=None if row in KINDS else "frozen")
        for row, values in RETURNS.items()
        for seed in range(seeds)
    ]


def headline(text):
    """The headline block of summary.md: the lines before the next section."""
    return text.split("## Headline", 1)[1].split("\n## ", 1)[0]


def named(text, starts):
    """The rows a headline bullet names (``row IQM [low, high]`` or ``row IQM``), or None if no
    bullet starts so."""
    lines = [line for line in text.splitlines() if line.startswith(starts)]
    if not lines:
        return None
    assert len(lines) == 1, lines
    listing = lines[0].split("):", 1)[1] if "):" in lines[0] else lines[0]
    return re.findall(r"([\w:-]+) \d+\.\d{3}", listing)


def test_headline_claims_exactly_the_differences_the_intervals_support(tmp_path):
    summary = write_report(tmp_path, SUITE, headline_results(3), wall_time=60.0)
    text = (tmp_path / "summary.md").read_text()
    # It comes first: the title, then the headline.
    assert text.splitlines()[2] == "## Headline"
    head = headline(text)
    assert "3 seeds per task" in head and "One seed" not in head
    assert named(head, "- **Beat the frozen random encoder**") == ["tcn", "pixel_sac"]
    assert named(head, "- **Not distinguishable from the random encoder at this budget/seed count**") == ["beta-vae"]
    assert named(head, "- **Below the random encoder**") is None
    assert "- **Above pixel SAC** (" in head and head.split("- **Above pixel SAC** (")[1].split("\n")[0].endswith(
        "intervals do not overlap): none."
    )
    assert named(head, "- **Not distinguishable from pixel SAC at this budget/seed count**") == ["tcn"]
    assert named(head, "- **Below pixel SAC**") == ["beta-vae", "random_encoder"]
    assert "- State SAC (upper bound, on the true state): 0.850 [" in head
    # The reference's own interval is printed, and it is the bootstrap of its normalised returns.
    point, low, high = stratified_bootstrap_ci(np.array([[0.1], [0.2], [0.3]]))
    assert f"`random_encoder` 0.200 [{low:.3f}, {high:.3f}]" in head
    agg = summary["aggregates"]
    assert agg["random_encoder"]["iqm"] == pytest.approx(point) and agg["random_encoder"]["ci95"] == [low, high]
    assert agg["tcn"]["ci95"][0] > agg["random_encoder"]["ci95"][1]
    assert agg["beta-vae"]["ci95"][0] <= agg["random_encoder"]["ci95"][1]
    assert (agg["tcn"]["vs_random_encoder"], agg["beta-vae"]["vs_random_encoder"]) == ("above", "overlap")
    assert (agg["tcn"]["vs_pixel_sac"], agg["beta-vae"]["vs_pixel_sac"]) == ("overlap", "below")
    bullets = [line for line in head.splitlines() if line.startswith("- ")]
    assert len(bullets) == 6 and [line for line in summary["headline"] if line.startswith("- ")] == bullets


def test_one_seed_claims_no_difference(tmp_path):
    summary = write_report(tmp_path, SUITE, headline_results(1), wall_time=60.0)
    head = headline((tmp_path / "summary.md").read_text())
    assert "**One seed per task: every interval is a single point, so this run supports no difference" in head
    bullets = "\n".join(line for line in head.splitlines() if line.startswith("- "))
    for claim in ("**Beat", "**Above", "**Below", "**Not distinguishable", "intervals do not overlap", "["):
        assert claim not in bullets
    # The point estimates are still there, labelled as such.
    assert named(head, "- At or above the frozen random encoder") == ["tcn", "pixel_sac", "beta-vae"]
    assert "below it: none." in [line for line in head.splitlines() if "random encoder" in line][-1]
    assert {a["vs_random_encoder"] for r, a in summary["aggregates"].items() if r != "random_encoder"} == {"one_seed"}
    assert summary["aggregates"]["tcn"]["ci95"] == [0.6, 0.6]
    # No probe in these results: the figures named are the ones written.
    assert "Figures: `iqm.png` (these intervals), `curves.png` (learning curves).\n" in head
    assert not (tmp_path / "probes.png").exists()


def md_table(text, heading):
    """The first markdown table after ``heading`` as (header, {first cell: row cells})."""
    after = text.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    lines = []
    for line in after[start:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], {row[0]: dict(zip(cells[0], row)) for row in cells[2:]}


def regime_results():
    results = [
        rl_result("tcn", 0, 10.0, probe={"r2": 0.5, "knn_mse": 2.0, "gtc": 0.4, "alignment_error": 0.2}),
        rl_result("tcn:finetune", 0, 18.0, kind="finetune", regime="finetune"),
        rl_result("tcn:finetune", 1, 22.0, kind="finetune", regime="finetune"),
        rl_result("rotation", 0, 30.0, probe={"r2": 0.3, "knn_mse": 3.0, "gtc": 0.2, "rotation_acc": 0.9}),
        rl_result("rotation:decoupled", 0, 40.0, kind="decoupled", regime="decoupled"),
        failed_result("rotation:decoupled", 1, kind="decoupled"),
        rl_result("random_encoder", 0, 5.0, kind="random", probe={"r2": 0.1, "knn_mse": 4.0, "gtc": 0.1}),
        rl_result("pixel_sac", 0, 60.0, kind="pixel"),
        rl_result("dbc_joint", 0, 70.0, kind="joint", method="dbc", regime="joint"),
    ]
    push = {"r2": 0.5, "r2_random": 0.1, "knn_mse": 1.0, "knn_mse_random": 2.0, "gtc": 0.6, "gtc_random": 0.3}
    results.append(
        {
            "cell": "tcn__push__s0",
            "row": "tcn",
            "task": "push",
            "seed": 0,
            "kind": "probe",
            "pretrain": {"steps": 150, "steps_per_s": 12.0, "wall_time": 12.5},
            "probe": dict(push, alignment_error=0.25, alignment_error_random=0.5, n_test=9),
            "wall_time": 13.0,
        }
    )
    return results


def test_regime_table_probe_table_and_failures_put_each_number_in_its_cell(tmp_path):
    suite = dict(SUITE, methods={"tcn": {}, "rotation": {}}, probes={"push": {"methods": ["tcn"]}})
    summary = write_report(tmp_path, suite, regime_results(), wall_time=60.0)
    text = (tmp_path / "summary.md").read_text()
    returns = text.split("## Final returns per task and regime", 1)[1].split("\n## ", 1)[0]
    header, table = md_table(returns, "### cartpole-swingup")
    assert header == ["row", "frozen", "finetune", "decoupled", "reference"]
    assert list(table) == ["tcn", "rotation", "random_encoder", "pixel_sac", "dbc_joint"]
    assert table["tcn"] == {"row": "tcn", "frozen": "10.0", "finetune": "20.0 ± 2.0", "decoupled": "", "reference": ""}
    assert table["rotation"] == {
        "row": "rotation",
        "frozen": "30.0",
        "finetune": "",
        "decoupled": "40.0 (1 failed)",
        "reference": "",
    }
    for row, value in (("random_encoder", "5.0"), ("pixel_sac", "60.0"), ("dbc_joint", "70.0")):
        assert table[row] == {"row": row, "frozen": "", "finetune": "", "decoupled": "", "reference": value}
    assert summary["returns_by_regime"][TASK]["rows"]["tcn"] == {"frozen": "10.0", "finetune": "20.0 ± 2.0"}
    # Probes: trained / random-init of the same method, the method's own score beside the probe's.
    probes = text.split("## Probes", 1)[1]
    header, push = md_table(probes, "### push")
    assert header == ["method", "R² ↑", "kNN-MSE ↓", "GTC ↑", "method's own scores"]
    assert push["tcn"] == {
        "method": "tcn",
        "R² ↑": "0.500 / 0.100",
        "kNN-MSE ↓": "1.000 / 2.000",
        "GTC ↑": "0.600 / 0.300",
        "method's own scores": "alignment_error ↓ 0.250 / 0.500",
    }
    _, cartpole = md_table(probes, "### cartpole-swingup")
    assert cartpole["rotation"]["method's own scores"] == "rotation_acc ↑ 0.900"
    assert cartpole["random_encoder (untrained tcn)"]["R² ↑"] == "0.100"
    assert "tcn:finetune" not in cartpole  # one pretrained model, one probe: listed once
    # The failed cell, with its error on one line; the headline counts it.
    assert "- `rotation:decoupled__cartpole-swingup__s1`: RuntimeError: CUDA out of memory while training" in text
    assert "**1 of 10 cells failed**" in headline(text)
    assert "higher for tcn on push (0.500 vs 0.100)." in headline(text)
    assert summary["failed"] == [
        {
            "cell": "rotation:decoupled__cartpole-swingup__s1",
            "error": "RuntimeError: CUDA out of memory\n  while training",
        }
    ]
    assert summary["aggregates"]["rotation:decoupled"]["failed_cells"] == 1
    # Cost: per row and task.
    header, _ = md_table(text, "## Cost per cell")
    assert header == ["row", "task", "pretrain steps/s", "RL updates/s", "pretrain min", "RL min", "cell min"]
    assert "| tcn | cartpole-swingup | 10.0 | 5.0 | 0.3 | 2.0 | 2.5 |" in text
    assert "| tcn | push | 12.0 | - | 0.2 | - | 0.2 |" in text
    assert "| pixel_sac | cartpole-swingup | - | 5.0 | - | 2.0 | 2.5 |" in text
    # summary.csv keeps one flat line per row and task (one text line each).
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    flat = {(r["row"], r["task"]): r for r in csv.DictReader(lines)}
    assert len(lines) == 1 + len(flat) == 1 + len({(r["row"], r["task"]) for r in regime_results()})
    assert flat[("tcn:finetune", TASK)]["final_return"] == "20.0 +- 2.0"
    assert flat[("rotation:decoupled", TASK)]["final_return"] == "40.0"
    assert flat[("rotation:decoupled", TASK)]["failed_cells"] == "1"
    assert flat[("tcn", "push")]["probe_r2_random"] == "0.100"


def test_a_goal_task_with_success_and_no_distance_is_ranked_by_success(tmp_path):
    """GraspGoal reports success and no final distance: its rows are ranked by success, their
    returns (each row's own reward) stay out of the IQM and the returns table, and the reward
    rows that reuse the method's pretrained model do not repeat its probe."""
    successes = {"grasp2vec": 12, "oracle_reward": 18, "any_reward": 1}  # of 20 episodes
    results = []
    for row, hits in successes.items():
        r = rl_result(row, 0, {"grasp2vec": 80.0}.get(row, 0.8), task="GraspGoal", method="grasp2vec")
        r["evals"][-1].update(success_rate=hits / 20, returns=[1.0] * 20)
        r["evals"][0]["success_rate"] = 0.0
        r["pretrain"] = {"steps": 200, "steps_per_s": 10.0, "wall_time": 20.0}
        r["probe"] = {"r2": 0.3, "r2_random": 0.1, "n_train": 10, "n_test": 5, "target": "state"}
        results.append(r)
    suite = dict(SUITE, tasks=["GraspGoal"], methods={"grasp2vec": {}}, references=["oracle_reward", "any_reward"])
    summary = write_report(tmp_path, suite, results, wall_time=60.0)
    text = (tmp_path / "summary.md").read_text()
    (line,) = [x for x in headline(text).splitlines() if x.startswith("- **GraspGoal**")]
    assert re.findall(r"`([\w_-]+)` \d+/20", line) == ["oracle_reward", "grasp2vec", "any_reward"]
    assert "`oracle_reward` > `any_reward`" in line and "`grasp2vec` > `any_reward`" in line
    assert "`oracle_reward` > `grasp2vec`" not in line  # 18/20 and 12/20: the exact intervals overlap
    assert summary["aggregates"] == {} and "IQM" not in headline(text)
    assert "## Final returns per task and regime" not in text  # 80 (embedding reward) vs 0.8 (ids): not comparable
    header, table = md_table(text, "### GraspGoal")
    assert header == ["row", "seeds", "success"] and table["oracle_reward"]["success"].startswith("18/20 [")
    _, probes = md_table(text.split("## Probes", 1)[1], "### GraspGoal")
    assert list(probes) == ["grasp2vec"]


def is_png(path):
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written(tmp_path):
    summary = write_report(tmp_path / "a", SUITE, headline_results(3) + regime_results(), wall_time=1.0)
    dmc_figures = [f for f in FIGURES if f != "goals.png"]  # goals.png: goal tasks only (test_bench)
    assert summary["figures"] == dmc_figures
    for name in dmc_figures:
        assert is_png(tmp_path / "a" / name), name
    # A probe-only suite: no returns to plot, and the headline says so.
    probe_only = [r for r in regime_results() if r["kind"] == "probe"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "curves.png").write_bytes(b"an earlier report's")  # not left beside this one
    summary = write_report(tmp_path / "b", dict(SUITE, tasks=[]), probe_only, wall_time=1.0)
    assert summary["figures"] == ["probes.png"] and is_png(tmp_path / "b" / "probes.png")
    assert not (tmp_path / "b" / "curves.png").exists() and not (tmp_path / "b" / "iqm.png").exists()
    assert "This suite has no RL cells" in headline((tmp_path / "b" / "summary.md").read_text())


def test_reference_rows_alone_draw_no_probe_figure(tmp_path):
    # The random_encoder row's probe alone is a dotted line with no trained bar beside it: the
    # figure was an empty panel under a "trained" legend. Its score stays in summary.md.
    references = [r for r in regime_results() if r["row"] in ("random_encoder", "pixel_sac")]
    (tmp_path / "probes.png").write_bytes(b"an earlier report's")
    summary = write_report(tmp_path, SUITE, references, wall_time=1.0)
    assert "probes.png" not in summary["figures"] and not (tmp_path / "probes.png").exists()
    text = (tmp_path / "summary.md").read_text()
    assert "`probes.png`" not in text
    assert "random_encoder" in summary["probes"][TASK] and "0.100" in text


def test_curves_title_names_dashed_lines_only_when_a_reference_is_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _Rows(SUITE)
    for results, says_dashed in (
        (headline_results(2), True),
        ([r for r in headline_results(2) if r["row"] == "tcn"], False),
    ):
        all_rows = sorted({r["row"] for r in results})
        fig = _plot_curves(plt, results, rows, _styles(all_rows, rows))
        title = fig._suptitle.get_text()
        plt.close(fig)
        assert title.startswith("Evaluation return (mean over 2 seeds") and ("dashed" in title) == says_dashed, title


def test_curve_colours_do_not_repeat_for_twenty_methods_and_the_references():
    methods = [f"m{i}" for i in range(20)]
    suite = {"methods": dict.fromkeys(methods, {}), "references": ["random_encoder", "state_sac", "pixel_sac"]}
    rows = _Rows(suite)
    styles = _styles(methods + suite["references"], rows)
    colours = [tuple(np.round(np_colour(c), 3)) for c, _ in styles.values()]
    assert len(set(colours)) == len(colours) == 23
    assert not any(r == g == b for r, g, b in colours[:20])  # greys are left to the reference rows
    assert {styles[r][1] for r in methods} == {"-"} and all(styles[r][1] != "-" for r in suite["references"])


def np_colour(c):
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(c))


def test_iqm_interval_by_hand():
    # 4 runs of one task, scores 0, 0, 0, 1. IQM trims one run each side: IQM = mean(0, 0) = 0.
    # A resample holds k ones, k ~ Binomial(4, 1/4); its IQM is 0 for k <= 1 (p = 189/256 = 0.74),
    # 0.5 for k = 2 (p = 54/256, cumulative 0.949) and 1 for k >= 3 (p = 13/256 = 0.051 > 0.025).
    # So the 2.5% quantile is 0 and the 97.5% quantile is 1.
    assert stratified_bootstrap_ci(np.array([[0.0], [0.0], [0.0], [1.0]])) == (0.0, 0.0, 1.0)
    # Runs differ in number across tasks (a failed cell): task 0 has runs 0 and 1, task 1 has three 5s.
    # Pooled, IQM trims int(5 / 4) = 1 each side: mean(1, 5, 5) = 11/3. Resampling within task 0 gives
    # {0, 0} (p = 1/4: IQM mean(0, 5, 5) = 10/3) or a 1 in it (p = 3/4: 11/3); task 1 never changes.
    point, low, high = stratified_bootstrap_ci_per_task([[0.0, 1.0], [5.0, 5.0, 5.0]])
    assert (point, low, high) == pytest.approx((11 / 3, 10 / 3, 11 / 3))
    # Equal run counts: exactly the (runs x tasks) matrix version.
    per_task = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]
    assert stratified_bootstrap_ci_per_task(per_task) == stratified_bootstrap_ci(np.array(per_task).T)
    assert iqm([0.0, 1.0, 5.0, 5.0, 5.0]) == pytest.approx(11 / 3)
