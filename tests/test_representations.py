"""Representations: registry, data samplers, each method learns, checkpoints, wrapper, probes."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import ssrl.representations as reps
from ssrl.envs import make_dmc
from ssrl.envs.rollouts import Episode, collect
from ssrl.representations import EncodedObservation, EncodedVectorObservation, RolloutData, load_representation
from ssrl.representations.backbones import TemporalEncoder, make_encoder
from ssrl.representations.pretrain import build, pretrain
from ssrl.representations.probe import probe

SIZE = 48


@pytest.fixture(scope="session")
def cartpole(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cartpole"
    collect(
        "ssrl/cartpole-swingup-v0",
        episodes=4,
        out=out,
        cameras=["fixed", "lookatcart"],
        size=SIZE,
        max_steps=40,
        seed=0,
        progress=False,
    )
    return RolloutData(out)


@pytest.fixture(scope="session")
def probe_data(tmp_path_factory):
    """Enough varied states for a linear probe: 24 episodes of held random actions."""
    out = tmp_path_factory.mktemp("data") / "probe"
    collect(
        "ssrl/cartpole-swingup-v0",
        policy="sticky_random",
        episodes=24,
        out=out,
        cameras=["fixed", "lookatcart"],
        size=SIZE,
        max_steps=100,
        seed=0,
        progress=False,
    )
    return RolloutData(out)


@pytest.fixture(scope="session")
def grasps(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "grasp"
    collect(
        "ssrl/Grasp-v0",
        policy="centred_grasp",
        episodes=3,
        out=out,
        size=SIZE,
        seed=0,
        env_kwargs={"triplet_size": SIZE},
        progress=False,
    )
    return RolloutData(out)


METHODS = {
    "tcn": dict(arch="fast", latent_dim=16),
    "mftcn": dict(arch="fast", latent_dim=16, batch_size=16),  # 4 x 41 frames hold 24 clips 8 apart
    "deepmdp": dict(arch="fast", latent_dim=16, batch_size=32),
    "dbc": dict(arch="fast", latent_dim=16, batch_size=32),
    "grasp2vec": dict(arch="fast", latent_dim=16, batch_size=16),
}


def data_for(name, cartpole, grasps):
    return grasps if name == "grasp2vec" else cartpole


def labelled_data(n_episodes, n_steps, cameras, size=20):
    """Synthetic episodes whose pixels say what they show: in every frame, channel 0 holds its
    episode, channel 1 its time step, channel 2 its camera's index."""
    episodes = []
    for e in range(n_episodes):
        frames = {}
        for c, camera in enumerate(cameras):
            f = np.zeros((n_steps + 1, 3, size, size), np.uint8)
            f[:, 0], f[:, 1], f[:, 2] = e, np.arange(n_steps + 1)[:, None, None], c
            frames[camera] = f
        episodes.append(
            Episode(
                frames=frames,
                action=np.zeros((n_steps, 1), np.float32),
                reward=np.zeros(n_steps, np.float32),
                terminated=np.zeros(n_steps, bool),
                truncated=np.zeros(n_steps, bool),
                state=np.zeros((n_steps + 1, 1), np.float32),
                info={},
            )
        )
    return RolloutData(episodes)


def newest(stacks):
    """(episode, time, camera) of the newest frame of each stack of :func:`labelled_data`."""
    return tuple(stacks[:, i - 3, 0, 0].astype(int) for i in range(3))


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
    raw, _ = make_dmc("cartpole", "swingup", size=SIZE).reset(seed=0)  # the same first frames
    with torch.no_grad():
        np.testing.assert_allclose(obs, encoder(torch.as_tensor(raw[None]))[0].numpy(), rtol=1e-5, atol=1e-6)
    # A single-frame encoder on a 3-frame env: each frame encoded, latents concatenated oldest first.
    frame_encoder = make_encoder("fast", 3, SIZE, 5)
    per_frame = EncodedObservation(env, frame_encoder)
    obs, _ = per_frame.reset(seed=0)
    assert per_frame.observation_space.contains(obs) and obs.shape == (15,)
    with torch.no_grad():
        expected = frame_encoder(torch.as_tensor(raw.reshape(3, 3, SIZE, SIZE))).flatten().numpy()
    np.testing.assert_allclose(obs, expected, rtol=1e-5, atol=1e-6)
    obs, *_ = per_frame.step(np.zeros(1))
    assert per_frame.observation_space.contains(obs) and obs.shape == (15,)
    from stable_baselines3 import SAC as SB3SAC

    model = SB3SAC(
        "MlpPolicy",
        wrapped,
        learning_starts=20,
        batch_size=8,
        buffer_size=100,
        policy_kwargs=dict(net_arch=[16]),
        device="cpu",
    )
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
    single = EncodedObservation(make_dmc("cartpole", "swingup", size=SIZE), wrapped._encode.module.encoder)
    np.testing.assert_allclose(single.reset(seed=0)[0], obs[0], rtol=1e-5)


def test_vector_goal_env_encodes_every_image_entry_in_one_batch():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("ssrl/Push-v0", size=SIZE) for _ in range(2)])
    encoder = make_encoder("fast", 3, SIZE, 5)
    wrapped = EncodedVectorObservation(envs, encoder)
    obs, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.contains(obs)
    assert obs["observation"].shape == obs["desired_goal"].shape == (2, 5)
    single = EncodedObservation(gym.make("ssrl/Push-v0", size=SIZE), encoder)
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
    resumed, summary = pretrain(
        "tcn", cartpole, out=tmp_path / "killed", steps=12, checkpoint_every=4, config=cfg, progress=False
    )
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert summary["steps"] == 12
    with pytest.raises(FileExistsError, match="finished"):
        pretrain("tcn", cartpole, out=tmp_path / "full", steps=12, config=cfg, progress=False)


def test_pretrain_in_bf16_runs_the_loss_under_autocast_and_resumes_only_in_bf16(cartpole, tmp_path, monkeypatch):
    import json

    cfg = METHODS["tcn"]
    from ssrl.representations.control.tcn import TCN

    real, seen = TCN.loss, []

    def spying(self, batch):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(self, batch)

    monkeypatch.setattr(TCN, "loss", spying)
    fp32, s32 = pretrain("tcn", cartpole, out=tmp_path / "fp32", steps=3, config=cfg, progress=False)
    bf16, s16 = pretrain("tcn", cartpole, out=tmp_path / "bf16", steps=3, config=cfg, progress=False, precision="bf16")
    assert seen == [False] * 3 + [True] * 3
    assert (s32["precision"], s16["precision"]) == ("fp32", "bf16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # the model stays fp32
    # Same data and initial weights: the first losses agree to bf16's precision, not exactly.
    assert s16["first_loss"] != s32["first_loss"]
    assert s16["first_loss"] == pytest.approx(s32["first_loss"], rel=2e-2)
    # a bf16 run resumes only in bf16, an fp32 one only in fp32 ...
    with pytest.raises(FileExistsError, match="precision"):
        pretrain("tcn", cartpole, out=tmp_path / "bf16", steps=6, config=cfg, progress=False)
    with pytest.raises(FileExistsError, match="precision"):
        pretrain("tcn", cartpole, out=tmp_path / "fp32", steps=6, config=cfg, progress=False, precision="bf16")
    # ... and a run from before the option (no precision recorded) resumes as the fp32 run it was
    run_json = tmp_path / "fp32" / "run.json"
    run_json.write_text(json.dumps({k: v for k, v in json.loads(run_json.read_text()).items() if k != "precision"}))
    _, more = pretrain("tcn", cartpole, out=tmp_path / "fp32", steps=6, config=cfg, progress=False)
    assert more["steps"] == 6


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
    collect(
        "ssrl/Grasp-v0",
        policy="centred_grasp",
        episodes=16,
        out=out,
        size=SIZE,
        seed=1,
        env_kwargs={"triplet_size": SIZE},
        progress=False,
    )
    train, test = RolloutData(out).split(0.25)
    cfg = dict(METHODS["grasp2vec"], frame_stack=1)
    torch.manual_seed(0)
    random_acc = retrieval_accuracy(build("grasp2vec", train, **cfg), test, batch=8)
    trained, _ = pretrain("grasp2vec", train, steps=300, config=cfg, seed=0, progress=False)
    trained_acc = retrieval_accuracy(trained, test, batch=8)
    assert trained_acc > random_acc + 0.1, (trained_acc, random_acc)


def test_mftcn_fills_its_batch_from_several_episodes_with_pairs_far_apart():
    """Episodes drawn without replacement: no clip twice in a batch, clips of one episode at
    least min_gap apart (the old sampler drew episodes with replacement: about 1 batch of 10 at
    this size repeated an episode, giving identical or too-close "negatives")."""
    data = labelled_data(100, 125, ["a", "b"])  # 126 frames: 125 // 8 + 1 = 16 clips 8 apart each
    rep = reps.make("mftcn", (9, 20, 20), arch="dmc", latent_dim=4)
    assert rep.config.min_gap == 8 and rep.config.frame_stack == 3
    rng = np.random.default_rng(0)
    for i in range(300):
        size = (64, 20, 5)[i % 3]
        batch = rep.sample_batch(data, size, rng)
        ep, t, cam = newest(batch["anchor"])
        ep_p, t_p, cam_p = newest(batch["positive"])
        assert len(ep) == size
        # Positives: the same instant from the other camera.
        np.testing.assert_array_equal(ep_p, ep)
        np.testing.assert_array_equal(t_p, t)
        assert (cam_p != cam).all() and len(set(cam)) == 1
        # Each clip: the 3 frames of one episode ending at t, clamped at the episode's start.
        np.testing.assert_array_equal(batch["anchor"][:, 1::3, 0, 0], np.maximum(t[:, None] + [-2, -1, 0], 0))
        assert (batch["anchor"][:, 0::3, 0, 0] == ep[:, None]).all()
        assert len(set(zip(ep, t))) == size  # no clip twice
        for e in np.unique(ep):
            assert (np.diff(np.sort(t[ep == e])) >= 8).all(), (e, np.sort(t[ep == e]))
        # Each episode gives up to 16 clips: a batch of 64 spans exactly 4 episodes, one of 20 two.
        assert len(np.unique(ep)) == -(-size // 16)


def test_mftcn_batch_larger_than_the_data_holds_names_the_numbers():
    data = labelled_data(4, 40, ["a", "b"])  # 41 frames: 40 // 8 + 1 = 6 clips 8 apart, 24 in all
    rep = reps.make("mftcn", (9, 20, 20), arch="dmc", latent_dim=4)
    batch = rep.sample_batch(data, 24, np.random.default_rng(0))
    ep, t, _ = newest(batch["anchor"])
    for e in range(4):  # every episode, each at 0, 8, ..., 40: the only 6 times 8 apart
        np.testing.assert_array_equal(np.sort(t[ep == e]), [0, 8, 16, 24, 32, 40])
    with pytest.raises(ValueError, match="batch of 25 instants at least 8 frames apart.*hold 24"):
        rep.sample_batch(data, 25, np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_gap must be >= 1"):
        reps.make("mftcn", (9, 20, 20), arch="dmc", min_gap=0)


@pytest.mark.parametrize("loss", ["triplet", "npairs"])
def test_tcn_pairs_three_cameras_in_small_batches(loss):
    """With 3 cameras a batch of 8 often leaves a camera unused as anchor or positive (42 of 200
    batches), which used to stack an empty index and raise."""
    data = labelled_data(3, 30, ["a", "b", "c"], size=16)
    assert data.stack(np.array([], int), "a", 3).shape == (0, 9, 16, 16)
    rep = reps.make("tcn", (9, 16, 16), arch="dmc", latent_dim=4, loss=loss)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        batch = rep.sample_batch(data, 8, rng)
        ep, t, cam = newest(batch["anchor"])
        ep_p, t_p, cam_p = newest(batch["positive"])
        np.testing.assert_array_equal(ep_p, ep)
        np.testing.assert_array_equal(t_p, t)
        assert (cam_p != cam).all()
        seen |= set(zip(cam, cam_p))
        if loss == "triplet":  # the anchor's camera, same episode, more than 8 frames away
            ep_n, t_n, cam_n = newest(batch["negative"])
            np.testing.assert_array_equal(ep_n, ep)
            np.testing.assert_array_equal(cam_n, cam)
            assert (np.abs(t_n - t) > rep.config.negative_margin).all()
        else:  # 8 distinct instants of one episode
            assert "negative" not in batch and len(set(ep)) == 1 and len(set(t)) == 8
    assert seen == {(a, b) for a in range(3) for b in range(3) if a != b}


def test_pretrain_fits_the_vae_prior_into_the_checkpoint(cartpole, tmp_path):
    from ssrl.representations.pretrain import SPLIT_SEED

    pretrain("beta-vae", cartpole, out=tmp_path / "vae", steps=3, config={"latent_dim": 4}, progress=False)
    rep = load_representation(tmp_path / "vae" / "model.pt")
    goals = rep.sample_goals(5, np.random.default_rng(0))
    assert goals.shape == (5, 4)
    # The prior is fitted on the episodes pretraining trained on (holdout 0.2 keeps 1 of 4 out).
    train, held_out = cartpole.split(0.2, seed=SPLIT_SEED)
    assert (train.num_episodes, held_out.num_episodes) == (3, 1)
    z = rep.embed(train.stack(np.arange(len(train)), None, 1))
    np.testing.assert_allclose(rep.prior_mu.numpy(), z.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(rep.prior_std.numpy(), z.std(0), rtol=1e-3, atol=1e-4)


def test_a_pooled_encoder_takes_patches_and_full_frames_with_the_same_weights():
    pooled = make_encoder("fast", 3, 84, 8, pool="mean")
    frames = torch.randint(0, 256, (2, 3, 84, 84), dtype=torch.uint8)
    patch = frames[:, :, :42, :42]
    assert pooled(frames).shape == pooled(patch).shape == (2, 8)
    # Global average pooling by hand: the mean of the trunk's feature map, then Linear + LayerNorm.
    features = pooled.trunk(patch)
    by_hand = pooled.norm(pooled.fc(features.mean(dim=(2, 3))))
    torch.testing.assert_close(pooled(patch), by_hand)
    flat = make_encoder("fast", 3, 84, 8)
    with pytest.raises(ValueError, match="expects images of shape"):
        flat(patch)
    with pytest.raises(ValueError, match="unknown pooling"):
        make_encoder("fast", 3, 84, 8, pool="max")


def test_the_trunk_sees_the_same_image_values_whatever_the_layout_and_precision():
    """network_image converts uint8 straight to the autocast dtype: bfloat16 holds 0..255 exactly
    and rounds the float32 quotient x / 255 once, as autocast's cast of the float32 image did, so
    the convolutions see the same values as before; a shifted (channels-last) batch encodes the
    same as its contiguous copy."""
    from ssrl.agents.augment import random_shift
    from ssrl.representations.backbones import network_image, to_float_image

    x = torch.arange(256, dtype=torch.uint8).repeat(2 * 9 * 4 * 4).reshape(2, 9, 64, 64)  # every byte value
    as_float = to_float_image(x)
    assert torch.equal(network_image(x), as_float) and network_image(x).is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = network_image(x)
    assert in_bf16.dtype == torch.bfloat16 and torch.equal(in_bf16, as_float.to(torch.bfloat16))
    encoder = make_encoder("fast", 9, 64, 8)
    shifted = random_shift(x, 4, torch.Generator().manual_seed(0))
    assert shifted.is_contiguous(memory_format=torch.channels_last)
    # pinned to the path before the change: two gathers, float32, a channels-last copy, autocast's cast
    from ssrl.agents.augment import shift_by_gathers

    shift = torch.randint(0, 9, (2, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifted, shift_by_gathers(x, shift, 4))
    for precision in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
            before = encoder.trunk.net(
                to_float_image(shift_by_gathers(x, shift, 4)).contiguous(memory_format=torch.channels_last)
            )
            assert torch.equal(encoder.trunk(shifted), before)

    from ssrl.representations.wrappers import StackedFramesEncoder

    per_frame = StackedFramesEncoder(make_encoder("fast", 3, 64, 8), (9, 64, 64))  # 3 frames encoded apart
    for precision in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
            assert torch.equal(encoder(shifted), encoder(shifted.contiguous()))
            by_frame = torch.cat([per_frame.encoder(shifted[:, 3 * k : 3 * k + 3].contiguous()) for k in range(3)], 1)
            assert torch.equal(per_frame(shifted), by_frame)


def test_keypoint_pooling_gives_each_channels_expected_coordinates_by_hand():
    from ssrl.representations.backbones import spatial_softmax

    features = torch.full((1, 2, 3, 5), -1e4)
    features[0, 0, 2, 4] = 0.0  # channel 0: all mass bottom right
    features[0, 1, 0, 0] = features[0, 1, 0, 2] = 0.0  # channel 1: half top left, half top centre
    points = spatial_softmax(features)
    # [x_0, x_1, y_0, y_1]; columns at x in {-1, -0.5, 0, 0.5, 1}, rows at y in {-1, 0, 1}.
    torch.testing.assert_close(points, torch.tensor([[1.0, -0.5, 1.0, -1.0]]))
    encoder = make_encoder("fast", 3, 64, 8, pool="keypoints")
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert encoder.fc.in_features == 2 * encoder.spatial_shape[0]
    by_hand = encoder.norm(encoder.fc(spatial_softmax(encoder.trunk(frames))))
    torch.testing.assert_close(encoder(frames), by_hand)


def test_grasp2vec_localisation_is_scored_against_the_grasped_objects_footprint(tmp_path):
    from types import SimpleNamespace

    from ssrl.representations.control.grasp2vec import localisation, object_masks

    pre = np.zeros((3, 3, 10, 10), np.uint8)
    pre[:, :, 2:4, 5:9] = 200  # an object of 2 x 4 pixels, gone after each grasp
    post = pre.copy()
    post[:, :, 2:4, 5:9] = 0
    post[2, :, 9, 9] = 10  # a change below the threshold is not footprint
    masks = object_masks(pre, post)
    assert masks.sum() == 3 * 8 and masks[:, 2:4, 5:9].all()
    data = SimpleNamespace(info={"s_pre": pre, "s_post": post, "o": pre, "grasp_success": np.array([1, 1, 1, 0])[:3]})

    class Peaked:  # a heatmap that is hottest at one pixel
        def __init__(self, y, x):
            self.y, self.x = y, x

        def heatmap_image(self, obj, scene):
            heat = np.zeros((len(scene), 10, 10), np.float32)
            heat[:, self.y, self.x] = 1.0
            return heat

    on, off = localisation(Peaked(3, 6), data), localisation(Peaked(0, 0), data)
    assert on == {"heatmap_hit": 1.0, "heatmap_chance": pytest.approx(0.08), "heatmap_mass": 1.0}
    assert off["heatmap_hit"] == 0.0 and off["heatmap_mass"] == 0.0 and off["heatmap_chance"] == pytest.approx(0.08)


def test_grasp2vec_writes_heatmaps_of_held_out_grasps(tmp_path_factory, tmp_path):
    out = tmp_path_factory.mktemp("data") / "grasp_pictures"
    collect("ssrl/Grasp-v0", policy="centred_grasp", episodes=2, out=out, size=SIZE, seed=1,
            env_kwargs={"triplet_size": SIZE}, progress=False)  # fmt: skip
    data = RolloutData(out)
    rep = build("grasp2vec", data, **dict(METHODS["grasp2vec"], frame_stack=1))
    (path,) = rep.pictures(data, tmp_path)
    import imageio.v3 as iio

    image = iio.imread(path)
    n = min(6, int(data.info["grasp_success"].sum()))
    assert image.shape == (n * (2 * SIZE + 2) - 2, 4 * (2 * SIZE + 2) - 2, 3)  # 4 columns of doubled frames
    scores = rep.extra_scores(data)
    assert {"retrieval_acc", "heatmap_hit", "heatmap_chance", "heatmap_mass"} <= set(scores)
    assert 0 < scores["heatmap_chance"] < 0.5  # a footprint is found, smaller than the bin
