"""Determinism: the same seed gives the same data, pretrained weights, agent weights and returns,
twice in one process and in worker processes (1 and 2 bench workers). Resume after a kill is
checked bit for bit in test_agents (train) and by ``benchmarks/fault_injection.py`` (all four
commands); the quick suite's published numbers rely on this too."""

import json

import yaml

from ssrl.benchmarks.bench import run_bench
from ssrl.benchmarks.fault_injection import TINY_SUITE, fingerprint

# The fault-injection benchmark's tiny suite, with a method that trains on transitions and a
# budget a test affords.
_TINY = yaml.safe_load(TINY_SUITE)
SUITE = dict(_TINY, name="determinism", methods={"deepmdp": {}}, rl=dict(_TINY["rl"], env_steps=160, eval_every=80))
KEPT = ["data/*/episodes/*.npz", "models/*/model.pt", "cells/*/run/checkpoint/agent.pt", "cells/*/result.json"]


def _outputs(out):
    """Everything a user keeps, fingerprinted without clocks and speeds."""
    return {str(p.relative_to(out)): fingerprint(p) for pattern in KEPT for p in sorted(out.glob(pattern))}


def test_a_bench_gives_the_same_bits_twice_in_one_process_and_with_two_workers(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    first = run_bench(str(suite), out=tmp_path / "a", workers=1, display=False)
    run_bench(str(suite), out=tmp_path / "b", workers=1, display=False)
    run_bench(str(suite), out=tmp_path / "c", workers=2, display=False)
    reference = _outputs(tmp_path / "a")
    assert len(reference) == 3 + 1 + 2 + 2  # three episodes, one model, two agents, two results
    assert _outputs(tmp_path / "b") == reference  # again in this process
    assert _outputs(tmp_path / "c") == reference  # in two spawned worker processes
    returns = {r["row"]: r["final_return"] for r in first["rows"]}
    for row in ("deepmdp", "state_sac"):
        result = json.loads((tmp_path / "c" / "cells" / f"{row}__cartpole-swingup__s0" / "result.json").read_text())
        assert f"{result['final_return']:.1f}" == returns[row]
