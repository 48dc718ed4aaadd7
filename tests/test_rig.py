"""RIG's pieces: one latent reward everywhere, imagined goals from the fitted prior (exploration
and relabelling), and the frozen regime wiring them up from a representation's hooks."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import SAC, TD3
from ssrl.agents.replay import ReplayBuffer
from ssrl.representations import EncodedObservation, EncodedVectorObservation, load_representation, make

SIZE = 48


@pytest.fixture(scope="module")
def vae():
    """A small beta-VAE with a prior set by hand (mean 3, std 0.5 per dimension)."""
    rep = make("beta-vae", (3, SIZE, SIZE), latent_dim=4).eval()
    rep.prior_mu.fill_(3.0)
    rep.prior_std.fill_(0.5)
    rep.prior_fitted.fill_(True)
    return rep


def test_frame_stacked_observation_beside_single_frame_goals(vae):
    # Push with frame_stack=2 gives a 6-channel observation and 3-channel goal images; before, the
    # wrapper stacked all entries into one batch and failed ("all input arrays must have the same shape").
    raw = gym.make("ssrl/Push-v0", size=SIZE, frame_stack=2)
    env = vae.observation_wrapper(raw, explore=True)
    obs, _ = env.reset(seed=0)
    assert obs["observation"].shape == (8,) and obs["achieved_goal"].shape == obs["desired_goal"].shape == (4,)
    assert np.abs(obs["desired_goal"] - 3.0).max() < 3.0  # an imagined goal from the prior N(3, 0.5^2)
    obs, reward, *_ = env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(obs["observation"][4:], obs["achieved_goal"])  # the newest frame's latent
    assert reward == pytest.approx(-np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]), rel=1e-5)


def test_step_reward_is_the_latent_reward_not_the_env_image_reward(vae):
    # Before, step returned the env's image_distance (-0.109 on one step) while relabelled rows got
    # the latent one (-0.00057 on the same latents): two reward functions in one replay.
    raw = gym.make("ssrl/Push-v0", size=SIZE)
    env = vae.observation_wrapper(raw, explore=False)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, reward, *_ = env.step(np.array([1.0, -0.5], np.float32))
        expected = -np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
        assert reward == pytest.approx(expected, rel=1e-5)
        assert reward == pytest.approx(float(env.compute_reward(obs["achieved_goal"], obs["desired_goal"], {})))
    # The vector wrapper too.
    envs = EncodedVectorObservation(
        gym.vector.SyncVectorEnv([lambda: gym.make("ssrl/Push-v0", size=SIZE) for _ in range(2)]), vae.encoder
    )
    envs.reset(seed=0)
    obs, rewards, *_ = envs.step(np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(rewards, -np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"], axis=-1), rtol=1e-5)


def test_exploration_goals_are_imagined_from_the_fitted_prior(vae):
    env = vae.observation_wrapper(gym.make("ssrl/Push-v0", size=SIZE), explore=True)
    evaluation = vae.observation_wrapper(gym.make("ssrl/Push-v0", size=SIZE), explore=False)
    goals = np.array([env.reset(seed=s)[0]["desired_goal"] for s in range(300)])
    # N(3, 0.5^2) per dimension: mean within 4 standard errors, std within 15%.
    assert np.all(np.abs(goals.mean(0) - 3.0) < 4 * 0.5 / np.sqrt(300))
    np.testing.assert_allclose(goals.std(0), 0.5, rtol=0.15)
    assert np.cov(goals.T)[np.triu_indices(4, 1)].max() < 0.06  # independent dimensions
    # The goal stays for the whole episode, a seeded reset repeats it, and evaluation pursues the
    # env's own goal image.
    first, _ = env.reset(seed=7)
    for _ in range(3):
        obs, *_ = env.step(np.zeros(2, np.float32))
        np.testing.assert_array_equal(obs["desired_goal"], first["desired_goal"])
    np.testing.assert_array_equal(env.reset(seed=7)[0]["desired_goal"], first["desired_goal"])
    real, _ = evaluation.reset(seed=7)
    goal_image = evaluation.unwrapped.render_goal_image()
    np.testing.assert_allclose(real["desired_goal"], vae.embed(goal_image[None])[0], atol=1e-5)
    # Many imagined goals for relabelling: the same prior.
    many = env.get_wrapper_attr("sample_goals")(4000, np.random.default_rng(0))
    np.testing.assert_allclose(many.mean(0), 3.0, atol=0.05)


def test_a_representation_without_a_prior_imagines_nothing():
    rep = make("curl", (3, SIZE, SIZE))
    env = rep.observation_wrapper(gym.make("ssrl/Push-v0", size=SIZE), explore=True)
    assert not env.imagine_goals
    with pytest.raises(AttributeError, match="cannot imagine goals"):
        env.sample_goals(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="imagined_goal_ratio=0.5 needs an env that imagines goals"):
        SAC(env, imagined_goal_ratio=0.5, her_ratio=0.4)
    with pytest.raises(ValueError, match="goal_sampler"):
        EncodedObservation(gym.make("ssrl/Push-v0", size=SIZE), rep.encoder, imagine_goals=True)


def test_replay_relabels_future_imagined_and_rollout_fractions():
    space = gym.spaces.Dict(
        observation=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        achieved_goal=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        desired_goal=gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
    )
    imagined_goal = np.array([70.0, 70.0], np.float32)

    def reward_fn(achieved, desired, info):
        return -np.abs(achieved - desired).sum(-1)

    replay = ReplayBuffer(
        1000,
        space,
        gym.spaces.Box(-1, 1, (1,), np.float32),
        reward_fn=reward_fn,
        her_ratio=0.4,
        goal_sampler=lambda n, rng, like: np.tile(imagined_goal, (n, 1)),
        imagined_ratio=0.5,
        seed=0,
    )

    def obs(episode, t):
        x = np.array([episode, t], np.float32)
        return {"observation": x, "achieved_goal": x, "desired_goal": np.array([-1.0, -1.0], np.float32)}

    for episode in range(4):
        replay.start_episode(obs(episode, 0))
        for t in range(1, 11):
            replay.add(np.zeros(1), 0.0, False, obs(episode, t))
        replay.end_episode()
    batch = replay.sample(100)
    goals, achieved = batch.obs["desired_goal"], batch.next_obs["achieved_goal"]
    future, imagined, rollout = slice(0, 40), slice(40, 90), slice(90, 100)
    # Future goals: a later achieved goal of the same episode.
    assert np.all(goals[future, 0] == batch.obs["observation"][future, 0])
    assert np.all(goals[future, 1] > batch.obs["observation"][future, 1])
    assert np.all(goals[imagined] == imagined_goal)
    assert np.all(goals[rollout] == -1.0)
    np.testing.assert_array_equal(batch.next_obs["desired_goal"], goals)
    np.testing.assert_allclose(batch.reward[:90], reward_fn(achieved[:90], goals[:90], None))
    assert np.all(batch.reward[rollout] == 0.0)  # stored as it came
    with pytest.raises(ValueError, match=r"imagined_ratio must be in \[0, 1 - her_ratio\]"):
        ReplayBuffer(
            10,
            space,
            gym.spaces.Box(-1, 1, (1,)),
            reward_fn=reward_fn,
            her_ratio=0.8,
            goal_sampler=lambda n, rng, like: None,
            imagined_ratio=0.5,
        )


def test_sac_relabels_with_the_envs_imagined_goals(vae):
    env = vae.observation_wrapper(gym.make("ssrl/Push-v0", size=SIZE), explore=True)
    agent = SAC(env, hidden_dims=(8, 8), buffer_size=500, her_ratio=0.4, imagined_goal_ratio=0.5, learning_starts=50)
    agent.learn(120)
    batch = agent.replay.sample(200)
    imagined = batch.obs["desired_goal"][80:180]
    # Imagined goals come from the prior N(3, 0.5^2); the env's encoded goal images do not.
    assert abs(imagined.mean() - 3.0) < 0.15
    np.testing.assert_allclose(
        batch.reward, -np.linalg.norm(batch.next_obs["achieved_goal"] - batch.obs["desired_goal"], axis=-1), rtol=1e-5
    )


def test_ssrl_train_with_a_beta_vae_checkpoint_runs_rig_and_reports_final_distances(vae, tmp_path):
    import json

    from ssrl.agents.run import train_run

    checkpoint = vae.save(tmp_path / "vae.pt")
    summary = train_run(
        tmp_path / "run",
        "ssrl/Push-v0",
        env_steps=150,
        env_kwargs={"size": SIZE},
        hyperparams={"hidden_dims": (8, 8), "learning_starts": 50, "her_ratio": 0.4, "imagined_goal_ratio": 0.5},
        encoder=str(checkpoint),
        eval_every=100,
        eval_episodes=2,
        progress=False,
        tensorboard=False,
    )
    assert summary["env_steps"] >= 150
    from ssrl.agents import SAC as Loaded

    acting = Loaded.load(tmp_path / "run" / "checkpoint" / "agent.pt")  # to act, without an env
    assert acting.config.imagined_goal_ratio == 0.5 and acting.replay.imagined_ratio == 0.0
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    # Evaluation pursues the env's goal images and reports RIG's final puck distance per episode.
    for record in evals:
        assert len(record["final_puck_distances"]) == 2
        assert record["final_puck_distance"] == pytest.approx(np.mean(record["final_puck_distances"]))
        assert 0.0 < record["final_puck_distance"] < 0.4
    header = (tmp_path / "run" / "eval.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["final_puck_distance", "final_hand_distance"]


@pytest.mark.parametrize("exploration_goals", ["prior", "env"])
def test_exploration_goals_env_pursues_the_envs_goal_images_and_still_relabels_with_imagined(
    vae, tmp_path, exploration_goals
):
    import json

    from ssrl.agents import SAC as Loaded
    from ssrl.agents.run import make_env, train_run

    checkpoint = vae.save(tmp_path / "vae.pt")
    run = tmp_path / exploration_goals
    tiny = {"hidden_dims": (8, 8), "learning_starts": 50, "her_ratio": 0.4, "imagined_goal_ratio": 0.5}
    train_run(run, "ssrl/Push-v0", env_steps=60, env_kwargs={"size": SIZE, "max_episode_steps": 20},
              hyperparams=tiny, encoder=str(checkpoint), exploration_goals=exploration_goals, eval_episodes=0,
              progress=False, tensorboard=False)  # fmt: skip
    env = make_env("ssrl/Push-v0", {"size": SIZE, "max_episode_steps": 20}, str(checkpoint), explore=False)
    agent = Loaded.load(run / "checkpoint" / "agent.pt", env=env)
    agent.replay.load(run / "checkpoint" / "replay", agent.replay_meta)
    goals = agent.replay.store["desired_goal"][:60]
    # The prior is N(3, 0.5^2) per latent; the goal images' encodings are far from it.
    images = []
    for seed in range(3):
        env.reset(seed=seed)
        images.append(env.unwrapped.render_goal_image())
    real = vae.embed(np.stack(images))
    assert np.abs(real - 3).min() > 1.5
    if exploration_goals == "prior":
        assert np.abs(goals.mean() - 3) < 0.3
        assert "exploration_goals" not in json.loads((run / "run.json").read_text())  # old runs keep their identity
    else:
        assert np.abs(goals - 3).min() > 1.5
        assert json.loads((run / "run.json").read_text())["exploration_goals"] == "env"
        assert agent.replay.imagined_ratio == 0.5  # relabelling still imagines
    if exploration_goals == "env":
        with pytest.raises(ValueError, match="unknown exploration goals 'replay'; use one of prior, env"):
            train_run(tmp_path / "bad", "ssrl/Push-v0", env_steps=60, env_kwargs={"size": SIZE},
                      encoder=str(checkpoint), exploration_goals="replay", progress=False)  # fmt: skip
        with pytest.raises(ValueError, match="needs a goal env with image goals seen through a representation with"):
            train_run(tmp_path / "bad", "ssrl/Push-v0", env_steps=60, env_kwargs={"size": SIZE},
                      encoder=str(make("curl", (3, SIZE, SIZE)).save(tmp_path / "curl.pt")),
                      exploration_goals="env", progress=False)  # fmt: skip
        with pytest.raises(ValueError, match="--exploration-goals applies to a goal env seen through an encoder"):
            train_run(tmp_path / "bad", "ssrl/Push-v0", env_steps=60, env_kwargs={"from_pixels": False},
                      exploration_goals="env", progress=False)  # fmt: skip


def test_state_push_offers_env_goals_for_the_oracles_relabelling():
    env = gym.make("ssrl/Push-v0", from_pixels=False)
    assert env.get_wrapper_attr("can_imagine_goals")
    goals = env.get_wrapper_attr("sample_goals")(2000, np.random.default_rng(0))
    unwrapped = env.unwrapped
    assert goals.shape == (2000, 4) and goals.dtype == np.float32
    assert np.all(goals[:, :2] >= unwrapped.hand_low) and np.all(goals[:, :2] <= unwrapped.hand_high)
    np.testing.assert_allclose(goals[:, 2:].min(0), unwrapped.geometry.goal_low, atol=0.01)
    np.testing.assert_allclose(goals[:, 2:].max(0), unwrapped.geometry.goal_high, atol=0.01)
    agent = SAC(env, hidden_dims=(8, 8), her_ratio=0.4, imagined_goal_ratio=0.5)
    assert agent.replay.imagined_ratio == 0.5
    assert not gym.make("ssrl/Push-v0", size=SIZE).get_wrapper_attr("can_imagine_goals")


def test_goal_envs_get_hers_recipe_unless_told_otherwise():
    env = gym.make("ssrl/Push-v0", from_pixels=False)
    assert env.unwrapped.reward_type == "sparse"  # Fetch's default; dense stays an option
    agent = SAC(env)
    c = agent.config
    assert (c.gamma, c.actor_lr, c.critic_lr, c.alpha_lr, c.normalize_obs, c.her_ratio) == (
        0.98,
        1e-3,
        1e-3,
        1e-3,
        True,
        0.8,
    )
    assert agent.obs_normalizer is not None
    assert SAC(env, gamma=0.95).config.gamma == 0.95  # a value given beats the preset
    plain = SAC(env, goal_preset="none").config
    assert (plain.gamma, plain.actor_lr, plain.normalize_obs) == (0.99, 3e-4, False)
    # Not a goal env: SB3's defaults.
    assert SAC(gym.make("Pendulum-v1")).config.gamma == 0.99
    with pytest.raises(ValueError, match="unknown goal_preset 'fetch'.*valid presets: her, none"):
        SAC(env, goal_preset="fetch")


def test_goal_pictures_show_each_goal_beside_what_the_agent_reached(tmp_path):
    import imageio.v2 as imageio

    from ssrl.agents.run import train_run
    from ssrl.benchmarks.goal_pictures import goal_panels, goal_pictures

    train_run(
        tmp_path / "run",
        "ssrl/Push-v0",
        env_steps=100,
        env_kwargs={"from_pixels": False},
        hyperparams={"hidden_dims": (8, 8), "learning_starts": 50},
        eval_every=100,
        eval_episodes=1,
        progress=False,
        tensorboard=False,
    )
    panels = goal_panels(tmp_path / "run", episodes=2, size=64)
    # The goal panel shows the puck at the goal: rendered again by hand, it is the same picture.
    env = gym.make("ssrl/Push-v0", from_pixels=False, render_mode="rgb_array", render_size=64)
    from ssrl.agents.trainer import EVAL_SEED_BASE

    env.reset(seed=EVAL_SEED_BASE)
    np.testing.assert_array_equal(panels[0]["goal"], env.unwrapped.render_goal())
    assert panels[0]["goal"].shape == panels[0]["reached"].shape == (64, 64, 3)
    assert not np.array_equal(panels[0]["goal"], panels[0]["reached"])  # the reached frame differs
    assert set(panels[0]["finals"]) == {"puck_distance", "hand_distance"}
    path = goal_pictures(tmp_path / "run", tmp_path / "pictures", episodes=2, size=64)
    assert imageio.imread(path).shape[2] in (3, 4)


def test_cc_rig_imagines_goals_in_each_episodes_own_context():
    rep = make("cc-vae", (3, SIZE, SIZE), latent_dim=3, context_dim=2).eval()
    k = rep.config.latent_dim
    env = rep.observation_wrapper(gym.make("ssrl/PushRandomObject-v0", size=SIZE), explore=True)
    try:
        obs, _ = env.reset(seed=0)
        # The exploration goal: z ~ N(0, I) beside this episode's context c(s_0).
        np.testing.assert_allclose(obs["desired_goal"][k:], obs["observation"][k:], atol=1e-6)
        assert not np.allclose(obs["desired_goal"][:k], obs["observation"][:k])
        other, _ = env.reset(seed=1)  # another object, another context, the goal follows it
        assert not np.allclose(other["desired_goal"][k:], obs["desired_goal"][k:])
        # Relabelling keeps each row's context; z follows N(0, I).
        like = np.stack([obs["observation"], other["observation"]] * 500)
        goals = env.sample_goals(1000, np.random.default_rng(0), like)
        np.testing.assert_array_equal(goals[:, k:], like[:, k:])
        assert abs(goals[:, :k].mean()) < 0.1 and abs(goals[:, :k].std() - 1) < 0.1
        with pytest.raises(ValueError, match="pass like"):
            env.sample_goals(2, np.random.default_rng(0))
    finally:
        env.close()


def test_rig_reward_check_attributes_latent_distance_to_hand_and_puck_by_hand():
    from ssrl.benchmarks.rig_reward_check import knn_r2, reward_attribution

    rng = np.random.default_rng(0)
    hand, puck = rng.uniform(-0.1, 0.1, (400, 2)), rng.uniform(-0.1, 0.1, (400, 2))
    # Latents that are the hand position scaled to 0.3 units per cm: the reward pays for the hand only.
    z = 100 * 0.3 * hand
    out = reward_attribution(z, hand, puck, pairs=2000)
    assert out["per_cm_hand"] == pytest.approx(0.3, abs=1e-6) and abs(out["per_cm_puck"]) < 1e-6
    assert out["corr_hand"] == pytest.approx(1.0) and abs(out["corr_puck"]) < 0.1
    # kNN R^2: perfect for what the latents hold, about none for what they do not.
    assert knn_r2(z[:300], hand[:300], z[300:], hand[300:]) > 0.95
    assert knn_r2(z[:300], puck[:300], z[300:], puck[300:]) < 0.2


def test_reward_profile_moves_only_what_it_says_and_pays_what_the_encoder_sees():
    from ssrl.benchmarks.rig_reward_check import PROFILE_CM, _moved, reward_profile
    from ssrl.envs import make as make_env

    rng = np.random.default_rng(0)
    low, high = np.array([-0.1, -0.06]), np.array([0.1, 0.08])
    for cm in (0.0, 3.0, 11.0):
        xy = _moved(np.array([0.05, 0.0]), cm, low, high, rng)
        assert np.linalg.norm(xy - [0.05, 0.0]) == pytest.approx(cm / 100) and np.all((xy >= low) & (xy <= high))
    assert _moved(np.array([0.0, 0.0]), 30.0, low, high, rng) is None  # no direction stays in a 20 x 14 cm box

    class PuckOnly:  # "latents": the red puck's centroid in pixels, blind to the hand
        def embed(self, images):
            red = (images[:, 0] > 150) & (images[:, 1] < 90) & (images[:, 2] < 90)
            rows, cols = np.indices(red.shape[1:])
            return np.stack([[(rows * r).sum() / r.sum(), (cols * r).sum() / r.sum()] for r in red])

    env = make_env("ssrl/Push-v0", size=64)
    profile = reward_profile(PuckOnly(), env, goals=4)
    env.close()
    for moved in ("hand", "puck"):
        assert np.all(profile[moved][:, 0] == 0)  # nothing moved: the goal image itself
    hand, puck = np.nanmean(profile["hand"], 0), np.nanmean(profile["puck"], 0)
    # The hand moves and the puck's centroid stays, bar the hand uncovering part of the puck: any
    # hand move pays less than a 2 cm puck move.
    assert np.nanmax(hand) < puck[2]
    assert np.all(np.diff(puck[PROFILE_CM <= 10]) > 0) and puck[10] > 5  # pixels: grows with the puck's move


def test_prior_plausibility_measures_how_far_imagined_goals_lie_from_the_data():
    from ssrl.benchmarks.rig_reward_check import prior_plausibility

    grid = np.stack(np.meshgrid(np.arange(40.0), np.arange(40.0)), -1).reshape(-1, 2)  # data 1 apart

    class Prior:
        def __init__(self, offset):
            self.offset = offset

        def goal_sampler(self):
            return lambda n, rng, like: grid[rng.choice(len(grid), n)] + self.offset

    on_data = prior_plausibility(Prior(0.0), grid)
    assert on_data["prior_nearest_data"] == 0.0 and on_data["data_nearest_data"] == 1.0
    assert prior_plausibility(Prior(100.0), grid)["prior_nearest_data"] > 60  # beyond the 40 x 40 grid
    assert prior_plausibility(make("curl", (3, SIZE, SIZE)), grid) == {}  # no prior, nothing to say


def test_rig_factorial_serves_one_source_and_rewards_on_the_other(vae):
    from ssrl.benchmarks.rig_factorial import CRITIC_OBSERVATION, REWARD_ENTRIES, make_env

    env = make_env(vae.encoder, "state", "latent", SIZE, 1.0)
    obs, info = env.reset(seed=0)
    push = env.unwrapped
    for _ in range(3):
        obs, reward, _, _, info = env.step(np.array([0.5, -1.0], np.float32))
        np.testing.assert_array_equal(obs["observation"], push.state_observation()["observation"])
        np.testing.assert_allclose(obs["achieved_goal"], info["state_achieved_goal"])
        frame = push.render_goal_image(info["state_achieved_goal"])  # the scene as it stands
        np.testing.assert_allclose(obs["reward_achieved"], vae.embed(frame[None])[0], atol=1e-4)
        np.testing.assert_allclose(obs["reward_desired"], vae.embed(push.render_goal_image()[None])[0], atol=1e-4)
        assert reward == pytest.approx(-np.linalg.norm(obs["reward_achieved"] - obs["reward_desired"]), rel=1e-5)
    # Latents observed, the state rewarded with the hand weighted twice: by hand.
    env = make_env(vae.encoder, "latent", "state", SIZE, 2.0)
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert obs["observation"].shape == (4,)
    (h, p), (hg, pg) = np.split(info["state_achieved_goal"], 2), np.split(info["state_desired_goal"], 2)
    assert reward == pytest.approx(-np.sqrt(4 * np.sum((h - hg) ** 2) + np.sum((p - pg) ** 2)), rel=1e-5)
    # The agent stores the reward's entries, never reads them, and relabels on them.
    agent = SAC(env, her_ratio=0.4, hidden_dims=(8, 8))
    assert agent.side_keys == REWARD_ENTRIES and agent.replay.reward_keys == REWARD_ENTRIES
    scaled = make_env(vae.encoder, "latent", "state", SIZE, 2.0, reward_scale=0.05)
    scaled.reset(seed=0)
    assert scaled.step(np.array([1.0, 0.0], np.float32))[1] == pytest.approx(0.05 * reward, rel=1e-5)
    with pytest.raises(ValueError, match="observe must be one of"):
        make_env(vae.encoder, "image", "latent", SIZE, 1.0)
    with pytest.raises(ValueError, match="reward_scale must be a finite number > 0"):
        make_env(vae.encoder, "latent", "latent", SIZE, 1.0, reward_scale=0.0)
    # Positions only: [hand_xy, puck_xy] of the state, its velocities dropped.
    still = make_env(vae.encoder, "state", "state", SIZE, 1.0, velocities=False)
    still.reset(seed=0)
    obs = still.step(np.array([1.0, 0.0], np.float32))[0]
    full = still.unwrapped.state_observation()["observation"]
    assert still.observation_space["observation"].shape == (4,) and full.shape == (8,)
    np.testing.assert_array_equal(obs["observation"], full[:4])
    np.testing.assert_allclose(obs["observation"], obs["achieved_goal"])
    with pytest.raises(ValueError, match="needs observe='state'"):
        make_env(vae.encoder, "latent", "state", SIZE, 1.0, velocities=False)
    # Two frames observed: the previous latent, then the current one; the goals are one frame's.
    stacked = make_env(vae.encoder, "latent", "state", SIZE, 1.0, frame_stack=2)
    obs = stacked.reset(seed=0)[0]
    first, d = obs["observation"], obs["desired_goal"].shape[0]
    assert first.shape == (2 * d,)
    np.testing.assert_allclose(first[:d], first[d:])  # a reset repeats its frame
    previous = first
    for _ in range(3):
        obs, _, _, _, info = stacked.step(np.array([1.0, -1.0], np.float32))
        np.testing.assert_allclose(obs["observation"][:d], previous[d:], atol=1e-6)  # shifted by one step
        scene = vae.embed(stacked.unwrapped.render_goal_image(info["state_achieved_goal"])[None])[0]
        np.testing.assert_allclose(obs["observation"][d:], scene, rtol=0, atol=1e-6)  # the newest frame
        np.testing.assert_allclose(obs["achieved_goal"], scene, rtol=0, atol=1e-6)
        previous = obs["observation"]
    assert np.abs(previous[d:] - first[d:]).max() > 100 * 1e-6  # the hand moved, and the latent with it
    with pytest.raises(ValueError, match="needs observe='latent'"):
        make_env(vae.encoder, "state", "state", SIZE, 1.0, frame_stack=2)
    # An asymmetric critic: latents for the actor; the state's observation and goals for the critics.
    asym = make_env(vae.encoder, "latent", "state", SIZE, 1.0, critic="state")
    obs = asym.reset(seed=0)[0]
    for _ in range(2):
        obs, _, _, _, info = asym.step(np.array([1.0, -1.0], np.float32))
        np.testing.assert_array_equal(obs[CRITIC_OBSERVATION], asym.unwrapped.state_observation()["observation"])
        np.testing.assert_allclose(obs["reward_desired"], info["state_desired_goal"])
        assert obs["observation"].shape == (4,)  # the actor's latents
    agent = SAC(asym, her_ratio=0.4, hidden_dims=(8, 8), critic_keys=(CRITIC_OBSERVATION, REWARD_ENTRIES[1]))
    assert agent.side_keys == (REWARD_ENTRIES[0],) and agent.critic_dim == 8 + 4
    with pytest.raises(ValueError, match="reads the reward's goals .* so it needs reward='state', got reward='latent'"):
        make_env(vae.encoder, "latent", "latent", SIZE, 1.0, critic="state")


def test_rig_factorial_serves_frames_or_the_vaes_conv_features(vae):
    from ssrl.benchmarks.rig_factorial import REWARD_ENTRIES, make_env

    # Pixels: the frame itself, goals the frozen VAE's latents of the goal images, the state's reward.
    env = make_env(vae.encoder, "pixels", "state", SIZE, 1.0)
    assert env.observation_space["observation"].shape == (3, SIZE, SIZE)
    obs = env.reset(seed=0)[0]
    for _ in range(2):
        obs, reward, _, _, info = env.step(np.array([1.0, -0.5], np.float32))
        push = env.unwrapped
        frame = push.render_goal_image(info["state_achieved_goal"])  # the scene as it stands, hand included
        assert obs["observation"].dtype == np.uint8
        assert np.abs(obs["observation"].astype(int) - frame.astype(int)).mean() < 1.0
        np.testing.assert_allclose(obs["achieved_goal"], vae.embed(obs["observation"][None])[0], atol=1e-5)
        np.testing.assert_allclose(obs["desired_goal"], vae.embed(push.render_goal_image()[None])[0], atol=1e-4)
        np.testing.assert_allclose(obs["reward_desired"], info["state_desired_goal"])
        distance = np.linalg.norm(info["state_achieved_goal"] - info["state_desired_goal"])
        assert reward == pytest.approx(-distance, rel=1e-5)
    agent = SAC(env, her_ratio=0.4, hidden_dims=(8, 8), encoder=copy.deepcopy(vae.encoder))
    assert agent.pixels and agent.goal_dim == 4 and agent.side_keys == REWARD_ENTRIES
    with pytest.raises(ValueError, match="critic must be pixels"):
        make_env(vae.encoder, "pixels", "state", SIZE, 1.0, critic="state")
    # Trunk features: every latent entry is the conv trunk's output, flattened (not the mean).
    trunk = make_env(vae.encoder, "latent", "state", SIZE, 1.0, features="trunk")
    width = int(np.prod(vae.encoder.trunk.output_shape))
    assert trunk.observation_space["observation"].shape == (width,) and width != 4
    trunk.reset(seed=0)
    obs, _, _, _, info = trunk.step(np.array([0.0, 0.0], np.float32))
    frame = trunk.unwrapped.render_goal_image(info["state_achieved_goal"])
    with torch.no_grad():
        expected = vae.encoder.trunk(torch.as_tensor(frame[None])).flatten(1)[0].numpy()
    np.testing.assert_allclose(obs["observation"], expected, atol=1e-4)
    with pytest.raises(ValueError, match="features must be one of"):
        make_env(vae.encoder, "latent", "state", SIZE, 1.0, features="logvar")


def test_rig_factorial_pixel_actor_fine_tunes_a_copy_of_the_vae_by_the_critic(vae, tmp_path):
    from ssrl.benchmarks.rig_factorial import main

    path = vae.save(tmp_path / "vae.pt")
    out = tmp_path / "pixels"
    options = ["--encoder", str(path), "--observe", "pixels", "--reward", "state", "--size", str(SIZE),
               "--eval-episodes", "1", "--out", str(out),
               "--set", "learning_starts=20", "--set", "batch_size=8"]  # fmt: skip
    main([*options, "--env-steps", "30"])
    start = load_representation(path).encoder.state_dict()
    agent = SAC.load(out / "checkpoint" / "agent.pt", encoder=copy.deepcopy(vae.encoder))
    c = agent.config
    assert (c.augment, c.encoder_lr, c.hidden_dims, c.critic_augmentations, c.her_ratio) == (
        None,
        1e-4,
        (256, 256),
        1,
        0.4,
    )
    tuned = agent.encoder.state_dict()
    assert not torch.equal(tuned["fc_mu.weight"], start["fc_mu.weight"])  # the critics' gradient reached it
    assert not torch.equal(tuned["trunk.net.0.weight"], start["trunk.net.0.weight"])
    assert torch.equal(tuned["fc_logvar.weight"], start["fc_logvar.weight"])  # no loss reads the variance
    # The goals stayed the frozen VAE's latents: the replay's achieved goals are its embeddings of
    # the stored frames, not the fine-tuned copy's.
    agent.replay.load(out / "checkpoint" / "replay", agent.replay_meta)
    n = len(agent.replay)
    store = agent.replay.store
    np.testing.assert_allclose(store["achieved_goal"][:n], vae.embed(store["observation"][:n]), atol=1e-5)
    with torch.no_grad():
        tuned_latents = agent.encoder(torch.as_tensor(store["observation"][:n])).float().numpy()
    assert np.abs(tuned_latents - store["achieved_goal"][:n]).max() > 1e-3
    main([*options, "--env-steps", "60"])  # resumes with the fine-tuned copy
    resumed = SAC.load(out / "checkpoint" / "agent.pt", encoder=copy.deepcopy(vae.encoder))
    assert resumed.num_env_steps == 60
    assert not torch.equal(resumed.encoder.state_dict()["fc_mu.weight"], tuned["fc_mu.weight"])


def test_rig_factorial_passes_set_hyperparameters_to_its_agent(vae, tmp_path):
    from ssrl.benchmarks.rig_factorial import main

    out = tmp_path / "run"
    main(["--encoder", str(vae.save(tmp_path / "vae.pt")), "--observe", "latent", "--reward", "state",
          "--size", str(SIZE), "--env-steps", "30", "--eval-episodes", "1", "--out", str(out),
          "--set", "learning_starts=10", "--set", "batch_size=8", "--set", "hidden_dims=[8, 8]",
          "--set", "critic_layer_norm=true"])  # fmt: skip
    agent = SAC.load(out / "checkpoint" / "agent.pt")
    assert agent.config.critic_layer_norm and agent.config.hidden_dims == (8, 8) and agent.config.her_ratio == 0.4
    assert agent.critic.q.norms is not None
    main(["--encoder", str(tmp_path / "vae.pt"), "--observe", "latent", "--reward", "state", "--size", str(SIZE),
          "--env-steps", "30", "--eval-episodes", "1", "--out", str(tmp_path / "td3"), "--algo", "td3",
          "--set", "learning_starts=10", "--set", "batch_size=8"])  # fmt: skip
    TD3.load(tmp_path / "td3" / "checkpoint" / "agent.pt")  # SAC.load refuses it (below)
    main(["--encoder", str(tmp_path / "vae.pt"), "--observe", "latent", "--reward", "state", "--size", str(SIZE),
          "--env-steps", "30", "--eval-episodes", "1", "--out", str(tmp_path / "asym"), "--critic-observe", "state",
          "--set", "learning_starts=10", "--set", "batch_size=8"])  # fmt: skip
    agent = SAC.load(tmp_path / "asym" / "checkpoint" / "agent.pt")
    assert agent.config.critic_keys == ("critic_observation", "reward_desired")
    with pytest.raises(ValueError, match="resume it with its own --critic-observe"):  # not silently symmetric
        main(["--encoder", str(tmp_path / "vae.pt"), "--observe", "latent", "--reward", "state", "--size", str(SIZE),
              "--env-steps", "60", "--eval-episodes", "1", "--out", str(tmp_path / "asym")])  # fmt: skip
    with pytest.raises(ValueError, match="holds a td3 agent, not sac"):
        SAC.load(tmp_path / "td3" / "checkpoint" / "agent.pt")
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        main(["--encoder", "x", "--observe", "latent", "--reward", "state", "--out", str(tmp_path / "bad"),
              "--set", "critic_layer_norm"])  # fmt: skip


@pytest.fixture(scope="module")
def state_oracle(tmp_path_factory):
    """The run folder of a (barely trained) state SAC + HER agent on Push."""
    from ssrl.agents.run import train_run

    out = tmp_path_factory.mktemp("oracle") / "run"
    train_run(out, "ssrl/Push-v0", env_steps=60, env_kwargs={"from_pixels": False}, eval_every=60, eval_episodes=1,
              hyperparams={"hidden_dims": (8, 8), "batch_size": 8, "learning_starts": 20}, progress=False,
              tensorboard=False)  # fmt: skip
    return out


def test_policy_probe_labels_every_input_with_the_oracles_noiseless_action(vae, state_oracle):
    from ssrl.agents.policy import AgentPolicy
    from ssrl.benchmarks.rig_policy_probe import collect

    oracle = AgentPolicy(state_oracle, gym.make("ssrl/Push-v0", from_pixels=False)).agent
    env = EncodedObservation(gym.make("ssrl/Push-v0", size=SIZE), vae.encoder)
    clean = collect(env, oracle, episodes=2, noise=0.0, seed=0)
    noisy = collect(env, oracle, episodes=2, noise=0.5, seed=0)
    assert len(clean["action"]) == 100 and np.array_equal(np.bincount(clean["episode"]), [50, 50])
    assert clean["latent"].shape == (100, 8) and clean["positions"].shape == (100, 8)
    assert clean["state"].shape == (100, 12)
    # The inputs of one instant agree: positions are the state's first entries, goals the same.
    np.testing.assert_array_equal(clean["positions"][:, :4], clean["state"][:, :4])
    np.testing.assert_array_equal(clean["positions"][:, 4:], clean["state"][:, 8:])
    # Without noise the recorded episode is the oracle's own: re-rolled by hand, row for row.
    obs, info = env.reset(seed=10_000)
    for t in range(5):
        state = {"observation": env.unwrapped.state_observation()["observation"],
                 "desired_goal": info["state_desired_goal"], "achieved_goal": info["state_achieved_goal"]}  # fmt: skip
        np.testing.assert_allclose(clean["latent"][t], np.concatenate([obs["observation"], obs["desired_goal"]]))
        action = oracle.act(state, deterministic=True)
        np.testing.assert_allclose(clean["action"][t], action, rtol=1e-6)
        obs, _, _, _, info = env.step(action)
    # With noise the executed actions differ (the puck's path does), but each label is still the
    # oracle's noiseless action on the state of its row.
    assert np.abs(noisy["state"][1:50] - clean["state"][1:50]).max() > 1e-3
    for t in (0, 17, 63):
        s = noisy["state"][t]
        state = {"observation": s[:8], "achieved_goal": s[2:4], "desired_goal": s[8:]}
        np.testing.assert_allclose(noisy["action"][t], oracle.act(state, deterministic=True), rtol=1e-5, atol=1e-6)


def test_policy_probe_clone_learns_a_mapping_and_the_run_reports_every_input(vae, state_oracle, tmp_path):
    from ssrl.benchmarks.rig_policy_probe import SOURCES, fit_clone, run

    rng = np.random.default_rng(0)
    scales = np.array([1.0, 10.0, 0.1], np.float32)  # inputs of unlike scales: standardised inside
    x = rng.normal(size=(512, 3)).astype(np.float32) * scales
    y = np.tanh(x / scales @ np.array([[0.5, -1.0], [1.0, 0.3], [-0.7, 0.2]], np.float32))
    predict, first, last = fit_clone(x, y, steps=300, seed=0)
    assert last < first / 10
    assert np.mean((predict(x) - y) ** 2) < 0.01 and predict(x[0]).shape == (1, 2)
    checkpoint = vae.save(tmp_path / "vae.pt")
    results = run(state_oracle, checkpoint, episodes=2, noise=0.3, steps=5, eval_episodes=1, size=SIZE)
    assert results["steps_of_data"] == 100 and results["oracle_eval"]["episodes"] == 1
    for key in SOURCES:
        r = results[key]
        assert np.isfinite(r["validation_mse"]) and len(r["finals"]) == 1
        assert r["final_puck_distance"] == r["median_final_puck_distance"] == r["finals"][0] < 0.5
        assert r["successes"] == int(r["finals"][0] < 0.05)
    with pytest.raises(ValueError, match="use >= 2 episodes, got 1"):
        run(state_oracle, checkpoint, episodes=1)
