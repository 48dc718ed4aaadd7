"""The rollout data set: collection, round trip, append, partial and corrupt data."""

import dataclasses
import json

import numpy as np
import pytest

from ssrl.envs import make_dmc
from ssrl.envs.rollouts import DatasetError, RolloutDataset, RolloutWriter, collect


def test_collect_round_trips_frames_states_and_actions(tmp_path):
    out = tmp_path / "ds"
    ds = collect(
        "ssrl/cartpole-swingup-v0",
        episodes=2,
        out=out,
        cameras=["fixed", "lookatcart"],
        max_steps=12,
        seed=3,
        progress=False,
    )
    assert len(ds) == 2 and ds.cameras == ["fixed", "lookatcart"]
    ep = ds[1]
    assert len(ep) == 12
    assert ep.frames["fixed"].shape == (13, 3, 84, 84) and ep.frames["fixed"].dtype == np.uint8
    assert ep.state.shape == (13, 4) and ep.action.shape == (12, 1)
    assert ep.truncated[-1] and not ep.truncated[:-1].any()
    # Replaying the recorded actions from the same seed reproduces the recorded frames and states.
    env = make_dmc("cartpole", "swingup", cameras=["fixed", "lookatcart"], frame_stack=1)
    obs, info = env.reset(seed=3 + 1)
    np.testing.assert_array_equal(obs["fixed"], ep.frames["fixed"][0])
    for t in range(len(ep)):
        obs, reward, _, _, info = env.step(ep.action[t])
        np.testing.assert_array_equal(obs["lookatcart"], ep.frames["lookatcart"][t + 1])
        np.testing.assert_allclose(info["state"], ep.state[t + 1])
        assert reward == pytest.approx(ep.reward[t])


def test_a_rerun_finishes_a_collection_and_append_adds_to_it(tmp_path):
    out = tmp_path / "ds"
    collect("ssrl/reacher-easy-v0", episodes=1, out=out, max_steps=5, progress=False)
    first = (out / "episodes" / "ep_000000.npz").stat().st_mtime_ns
    # The same command again is a resume: a finished collection is left as it is ...
    assert len(collect("ssrl/reacher-easy-v0", episodes=1, out=out, max_steps=5, progress=False)) == 1
    # ... a larger total collects only what is missing, and --append N adds N.
    assert len(collect("ssrl/reacher-easy-v0", episodes=2, out=out, max_steps=5, progress=False)) == 2
    ds = collect("ssrl/reacher-easy-v0", episodes=2, out=out, max_steps=5, append=1, progress=False)
    assert [p.name for p in ds.files] == ["ep_000000.npz", "ep_000001.npz", "ep_000002.npz"]
    assert (out / "episodes" / "ep_000000.npz").stat().st_mtime_ns == first  # never rewritten
    # Episode i is reset with seed + i, so appended episodes are new ones, not repeats.
    assert not np.array_equal(ds[0].state[0], ds[1].state[0])
    with pytest.raises(DatasetError, match="cameras"):
        collect("ssrl/reacher-easy-v0", episodes=1, out=out, cameras=["hand"], append=1, progress=False)


def test_partial_and_corrupt_data_sets(tmp_path):
    out = tmp_path / "ds"
    collect("ssrl/reacher-easy-v0", episodes=2, out=out, max_steps=4, progress=False)
    # A killed writer leaves at most a hidden temp file, which the reader ignores.
    (out / "episodes" / ".ep_000002.npz.abc.tmp.npz").write_bytes(b"half an episode")
    assert len(RolloutDataset(out)) == 2
    (out / "episodes" / "ep_000001.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="ep_000001.npz"):
        RolloutDataset(out)[1]
    (out / "meta.json").write_text("{broken")
    with pytest.raises(DatasetError, match="corrupt"):
        RolloutDataset(out)
    with pytest.raises(DatasetError, match="not an ssrl data set"):
        RolloutDataset(tmp_path / "nowhere")


def test_writer_validates_episode_shapes(tmp_path):
    writer = RolloutWriter(tmp_path / "ds", meta={"env_id": "x", "cameras": ["c"], "size": [8, 8]})
    from ssrl.envs.rollouts import Episode

    bad = Episode(
        frames={"c": np.zeros((3, 3, 8, 8), np.uint8)},
        action=np.zeros((3, 1), np.float32),
        reward=np.zeros(3, np.float32),
        terminated=np.zeros(3, bool),
        truncated=np.zeros(3, bool),
        state=np.zeros((4, 2), np.float32),
        info={},
    )
    with pytest.raises(DatasetError, match="frames/c"):
        writer.write(bad)
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["format_version"] == 1


def _episode_bytes(folder):
    return {p.name: dict(np.load(p)) for p in sorted((folder / "episodes").glob("ep_*.npz"))}


def test_parallel_workers_write_the_same_episodes_and_a_rerun_fills_gaps(tmp_path):
    kwargs = dict(policy="sticky_random", max_steps=6, size=32, seed=5, progress=False)
    one = collect("ssrl/cartpole-swingup-v0", episodes=3, out=tmp_path / "one", **kwargs)
    two = collect("ssrl/cartpole-swingup-v0", episodes=3, out=tmp_path / "two", workers=2, **kwargs)
    a, b = _episode_bytes(one.path), _episode_bytes(two.path)
    assert list(a) == list(b) == ["ep_000000.npz", "ep_000001.npz", "ep_000002.npz"]
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}/{key}")
    # A parallel collection killed midway can leave a gap (episode 1 missing, 2 written): the
    # rerun records exactly the missing one, identical to the uninterrupted run's.
    (two.path / "episodes" / "ep_000001.npz").unlink()
    kept = (two.path / "episodes" / "ep_000002.npz").stat().st_mtime_ns
    collect("ssrl/cartpole-swingup-v0", episodes=3, out=tmp_path / "two", **kwargs)
    assert (two.path / "episodes" / "ep_000002.npz").stat().st_mtime_ns == kept
    refilled = _episode_bytes(two.path)["ep_000001.npz"]
    for key in a["ep_000001.npz"]:
        np.testing.assert_array_equal(refilled[key], a["ep_000001.npz"][key])
    with pytest.raises(ValueError, match="workers must be a whole number >= 1, got 0"):
        collect("ssrl/cartpole-swingup-v0", episodes=3, out=tmp_path / "three", workers=0, **kwargs)


@pytest.mark.filterwarnings("ignore:this run ends")  # a tiny run: its agent barely trained, on purpose
def test_a_trained_agent_collects_its_own_actions_and_epsilon_mixes_in_random_ones(tmp_path):
    from ssrl.agents import SAC
    from ssrl.agents.run import train_run

    run = tmp_path / "run"
    train_run(run, "ssrl/cartpole-swingup-v0", env_steps=160, env_kwargs={"from_pixels": False},
              hyperparams={"learning_starts": 5, "batch_size": 8, "hidden_dims": [16]}, eval_episodes=0,
              progress=False, tensorboard=False)  # fmt: skip
    agent = SAC.load(run / "checkpoint" / "agent.pt", device="cpu")
    kwargs = dict(episodes=2, max_steps=6, size=32, progress=False)
    ds = collect("ssrl/cartpole-swingup-v0", policy=f"agent:{run}", out=tmp_path / "a", **kwargs)
    for ep in ds:  # every action is the agent's deterministic one on the recorded state observation
        for t in range(len(ep)):
            np.testing.assert_allclose(ep.action[t], agent.act(ep.features[t], deterministic=True), rtol=0, atol=1e-6)
    mixed = collect("ssrl/cartpole-swingup-v0", policy=f"agent:{run}@0.5", out=tmp_path / "m", **kwargs)
    own = [
        np.allclose(ep.action[t], agent.act(ep.features[t], deterministic=True), atol=1e-6)
        for ep in mixed
        for t in range(len(ep))
    ]
    assert 0 < sum(own) < len(own)  # some of each (12 steps at epsilon 0.5)
    again = collect("ssrl/cartpole-swingup-v0", policy=f"agent:{run}@0.5", out=tmp_path / "m2", **kwargs)
    np.testing.assert_array_equal(mixed[1].action, again[1].action)  # seeded per episode
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["policy"] == f"agent:{run}@0.5"
    with pytest.raises(ValueError, match="trained an agent on ssrl/cartpole-swingup-v0, not on ssrl/reacher-easy-v0"):
        collect("ssrl/reacher-easy-v0", policy=f"agent:{run}", out=tmp_path / "r", **kwargs)
    with pytest.raises(ValueError, match="trained its agent at action repeat 8; this env acts at 2"):
        collect("ssrl/cartpole-swingup-v0", policy=f"agent:{run}", out=tmp_path / "ar", env_kwargs={"action_repeat": 2},
                **kwargs)  # fmt: skip
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\], got 2.0"):
        collect("ssrl/cartpole-swingup-v0", policy=f"agent:{run}@2", out=tmp_path / "e", **kwargs)
    with pytest.raises(ValueError, match="is not an ssrl train run"):
        collect("ssrl/cartpole-swingup-v0", policy=f"agent:{tmp_path}", out=tmp_path / "n", **kwargs)
    assert not (tmp_path / "r" / "meta.json").exists()  # a refused policy records nothing

    # The bench's data key follows the agent's checkpoint, not only its folder's name: a
    # continued or retrained expert is new data; a policy without an agent keeps its old key.
    from ssrl.benchmarks.cells import CollectSpec, DataSpec

    def key(policy):
        return DataSpec("ssrl/cartpole-swingup-v0", {}, CollectSpec(policy=policy)).key

    mix = f"mix:agent:{run}@0.3+sticky_random"
    before = key(mix)
    assert key(mix) == before and key(f"agent:{run}") != key(f"agent:{tmp_path}/other")
    plain = DataSpec("ssrl/cartpole-swingup-v0", {}, CollectSpec()).collect_identity()
    assert plain == {k: v for k, v in dataclasses.asdict(CollectSpec()).items() if k != "env"}  # as before
    train_run(
        run,
        "ssrl/cartpole-swingup-v0",
        env_steps=320,
        env_kwargs={"from_pixels": False},
        hyperparams={"learning_starts": 5, "batch_size": 8, "hidden_dims": [16]},
        eval_episodes=0,
        progress=False,
        tensorboard=False,
    )  # fmt: skip  (the run continues: a new checkpoint)
    assert key(mix) != before


def test_a_mixture_runs_its_policies_in_turn_episode_by_episode(tmp_path):
    kwargs = dict(max_steps=8, size=32, progress=False)
    mixed = collect(
        "ssrl/cartpole-swingup-v0", policy="mix:random+sticky_random", episodes=4, out=tmp_path / "m", **kwargs
    )
    alone = {
        p: collect("ssrl/cartpole-swingup-v0", policy=p, episodes=4, out=tmp_path / p, **kwargs)
        for p in ("random", "sticky_random")
    }
    for i in range(4):  # episode i (seed 0 + i) is the one its policy records alone
        np.testing.assert_array_equal(mixed[i].action, alone[["random", "sticky_random"][i % 2]][i].action)
    assert not np.array_equal(alone["random"][1].action, alone["sticky_random"][1].action)
    parallel = collect("ssrl/cartpole-swingup-v0", policy="mix:random+sticky_random", episodes=4, out=tmp_path / "p",
                       workers=2, **kwargs)  # fmt: skip
    for i in range(4):  # each worker builds its own mixture: episode i still runs policy i mod 2
        np.testing.assert_array_equal(parallel[i].action, mixed[i].action)
    with pytest.raises(ValueError, match="two or more policies joined by"):
        collect("ssrl/cartpole-swingup-v0", policy="mix:random", episodes=1, out=tmp_path / "x", **kwargs)
    with pytest.raises(ValueError, match="unknown policy 'randm'"):
        collect("ssrl/cartpole-swingup-v0", policy="mix:randm+random", episodes=1, out=tmp_path / "y", **kwargs)
