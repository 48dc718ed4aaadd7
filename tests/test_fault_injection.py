"""The fault-injection benchmark's own machinery: what it compares, what it calls unreadable,
and that its kills land."""

import json
import sys
import time

import numpy as np
import torch

from ssrl.benchmarks.fault_injection import fingerprint, killed_at, unreadable


def test_fingerprints_ignore_clocks_and_speeds_but_not_results(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text(json.dumps({"env_steps": 100, "return_mean": 1.5, "wall_time": 3.0, "env_steps_per_s": 9.0}) + "\n")
    b.write_text(json.dumps({"env_steps": 100, "return_mean": 1.5, "wall_time": 7.0, "env_steps_per_s": 2.0}) + "\n")
    c.write_text(json.dumps({"env_steps": 100, "return_mean": 1.6, "wall_time": 3.0, "env_steps_per_s": 9.0}) + "\n")
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)

    state = {"weights": torch.ones(3), "step": torch.tensor(5), "wall_time": 1.0}
    torch.save(state, tmp_path / "x.pt")
    torch.save(dict(state, wall_time=2.0), tmp_path / "y.pt")
    torch.save(dict(state, weights=torch.tensor([1.0, 1.0, 1.0 + 1e-7])), tmp_path / "z.pt")
    assert fingerprint(tmp_path / "x.pt") == fingerprint(tmp_path / "y.pt") != fingerprint(tmp_path / "z.pt")


def test_a_truncated_file_is_reported_unreadable(tmp_path):
    np.savez(tmp_path / "ep.npz", frames=np.zeros((4, 3, 8, 8), np.uint8))
    (tmp_path / "ok.json").write_text("{}")
    data = (tmp_path / "ep.npz").read_bytes()
    (tmp_path / "ep.npz").write_bytes(data[: len(data) // 2])
    assert unreadable(tmp_path) == ["ep.npz: BadZipFile"]


def test_kills_land_on_a_running_process_and_not_on_a_finished_one():
    start = time.time()
    assert killed_at([sys.executable, "-c", "import time; time.sleep(30)"], 0.5) is True
    assert time.time() - start < 10
    assert killed_at([sys.executable, "-c", "pass"], 30) is False
