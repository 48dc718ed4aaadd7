"""grasp2vec's instance grasping: goals embedded by phi_o, the reward phi_o(g) . phi_o(o) from
embeddings only, posthoc labelling and auxiliary goals through the replay, and SAC on pixels with
a goal vector."""

import json

import numpy as np
import pytest
import torch

from ssrl.agents import SAC
from ssrl.agents.base import GoalImage
from ssrl.envs import make as make_env
from ssrl.representations import make
from ssrl.representations.grasping import LABEL_KEYS, EmbeddedGraspGoals
from ssrl.representations.wrappers import EncodedObservation

SIZE = 32


@pytest.fixture(scope="module")
def g2v():
    torch.manual_seed(0)
    return make("grasp2vec", (3, SIZE, SIZE), latent_dim=8).eval()


def grasp_env(g2v, reward="embedding", **options):
    env = make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3, **options)
    return EmbeddedGraspGoals(env, g2v.object, reward=reward)


def embed(g2v, image):
    with torch.no_grad():
        return g2v.object(torch.as_tensor(image[None])).numpy()[0]


def centred_on(env, target):
    """An action grasping the centre of object ``target`` (what goal_grasp does)."""
    base = env.unwrapped
    x, y = base.scene.object_pos()[target, :2]
    return base.grasp_to_action(x, y, 0.0)


def test_goals_are_embeddings_and_the_reward_is_their_dot_product_by_hand(g2v):
    env = grasp_env(g2v)
    obs, _ = env.reset(seed=3)
    raw = env.unwrapped._observation(env.unwrapped._scene_obs(reset=False))
    np.testing.assert_allclose(obs["desired_goal"], embed(g2v, raw["desired_goal"]), rtol=1e-5, atol=1e-6)
    assert obs["observation"].shape == (3, SIZE, SIZE) and obs["observation"].dtype == np.uint8
    lifted = failed = 0
    for target in range(3):  # grasp each object's centre: most lift something
        obs, _ = env.reset(seed=10 + target)
        obs, reward, terminated, truncated, info = env.step(centred_on(env, target))
        assert terminated and not truncated  # one grasp, one episode
        if info["grasp_success"]:
            o = env.unwrapped._last_o
            by_hand = float(np.dot(embed(g2v, o), obs["desired_goal"]))
            assert reward == pytest.approx(by_hand, rel=1e-5)
            np.testing.assert_allclose(obs["achieved_goal"], embed(g2v, o), rtol=1e-5, atol=1e-6)
            lifted += 1
        else:
            assert reward == 0.0 and not obs["achieved_goal"].any()
            failed += 1
    assert lifted >= 1
    # A grasp of empty floor lifts nothing: zero achieved goal, reward 0 (not phi_o of a stale o).
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([0.99, 0.99, 0.0], np.float32))
    if not env.unwrapped._lifted.any():
        assert reward == 0.0 and not obs["achieved_goal"].any()


def test_any_rewards_every_lift_and_oracle_only_the_goal_object(g2v):
    any_env, oracle = grasp_env(g2v, "any"), grasp_env(g2v, "oracle")
    seen = {"goal": 0, "other": 0}
    for seed in range(8):
        for env in (any_env, oracle):
            env.reset(seed=seed)
        goal = oracle.unwrapped.goal_id
        target = goal if seed % 2 == 0 else (goal + 1) % 3
        _, r_any, _, _, info_any = any_env.step(centred_on(any_env, target))
        obs, r_oracle, _, _, info = oracle.step(centred_on(oracle, target))
        assert r_any == float(info_any["grasp_success"])
        assert r_oracle == float(info["is_success"])  # the env's own success: the goal object lifted
        assert obs[LABEL_KEYS[1]][goal] == 1.0 and obs[LABEL_KEYS[1]].sum() == 1.0
        if info["grasp_success"]:
            seen["goal" if info["is_success"] else "other"] += 1
    assert seen["goal"] >= 1 and seen["other"] >= 1  # both cases were exercised


def test_cosine_reward_divides_out_the_norms_and_a_failed_grasp_pays_nothing(g2v):
    env = grasp_env(g2v, "cosine")
    achieved = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
    desired = np.array([[6.0, 8.0], [1.0, 1.0], [0.0, 5.0], [-1.0, -1.0]], np.float32)
    # By hand: the same direction (1), a failed grasp's zero embedding (0), orthogonal (0), opposite (-1).
    np.testing.assert_allclose(env.compute_reward(achieved, desired), [1.0, 0.0, 0.0, -1.0], atol=1e-6)
    # The product would pay the first pair 50 and rank it far above a unit-length exact match.
    assert grasp_env(g2v).compute_reward(achieved[:1], desired[:1])[0] == pytest.approx(50.0)
    lifted = 0
    for target in range(3):  # a real grasp: the step's reward is the cosine of the stored embeddings
        obs, _ = env.reset(seed=10 + target)
        obs, reward, *_, info = env.step(centred_on(env, target))
        if info["grasp_success"]:
            a, d = embed(g2v, env.unwrapped._last_o), obs["desired_goal"]
            assert reward == pytest.approx(float(a @ d / np.linalg.norm(a) / np.linalg.norm(d)), rel=1e-5)
            lifted += 1
        else:
            assert reward == 0.0
    assert lifted >= 1


def test_auxiliary_goals_are_other_rows_goals_never_a_rows_own(g2v):
    env = grasp_env(g2v)
    like = np.arange(20, dtype=np.float32).reshape(10, 2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        goals = env.sample_goals(10, rng, like)
        own = (goals == like).all(axis=1)
        assert not own.any()
        assert {tuple(g) for g in goals} <= {tuple(g) for g in like}


def test_pixel_agent_reads_the_image_and_appends_the_goal_vector(g2v):
    env = grasp_env(g2v)
    agent = SAC(env, seed=0, hidden_dims=(16, 16), feature_dim=10, batch_size=4, learning_starts=3)
    assert agent.pixels and agent.goal_dim == 8 and agent.feature_dim == 18
    assert agent.config.gamma == 0.98  # the goal preset on top of the pixel one
    obs, _ = env.reset(seed=0)
    x = agent.obs_to_tensor(agent._batch_obs(obs))
    assert isinstance(x, GoalImage)
    h = agent.features(x)
    np.testing.assert_allclose(h[0, 10:].detach().numpy(), obs["desired_goal"], rtol=1e-6)
    np.testing.assert_allclose(h[0, :10].detach().numpy(), agent.encoder(x.image)[0].detach().numpy(), rtol=1e-6)
    # The critic's loss trains the conv encoder, as on plain pixels.
    agent.learn(8)
    before = [p.detach().clone() for p in agent.encoder.parameters()]
    agent.update(agent.replay.sample(4))
    assert any(not torch.equal(a, p) for a, p in zip(before, agent.encoder.parameters()))


@pytest.mark.filterwarnings("ignore:this run ends")  # no update needed: the replay is the subject
def test_posthoc_labels_store_the_grasped_objects_embedding_as_goal(g2v):
    """HER's "future" goal of a one-grasp episode is the next slot's achieved goal: the object this
    grasp lifted (posthoc labelling), rewarded phi_o(o) . phi_o(o); a failed grasp's is zero."""
    env = grasp_env(g2v)
    agent = SAC(env, seed=0, hidden_dims=(8, 8), feature_dim=8, batch_size=64, learning_starts=100, her_ratio=0.99)
    agent.learn(24)
    batch = agent.replay.sample(64)
    rows = slice(0, 63)  # the relabelled rows come first: round(0.99 * 64)
    achieved, goal = batch.next_obs["achieved_goal"][rows], batch.obs["desired_goal"][rows]
    np.testing.assert_array_equal(goal, achieved)
    np.testing.assert_allclose(batch.reward[rows], (achieved * achieved).sum(1), rtol=1e-5)
    assert (batch.reward[rows] > 0).any() and (batch.reward[rows] == 0).any()


@pytest.mark.filterwarnings("ignore:this run ends")  # no update needed: the replay is the subject
def test_oracle_rows_are_relabelled_on_the_id_labels_the_agent_never_reads(g2v):
    env = grasp_env(g2v, "oracle")
    agent = SAC(env, seed=0, hidden_dims=(8, 8), feature_dim=8, batch_size=64, learning_starts=100, her_ratio=0.99)
    assert set(agent.side_keys) == set(LABEL_KEYS)
    agent.learn(24)
    batch = agent.replay.sample(64)
    assert not set(LABEL_KEYS) & set(batch.obs)
    held = agent.replay.store[LABEL_KEYS[0]]
    # Posthoc on labels: the goal becomes the lifted object itself, so reward 1 exactly where
    # something was lifted.
    lifted = np.asarray(batch.next_obs["achieved_goal"][:63]).any(axis=1)
    np.testing.assert_array_equal(batch.reward[:63], lifted.astype(np.float32))
    assert held.any()


def test_grasp2vec_wraps_grasp_goal_for_instance_grasping_by_name(g2v):
    env = make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3)
    wrapped = g2v.observation_wrapper(env, explore=True)
    assert isinstance(wrapped, EmbeddedGraspGoals) and wrapped.reward_type == "embedding"
    assert g2v.observation_wrapper(env, explore=False, reward="env").reward_type == "oracle"
    with pytest.raises(ValueError, match="instance grasping rewards"):
        g2v.observation_wrapper(env, explore=True, reward="latent_sparse")
    with pytest.raises(ValueError, match="keeps no images"):
        g2v.observation_wrapper(env, explore=True, keep_images=True)
    wrong = make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3, triplet_size=48)
    with pytest.raises(ValueError, match="triplet_size=32"):
        EmbeddedGraspGoals(wrong, g2v.object)
    with pytest.raises(ValueError, match="unknown instance-grasping reward 'ids'"):
        EmbeddedGraspGoals(env, g2v.object, reward="ids")


def train_tiny(g2v, tmp_path, env_steps: int, eval_episodes: int) -> None:
    """A tiny ``ssrl train`` run of instance grasping from a saved grasp2vec, in ``tmp_path/run``."""
    from ssrl.agents.run import train_run

    train_run(
        tmp_path / "run",
        "ssrl/GraspGoal-v0",
        env_steps=env_steps,
        env_kwargs={"size": SIZE, "n_objects": 3},
        hyperparams={"hidden_dims": (8, 8), "feature_dim": 8, "batch_size": 4, "learning_starts": env_steps // 3},
        encoder=str(g2v.save(tmp_path / "g2v.pt")),
        eval_every=env_steps,
        eval_episodes=eval_episodes,
        progress=False,
        tensorboard=False,
    )


def test_ssrl_train_runs_instance_grasping_from_a_grasp2vec_checkpoint(g2v, tmp_path):
    train_tiny(g2v, tmp_path, env_steps=30, eval_episodes=4)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and all(len(r["returns"]) == 4 for r in evals)
    # Success is the env's own (the goal object lifted), reported per one-grasp episode.
    assert all(0.0 <= r["success_rate"] <= 1.0 for r in evals)
    agent = SAC.load(tmp_path / "run" / "checkpoint" / "agent.pt")
    assert agent.goal_dim == 8 and agent.num_updates > 0


def test_grasp_reward_check_pairs_lifts_of_one_bin_and_scores_the_auc_by_hand():
    from ssrl.benchmarks.grasp_reward_check import episode_pairs, pair_auc

    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    same, different = episode_pairs(embeddings, np.array([4, 4, 1]))
    np.testing.assert_array_equal(same, [2.0])  # lifts 0 and 1: the same object
    np.testing.assert_array_equal(different, [0.0, 0.0])
    # Of the 2 x 3 (same, different) pairs, 4 ordered right, one wrong, one tie counting half.
    assert pair_auc(np.array([3.0, 1.0]), np.array([2.0, 1.0, 0.0])) == pytest.approx(4.5 / 6)


def test_goal_pictures_show_the_goal_image_beside_what_the_grasp_lifted(g2v, tmp_path):
    from ssrl.agents.trainer import EVAL_SEED_BASE
    from ssrl.benchmarks.goal_pictures import goal_panels

    train_tiny(g2v, tmp_path, env_steps=12, eval_episodes=1)
    panels = goal_panels(tmp_path / "run", episodes=3, size=SIZE)
    env = make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3)
    for e, panel in enumerate(panels):
        env.reset(seed=EVAL_SEED_BASE + e)
        np.testing.assert_array_equal(panel["goal"], env.unwrapped.render_goal_image().transpose(1, 2, 0))
        assert panel["reached"].shape == (SIZE, SIZE, 3) and panel["title"] == "lifted (object camera)"
        assert panel["success"] in (True, False)
        if panel["success"]:  # the goal object was lifted: the picture shows it, not black
            assert panel["reached"].any()


def test_oracle_labels_with_auxiliary_goals_are_refused_by_name(g2v):
    """An auxiliary goal is another row's embedding; its id label does not exist to score it on."""
    with pytest.raises(ValueError, match="need goal_images"):
        SAC(grasp_env(g2v, "oracle"), seed=0, hidden_dims=(8, 8), her_ratio=0.4, imagined_goal_ratio=0.3)


def test_grasp_records_images_are_a_view_a_frame_method_trains_on(tmp_path):
    """Grasp's per-step ``o`` becomes a per-frame view (step t's image at frame t + 1, black at
    a reset), so an autoencoder of grasped objects trains on it (``camera: o``)."""
    from ssrl.envs.rollouts import DatasetError, collect
    from ssrl.representations import RolloutData
    from ssrl.representations.pretrain import build

    path = collect(
        "ssrl/Grasp-v0",
        policy="centred_grasp",
        episodes=2,
        out=tmp_path / "grasp",
        size=SIZE,
        cameras=["bin"],
        max_steps=3,
        env_kwargs={"n_objects": 3, "triplet_size": 48},
        progress=False,
    ).path
    data = RolloutData(path)
    view = data.view("o")
    assert view.shape == (len(data), 3, 48, 48) and data.view_shape("o") == (3, 48, 48)
    for e in range(2):
        start = data.ep_start[e]
        assert not view[start].any()  # the reset frame: nothing lifted yet
        for t in range(3):
            np.testing.assert_array_equal(view[start + t + 1], data.episodes[e].info["o"][t])
    drawn = data.sample_frames(200, np.random.default_rng(0), view="o")
    assert (data.frame_t[drawn] > 0).all()  # never a reset frame's black: no lift yet, no image
    assert len(set(drawn.tolist())) == 6  # the 2 x 3 frames that follow a step, all of them
    vae = build("beta-vae", data, camera="o", frame_stack=1, arch="fast", latent_dim=4)
    assert vae.obs_shape == (3, 48, 48)  # built for the view it trains on, not the 32-px bin frames
    from ssrl.representations.probe import probe

    assert np.isfinite(probe(vae, data, data)["r2"])  # probed on its own view (the bin frames would not fit)
    with pytest.raises(DatasetError, match=r"no camera or per-step image 'hand'; cameras: \['bin'\], per-step"):
        data.view("hand")


def test_any_frame_representation_rewards_grasps_by_the_cosine_of_its_embeddings():
    """An autoencoder (the paper's baseline) serves instance grasping through the same wrapper:
    goals are its unit-length embeddings, the reward their dot product (a cosine)."""
    torch.manual_seed(0)
    vae = make("beta-vae", (3, SIZE, SIZE), arch="fast", latent_dim=6, frame_stack=1).eval()
    env = vae.observation_wrapper(make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3), explore=True)
    assert isinstance(env, EmbeddedGraspGoals) and env.reward_type == "embedding"
    obs, _ = env.reset(seed=2)
    raw = env.unwrapped._observation(env.unwrapped._scene_obs(reset=False))
    with torch.no_grad():
        mu = vae.encoder(torch.as_tensor(raw["desired_goal"][None])).numpy()[0]
    np.testing.assert_allclose(obs["desired_goal"], mu / np.linalg.norm(mu), rtol=1e-5, atol=1e-6)
    lifts = 0
    for target in range(3):
        obs, _ = env.reset(seed=20 + target)
        obs, reward, *_, info = env.step(centred_on(env, target))
        if info["grasp_success"]:
            assert np.linalg.norm(obs["achieved_goal"]) == pytest.approx(1.0, rel=1e-5)
            assert reward == pytest.approx(float(np.dot(obs["achieved_goal"], obs["desired_goal"])), rel=1e-5)
            assert -1.0 <= reward <= 1.0
            lifts += 1
    assert lifts >= 1
    # Every representation's wrapper dispatches by the env: CC-VAE too; plain Grasp-v0 (which has a
    # goal_id of -1 but no goal) stays an encoded observation.
    ccvae = make("cc-vae", (3, SIZE, SIZE), arch="fast", latent_dim=6, frame_stack=1).eval()
    goal_env = make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3)
    assert isinstance(ccvae.observation_wrapper(goal_env, explore=True), EmbeddedGraspGoals)
    plain = vae.observation_wrapper(make_env("ssrl/Grasp-v0", size=SIZE, n_objects=3), explore=True)
    assert isinstance(plain, EncodedObservation) and plain.observation_space.shape == (6,)
    stacked = make("beta-vae", (9, SIZE, SIZE), arch="fast", latent_dim=6)  # frame stack 3
    with pytest.raises(ValueError, match="pretrain the representation with frame_stack=1"):
        stacked.observation_wrapper(make_env("ssrl/GraspGoal-v0", size=SIZE, n_objects=3), explore=True)
