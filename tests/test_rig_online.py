"""RIG's online VAE fine-tuning (the decoupled regime on a goal env with image goals): the wrapper
keeps the images behind the latents, the replay re-encodes every slot and recomputes its rewards,
the VAE trains on the agent's images and refits its prior, and a run resumes bit for bit."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import SAC
from ssrl.agents.replay import ReplayBuffer
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
    replay.refresh(rep.embed, env.image_keys)
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
    with pytest.raises(ValueError, match="leaves no replay image in it"):
        OnlineFinetuning(rep, env.image_keys, {"batch_size": 2, "data_fraction": 0.75, "data": str(data)})
    # A round falls due at the end of every 3rd episode and runs before the next one starts.
    rounds = []
    for episodes in range(1, 8):
        agent.num_episodes = episodes
        hook.after_episode(agent)
        rounds.append(hook.before_episode(agent) is not None)
    assert rounds == [False, False, True, False, False, True, False] and hook.rounds == 3


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"regime": "joint"}, "would add the method's own loss to critics that read latent goals"),
        ({"regime": "finetune", "hyperparams": {"rl_head": True}}, "drop rl_head"),
        ({"regime": "frozen", "regime_kwargs": {"steps": 5}}, "apply to the decoupled regime only"),
        ({"regime": "decoupled", "regime_kwargs": {"step": 5}}, "unknown OnlineConfig option(s) ['step']"),
        ({"regime": "decoupled", "regime_kwargs": {"data_fraction": 1.0}}, "data_fraction must be in [0, 1)"),
        # A single-frame VAE cannot train on, or re-encode, the stored 2-frame observation images.
        ({"regime": "decoupled", "env_kwargs": {"size": SIZE, "frame_stack": 2}}, "(6, 48, 48); beta-vae takes (3,"),
    ],
)
def test_regimes_that_cannot_serve_image_goals_are_refused_by_name(kwargs, needle, tmp_path):
    checkpoint = fresh_vae().save(tmp_path / "vae.pt")
    with pytest.raises(ValueError, match=None) as err:
        train_run(tmp_path / "run", PUSH, env_steps=10, encoder=str(checkpoint), progress=False, tensorboard=False,
                  **{"env_kwargs": {"size": SIZE}, **kwargs})  # fmt: skip
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
    # One round due per 50-step episode; the 4th falls due as the budget ends and never runs, so the
    # checkpoint holds the encoder the last evaluation used.
    assert hooks_whole["rounds"] == 3 and hooks_whole["pending"]
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


# -- the env's own reward on the images behind the latents (RIG's pixel-distance ablation) --------


def pixel_rms_reward(achieved, desired):
    """Push's image_distance by hand: -RMS over pixels in [0, 1]."""
    diff = (np.asarray(achieved, np.float64) - np.asarray(desired, np.float64)) / 255.0
    return -np.sqrt((diff**2).reshape(len(diff), -1).mean(1))


def test_env_reward_on_images_is_the_pixel_distance_at_every_step():
    rep = fresh_vae()
    env = rep.observation_wrapper(gym.make(PUSH, size=SIZE), explore=True, reward="env")
    assert env.reward_keys == ("image_observation", "image_desired_goal")
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, *_ = env.step(np.array([1.0, 0.0], np.float32))
        # The episode's goal is imagined: its image is the decoder's, and the reward compares with it.
        expected = pixel_rms_reward(obs["image_observation"][None], obs["image_desired_goal"][None])[0]
        assert reward == pytest.approx(expected, rel=1e-5)
        latent = -np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
        assert abs(reward - latent) > 1e-3  # not the latent reward
    agent = SAC(env, buffer_size=1000, **TINY_SAC)
    assert agent.replay.reward_keys == env.reward_keys and agent.replay.goal_images is not None
    # Online fine-tuning re-encodes the latents but leaves rewards on images as they were.
    agent.learn(60)
    replay = agent.replay
    rewards, latents = replay.reward.copy(), replay.store["observation"].copy()
    with torch.no_grad():
        for p in rep.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    replay.refresh(rep.embed, env.image_keys)
    held = replay.held_slots() % replay.capacity
    assert not np.allclose(replay.store["observation"][held], latents[held])
    np.testing.assert_array_equal(replay.reward, rewards)


def test_relabelled_rows_are_rewarded_on_the_images_behind_their_goals():
    """A replay of one episode whose latents name their slot (z = [t, 0]) and whose images are
    flat at value 10 t: every relabelled row's reward is the pixel distance between the next
    slot's image and the new goal's image, a future slot's or the imagined latent's picture."""
    T = 12
    latent = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    image = gym.spaces.Box(0, 255, (3, 4, 4), np.uint8)
    space = gym.spaces.Dict(
        observation=latent, achieved_goal=latent, desired_goal=latent, image_observation=image, image_desired_goal=image
    )

    def picture(z):  # the "decoder": a flat image at 10 * z[0], clipped
        return np.clip(10 * np.asarray(z)[:, :1, None, None] * np.ones((1, 3, 4, 4)), 0, 255).astype(np.uint8)

    def obs(t):
        z = np.array([t, 0.0], np.float32)
        goal = np.array([100.0, 0.0], np.float32)
        return {"observation": z, "achieved_goal": z, "desired_goal": goal,
                "image_observation": picture(z[None])[0], "image_desired_goal": picture(goal[None])[0]}  # fmt: skip

    replay = ReplayBuffer(
        64,
        space,
        gym.spaces.Box(-1, 1, (2,), np.float32),
        reward_fn=lambda a, d, info: pixel_rms_reward(a, d),
        her_ratio=0.4,
        goal_sampler=lambda n, rng, like=None: np.stack([rng.uniform(0, 20, n), np.zeros(n)], 1).astype(np.float32),
        imagined_ratio=0.5,
        side_keys=("image_observation", "image_desired_goal"),
        reward_keys=("image_observation", "image_desired_goal"),
        goal_images=picture,
    )
    replay.start_episode(obs(0))
    for t in range(1, T):
        o = obs(t)
        replay.add(
            np.zeros(2), pixel_rms_reward(o["image_observation"][None], o["image_desired_goal"][None])[0], False, o
        )
    replay.end_episode()
    batch = replay.sample(200)
    assert "image_observation" not in batch.obs  # side entries are not sampled
    nxt = batch.next_obs["achieved_goal"][:, 0]
    goal = batch.obs["desired_goal"][:, 0]
    expected = pixel_rms_reward(picture(nxt[:, None]), picture(goal[:, None]))
    np.testing.assert_allclose(batch.reward, expected, rtol=1e-5)
    assert (goal[:80] <= T - 1).all() and (goal[80:180] != np.round(goal[80:180])).any()  # future, then imagined
    assert (goal[180:] == 100).all()  # the rollout's own goal


def test_ssrl_train_takes_the_env_reward_for_a_frozen_encoder_and_records_it(tmp_path):
    checkpoint = fresh_vae().save(tmp_path / "vae.pt")
    train_run(tmp_path / "run", PUSH, env_steps=60, env_kwargs={"size": SIZE}, hyperparams=TINY_SAC,
              encoder=str(checkpoint), goal_reward="env", eval_every=50, eval_episodes=1, progress=False,
              tensorboard=False)  # fmt: skip
    assert json.loads((tmp_path / "run" / "run.json").read_text())["goal_reward"] == "env"
    with pytest.raises(ValueError, match="unknown goal reward 'pixels'; use one of latent, cosine, env, any"):
        train_run(tmp_path / "other", PUSH, env_steps=60, env_kwargs={"size": SIZE}, encoder=str(checkpoint),
                  goal_reward="pixels", progress=False, tensorboard=False)  # fmt: skip
    for grasping_only in ("cosine", "any"):  # rewards of lifted objects: refused by name on Push
        with pytest.raises(ValueError, match=f"the goal reward '{grasping_only}' is instance grasping's"):
            train_run(tmp_path / grasping_only, PUSH, env_steps=60, env_kwargs={"size": SIZE}, encoder=str(checkpoint),
                      goal_reward=grasping_only, progress=False, tensorboard=False)  # fmt: skip


# -- the finetune regime: the critics train the agent's copy of the encoder; goals stay frozen ------

FINETUNE = dict(TINY_SAC, pixel_preset="none", augment=None, batch_size=16, encoder_lr=1e-3)


def _finetune_run(out, checkpoint, env_steps):
    return train_run(out, PUSH, env_steps=env_steps, env_kwargs={"size": SIZE}, hyperparams=FINETUNE,
                     encoder=str(checkpoint), regime="finetune", eval_every=100, eval_episodes=1,
                     checkpoint_every=50, progress=False, tensorboard=False)  # fmt: skip


def test_finetune_on_image_goals_trains_a_copy_of_the_encoder_and_keeps_the_goals_frozen(tmp_path):
    from ssrl.agents.evaluate import evaluation_agent_and_env
    from ssrl.representations import load_representation

    rep = fresh_vae()
    checkpoint = rep.save(tmp_path / "vae.pt")
    _finetune_run(tmp_path / "run", checkpoint, 150)
    frozen = load_representation(checkpoint).eval()
    agent, env = evaluation_agent_and_env(tmp_path / "run")
    try:
        # The agent reads frames through its own encoder, which its critics changed.
        assert agent.pixels and agent.goal_dim == 4 and env.observation_space["observation"].dtype == np.uint8
        tuned, start = agent.encoder.state_dict(), {f"encoder.{k}": v for k, v in frozen.encoder.state_dict().items()}
        assert not torch.equal(tuned["encoder.fc_mu.weight"], start["encoder.fc_mu.weight"])
        assert not torch.equal(tuned["encoder.trunk.net.0.weight"], start["encoder.trunk.net.0.weight"])
        # The evaluation env's goals are still the frozen encoder's latents of the goal image.
        obs, _ = env.reset(seed=3)
        goal = encode(frozen, env.unwrapped.render_goal_image()[None])[0]
        np.testing.assert_allclose(obs["desired_goal"], goal, atol=1e-5)
    finally:
        env.close()
    # The replay: frames, the frozen encoder's latents of them as achieved goals, and one reward,
    # the latent distance of those latents to the stored goals (imagined ones included).
    fresh = SAC.load(tmp_path / "run/checkpoint/agent.pt", encoder=agent.encoder)
    replay = fresh.replay
    replay.load(tmp_path / "run/checkpoint/replay", fresh.replay_meta)
    slots = np.flatnonzero(replay.has_next[: len(replay)])
    store = replay.store
    held = slice(0, len(replay))
    np.testing.assert_allclose(store["achieved_goal"][held], encode(frozen, store["observation"][held]), atol=1e-5)
    nxt = slots + 1
    expected = -np.linalg.norm(store["achieved_goal"][nxt] - store["desired_goal"][slots], axis=-1)
    np.testing.assert_allclose(replay.reward[slots], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        tuned_latents = agent.encoder(torch.as_tensor(store["observation"][held])).float().numpy()
    assert np.abs(tuned_latents - store["achieved_goal"][held]).max() > 1e-3  # not the agent's copy


def test_a_finetune_run_on_image_goals_resumes_bit_exactly(tmp_path):
    checkpoint = fresh_vae().save(tmp_path / "vae.pt")
    _finetune_run(tmp_path / "whole", checkpoint, 150)
    _finetune_run(tmp_path / "split", checkpoint, 100)
    _finetune_run(tmp_path / "split", checkpoint, 150)
    whole = torch.load(tmp_path / "whole/checkpoint/agent.pt", weights_only=True)
    split = torch.load(tmp_path / "split/checkpoint/agent.pt", weights_only=True)
    assert "encoder" in whole["modules"]
    for module in whole["modules"]:
        for name, value in whole["modules"][module].items():
            assert torch.equal(value, split["modules"][module][name]), f"{module}.{name}"


def test_observe_frames_is_refused_where_it_cannot_serve():
    from ssrl.representations import EncodedObservation

    class Frames(gym.Env):  # image observations, no goals
        observation_space = gym.spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    rep = fresh_vae()
    with pytest.raises(ValueError, match="use one or the other"):
        EncodedObservation(gym.make(PUSH, size=SIZE), rep.encoder, keep_images=True, observe_frames=True)
    with pytest.raises(ValueError, match="observe_frames needs a goal env whose observation and goals are images"):
        EncodedObservation(Frames(), rep.encoder, observe_frames=True)
    ccvae = make("cc-vae", (3, SIZE, SIZE), latent_dim=4, arch="fast")
    with pytest.raises(ValueError, match="CC-RIG runs frozen"):
        ccvae.observation_wrapper(gym.make(PUSH, size=SIZE), explore=False, observe_frames=True)
