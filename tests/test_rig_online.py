"""RIG's online VAE fine-tuning (the decoupled regime on a goal env with image goals): the wrapper
keeps the images behind the latents, the replay re-encodes every slot and recomputes its rewards,
the VAE trains on the agent's images and refits its prior, and a run resumes bit for bit."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import SAC
from ssrl.agents.run import train_run
from ssrl.representations import make
from ssrl.representations.online import OnlineFinetuning, ReplayFrames

SIZE = 48
PUSH = "ssrl/Push-v0"
TINY_SAC = {"hidden_dims": (8, 8), "learning_starts": 50, "her_ratio": 0.4, "imagined_goal_ratio": 0.5}


def fresh_vae(seed: int = 0):
    torch.manual_seed(seed)
    rep = make("beta-vae", (3, SIZE, SIZE), latent_dim=4, arch="fast", batch_size=16).eval()
    rep.prior_mu.fill_(0.0)
    rep.prior_std.fill_(1.0)
    rep.prior_fitted.fill_(True)
    return rep


def encode(rep, images):
    with torch.no_grad():
        return rep.encoder(torch.as_tensor(np.ascontiguousarray(images))).numpy()


def agent_on_push(rep, steps: int = 120):
    env = rep.observation_wrapper(gym.make(PUSH, size=SIZE), explore=True, keep_images=True)
    agent = SAC(env, buffer_size=1000, **TINY_SAC)
    agent.learn(steps)
    return env, agent


def test_kept_images_are_the_ones_behind_the_latents_and_imagined_goals_are_decoded():
    rep = fresh_vae()
    raw = gym.make(PUSH, size=SIZE)
    env = rep.observation_wrapper(raw, explore=True, keep_images=True)
    # Push's achieved goal is the observation's own frame: one image entry serves both.
    assert env.image_keys == {
        "observation": "image_observation",
        "achieved_goal": "image_observation",
        "desired_goal": "image_desired_goal",
    }
    obs, _ = env.reset(seed=3)
    twin, _ = gym.make(PUSH, size=SIZE).reset(seed=3)
    np.testing.assert_array_equal(obs["image_observation"], twin["observation"])
    np.testing.assert_allclose(obs["observation"], encode(rep, obs["image_observation"][None])[0], rtol=1e-5, atol=1e-6)
    # The episode's imagined goal is a latent; its image is the decoder's picture of it.
    expected = np.round(rep.decode(obs["desired_goal"][None])[0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(obs["image_desired_goal"], expected)
    obs2, *_ = env.step(np.array([0.5, 0.5], np.float32))
    np.testing.assert_array_equal(obs2["image_desired_goal"], expected)  # the same goal all episode
    np.testing.assert_allclose(
        obs2["observation"], encode(rep, obs2["image_observation"][None])[0], rtol=1e-5, atol=1e-6
    )
    assert obs2["image_observation"].dtype == np.uint8 and not np.array_equal(
        obs2["image_observation"], obs["image_observation"]
    )


def test_the_agent_stores_the_images_but_never_samples_them():
    rep = fresh_vae()
    env, agent = agent_on_push(rep, steps=60)
    assert set(agent.side_keys) == {"image_observation", "image_desired_goal"}
    held = agent.replay.held_slots()
    images = agent.replay.store["image_observation"][held]
    assert images.shape == (len(held), 3, SIZE, SIZE) and images.std() > 0
    batch = agent.replay.sample(8)
    assert set(batch.obs) == {"observation", "achieved_goal", "desired_goal"}


def test_refresh_reencodes_every_slot_and_recomputes_the_stored_rewards():
    rep = fresh_vae()
    env, agent = agent_on_push(rep, steps=120)
    replay = agent.replay
    slots = replay.held_slots() % replay.capacity
    with torch.no_grad():  # the encoder changes (as fine-tuning would change it)
        for p in rep.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    new = encode(rep, replay.store["image_observation"][slots])
    assert not np.allclose(replay.store["observation"][slots], new, atol=1e-4)  # stale before
    replay.refresh(OnlineFinetuning(rep, env.image_keys)._encoder_call(), env.image_keys)
    np.testing.assert_allclose(replay.store["observation"][slots], new, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(replay.store["achieved_goal"][slots], replay.store["observation"][slots])
    goals = encode(rep, replay.store["image_desired_goal"][slots])
    np.testing.assert_allclose(replay.store["desired_goal"][slots], goals, rtol=1e-5, atol=1e-6)
    # Each transition's reward is -||e(s') - e(g)|| of its next slot, by hand.
    held = replay.held_slots()
    a = held[replay.has_next[held % replay.capacity]]
    nxt = (a + 1) % replay.capacity
    by_hand = -np.linalg.norm(replay.store["achieved_goal"][nxt] - replay.store["desired_goal"][nxt], axis=1)
    np.testing.assert_allclose(replay.reward[a % replay.capacity], by_hand, rtol=1e-5)
    # ... which is what the wrapper's step now returns for the same images.
    obs, _ = env.reset(seed=1)
    obs, reward, *_ = env.step(np.zeros(2, np.float32))
    z = encode(rep, obs["image_observation"][None])[0]
    assert reward == pytest.approx(-np.linalg.norm(z - obs["desired_goal"]), rel=1e-5)


def test_online_finetuning_trains_the_vae_on_replay_images_and_refits_its_prior():
    rep = fresh_vae()
    env, agent = agent_on_push(rep, steps=150)
    before = {k: v.clone() for k, v in rep.state_dict().items()}
    hook = OnlineFinetuning(rep, env.image_keys, {"steps": 40})
    first = hook.finetune(agent.replay)["online_loss"]
    for _ in range(3):
        last = hook.finetune(agent.replay)["online_loss"]
    assert last < 0.95 * first  # the ELBO falls on the agent's own images (4700 -> 4390 nats here)
    changed = [k for k, v in rep.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    # The prior is refitted to the new encoder's means over the replay's images.
    frames = ReplayFrames(agent.replay, "image_observation")
    z = encode(rep, frames.stack(np.arange(len(frames))))
    np.testing.assert_allclose(rep.prior_mu.numpy(), z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep.prior_std.numpy(), z.std(0), rtol=1e-4, atol=1e-5)
    assert not rep.training and not any(p.requires_grad for p in rep.parameters())  # frozen again for acting
    # The env's wrapper shares the encoder: it now encodes with the fine-tuned weights.
    obs, _ = env.reset(seed=5)
    np.testing.assert_allclose(obs["observation"], encode(rep, obs["image_observation"][None])[0], rtol=1e-5, atol=1e-6)


def test_the_hook_fine_tunes_every_k_episodes_with_a_mixture_of_pretraining_data(tmp_path):
    from ssrl.envs.rollouts import collect
    from ssrl.representations.data import RolloutData

    data = tmp_path / "d"
    collect(PUSH, policy="random", episodes=2, out=data, size=SIZE, max_steps=10, seed=0, progress=False)
    rep = fresh_vae()
    env, agent = agent_on_push(rep, steps=60)
    hook = OnlineFinetuning(rep, env.image_keys, {"every_episodes": 3, "steps": 1, "data": str(data)})
    seen = []
    loss = rep.loss
    rep.loss = lambda batch: seen.append(batch["obs"].numpy()) or loss(batch)
    hook.finetune(agent.replay)
    # Half of the method's batch of 16 comes from the replay, half from D (RIG's "mixture of D and R").
    (batch,) = seen
    as_rows = lambda images: {im.tobytes() for im in images}  # noqa: E731
    replay_images = as_rows(agent.replay.store["image_observation"][agent.replay.held_slots()])
    rollouts = RolloutData(data)
    d_images = as_rows(rollouts.frames[rollouts.cameras[0]])
    assert len(batch) == 16
    assert as_rows(batch[:8]) <= replay_images and as_rows(batch[8:]) <= d_images
    rounds = []
    for episodes in range(1, 8):
        agent.num_episodes = episodes
        rounds.append(hook.after_episode(agent) is not None)
    assert rounds == [False, False, True, False, False, True, False]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"regime": "finetune"}, "would need an RL gradient through image goals"),
        ({"regime": "joint"}, "would need an RL gradient through image goals"),
        ({"regime": "frozen", "regime_kwargs": {"steps": 5}}, "apply to the decoupled regime only"),
        ({"regime": "decoupled", "regime_kwargs": {"step": 5}}, "unknown OnlineConfig option(s) ['step']"),
        ({"regime": "decoupled", "regime_kwargs": {"data_fraction": 1.0}}, "data_fraction must be in [0, 1)"),
    ],
)
def test_regimes_that_cannot_serve_image_goals_are_refused_by_name(kwargs, needle, tmp_path):
    checkpoint = fresh_vae().save(tmp_path / "vae.pt")
    with pytest.raises(ValueError, match=None) as err:
        train_run(tmp_path / "run", PUSH, env_steps=10, env_kwargs={"size": SIZE}, encoder=str(checkpoint),
                  progress=False, tensorboard=False, **kwargs)  # fmt: skip
    assert needle in str(err.value)
    assert not (tmp_path / "run" / "run.json").exists()


def _rig_run(out, checkpoint, env_steps):
    return train_run(
        out,
        PUSH,
        env_steps=env_steps,
        env_kwargs={"size": SIZE},
        hyperparams=TINY_SAC,
        encoder=str(checkpoint),
        regime="decoupled",
        regime_kwargs={"every_episodes": 1, "steps": 2},
        eval_every=100,
        eval_episodes=1,
        checkpoint_every=50,
        progress=False,
        tensorboard=False,
    )


def test_a_rig_run_with_online_finetuning_resumes_bit_exactly(tmp_path):
    checkpoint = fresh_vae().save(tmp_path / "vae.pt")
    _rig_run(tmp_path / "whole", checkpoint, 200)
    _rig_run(tmp_path / "split", checkpoint, 100)  # stops; the same command with more budget continues
    _rig_run(tmp_path / "split", checkpoint, 200)
    whole = torch.load(tmp_path / "whole/checkpoint/agent.pt", weights_only=True)
    split = torch.load(tmp_path / "split/checkpoint/agent.pt", weights_only=True)
    hooks_whole, hooks_split = whole["hooks"]["online_finetuning"], split["hooks"]["online_finetuning"]
    assert hooks_whole["rounds"] == 4  # one per 50-step episode
    for name, value in hooks_whole["rep"].items():
        assert torch.equal(value, hooks_split["rep"][name]), name
    for name, value in hooks_whole["replay"].items():
        assert torch.equal(value, hooks_split["replay"][name]), name
    for module in whole["modules"]:
        for name, value in whole["modules"][module].items():
            assert torch.equal(value, split["modules"][module][name]), f"{module}.{name}"
    records = lambda run: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in ("wall_time", "env_steps_per_s")}
        for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
    ]
    assert records("whole") == records("split")
    assert hooks_whole["last_metrics"] == hooks_split["last_metrics"] and "online_loss" in hooks_whole["last_metrics"]
