"""Representations: registry, data samplers, each method learns, checkpoints, wrapper, probes."""

import numpy as np
import pytest
import torch
import gymnasium as gym

import ssrl.representations as reps
from ssrl.envs import make_dmc
from ssrl.envs.rollouts import collect
from ssrl.representations import EncodedObservation, EncodedVectorObservation, RolloutData, load_representation
from ssrl.representations.backbones import TemporalEncoder, make_encoder
from ssrl.representations.pretrain import build, pretrain
from ssrl.representations.probe import probe

SIZE = 48


@pytest.fixture(scope="session")
def cartpole(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cartpole"
    collect("ssrl/cartpole-swingup-v0", episodes=4, out=out, cameras=["fixed", "lookatcart"], size=SIZE,
            max_steps=40, seed=0, progress=False)
    return RolloutData(out)


@pytest.fixture(scope="session")
def probe_data(tmp_path_factory):
    """Enough varied states for a linear probe: 24 episodes of held random actions."""
    out = tmp_path_factory.mktemp("data") / "probe"
    collect("ssrl/cartpole-swingup-v0", policy="sticky_random", episodes=24, out=out, cameras=["fixed", "lookatcart"],
            size=SIZE, max_steps=100, seed=0, progress=False)
    return RolloutData(out)


@pytest.fixture(scope="session")
def grasps(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "grasp"
    collect("ssrl/Grasp-v0", policy="centred_grasp", episodes=3, out=out, size=SIZE, seed=0,
            env_kwargs={"triplet_size": SIZE}, progress=False)
    return RolloutData(out)


METHODS = {
    "tcn": dict(arch="fast", latent_dim=16),
    "mftcn": dict(arch="fast", latent_dim=16),
    "deepmdp": dict(arch="fast", latent_dim=16, batch_size=32),
    "dbc": dict(arch="fast", latent_dim=16, batch_size=32),
    "grasp2vec": dict(arch="fast", latent_dim=16, batch_size=16),
}


def data_for(name, cartpole, grasps):
    return grasps if name == "grasp2vec" else cartpole


def test_registry_lists_methods_and_names_unknown_ones():
    assert {"tcn", "mftcn", "grasp2vec", "deepmdp", "dbc"} <= set(reps.names())
    with pytest.raises(ValueError, match="known: .*tcn"):
        reps.make("tcm", (9, 84, 84))
    with pytest.raises(ValueError, match="latentdim.*valid options"):
        reps.make("tcn", (9, 84, 84), latentdim=3)


def test_rollout_data_stacks_clamp_at_episode_start(cartpole):
    ep0_len = cartpole.ep_len[0]
    second = cartpole.ep_start[1]
    idx = np.array([0, 1, second, second + 2])
    stacks = cartpole.stack_indices(idx, 3)
    np.testing.assert_array_equal(stacks, [[0, 0, 0], [0, 0, 1], [second] * 3, [second, second + 1, second + 2]])
    tr = cartpole.transitions(np.array([second - 2]), k=3)
    np.testing.assert_array_equal(tr["next_obs"][0, 6:], cartpole.frames["fixed"][second - 1])
    assert ep0_len == 40 and not cartpole.has_next[second - 1]
    train, test = cartpole.split(0.25)
    assert train.num_episodes == 3 and test.num_episodes == 1 and len(train) + len(test) == len(cartpole)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_twenty_steps_lower_the_loss_and_gradients_reach_the_encoder(name, cartpole, grasps):
    torch.manual_seed(0)
    data = data_for(name, cartpole, grasps)
    rep = build(name, data, **METHODS[name])
    batch = rep.to_batch(rep.sample_batch(data, rep.config.batch_size, np.random.default_rng(0)))
    loss, _ = rep.loss(batch)
    loss.backward()
    grads = [p.grad for p in rep.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    opt = torch.optim.Adam(rep.parameters(), lr=1e-3)
    first = None
    for _ in range(20):
        loss, _ = rep.loss(batch)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(rep.loss(batch)[0].detach()) < first


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_round_trip_gives_identical_embeddings(name, cartpole, grasps, tmp_path):
    data = data_for(name, cartpole, grasps)
    rep = build(name, data, **METHODS[name])
    rep.save(tmp_path / "model.pt")
    loaded = load_representation(tmp_path / "model.pt")
    k = rep.obs_shape[0] // 3
    obs = data.stack(np.arange(10), None, k)
    np.testing.assert_array_equal(rep.embed(obs), loaded.embed(obs))
    assert (tmp_path / "model.json").exists()
    (tmp_path / "broken.pt").write_bytes(b"nope")
    with pytest.raises(ValueError, match="corrupt"):
        load_representation(tmp_path / "broken.pt")


def test_encoded_observation_lies_in_its_space_and_sb3_trains_on_it():
    env = make_dmc("cartpole", "swingup", size=SIZE)
    encoder = make_encoder("fast", 9, SIZE, 12)
    wrapped = EncodedObservation(env, encoder)
    obs, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.contains(obs) and obs.shape == (12,)
    # A single-frame encoder on a 3-frame env: each frame encoded, latents concatenated.
    per_frame = EncodedObservation(env, make_encoder("fast", 3, SIZE, 5))
    obs, *_ = per_frame.step(np.zeros(1))
    assert per_frame.observation_space.contains(obs) and obs.shape == (15,)
    from stable_baselines3 import SAC as SB3SAC

    model = SB3SAC("MlpPolicy", wrapped, learning_starts=20, batch_size=8, buffer_size=100,
                   policy_kwargs=dict(net_arch=[16]), device="cpu")
    before = [p.clone() for p in model.policy.actor.parameters()]
    model.learn(40)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.actor.parameters()))


def test_encoded_goal_env_rewards_in_latent_space():
    env = gym.make("ssrl/Push-v0", size=SIZE)
    encoder = make_encoder("fast", 3, SIZE, 8)
    wrapped = EncodedObservation(env, encoder)
    obs, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.contains(obs)
    reward = wrapped.compute_reward(obs["achieved_goal"][None], obs["desired_goal"][None], {})
    assert reward[0] == pytest.approx(-np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]), rel=1e-5)
    assert env.get_wrapper_attr("compute_reward") is not wrapped.compute_reward
    assert wrapped.get_wrapper_attr("compute_reward") == wrapped.compute_reward


def test_vector_env_is_encoded_in_one_batch():
    envs = gym.vector.SyncVectorEnv([lambda: make_dmc("cartpole", "swingup", size=SIZE) for _ in range(2)])
    wrapped = EncodedVectorObservation(envs, make_encoder("fast", 9, SIZE, 6))
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (2, 6) and wrapped.observation_space.contains(obs)
    single = EncodedObservation(make_dmc("cartpole", "swingup", size=SIZE), wrapped._encode.encoder)
    np.testing.assert_allclose(single.reset(seed=0)[0], obs[0], rtol=1e-5)


def test_vector_goal_env_encodes_every_image_entry_in_one_batch():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("ssrl/Push-v0", size=SIZE) for _ in range(2)])
    wrapped = EncodedVectorObservation(envs, make_encoder("fast", 3, SIZE, 5))
    obs, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.contains(obs)
    assert obs["observation"].shape == obs["desired_goal"].shape == (2, 5)
    single = EncodedObservation(gym.make("ssrl/Push-v0", size=SIZE), wrapped._encode.encoder)
    first, _ = single.reset(seed=0)
    for key in ("observation", "achieved_goal", "desired_goal"):
        np.testing.assert_allclose(first[key], obs[key][0], rtol=1e-5, atol=1e-6)
    reward = wrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], {})
    np.testing.assert_allclose(reward, -np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"], axis=-1), rtol=1e-6)


def test_temporal_encoder_reads_only_the_strided_frames():
    enc = TemporalEncoder("fast", n_frames=2, stride=2, image_size=SIZE, feature_dim=8)
    assert enc.input_shape == (9, SIZE, SIZE)
    x = torch.randint(0, 255, (2, 9, SIZE, SIZE), dtype=torch.uint8)
    y = x.clone()
    y[:, 3:6] = 0  # the middle frame is skipped at stride 2
    torch.testing.assert_close(enc(x), enc(y))
    y[:, 6:9] = 0
    assert not torch.allclose(enc(x), enc(y))


def test_pretrain_resumes_identically_and_protects_finished_runs(cartpole, tmp_path, monkeypatch):
    cfg = METHODS["tcn"]
    full, _ = pretrain("tcn", cartpole, out=tmp_path / "full", steps=12, checkpoint_every=4, config=cfg, progress=False)
    from ssrl.representations.control.tcn import TCN

    real = TCN.loss
    calls = {"n": 0}

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(TCN, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        pretrain("tcn", cartpole, out=tmp_path / "killed", steps=12, checkpoint_every=4, config=cfg, progress=False)
    monkeypatch.setattr(TCN, "loss", real)
    resumed, summary = pretrain("tcn", cartpole, out=tmp_path / "killed", steps=12, checkpoint_every=4, config=cfg, progress=False)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert summary["steps"] == 12
    with pytest.raises(FileExistsError, match="finished"):
        pretrain("tcn", cartpole, out=tmp_path / "full", steps=12, config=cfg, progress=False)


def test_data_requirements_are_checked_with_clear_errors(cartpole):
    single = RolloutData(cartpole.episodes, cameras=["fixed"])
    with pytest.raises(ValueError, match="2 cameras"):
        build("tcn", single, arch="fast")
    with pytest.raises(ValueError, match="grasp records"):
        build("grasp2vec", cartpole)
    assert build("tcn", single, arch="fast", single_view=True).config.single_view


@pytest.mark.parametrize("name,steps", [("tcn", 200), ("mftcn", 200), ("deepmdp", 200), ("dbc", 200)])
def test_trained_encoder_probe_beats_random_init(name, steps, probe_data):
    train, test = probe_data.split(0.25)
    cfg = dict(METHODS[name], latent_dim=8, batch_size=32)
    torch.manual_seed(1)
    random_score = probe(build(name, train, **cfg), train, test)
    trained, _ = pretrain(name, train, steps=steps, config=cfg, seed=1, progress=False)
    trained_score = probe(trained, train, test)
    assert trained_score["target"] == "features"
    assert trained_score["knn_mse"] < random_score["knn_mse"]
    assert trained_score["r2"] > random_score["r2"]


def test_grasp2vec_retrieves_held_out_objects_better_than_random_init(tmp_path_factory):
    from ssrl.representations.control.grasp2vec import retrieval_accuracy

    out = tmp_path_factory.mktemp("data") / "grasp_probe"
    collect("ssrl/Grasp-v0", policy="centred_grasp", episodes=16, out=out, size=SIZE, seed=1,
            env_kwargs={"triplet_size": SIZE}, progress=False)
    train, test = RolloutData(out).split(0.25)
    cfg = dict(METHODS["grasp2vec"], frame_stack=1)
    torch.manual_seed(0)
    random_acc = retrieval_accuracy(build("grasp2vec", train, **cfg), test, batch=8)
    trained, _ = pretrain("grasp2vec", train, steps=300, config=cfg, seed=0, progress=False)
    trained_acc = retrieval_accuracy(trained, test, batch=8)
    assert trained_acc > random_acc + 0.1, (trained_acc, random_acc)


def test_mftcn_fills_its_batch_from_several_episodes_with_pairs_far_apart(cartpole):
    rep = build("mftcn", cartpole, **METHODS["mftcn"])
    rng = np.random.default_rng(0)
    for size in (3, 32):
        batch = rep.sample_batch(cartpole, size, rng)
        assert batch["anchor"].shape[0] == batch["positive"].shape[0] == size
        assert not np.array_equal(batch["anchor"], batch["positive"])  # two different cameras
    # One episode of 41 frames holds 5 times 8 frames apart: a batch of 32 needs several.
    assert cartpole.ep_len.max() + 1 < 32 * rep.config.min_gap


def test_dbc_trains_jointly_with_sac_through_the_aux_hook():
    from ssrl.agents import SAC
    from ssrl.representations import make_aux_objective

    env = make_dmc("cartpole", "swingup", size=SIZE, task_kwargs={"time_limit": 0.4})
    aux = make_aux_objective("dbc", env, latent_dim=8)
    agent = SAC(env, aux=aux, feature_dim=8, hidden_dims=(16,), batch_size=8, buffer_size=200, learning_starts=10)
    models = [p.clone() for p in aux.parameters()]
    agent.learn(8 * 20)
    assert agent.num_updates > 5
    assert all(not torch.equal(a, b) for a, b in zip(models, aux.parameters()))
    batch = agent.replay.sample(8)
    metrics = agent.update(batch)
    assert {"aux_loss", "aux/bisim_loss", "aux/transition_nll", "aux/reward_loss"} <= set(metrics)
    # The bisimulation gradient reaches the agent's encoder: with the critic loss removed, the
    # aux loss alone still moves it.
    obs = agent.obs_to_tensor(batch.obs)
    z = agent.encoder(obs)
    loss, _ = aux.latent_loss(z, torch.tensor(batch.action), torch.tensor(batch.reward), z.detach(), torch.ones(8))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())


def test_pretrain_fits_the_vae_prior_into_the_checkpoint(cartpole, tmp_path):
    pretrain("beta-vae", cartpole, out=tmp_path / "vae", steps=3, config={"latent_dim": 4}, progress=False)
    rep = load_representation(tmp_path / "vae" / "model.pt")
    goals = rep.sample_goals(5, np.random.default_rng(0))
    z = rep.embed(cartpole.stack(np.arange(len(cartpole)), None, 1))
    assert goals.shape == (5, 4)
    np.testing.assert_allclose(rep.prior_mu.numpy(), z.mean(0), rtol=1e-3, atol=1e-4)
