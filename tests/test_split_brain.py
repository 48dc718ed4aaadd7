"""Split-brain autoencoder: the loss by hand, each half sees only its channels, the
concatenation, learning on env frames, and a save/load round trip."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image import colour
from ssrl.representations.pretrain import pretrain

Q, L_BINS = 261, 50


def test_l_quantisation_bins_of_two_units():
    L = torch.tensor([0.0, 1.99, 2.0, 51.0, 99.9, 100.0])
    assert colour.quantize_l(L).tolist() == [0, 0, 1, 25, 49, 49]


def test_loss_is_log_q_plus_log_50_at_uniform_logits():
    rep = make("split-brain", (6, 32, 32), arch="fast", latent_dim=8)
    for head in (rep.head_ab, rep.head_l):
        for p in head.net[-1].parameters():
            torch.nn.init.zeros_(p)  # every bin of both predictions gets the same logit
    obs = torch.randint(0, 256, (3, 6, 32, 32), dtype=torch.uint8)
    loss, metrics = rep.loss({"obs": obs})
    # l_ab = -sum_q Z_q log(1/Q) = log Q (Z sums to 1); l_L = log 50; L = l_ab + l_L.
    assert metrics["loss_ab"].item() == pytest.approx(math.log(Q), abs=1e-5)  # 5.5645
    assert metrics["loss_L"].item() == pytest.approx(math.log(L_BINS), abs=1e-5)  # 3.9120
    assert loss.item() == pytest.approx(math.log(Q) + math.log(L_BINS), abs=1e-5)  # 9.4765
    # A head sure of the true L bin everywhere: l_L -> 0 (1 - softmax share of a logit of 50).
    target = rep.predict(obs)["target"]
    l_bin = colour.quantize_l(target[..., 0])
    rep.head_l.forward = lambda z: (torch.nn.functional.one_hot(l_bin, L_BINS).float() * 50.0).flatten(3)
    loss, metrics = rep.loss({"obs": obs})
    assert metrics["loss_L"].item() == pytest.approx(49 * math.exp(-50.0), abs=1e-12)
    assert metrics["L_accuracy"] == 1.0


def lab_frames(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Float RGB stacks (B, 3k, H, W) in [0, 1] of the given L (B, k, H, W) and ab (B, k, 2, H, W)."""
    lab = torch.cat([L[:, :, None], ab], dim=2)
    return colour.lab_to_rgb(lab, dim=2).flatten(1, 2)


def test_each_half_sees_only_its_channels():
    torch.manual_seed(0)
    rep = make("split-brain", (6, 32, 32), arch="fast", latent_dim=10).eval()
    L1, L2 = torch.rand(2, 2, 2, 32, 32) * 40 + 30  # L in [30, 70]
    ab1, ab2 = torch.rand(2, 2, 2, 2, 32, 32) * 20 - 10  # small ab: inside the gamut at these L
    with torch.no_grad():
        base = rep.predict(lab_frames(L1, ab1))
        new_ab = rep.predict(lab_frames(L1, ab2))  # same L, other colours
        new_l = rep.predict(lab_frames(L2, ab1))  # same colours, other lightness
        z_base, z_ab = rep.encoder(lab_frames(L1, ab1)), rep.encoder(lab_frames(L1, ab2))
    # F1 (L -> ab) is unchanged by the colours; F2 (ab -> L) is unchanged by the lightness.
    assert torch.allclose(new_ab["ab_logits"], base["ab_logits"], atol=1e-4)
    assert not torch.allclose(new_ab["l_logits"], base["l_logits"], atol=1e-3)
    assert torch.allclose(new_l["l_logits"], base["l_logits"], atol=1e-4)
    assert not torch.allclose(new_l["ab_logits"], base["ab_logits"], atol=1e-3)
    # So the representation's L half is unchanged and its ab half moves.
    assert torch.allclose(z_ab[:, :5], z_base[:, :5], atol=1e-4)
    assert not torch.allclose(z_ab[:, 5:], z_base[:, 5:], atol=1e-3)


@pytest.mark.parametrize("latent_dim, halves", [(50, (25, 25)), (7, (4, 3))])
def test_representation_is_l_half_then_ab_half(latent_dim, halves):
    rep = make("split-brain", (6, 32, 32), arch="fast", latent_dim=latent_dim)
    enc_l, enc_ab = rep.encoder.parts["L"], rep.encoder.parts["ab"]
    assert list(rep.encoder.parts) == ["L", "ab"] and rep.encoder.input_shape == (6, 32, 32)
    assert (enc_l.feature_dim, enc_ab.feature_dim) == halves
    assert enc_l.input_shape[0] == 2 and enc_ab.input_shape[0] == 4  # k and 2k channels
    assert enc_l.config.num_filters == enc_ab.config.num_filters == 16  # the suite's 32, halved
    obs = torch.randint(0, 256, (4, 6, 32, 32), dtype=torch.uint8)
    lab = colour.frames_to_lab(obs)  # (4, 2, 3, 32, 32)
    with torch.no_grad():
        z = rep.encoder(obs)
        expected = torch.cat([enc_l(lab[:, :, 0] / 100), enc_ab(lab[:, :, 1:].flatten(1, 2) / 110)], dim=1)
    assert z.shape == (4, latent_dim) and torch.allclose(z, expected)
    with pytest.raises(ValueError, match="latent_dim and num_filters"):
        make("split-brain", (6, 32, 32), latent_dim=1)
    with pytest.raises(ValueError, match=r"downsample=3 must divide the frame size 32x32"):
        make("split-brain", (6, 32, 32), downsample=3)


def test_learns_on_env_frames_trains_both_encoders_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("split-brain", (9, 48, 48), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "split-brain",
        cartpole,
        out=tmp_path / "sb",
        steps=20,
        batch_size=16,
        lr=3e-3,  # the logits start near 0 and take ~30 steps to move at the default 1e-3
        config={"arch": "fast", "latent_dim": 16},
        progress=False,
    )
    assert summary["last"]["loss"] < 0.75 * summary["first_loss"]  # from about log 261 + log 50 = 9.48
    held_out = RolloutData(cartpole).split(0.2)[1]
    scores = model.extra_scores(held_out)
    assert scores["split_brain_loss"] < math.log(Q) + math.log(L_BINS)
    assert 0.0 <= scores["split_brain_ab_acc"] <= 1.0 and 0.0 <= scores["split_brain_L_acc"] <= 1.0
    loaded = load_representation(tmp_path / "sb" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
