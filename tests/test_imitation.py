"""TCN imitation: the reward against a hand computation, the demo's time alignment, and a demo
embedded from a collected episode at the encoder's frame stack."""

import json
import types

import gymnasium as gym
import numpy as np
import pytest

from ssrl.representations.imitation import ImitationReward, demo_embeddings, tcn_imitation_reward


def test_reward_is_the_papers_formula_by_hand():
    w = np.array([1.0, 2.0, 2.0])
    v = np.zeros(3)
    # ||w - v||^2 = 9: -0.5 * 9 - 2 * sqrt(0.16 + 9) = -4.5 - 2 * 3.0265...
    assert tcn_imitation_reward(w, v, alpha=0.5, beta=2.0, gamma=0.16) == pytest.approx(-4.5 - 2 * np.sqrt(9.16))
    # At the demo: only the Huber-style term's floor, -beta sqrt(gamma).
    assert tcn_imitation_reward(v, v, alpha=0.5, beta=2.0, gamma=0.16) == pytest.approx(-0.8)
    batch = tcn_imitation_reward(np.stack([w, v]), np.stack([v, v]), 0.5, 2.0, 0.16)
    np.testing.assert_allclose(batch, [-4.5 - 2 * np.sqrt(9.16), -0.8])


class Walk(gym.Env):
    """Observation = position on a line, moved by the action; the task reward is the position."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.x = np.zeros(1, np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = self.x + np.asarray(action, np.float32)
        return self.x.copy(), float(self.x[0]), False, False, {}


def test_each_step_is_compared_with_the_time_aligned_demo_frame_and_the_task_reward_is_kept():
    demo = np.array([[0.0], [1.0], [2.0]], np.float32)  # reset frame, then two steps
    env = ImitationReward(Walk(), demo, alpha=1.0, beta=0.0)
    env.reset()
    rewards, tasks = [], []
    for a in (1.0, 0.0, 1.0, 1.0):  # positions 1, 1, 2, 3 against demo 1, 2, 2 (held), 2
        _, r, _, _, info = env.step(np.array([a], np.float32))
        rewards.append(r)
        tasks.append(info["task_reward"])
    assert rewards == [0.0, -1.0, 0.0, -1.0]
    assert tasks == [1.0, 1.0, 2.0, 3.0]
    env.reset()  # a new episode starts at the demo's beginning again
    assert env.step(np.array([1.0], np.float32))[1] == 0.0
    with pytest.raises(ValueError, match="do not match the env's observations"):
        ImitationReward(Walk(), np.zeros((3, 2)))


def test_demo_embeddings_stack_the_episode_from_the_demo_camera(tmp_path):
    from ssrl.envs.rollouts import collect
    from ssrl.representations import RolloutData, make

    collect(
        "ssrl/cartpole-swingup-v0",
        policy="random",
        episodes=2,
        out=tmp_path / "demo",
        size=32,
        cameras=["fixed", "lookatcart"],
        max_steps=6,
        progress=False,
    )
    data = RolloutData(tmp_path / "demo")
    rep = make("tcn", (9, 32, 32), arch="fast", latent_dim=5)
    demo = demo_embeddings(rep.embed, data, episode=1, camera="lookatcart", frame_stack=3)
    assert demo.shape == (7, 5)
    start = data.ep_start[1]
    frames = data.frames["lookatcart"]
    # The first stack is the reset frame three times (as the env stacks it), the last the final three.
    first = np.concatenate([frames[start]] * 3)[None]
    last = np.concatenate(list(frames[start + 4 : start + 7]))[None]
    np.testing.assert_allclose(demo[0], rep.embed(first)[0], atol=1e-5)
    np.testing.assert_allclose(demo[-1], rep.embed(last)[0], atol=1e-5)
    assert not np.allclose(demo[-1], demo_embeddings(rep.embed, data, 1, "fixed", 3)[-1])  # the camera matters
    with pytest.raises(ValueError, match="episodes 0..1, not 2"):
        demo_embeddings(rep.embed, data, episode=2)


@pytest.fixture(scope="module")
def demo_and_tcn(tmp_path_factory):
    """A 20-step sticky-random cartpole episode filmed from ``lookatcart`` at 32x32, and an
    untrained TCN checkpoint for the agent's 3-frame stacks."""
    from ssrl.envs.rollouts import collect
    from ssrl.representations import make

    root = tmp_path_factory.mktemp("imitation")
    collect(
        "ssrl/cartpole-swingup-v0",
        policy="sticky_random",
        episodes=1,
        out=root / "demo",
        size=32,
        cameras=["lookatcart"],
        max_steps=20,
        progress=False,
    )
    return root / "demo", make("tcn", (9, 32, 32), arch="fast", latent_dim=5).save(root / "tcn.pt")


def test_ssrl_train_imitates_a_demo_from_another_camera_and_evaluates_the_task_return(demo_and_tcn, tmp_path):
    import json

    from ssrl.agents.run import train_run

    demo_data, checkpoint = demo_and_tcn
    run = dict(
        env_id="ssrl/cartpole-swingup-v0",
        env_steps=160,
        env_kwargs={"size": 32, "camera": "fixed"},
        hyperparams={"hidden_dims": (8, 8), "learning_starts": 5, "batch_size": 8},
        encoder=str(checkpoint),
        demo={"data": str(demo_data), "camera": "lookatcart"},
        eval_every=160,
        eval_episodes=1,
        progress=False,
        tensorboard=False,
    )
    train_run(tmp_path / "run", **run)
    from ssrl.agents import SAC

    agent = SAC.load(tmp_path / "run" / "checkpoint" / "agent.pt")
    agent.replay.load(tmp_path / "run" / "checkpoint" / "replay", agent.replay_meta)
    rewards = agent.replay.reward[: agent.replay.total - 1]
    assert np.all(rewards < 0)  # the imitation reward is never positive; cartpole's task reward is
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["return_mean"] >= 0 for r in evals if r["kind"] == "eval")  # the task's own return
    assert json.loads((tmp_path / "run" / "run.json").read_text())["demo"]["camera"] == "lookatcart"
    with pytest.raises(ValueError, match="imitating a demo needs a frozen embedding"):
        train_run(tmp_path / "other", **dict(run, regime="finetune"))


def test_the_pixel_distance_baseline_rewards_raw_frames_by_hand_while_the_agent_sees_the_embedding(demo_and_tcn):
    from ssrl.agents.run import make_env
    from ssrl.representations import RolloutData

    demo_data, checkpoint = demo_and_tcn
    demo = {"data": str(demo_data), "camera": "lookatcart", "reward": "pixels"}
    env = make_env("ssrl/cartpole-swingup-v0", {"size": 32, "camera": "fixed"}, str(checkpoint), demo=demo)
    raw = make_env("ssrl/cartpole-swingup-v0", {"size": 32, "camera": "fixed"})  # the same episode, unwrapped
    obs, _ = env.reset(seed=3)
    frames, _ = raw.reset(seed=3)
    assert obs.shape == (5,)  # the agent sees the embedding of its 3-frame stack
    data = RolloutData(demo_data)
    demo_stacks = data.stack(np.arange(data.ep_len[0] + 1), "lookatcart", 3)
    action = np.zeros(1, np.float32)
    for t in range(1, 4):
        obs, reward, _, _, info = env.step(action)
        frames, task_reward, *_ = raw.step(action)
        d2 = np.mean(((frames.astype(np.float64) - demo_stacks[t]) / 255.0) ** 2)
        assert reward == pytest.approx(-d2 - np.sqrt(1e-3 + d2), rel=1e-6)
        assert info["task_reward"] == pytest.approx(task_reward)
    with pytest.raises(ValueError, match="a demo's reward is one of \\['embedding', 'pixels'\\], got 'pixel'"):
        make_env("ssrl/cartpole-swingup-v0", {"size": 32}, str(checkpoint), demo=dict(demo, reward="pixel"))


def test_the_imitation_benchmark_on_push_runs_its_rows_and_reports_the_task_measures(tmp_path):
    """Tiny budgets: the scripted pusher's demo from the side camera, TCN pretrained on both
    cameras, then the TCN row (imitation reward) and the task-reward row on the push camera."""
    from ssrl.benchmarks import imitation

    argv = ["--task", "push", "--out", str(tmp_path), "--env-steps", "1000", "--pretrain-steps", "3"]
    summary = imitation.main(argv + ["--data-episodes", "2", "--eval-episodes", "2", "--rows", "tcn", "task-reward"])
    demo = summary["demonstration"]
    assert demo["is_success"] and demo["puck_distance"] < 0.05  # the scripted pusher does the task
    assert demo["return"] < 0  # its reward is minus the puck's distance, every step
    for row in ("tcn", "task-reward"):
        (result,) = summary["rows"][row]
        assert result["curve_columns"] == ["env_steps", "return_mean", "final_puck_distance", "success_rate"]
        assert result["curve"][0][0] == 0 and 0 < result["final_puck_distance"] < 0.5
    run = json.loads((tmp_path / "rows" / "tcn-s0" / "run.json").read_text())
    assert run["demo"]["camera"] == "side" and run["env_kwargs"]["camera"] == "push"
    assert json.loads((tmp_path / "summary.json").read_text())["task"] == "push"
    assert set(summary["alignment_error"]) == {"tcn", "tcn-single", "random-encoder"}
    assert all(0 <= e < 1 for e in summary["alignment_error"].values())
    assert set(summary["reward_weights"]) == {"tcn", "tcn-single", "random-encoder"}
    assert all(set(w) == {"puck_per_cm", "hand_per_cm", "r2"} for w in summary["reward_weights"].values())
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks == {k: summary[k] for k in ("alignment_error", "reward_weights")}

    def episode_returns(row):
        lines = (tmp_path / "rows" / f"{row}-s0" / "metrics.jsonl").read_text().splitlines()
        return [e["episode_return"] for e in map(json.loads, lines) if e["kind"] == "train"]

    # Same seed, no update yet: the same random episodes, rewarded by the demo in one row and by
    # the task (minus the puck's distance, about -0.1 a step for 50 steps) in the other.
    (imitation,), (task,) = episode_returns("tcn"), episode_returns("task-reward")
    assert -10 < task < -2 and abs(imitation - task) > 0.1


def test_alignment_error_by_hand():
    from ssrl.representations.control.tcn import view_alignment_error

    t = np.arange(4.0)[:, None]
    assert view_alignment_error(t, t) == 0.0  # every frame's nearest is itself
    # Reversed time: frames 0..3 match 3, 2, 1, 0: |t - n(t)| = 3, 1, 1, 3 -> 8 / (4 * 4)
    assert view_alignment_error(t, t[::-1]) == 0.5
    # All of one view near the other's frame 1: errors 1, 0, 1, 2 -> 4 / 16
    assert view_alignment_error(t, np.array([[9.0], [1.5], [9.0], [9.0]])) == 0.25


def test_alignment_error_counts_a_still_stretch_as_one_instant():
    from ssrl.representations.control.tcn import motion_clock, view_alignment_error

    # Moves for two steps, then rests (a change of 0.05 / 255, under the tolerance of 0.1 / 255):
    # frames 2..5 are one instant.
    clock = motion_clock(np.array([0.0, 0.5, 0.75, 0.0, 0.05, 0.05]) / 255)
    assert clock.tolist() == [0, 1, 2, 2, 2, 2]
    # Identical views: the still frames tie and argmin takes frame 2 for all of them. Frame by
    # frame that is |t - 2| = 1, 2, 3 for frames 3..5: 6 / (6 * 6); on the clock it is 0.
    z = np.array([[0.0], [1.0], [5.0], [5.0], [5.0], [5.0]])
    assert view_alignment_error(z, z) == 6 / 36
    assert view_alignment_error(z, z, clock) == 0.0
    # A view b whose frame 1 already looks like the rest: a's instant 1 (1.0) is nearest b's
    # instant 0, a's instant 2 (5.0) b's instant 1, the first of the ties: errors 0, 1, 1 -> 2 / 9.
    zb = np.array([[0.0], [5.0], [5.0], [5.0], [5.0], [5.0]])
    assert view_alignment_error(z, zb, clock) == 2 / 9
    # A view b whose still frames differ (noise): only each instant's first frame is a candidate,
    # so b's frame 4 (nearest to a's instant 0) is never matched.
    zn = np.array([[0.0], [1.0], [5.0], [5.1], [0.1], [4.9]])
    assert view_alignment_error(z, zn, clock) == 0.0


def test_the_tcn_alignment_error_of_a_data_set_runs_on_the_motion_clock():
    # Two cameras of one episode that moves for two steps and then rests for four; an embedding
    # (a frame's mean) that tells the views' still frames apart only by noise: 0 on the clock.
    from ssrl.envs.rollouts import Episode
    from ssrl.representations import RolloutData
    from ssrl.representations.control.tcn import alignment_error

    frames = np.zeros((7, 3, 4, 4), np.uint8)
    frames[1], frames[2:] = 60, 120
    noisy = frames.copy()
    noisy[3:, 0, 0, 0] += np.arange(1, 5, dtype=np.uint8)  # at most 4 / 48 per frame: still
    episode = Episode(
        frames={"a": frames, "b": noisy},
        state=np.zeros((7, 2), np.float32),
        action=np.zeros((6, 1), np.float32),
        reward=np.zeros(6, np.float32),
        terminated=np.zeros(6, bool),
        truncated=np.zeros(6, bool),
        info={},
    )
    data = RolloutData([episode])
    rep = types.SimpleNamespace(obs_shape=(3, 4, 4), embed=lambda x: x.reshape(len(x), -1).mean(1, keepdims=True))
    assert alignment_error(rep, data, ("a", "b")) == 0.0
    assert alignment_error(rep, data, ("b", "a")) == 0.0


def test_distance_weights_recover_a_hand_made_reward():
    from ssrl.benchmarks.imitation import distance_weights

    rng = np.random.default_rng(0)
    puck, hand = rng.uniform(0, 0.2, 50), rng.uniform(0, 0.15, 50)
    # 0.05 per cm of puck error, 0.8 per cm of hand error, plus an offset: recovered exactly.
    weights = distance_weights(5.0 * puck + 80.0 * hand + 0.3, puck, hand)
    assert weights["puck_per_cm"] == pytest.approx(0.05) and weights["hand_per_cm"] == pytest.approx(0.8)
    assert weights["r2"] == pytest.approx(1.0)


def test_distances_to_the_demo_end_pair_each_frame_with_its_steps_records():
    # One episode of three steps; each step's record (puck_distance) and the state describe the
    # frame after it; the embedding is a frame's mean, so the distances are known by hand.
    from ssrl.benchmarks.imitation import TASKS, distances_to_the_demo_end
    from ssrl.envs.rollouts import Episode
    from ssrl.representations import RolloutData

    def episode(values, states, puck=None):
        frames = np.stack([np.full((3, 2, 2), v, np.uint8) for v in values])
        steps = len(values) - 1
        return Episode(
            frames={"push": frames, "side": frames},
            state=np.asarray(states, np.float32),
            action=np.zeros((steps, 2), np.float32),
            reward=np.zeros(steps, np.float32),
            terminated=np.zeros(steps, bool),
            truncated=np.zeros(steps, bool),
            info={} if puck is None else {"puck_distance": np.asarray(puck, np.float32)},
        )

    states = [[0.0, 0.0], [0.03, 0.04], [0.0, 0.1], [0.0, 0.2]]
    frames = RolloutData([episode([10, 20, 30, 40], states, puck=[0.1, 0.2, 0.3])])
    shown = RolloutData([episode([0, 25], [[0.0, 0.0], [0.0, 0.0]])])  # ends at 25, hand at (0, 0)
    embed = lambda x: x.reshape(len(x), -1).mean(1, keepdims=True).astype(np.float64)  # noqa: E731
    got = distances_to_the_demo_end(embed, frames, shown, TASKS["push"], frame_stack=1)
    np.testing.assert_allclose(got["distance"], [5.0, 5.0, 15.0])  # frames 1..3 (20, 30, 40) against 25
    np.testing.assert_allclose(got["puck_error"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(got["hand_error"], [0.05, 0.1, 0.2], rtol=1e-6)
