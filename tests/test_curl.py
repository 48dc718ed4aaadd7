"""CURL: the bilinear InfoNCE by hand, the momentum key encoder, learning on env frames, the
gradient, a round trip, and a tiny joint-regime run."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.control.curl import contrastive_loss
from ssrl.representations.losses import info_nce
from ssrl.representations.objective import AuxInputs
from ssrl.representations.pretrain import pretrain
from ssrl.representations.regimes import fresh_representation

SIZE = 48


def test_logits_and_loss_by_hand():
    rep = make("curl", (3, 48, 48), arch="fast", latent_dim=2)
    with torch.no_grad():
        rep.W.copy_(torch.eye(2))
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = rep.logits(q, k)
    # q W k^T = [[1, 0], [0, 2]], minus each row's maximum.
    assert logits.tolist() == [[0.0, -1.0], [-2.0, 0.0]]
    loss, accuracy = contrastive_loss(logits)
    by_hand = 0.5 * (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0)))
    assert loss.item() == pytest.approx(by_hand, abs=1e-6) and accuracy.item() == 1.0
    # The same as the suite's InfoNCE on the dot product with keys W k (temperature 1).
    with torch.no_grad():
        rep.W.copy_(torch.tensor([[0.5, -1.0], [2.0, 0.3]]))
    assert contrastive_loss(rep.logits(q, k))[0].item() == pytest.approx(
        info_nce(q, k @ rep.W.T.detach(), temperature=1.0, normalize=False).item(), abs=1e-6
    )


def test_uniform_logits_give_log_b_end_to_end():
    torch.manual_seed(0)
    rep = make("curl", (9, SIZE, SIZE), arch="fast", latent_dim=8)
    with torch.no_grad():
        rep.W.zero_()  # every key scores the same
    obs = torch.randint(0, 256, (6, 9, SIZE, SIZE), dtype=torch.uint8)
    loss, _ = rep.loss({"obs": obs})
    assert loss.item() == pytest.approx(math.log(6), abs=1e-6)


def test_key_encoder_is_one_ema_step_behind_at_each_training_loss_call():
    torch.manual_seed(0)
    rep = make("curl", (9, SIZE, SIZE), arch="fast", latent_dim=8, tau=0.05)
    keys = dict(rep.key_encoder.named_buffers())
    assert set(keys) == {n for n, _ in rep.encoder.named_parameters()}  # weights held as buffers
    assert not any(n.startswith("key_encoder") for n, _ in rep.named_parameters())  # no optimiser steps them
    with torch.no_grad():  # move the online encoder away from the key encoder
        for p in rep.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = {n: p.detach().clone() for n, p in rep.encoder.named_parameters()}
    before = {n: b.clone() for n, b in keys.items()}
    obs = torch.randint(0, 256, (4, 9, SIZE, SIZE), dtype=torch.uint8)
    rep.loss({"obs": obs})
    for n, b in rep.key_encoder.named_buffers():
        torch.testing.assert_close(b, 0.95 * before[n] + 0.05 * online[n])
    # Neither a loss without gradient nor one in eval mode moves it.
    stepped = {n: b.clone() for n, b in rep.key_encoder.named_buffers()}
    with torch.no_grad():
        rep.loss({"obs": obs})
    with rep.evaluating():
        rep.loss({"obs": obs})
    assert all(torch.equal(b, stepped[n]) for n, b in rep.key_encoder.named_buffers())


def test_keys_come_from_the_key_encoder_and_the_two_views_are_shifted_independently():
    torch.manual_seed(0)
    rep = make("curl", (3, SIZE, SIZE), arch="fast", latent_dim=8, shift_pad=0)
    with torch.no_grad():  # a key encoder far from the online one, and W = I
        for b in rep.key_encoder.buffers():
            b.mul_(-1.0)
        rep.W.copy_(torch.eye(8))
    obs = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    with rep.evaluating():  # no EMA step: the key encoder stays as set
        loss, _ = rep.loss({"obs": obs})
        q, k = rep.encoder(obs), rep.key_encoder(obs)
    unstepped = contrastive_loss(rep.logits(q, k))[0].item()
    assert loss.item() == pytest.approx(unstepped, abs=1e-5)
    # In training the key encoder steps first, and the keys come from the stepped one.
    loss, _ = rep.loss({"obs": obs})
    with torch.no_grad():
        stepped = contrastive_loss(rep.logits(rep.encoder(obs), rep.key_encoder(obs)))[0].item()
    assert loss.item() == pytest.approx(stepped, abs=1e-5) and abs(stepped - unstepped) > 1e-3
    rep = make("curl", (3, SIZE, SIZE), arch="fast", latent_dim=8)
    gen = torch.Generator().manual_seed(0)
    rep.generator = gen
    views = [rep.augment(obs) for _ in range(2)]
    assert not torch.equal(views[0], views[1])


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("curl", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    loss, _ = rep.loss(batch)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())
    assert rep.W.grad is not None and rep.W.grad.abs().sum() > 0

    model, summary = pretrain(
        "curl",
        cartpole,
        out=tmp_path / "curl",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16},
        log_every=1,
        progress=False,
    )
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in (tmp_path / "curl" / "metrics.jsonl").open()]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])  # 0.71 here (0.62-0.74 over 3 seeds)
    loaded = load_representation(tmp_path / "curl" / "model.pt")
    state, back = model.state_dict(), loaded.state_dict()
    assert state.keys() == back.keys() and all(torch.equal(state[k], back[k]) for k in state)  # W, key encoder
    frames = data.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))


def test_replay_loss_uses_the_agents_latents_as_queries():
    torch.manual_seed(0)
    rep = fresh_representation("curl", (9, SIZE, SIZE), 1, arch="fast", latent_dim=8)
    obs = torch.randint(0, 256, (4, 9, SIZE, SIZE), dtype=torch.uint8)
    latent = rep.encoder(obs)
    inputs = AuxInputs(latent, latent.detach(), torch.zeros(4, 1), torch.zeros(4), torch.ones(4), obs, obs, rep.encoder)
    rep.generator = torch.Generator().manual_seed(1)
    loss, _ = rep.replay_loss(inputs, np.random.default_rng(0))
    loss.backward()
    assert latent.grad_fn is not None and rep.encoder.fc.weight.grad.abs().sum() > 0
    with rep.evaluating():
        rep.generator = torch.Generator().manual_seed(1)
        again, _ = rep.replay_loss(inputs, np.random.default_rng(0))
        rep.generator = torch.Generator().manual_seed(1)
        keys = rep.key_encoder(rep.augment(obs))
        assert again.item() == pytest.approx(contrastive_loss(rep.logits(latent, keys))[0].item(), abs=1e-6)


def test_a_tiny_joint_run_trains_the_encoder(tiny_regime_run):
    start, state = tiny_regime_run("curl", "joint", arch="fast", latent_dim=8)
    assert state["counters"]["updates"] > 0
    encoder = state["modules"]["encoder"]
    assert any(not torch.equal(v, encoder[f"encoder.{k}"]) for k, v in start.encoder.state_dict().items())
    assert not torch.equal(state["aux"]["rep.W"], start.W.detach())  # W is trained too
    key = start.key_encoder.state_dict()
    assert any(not torch.equal(v, state["aux"][f"rep.key_encoder.{k}"]) for k, v in key.items())  # it followed
