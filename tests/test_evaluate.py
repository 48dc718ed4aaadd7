"""``ssrl evaluate``: a run's agent evaluated again reproduces the run's own last evaluation on the
same seeds (state, frozen, fine-tuned and RIG-with-online-fine-tuning runs: each rebuilds the
encoder the agent acted through), and env overrides change the env it is evaluated in."""

import json

import numpy as np
import pytest
import torch

from ssrl.agents.evaluate import evaluate_run
from ssrl.agents.run import train_run
from ssrl.agents.trainer import EVAL_SEED_BASE
from ssrl.cli import main as cli
from ssrl.envs.rollouts import collect
from ssrl.representations import make
from ssrl.representations.pretrain import pretrain

QUIET = dict(progress=False, tensorboard=False)


def last_eval(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "eval"][-1]


def same_seeds_as_last_eval(record, eval_every, episodes):
    return EVAL_SEED_BASE + (record["env_steps"] // eval_every) * episodes


def test_evaluating_a_state_run_again_reproduces_its_last_evaluation_and_overrides_change_the_env(tmp_path):
    run = tmp_path / "push"
    train_run(
        run,
        "ssrl/Push-v0",
        env_steps=300,
        env_kwargs={"from_pixels": False},
        hyperparams={"hidden_dims": (16,), "learning_starts": 100},
        eval_every=150,
        eval_episodes=3,
        **QUIET,
    )
    record = last_eval(run)
    result = evaluate_run(run, episodes=3, seed=same_seeds_as_last_eval(record, 150, 3))
    assert result["returns"] == pytest.approx(record["returns"])
    assert result["final_puck_distances"] == pytest.approx(record["final_puck_distances"])
    assert result["success"]["episodes"] == 3 and json.loads((run / "evaluate.json").read_text()) == result
    # A changed env: two-step episodes (Push's sparse reward is -1 or 0 a step).
    short = evaluate_run(run, episodes=3, env_overrides={"max_episode_steps": 2}, out=tmp_path / "short.json")
    assert all(-2.0 <= r <= 0.0 for r in short["returns"]) and min(record["returns"]) < -2.0
    assert short["env_overrides"] == {"max_episode_steps": 2}
    hits, lo, hi = short["success"]["successes"], *short["success"]["ci95"]
    assert lo <= hits / 3 <= hi and (hits > 0 or hi == pytest.approx(0.7076, abs=1e-3))  # Clopper-Pearson, 0 of 3


def test_the_cli_prints_the_result_and_names_a_bad_run_folder(tmp_path, capsys):
    run = tmp_path / "cartpole"
    train_run(
        run,
        "ssrl/cartpole-swingup-v0",
        env_steps=40,
        env_kwargs={"from_pixels": False},
        hyperparams={"hidden_dims": (8,), "learning_starts": 2},
        eval_every=20,
        eval_episodes=1,
        **QUIET,
    )
    assert cli(["evaluate", str(run), "--episodes", "2", "--out", str(tmp_path / "e.json")]) == 0
    assert "2 episodes at 40 env steps: return" in capsys.readouterr().out
    assert cli(["evaluate", str(tmp_path / "nothing")]) != 0
    assert "is not an ssrl train run with a checkpoint" in capsys.readouterr().err


@pytest.fixture(scope="module")
def rotation(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    collect("ssrl/cartpole-swingup-v0", episodes=2, out=root / "data", size=32, max_steps=8, progress=False)
    pretrain(
        "rotation", root / "data", out=root / "rot", steps=2, config={"arch": "fast", "latent_dim": 8}, progress=False
    )
    return root / "rot" / "model.pt"


@pytest.mark.parametrize("regime", ["frozen", "finetune"])
def test_frozen_and_finetuned_pixel_runs_are_evaluated_through_the_encoder_they_acted_with(rotation, regime, tmp_path):
    run = tmp_path / regime
    train_run(
        run,
        "ssrl/cartpole-swingup-v0",
        env_steps=160,
        env_kwargs={"size": 32, "task_kwargs": {"time_limit": 0.4}},
        hyperparams={"hidden_dims": (16,), "learning_starts": 8, "batch_size": 8},
        encoder=str(rotation),
        regime=regime,
        eval_every=80,
        eval_episodes=2,
        **QUIET,
    )
    record = last_eval(run)
    result = evaluate_run(run, episodes=2, seed=same_seeds_as_last_eval(record, 80, 2))
    assert result["returns"] == pytest.approx(record["returns"], rel=1e-5)


def test_rig_with_online_finetuning_is_evaluated_with_the_finetuned_vae(tmp_path):
    torch.manual_seed(0)
    vae = make("beta-vae", (3, 48, 48), latent_dim=4, arch="fast", batch_size=16).eval()
    checkpoint = vae.save(tmp_path / "vae.pt")
    run = tmp_path / "rig"
    train_run(
        run,
        "ssrl/Push-v0",
        env_steps=200,  # a round falls due as the budget ends: deferred, it never changes what was evaluated
        env_kwargs={"size": 48},
        encoder=str(checkpoint),
        hyperparams={"hidden_dims": (8, 8), "learning_starts": 50, "her_ratio": 0.4, "imagined_goal_ratio": 0.5},
        regime="decoupled",
        regime_kwargs={"every_episodes": 1, "steps": 3},
        eval_every=100,
        eval_episodes=2,
        **QUIET,
    )
    record = last_eval(run)
    seed = same_seeds_as_last_eval(record, 100, 2)
    result = evaluate_run(run, episodes=2, seed=seed)
    # The latent return depends on the encoder: only the fine-tuned one gives the run's own numbers.
    assert result["returns"] == pytest.approx(record["returns"], rel=1e-5)
    assert not np.allclose(record["returns"], _returns_with_the_pretrained_vae(run, checkpoint, seed), rtol=1e-5)


def _returns_with_the_pretrained_vae(run, checkpoint, seed):
    from ssrl.agents import SAC
    from ssrl.agents.trainer import evaluate
    from ssrl.envs import make as make_env
    from ssrl.representations import load_representation

    env = load_representation(checkpoint).observation_wrapper(make_env("ssrl/Push-v0", size=48), explore=False)
    agent = SAC.load(run / "checkpoint" / "agent.pt")
    return evaluate(agent, env, 2, seed)[0]
