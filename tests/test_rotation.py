"""Rotation prediction: exact rotations, the loss by hand, learning on env frames, round trip."""

import math

import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import collect
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.rotation import rotate_all
from ssrl.representations.pretrain import pretrain


def test_rotate_all_is_exact_and_labelled_r_major():
    x = torch.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # 2 images, 3 channels, 2x2
    images, labels = rotate_all(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # 90 degrees counter-clockwise of [[a, b], [c, d]] is [[b, d], [a, c]], on every channel.
    a, b, c, d = x[0, 0].flatten().tolist()
    assert images[2, 0].tolist() == [[b, d], [a, c]]
    assert torch.equal(images[4], x[0].flip(-1).flip(-2))  # 180 degrees
    assert torch.equal(torch.rot90(images[6], 1, dims=(-2, -1)), x[0])  # 270 + 90 = 360
    with pytest.raises(ValueError, match="square"):
        rotate_all(torch.zeros(1, 3, 4, 6))


def test_loss_is_log4_at_uniform_logits_and_zero_when_always_right():
    rep = make("rotation", (3, 32, 32), arch="fast", latent_dim=4)
    for p in rep.head[-1].parameters():
        torch.nn.init.zeros_(p)  # every rotation gets the same logit
    obs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    loss, metrics = rep.loss({"obs": obs})
    assert loss.item() == pytest.approx(math.log(4), abs=1e-6)
    # A head that puts a large logit on the true class: cross-entropy -> 0 (-log softmax by hand).
    rep.logits = lambda x: (
        torch.eye(4)[torch.arange(4).repeat_interleave(len(x))] * 50.0,
        torch.arange(4).repeat_interleave(len(x)),
    )
    loss, metrics = rep.loss({"obs": obs})
    assert loss.item() == pytest.approx(3 * math.exp(-50.0), abs=1e-12) and metrics["accuracy"] == 1.0


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cartpole"
    collect(
        "ssrl/cartpole-swingup-v0",
        policy="sticky_random",
        episodes=4,
        out=out,
        size=32,
        max_steps=30,
        seed=0,
        progress=False,
    )
    return out


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("rotation", (9, 32, 32), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "rotation",
        cartpole,
        out=tmp_path / "rot",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16},
        progress=False,
    )
    assert summary["last"]["loss"] < 0.5 * summary["first_loss"]  # from about log 4
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert model.extra_scores(held_out)["rotation_acc"] > 0.5  # chance is 0.25
    loaded = load_representation(tmp_path / "rot" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
