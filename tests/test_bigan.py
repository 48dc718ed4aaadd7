"""BiGAN: the value function by hand, a discriminator of joint pairs, one backward giving each
player its own gradient with the right sign, the prior on the encoder's LayerNorm sphere, samples,
learning on env frames and the checkpoint round trip."""

import json
import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.bigan import encoder_generator_loss, value
from ssrl.representations.pretext.image.context_encoder import discriminator_loss
from ssrl.representations.pretrain import pretrain

SIZE = 48


def test_value_function_by_hand():
    # D(x, E(x)) = sigmoid([0, log 3]) = [1/2, 3/4]; D(G(z), z) = sigmoid([0, -log 3]) = [1/2, 1/4]
    real, fake = torch.tensor([0.0, math.log(3)]), torch.tensor([0.0, -math.log(3)])
    v = 0.5 * (math.log(1 / 2) + math.log(3 / 4)) + 0.5 * (math.log(1 - 1 / 2) + math.log(1 - 1 / 4))
    assert v == pytest.approx(math.log(1 / 2) + math.log(3 / 4))
    assert value(real, fake).item() == pytest.approx(v)
    assert discriminator_loss(real, fake).item() == pytest.approx(-v)  # D maximises V
    assert encoder_generator_loss(real, fake, "minimax").item() == pytest.approx(v)  # E, G minimise it
    # non-saturating (labels swapped): -E log(1 - D(x, E(x))) - E log D(G(z), z)
    ns = -0.5 * (math.log(1 / 2) + math.log(1 / 4)) - 0.5 * (math.log(1 / 2) + math.log(1 / 4))
    assert encoder_generator_loss(real, fake, "non_saturating").item() == pytest.approx(ns)
    # a D at chance (all logits 0): V = 2 log(1/2)
    assert value(torch.zeros(5), torch.zeros(3)).item() == pytest.approx(-2 * math.log(2))
    with pytest.raises(ValueError, match="generator loss"):
        encoder_generator_loss(real, fake, "wasserstein")


def test_the_discriminator_judges_joint_pairs():
    torch.manual_seed(0)
    rep = make("bigan", (3, 32, 32), arch="fast", latent_dim=8)
    x = torch.rand(2, 3, 32, 32)
    z1, z2 = rep.prior(2), rep.prior(2)
    d = rep.discriminator
    assert not torch.allclose(d(x, z1), d(x, z2))  # only z changes
    assert not torch.allclose(d(x, z1), d(x.flip(0), z1))  # only x changes


def _setup(generator_loss):
    torch.manual_seed(0)
    rep = make("bigan", (3, 32, 32), arch="fast", latent_dim=8, generator_loss=generator_loss)
    batch = {"obs": torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), "z": rep.prior(6)}
    return rep, batch


def _v(rep, batch):
    """V from a plain forward (no freezing, no detaching)."""
    x = batch["obs"].float() / 255
    d = rep.discriminator
    return value(d(x, rep.encoder(batch["obs"])), d(rep.generate(batch["z"]), batch["z"]))


@pytest.mark.parametrize("generator_loss", ["minimax", "non_saturating"])
def test_one_backward_gives_each_player_its_own_gradient(generator_loss):
    rep, batch = _setup(generator_loss)
    loss, metrics = rep.loss(batch)
    loss.backward()
    disc = list(rep.discriminator.parameters())
    eg = list(rep.encoder.parameters()) + list(rep.image_generator.parameters())
    assert all(p.requires_grad for p in disc)
    v = _v(rep, batch)
    assert metrics["value"].item() == pytest.approx(v.item(), rel=1e-5)
    for param, ref in zip(disc, torch.autograd.grad(-v, disc)):  # D ascends V
        assert torch.allclose(param.grad, ref, atol=1e-6)
    x = batch["obs"].float() / 255
    d = rep.discriminator
    eg_ref = encoder_generator_loss(
        d(x, rep.encoder(batch["obs"])), d(rep.generate(batch["z"]), batch["z"]), generator_loss
    )
    assert loss.item() == pytest.approx(eg_ref.item(), rel=1e-5)  # the value logged is E/G's objective
    for param, ref in zip(eg, torch.autograd.grad(eg_ref, eg, allow_unused=True)):
        if ref is None:  # E's LayerNorm gain, for instance, gets a gradient: nothing is left out
            ref = torch.zeros_like(param)
        assert torch.allclose(param.grad, ref, atol=1e-6)
        assert param.grad.abs().sum() > 0


def test_a_step_raises_v_for_d_and_lowers_it_for_e_and_g():
    """Minimax, one plain gradient step on the combined loss, applied to one player at a time."""
    rep, batch = _setup("minimax")
    loss, _ = rep.loss(batch)
    loss.backward()
    v0 = _v(rep, batch).item()
    lr = 1e-3
    with torch.no_grad():
        saved = {n: p.clone() for n, p in rep.named_parameters()}
        for p in rep.discriminator.parameters():
            p -= lr * p.grad
        v_after_d = _v(rep, batch).item()
        for n, p in rep.named_parameters():
            p.copy_(saved[n])
        for p in list(rep.encoder.parameters()) + list(rep.image_generator.parameters()):
            p -= lr * p.grad
        v_after_eg = _v(rep, batch).item()
    assert v_after_d > v0 > v_after_eg


def test_prior_lies_where_the_encoder_can_reach_and_samples_are_frames():
    torch.manual_seed(0)
    rep = make("bigan", (9, 32, 32), arch="fast", latent_dim=8)
    with torch.no_grad():
        rep.encoder.norm.weight.mul_(2.0)
        rep.encoder.norm.bias.add_(0.5)
        norm = rep.encoder.norm
        for z in (rep.prior(100), rep.encoder(torch.randint(0, 256, (100, 9, 32, 32), dtype=torch.uint8))):
            n = (z - norm.bias) / norm.weight  # both: zero mean, unit variance across dimensions
            assert torch.allclose(n.mean(1), torch.zeros(100), atol=1e-5)
            assert torch.allclose(n.var(1, unbiased=False), torch.ones(100), atol=1e-3)
    samples = rep.samples(5)
    assert samples.shape == (5, 9, 32, 32) and samples.dtype == np.uint8
    assert np.array_equal(samples, rep.samples(5)) and not np.array_equal(samples, rep.samples(5, seed=1))
    frames = np.random.default_rng(0).integers(0, 256, (3, 9, 32, 32), dtype=np.uint8)
    recon = rep.reconstruct(frames)
    assert recon.shape == frames.shape and recon.dtype == np.uint8


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("bigan", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "bigan",
        cartpole,
        out=tmp_path / "bigan",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16},
        log_every=1,
        progress=False,
    )
    # A game has no loss that must fall; D's loss (-V) does, from 2 log 2 at chance, as D learns
    # to tell (x, E(x)) from (G(z), z).
    records = [json.loads(line) for line in (tmp_path / "bigan" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["d_loss"] == pytest.approx(2 * math.log(2), abs=0.1)
    assert np.mean([r["d_loss"] for r in records[-5:]]) < 0.8 * records[0]["d_loss"]
    held_out = RolloutData(cartpole).split(0.2)[1]
    scores = model.extra_scores(held_out)
    assert 0.0 <= scores["disc_acc"] <= 1.0 and scores["reconstruction_mse"] > 0
    loaded = load_representation(tmp_path / "bigan" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    assert np.array_equal(loaded.samples(3), model.samples(3))
    # A checkpoint from before G was renamed (its keys ``generator.*``) loads the same G.
    old = {k.removeprefix("image_"): v for k, v in model.state_dict().items()}
    assert any(k.startswith("generator.") for k in old)
    fresh = make("bigan", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    fresh.load_state_dict(old)
    assert np.array_equal(fresh.samples(3), model.samples(3))


def test_config_is_checked():
    with pytest.raises(ValueError, match="generator_loss"):
        make("bigan", (9, 32, 32), generator_loss="hinge")
    with pytest.raises(ValueError, match="latent_dim"):
        make("bigan", (9, 32, 32), latent_dim=2)


def test_picture_shows_samples_then_each_frame_beside_its_reconstruction(cartpole, tmp_path):
    """bigan.png: a row of six samples G(z), then per held-out frame the original (checked
    against the data) beside G(E(x)) (checked against reconstruct)."""
    import imageio.v2 as imageio

    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("bigan", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    (path,) = rep.pictures(data, tmp_path)
    picture = imageio.imread(path)
    step = SIZE + 2
    assert picture.shape == (7 * step - 2, 6 * step - 2, 3)
    panel = lambda r, c: picture[r * step : r * step + SIZE, c * step : c * step + SIZE].transpose(2, 0, 1)  # noqa: E731
    np.testing.assert_array_equal(panel(0, 0), rep.samples(6)[0, -3:])
    idx = np.linspace(0, len(data) - 1, 6).astype(int)
    frames = data.stack(idx, k=3)
    for i in range(6):
        np.testing.assert_array_equal(panel(1 + i, 0), frames[i, -3:])
        np.testing.assert_array_equal(panel(1 + i, 1), rep.reconstruct(frames[i : i + 1])[0, -3:])
