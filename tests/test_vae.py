"""beta-VAE and CC-VAE: ELBO terms against hand computations, training on real Push frames,
gradients, checkpoints, the RL wrapper, probes, prior fitting and context-conditioned goals."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import collect
from ssrl.representations import EncodedObservation, load_representation, make
from ssrl.representations.control.ccvae import DEFAULT_CC_BETA, ContextEncodedObservation
from ssrl.representations.control.vae import DEFAULT_BETA, reconstruction_nll
from ssrl.representations.data import RolloutData
from ssrl.representations.pretrain import build, pretrain
from ssrl.representations.probe import probe

SIZE = 48
METHODS = ("beta-vae", "cc-vae")


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    """20 short push_explore episodes of PushRandomObject (a new object every episode) on the
    whole table (varied states for the probes), 48 px."""
    out = tmp_path_factory.mktemp("push") / "data"
    collect(
        "ssrl/PushRandomObject-v0",
        policy="push_explore",
        episodes=20,
        out=out,
        size=SIZE,
        seed=0,
        max_steps=30,
        env_kwargs={"layout": "wide"},
        progress=False,
    )
    data = RolloutData(out)
    train, test = data.split(0.25, seed=0)
    return data, train, test


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """Push episodes whose table top has one random colour per episode: contexts that differ a lot."""
    out = tmp_path_factory.mktemp("coloured") / "data"
    collect(
        "ssrl/PushRandomObject-v0",
        policy="push_explore",
        episodes=6,
        out=out,
        size=SIZE,
        seed=0,
        max_steps=20,
        env_kwargs={"distractor": "color"},
        progress=False,
    )
    return RolloutData(out)


@pytest.fixture(scope="module")
def trained(push):
    """Each VAE trained for 300 steps on the training episodes (and its prior fitted)."""
    _, train, _ = push
    reps = {}
    for method in METHODS:
        rep, _ = pretrain(method, train, steps=300, batch_size=32, seed=0, progress=False)
        rep.fit_prior(train)
        reps[method] = rep
    return reps


def _entropy(images):
    """Mean over the batch of the summed binary entropy of the pixels (the Bernoulli NLL's minimum)."""
    p = images.double().numpy().reshape(len(images), -1) / 255
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0) + np.where(p < 1, (1 - p) * np.log(1 - p), 0))
    return h.sum(1).mean()


def _eval_batch(rep, data, n=16, seed=1):
    batch = rep.to_batch(rep.sample_batch(data, n, np.random.default_rng(seed)))
    batch["eps"] = torch.randn(n, rep.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    return batch


# -- hand computations ---------------------------------------------------------------------------


def test_reconstruction_nll_by_hand():
    target = torch.tensor([[0.0, 1.0, 0.5, 0.25]])
    zeros = torch.zeros(1, 4)
    # Bernoulli: p = sigmoid(0) = 1/2 for every pixel, so -log p(s) = 4 log 2 whatever s in [0, 1].
    assert reconstruction_nll(zeros, target, "bernoulli").item() == pytest.approx(4 * math.log(2))
    # Gaussian, unit variance: 1/2 sum (s - 1/2)^2 = 1/2 (1/4 + 1/4 + 0 + 1/16).
    assert reconstruction_nll(zeros, target, "gaussian").item() == pytest.approx(0.5 * (0.25 + 0.25 + 0 + 0.0625))
    logits = torch.tensor([[2.0, -1.0, 0.0, 3.0]])
    p = 1 / (1 + np.exp(-logits.numpy()[0]))
    s = target.numpy()[0]
    bce = -(s * np.log(p) + (1 - s) * np.log(1 - p)).sum()
    assert reconstruction_nll(logits, target, "bernoulli").item() == pytest.approx(bce, rel=1e-6)
    assert reconstruction_nll(logits, target, "gaussian").item() == pytest.approx(0.5 * ((s - p) ** 2).sum(), rel=1e-6)
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_nll(logits, target, "laplace")


def _np(t):
    return t.detach().double().numpy()


def _bce(logits, x):
    p = 1 / (1 + np.exp(-logits))
    return -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(1)


def _sse(logits, x):
    return 0.5 * ((x - 1 / (1 + np.exp(-logits))) ** 2).reshape(len(x), -1).sum(1)


def _kl(mu, logvar):
    return 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum(1)


def _heads_by_hand(enc, h):
    """mu and the floored logvar of a GaussianEncoder from its input features h, in numpy."""
    mu = h @ _np(enc.fc_mu.weight).T + _np(enc.fc_mu.bias)
    logvar = math.log(1e-3) + np.abs(h @ _np(enc.fc_logvar.weight).T + _np(enc.fc_logvar.bias))
    return mu, logvar


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_beta_vae_loss_equals_hand_computation(likelihood):
    torch.manual_seed(0)
    rep = make("beta-vae", (3, 16, 16), arch="dmc", latent_dim=3, likelihood=likelihood, beta=0.3)
    with torch.no_grad():  # heads with real weights, so the logvar floor and mu matter
        for head in (rep.encoder.fc_mu, rep.encoder.fc_logvar):
            head.weight.normal_(0, 0.05)
            head.bias.normal_(0, 0.5)
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    eps = torch.randn(2, 3)
    loss, metrics = rep.loss({"obs": x, "eps": eps})

    xs = x.double().numpy() / 255
    h = _np(rep.encoder.trunk(x).flatten(1))
    mu, logvar = _heads_by_hand(rep.encoder, h)
    assert np.allclose(mu, _np(rep.encoder(x)), atol=1e-5)  # e(s) is the mean
    z = mu + np.exp(logvar / 2) * eps.double().numpy()
    logits = _np(rep.decoder(torch.as_tensor(z, dtype=torch.float32)))
    recon = (_bce if likelihood == "bernoulli" else _sse)(logits, xs)
    kl = _kl(mu, logvar)
    assert metrics["recon"].item() == pytest.approx(recon.mean(), rel=1e-5)
    assert metrics["kl"].item() == pytest.approx(kl.mean(), rel=1e-5)
    assert loss.item() == pytest.approx((recon + 0.3 * kl).mean(), rel=1e-5)


def test_ccvae_loss_equals_hand_computation():
    torch.manual_seed(0)
    rep = make("cc-vae", (3, 16, 16), arch="dmc", latent_dim=2, context_dim=3, beta=0.5)
    with torch.no_grad():
        for head in (rep.posterior.fc_mu, rep.posterior.fc_logvar):
            head.weight.normal_(0, 0.05)
            head.bias.normal_(0, 0.5)
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    x0 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    eps = torch.randn(2, 2)
    loss, metrics = rep.loss({"obs": x, "context": x0, "eps": eps})

    c = _np(rep.context_encoder(x0))
    h = np.concatenate([_np(rep.posterior.trunk(x).flatten(1)), c], 1)  # q(z | s, c) sees c
    mu, logvar = _heads_by_hand(rep.posterior, h)
    z = mu + np.exp(logvar / 2) * eps.double().numpy()
    logits = _np(rep.decoder(torch.as_tensor(np.concatenate([z, c], 1), dtype=torch.float32)))
    context_logits = _np(rep.context_decoder(torch.as_tensor(c, dtype=torch.float32)))
    recon = _bce(logits, x.double().numpy() / 255)
    recon0 = _bce(context_logits, x0.double().numpy() / 255)
    kl = _kl(mu, logvar)
    assert metrics["recon"].item() == pytest.approx(recon.mean(), rel=1e-5)
    assert metrics["recon_context"].item() == pytest.approx(recon0.mean(), rel=1e-5)
    assert metrics["kl"].item() == pytest.approx(kl.mean(), rel=1e-5)
    # The extra term is the negative log-likelihood of s_0 (added), as in railrl's DeltaCVAE.
    assert loss.item() == pytest.approx((recon + recon0 + 0.5 * kl).mean(), rel=1e-5)
    # The RL latent with the episode's context is [mu(s | c(s_0)), c(s_0)].
    assert np.allclose(_np(rep.encoder(x, x0)), np.concatenate([mu, c], 1), atol=1e-5)


def test_logvar_floor_keeps_kl_finite():
    rep = make("beta-vae", (3, 16, 16), arch="dmc", latent_dim=4, min_variance=1e-3)
    with torch.no_grad():
        rep.encoder.fc_logvar.weight.zero_()
        rep.encoder.fc_logvar.bias.copy_(torch.tensor([-20.0, -3.0, 0.0, 2.0]))
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    _, logvar = rep.encoder.distribution(x)
    # logvar = log(1e-3) + |pre-activation|: never below the floor, whatever the sign.
    expected = math.log(1e-3) + torch.tensor([20.0, 3.0, 0.0, 2.0])
    assert torch.allclose(logvar, expected.expand(3, -1))
    assert (logvar >= math.log(1e-3) - 1e-6).all()
    loss, _ = rep.loss({"obs": x})
    assert torch.isfinite(loss)


def test_configs_and_defaults():
    assert make("beta-vae", (3, 48, 48)).config.beta == DEFAULT_BETA["bernoulli"] == 10 / 128
    assert make("beta-vae", (3, 48, 48), likelihood="gaussian").config.beta == DEFAULT_BETA["gaussian"]
    assert make("beta-vae", (3, 48, 48), likelihood="gaussian", beta=2.0).config.beta == 2.0
    rep = make("cc-vae", (3, 48, 48))
    assert rep.config.beta == DEFAULT_CC_BETA["bernoulli"] == 1.0
    assert make("cc-vae", (3, 48, 48), likelihood="gaussian").config.beta == DEFAULT_CC_BETA["gaussian"]
    assert rep.config.frame_stack == 1 and rep.latent_dim == rep.config.latent_dim + rep.config.context_dim
    with pytest.raises(ValueError, match="likelihood"):
        make("beta-vae", (3, 48, 48), likelihood="laplace")
    with pytest.raises(ValueError, match="context_dim"):
        make("cc-vae", (3, 48, 48), context_dim=0)


@pytest.mark.parametrize("arch,size", [("fast", 48), ("dmc", 20), ("resnet", 24)])
def test_decoder_mirrors_every_trunk(arch, size):
    rep = make("beta-vae", (6, size, size), arch=arch, latent_dim=5, frame_stack=2)
    images = rep.decode(np.random.default_rng(0).standard_normal((2, 5)))
    assert images.shape == (2, 6, size, size)
    assert images.min() >= 0 and images.max() <= 1


# -- training on real frames ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_twenty_steps_lower_the_loss(method, push):
    _, train, _ = push
    torch.manual_seed(0)
    rep = build(method, train)
    batch = _eval_batch(rep, train)
    before = rep.loss(batch)[0].item()
    # The Bernoulli NLL of a [0, 1] pixel s is at least its entropy H(s): measure the loss above
    # that floor (most of the summed BCE of a tan table is irreducible).
    floor = sum(_entropy(batch[k]) for k in ("obs", "context") if k in batch)
    opt = torch.optim.Adam(rep.parameters(), lr=rep.config.lr)
    rng = np.random.default_rng(0)
    for _ in range(20):
        loss, _ = rep.loss(rep.to_batch(rep.sample_batch(train, 32, rng)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = rep.loss(batch)[0].item()
    assert after - floor < 0.85 * (before - floor), (before, after, floor)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_the_encoder(method, push):
    _, train, _ = push
    torch.manual_seed(0)
    rep = build(method, train)
    loss, _ = rep.loss(_eval_batch(rep, train, n=4))
    loss.backward()
    for name, p in rep.encoder.named_parameters():  # CC-VAE: posterior and context encoder
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert rep.decoder.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_round_trip(method, trained, push, tmp_path):
    _, _, test = push
    rep = trained[method]
    rep.save(tmp_path / "model.pt")
    loaded = load_representation(tmp_path / "model.pt")
    assert type(loaded) is type(rep) and loaded.config == rep.config
    obs = test.stack(np.arange(20), None, 1)
    assert np.array_equal(loaded.embed(obs), rep.embed(obs))
    for buffer in ("prior_mu", "prior_std", "prior_fitted"):
        assert torch.equal(getattr(loaded, buffer), getattr(rep, buffer)), buffer
    assert bool(loaded.prior_fitted)
    if method == "beta-vae":
        goals = [r.sample_goals(5, np.random.default_rng(3)) for r in (rep, loaded)]
        assert np.array_equal(*goals)
        assert np.array_equal(rep.decode(goals[0]), loaded.decode(goals[1]))
    else:
        first = test.first_frame(np.arange(3))
        goals = [r.sample_goals(first, np.random.default_rng(3)) for r in (rep, loaded)]
        assert np.array_equal(*goals)
        assert np.array_equal(loaded.episode_latents(test, np.arange(20)), rep.episode_latents(test, np.arange(20)))


@pytest.mark.parametrize("method", METHODS)
def test_encoded_observation_is_the_encoding_and_rewards_latent_distance(method, trained):
    rep = trained[method]
    keep = _KeepRaw(gym.make("ssrl/PushRandomObject-v0", size=SIZE))
    env = EncodedObservation(keep, rep.encoder)
    try:
        space = env.observation_space
        obs, _ = env.reset(seed=0)
        assert space["observation"].shape == (rep.latent_dim,)
        assert space.contains(obs)
        obs, reward, *_ = env.step(np.array([1.0, -1.0], np.float32))
        assert space.contains(obs)
        # Every image entry is the encoder's latent of the raw image (CC-VAE: its own context).
        for key in ("observation", "achieved_goal", "desired_goal"):
            np.testing.assert_allclose(obs[key], rep.embed(keep.raw[key][None])[0], rtol=1e-5, atol=1e-5)
        # RIG's reward: -||e(achieved) - e(desired)||_2, by hand on a 3-4-5 triangle and on the latents.
        a, b = np.zeros(rep.latent_dim, np.float32), np.zeros(rep.latent_dim, np.float32)
        b[:2] = 3, 4
        assert env.compute_reward(a, b, {}) == pytest.approx(-5.0)
        distance = np.sqrt(((obs["achieved_goal"] - obs["desired_goal"]) ** 2).sum())
        assert distance > 0  # the goal image is not the current one
        assert env.compute_reward(obs["achieved_goal"], obs["desired_goal"], {}) == pytest.approx(-distance, rel=1e-5)
    finally:
        env.close()


class _KeepRaw(gym.Wrapper):
    """Remembers the last raw observation (under an encoding wrapper)."""

    def reset(self, **kwargs):
        self.raw, info = self.env.reset(**kwargs)
        return self.raw, info

    def step(self, action):
        self.raw, *rest = self.env.step(action)
        return (self.raw, *rest)


def test_context_wrapper_encodes_with_the_episodes_first_frame(trained):
    rep = trained["cc-vae"]
    keep = _KeepRaw(gym.make("ssrl/PushRandomObject-v0", size=SIZE))
    env = ContextEncodedObservation(keep, rep.encoder)
    try:
        latent, _ = env.reset(seed=1)
        first = keep.raw["observation"][-3:]
        assert env.observation_space.contains(latent)
        for _ in range(5):
            latent, *_ = env.step(np.array([1.0, -1.0], np.float32))
        expected = rep.embed_with_context(keep.raw["observation"][None], first[None])[0]
        assert np.allclose(latent["observation"], expected, atol=1e-5)
        # The plain wrapper's latent (the frame as its own context) is not the same thing.
        own = rep.embed_with_context(keep.raw["observation"][None], keep.raw["observation"][None, -3:])[0]
        assert not np.allclose(latent["observation"], own, atol=1e-3)
        k = rep.config.latent_dim
        # Observation and goal image share the episode's context c(s_0).
        assert np.array_equal(latent["observation"][k:], latent["desired_goal"][k:])
        assert env.observation_space.contains(latent)
    finally:
        rep.encoder.clear_context()
        env.close()


@pytest.mark.parametrize("method", METHODS)
def test_trained_probe_beats_random_init(method, trained, push):
    _, train, test = push
    torch.manual_seed(0)
    random_init = build(method, train).eval()
    scores = {name: probe(r, train, test) for name, r in (("trained", trained[method]), ("random", random_init))}
    # (Tiny data: 15 training episodes, so R^2 is low for both; the gap is what counts.)
    assert scores["trained"]["r2"] > scores["random"]["r2"] + 0.05, scores
    assert scores["trained"]["knn_mse"] < 0.8 * scores["random"]["knn_mse"], scores


# -- prior, goals --------------------------------------------------------------------------------


def test_beta_vae_prior_and_goals(trained, push):
    _, train, _ = push
    rep = trained["beta-vae"]
    z = rep.embed(train.stack(np.arange(len(train)), None, 1))
    assert np.allclose(rep.prior_mu.numpy(), z.mean(0), atol=1e-5)
    assert np.allclose(rep.prior_std.numpy(), z.std(0), atol=1e-5)
    goals = rep.sample_goals(4000, np.random.default_rng(0))
    assert goals.shape == (4000, rep.config.latent_dim) and goals.dtype == np.float32
    assert np.allclose(goals.mean(0), z.mean(0), atol=0.1 * z.std(0).max() + 1e-3)
    standard = rep.sample_goals(4000, np.random.default_rng(0), prior="standard")
    assert abs(standard.std() - 1) < 0.05
    images = rep.decode(goals[:3])
    assert images.shape == (3, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    fresh = make("beta-vae", (3, SIZE, SIZE))
    with pytest.raises(ValueError, match="fit_prior"):
        fresh.sample_goals(2, np.random.default_rng(0))


def test_ccvae_encoder_context_modes(trained, push):
    _, _, test = push
    rep = trained["cc-vae"]
    obs = torch.as_tensor(test.stack(np.arange(6), None, 1))
    first = torch.as_tensor(test.first_frame(np.arange(6)))
    with torch.no_grad():
        own = rep.encoder(obs)  # no context: each frame is its own
        assert torch.allclose(own, rep.encoder(obs, obs[:, -3:]))
        given = rep.encoder(obs, first)
        rep.encoder.set_context(first[:1])
        try:
            stored = rep.encoder(obs)
        finally:
            rep.encoder.clear_context()
    assert torch.allclose(stored, given, atol=1e-5), (stored - given).abs().max()  # frames 0-5: one episode
    assert not torch.allclose(own[1:], given[1:])  # mid-episode frames differ from s_0


def test_ccvae_goals_follow_their_context(coloured):
    """Imagined goals decoded with the contexts of two episodes (table tops of different colours)
    differ, and each is closer to its own episode's frames than to the other's."""
    data = coloured
    means = np.array(
        [
            data.frames["push"][data.frame_episode == e].astype(np.float32).mean((0, 2, 3)) / 255
            for e in range(data.num_episodes)
        ]
    )
    dist = np.abs(means[:, None] - means[None]).sum(-1)
    a, b = np.unravel_index(dist.argmax(), dist.shape)  # the two most different episodes
    rep, _ = pretrain("cc-vae", data, steps=150, batch_size=32, seed=0, progress=False)
    first = data.first_frame(data.ep_start[[a, b]])
    rng = np.random.default_rng(0)
    goals = rep.sample_goals(np.repeat(first, 8, axis=0), rng)
    images = rep.decode(goals).reshape(2, 8, 3, SIZE, SIZE)
    assert np.abs(images[0] - images[1]).mean() > 0.05
    for mine, other, img in ((a, b, images[0]), (b, a, images[1])):
        frames = lambda e: data.frames["push"][data.frame_episode == e].astype(np.float32) / 255
        d_mine = ((img[:, None] - frames(mine)[None]) ** 2).mean((2, 3, 4)).min(1)
        d_other = ((img[:, None] - frames(other)[None]) ** 2).mean((2, 3, 4)).min(1)
        assert (d_mine < d_other).all(), (d_mine, d_other)
