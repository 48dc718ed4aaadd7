"""Colorization: Lab conversion, the computed ab gamut, soft encoding, class rebalancing, the
annealed mean, the loss by hand, learning on env frames, and a save/load round trip."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image import colour
from ssrl.representations.pretrain import pretrain

Q = 261  # the ab bins of size 10 hit by sRGB colours (the paper ships 313)


def lab_of(rgb) -> np.ndarray:
    return colour.rgb_to_lab(torch.tensor(rgb, dtype=torch.float64), dim=-1).numpy()


def test_lab_conversion_matches_known_values_and_round_trips():
    # Reference values of CIE L*a*b* (D65) for the sRGB primaries, white, black and mid grey.
    assert lab_of([1.0, 1.0, 1.0]) == pytest.approx([100.0, 0.0, 0.0], abs=1e-6)
    assert lab_of([0.0, 0.0, 0.0]) == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert lab_of([1.0, 0.0, 0.0]) == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert lab_of([0.0, 1.0, 0.0]) == pytest.approx([87.73, -86.18, 83.18], abs=0.01)
    assert lab_of([0.0, 0.0, 1.0]) == pytest.approx([32.30, 79.19, -107.86], abs=0.01)
    assert lab_of([128 / 255] * 3) == pytest.approx([53.59, 0.0, 0.0], abs=0.01)
    # uint8 frames (table lookup) and floats in [0, 1] agree; Lab -> sRGB inverts it.
    x = torch.randint(0, 256, (2, 6, 5, 5), dtype=torch.uint8)
    lab = colour.frames_to_lab(x)  # (2, 2 frames, 3, 5, 5)
    assert lab.shape == (2, 2, 3, 5, 5)
    assert torch.allclose(lab, colour.frames_to_lab(x.float() / 255), atol=1e-4)
    back = colour.lab_to_rgb(lab, dim=2).reshape(x.shape) * 255
    assert (back - x.float()).abs().max() < 0.01
    with pytest.raises(ValueError, match="multiple of 3"):
        colour.frames_to_lab(torch.zeros(1, 4, 2, 2))


def test_ab_bins_cover_the_srgb_gamut():
    centres = colour.ab_gamut()
    assert centres.shape == (Q, 2)
    assert np.array_equal(centres, np.round(centres / 10) * 10)  # centres on the grid of size 10
    bins = {tuple(c) for c in (centres / 10).astype(int)}
    # A dense grid through the WHOLE cube (the bins were computed from its surface only) and
    # random 8-bit colours: every colour's ab falls in a bin of the set.
    v = np.arange(0, 256, 5) / 255.0
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)
    rand = np.random.default_rng(0).integers(0, 256, (50_000, 3)) / 255.0
    ab = lab_of(np.concatenate([grid, rand]))[:, 1:]
    cells = {tuple(c) for c in np.unique(np.round(ab / 10).astype(int), axis=0)}
    assert cells <= bins
    assert (10, -110) not in bins and (100, 100) not in bins  # outside sRGB (a <= 98.2, b >= -107.9)


def test_soft_encoding_five_nearest_gaussian_weights():
    centres = torch.as_tensor(colour.ab_gamut(), dtype=torch.float32)
    # ab = (0, 0) sits on a bin: itself at distance 0 and its 4 grid neighbours at 10, so the
    # weights are proportional to exp(0) and exp(-100 / (2 * 25)) = e^-2.
    idx, w = colour.soft_encode(torch.zeros(1, 2), centres)
    assert centres[idx[0, 0]].tolist() == [0.0, 0.0]
    assert sorted(centres[idx[0, 1:]].tolist()) == [[-10.0, 0.0], [0.0, -10.0], [0.0, 10.0], [10.0, 0.0]]
    z = 1 + 4 * math.exp(-2)
    assert w[0].tolist() == pytest.approx([1 / z] + [math.exp(-2) / z] * 4, abs=1e-6)
    # Real colours (and cell averages of them): 5 non-zero entries summing to 1, nearest first,
    # and the fast candidate-table encoder gives exactly the brute-force result.
    rgb = torch.randint(0, 256, (4000, 3), dtype=torch.uint8)
    ab = colour.rgb_to_lab(rgb, dim=-1)[:, 1:]
    ab = torch.cat([ab, 0.5 * (ab[:2000] + ab[2000:])])
    idx, w = colour.soft_encode(ab, centres)
    dense = colour.dense_encoding(idx, w, Q)
    assert torch.allclose(dense.sum(1), torch.ones(len(ab)))
    assert ((dense > 0).sum(1) == 5).all()
    d = torch.cdist(ab, centres)
    assert torch.equal(idx[:, 0], d.argmin(1))
    fast_idx, fast_w = colour.SoftEncoder(centres)(ab)
    assert torch.equal(fast_idx, idx) and torch.allclose(fast_w, w, atol=1e-6)


def test_rebalancing_weights_and_smoothing():
    centres = torch.as_tensor(colour.ab_gamut())
    # Smoothing a point mass at (0, 0): its neighbours at distance 10 get e^-2 of its mass.
    at = lambda a, b: int(((centres - torch.tensor([a, b])).abs().sum(1) == 0).nonzero())  # noqa: E731
    p = torch.zeros(Q, dtype=torch.float64)
    p[at(0, 0)] = 1.0
    smooth = colour.smooth_prior(p, centres)
    assert smooth.sum() == pytest.approx(1.0)
    assert smooth[at(10, 0)] / smooth[at(0, 0)] == pytest.approx(math.exp(-2))
    # w ~ ((1 - lambda) p~ + lambda / Q)^-1 with E_p~[w] = 1; rare colours weigh more.
    p = torch.distributions.Dirichlet(torch.full((Q,), 0.3)).sample().double()
    w = colour.rebalance_weights(p, 0.5)
    assert (p * w).sum() == pytest.approx(1.0)
    assert w[p.argmin()] > 1.0 > w[p.argmax()]
    raw = 1.0 / (0.5 * p + 0.5 / Q)
    assert torch.allclose(w / w[0], raw / raw[0])
    assert torch.allclose(colour.rebalance_weights(p, 1.0), torch.ones(Q, dtype=torch.float64))  # uniform


def test_annealed_mean_interpolates_mode_and_mean():
    centres = torch.tensor([[0.0, 0.0], [10.0, 20.0], [-30.0, 40.0]])
    p = torch.tensor([[0.5, 0.3, 0.2]])
    logits = p.log() + 7.0  # any constant shift: same distribution
    mean = (p[0, :, None] * centres).sum(0)  # (0 + 3 - 6, 0 + 6 + 8) = (-3, 14)
    assert colour.annealed_mean(logits, centres, 1.0)[0].tolist() == pytest.approx(mean.tolist(), abs=1e-5)
    assert mean.tolist() == pytest.approx([-3.0, 14.0])
    assert colour.annealed_mean(logits, centres, 1e-3)[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)  # mode
    t038 = colour.annealed_mean(logits, centres, 0.38)[0]
    assert 0 < t038[1] < mean[1]  # in between


def test_loss_is_log_q_at_uniform_logits_weighted_by_the_rebalancing():
    rep = make("colorization", (6, 32, 32), arch="fast", latent_dim=4)
    for p in rep.decoder.net[-1].parameters():
        torch.nn.init.zeros_(p)  # every bin gets the same logit
    obs = torch.randint(0, 256, (3, 6, 32, 32), dtype=torch.uint8)
    loss, _ = rep.loss({"obs": obs})
    assert not bool(rep.prior.fitted)
    assert loss.item() == pytest.approx(math.log(Q), abs=1e-5)  # v = 1 before the prior is fitted
    # With weights w: each location's cross-entropy is log Q, scaled by w at its nearest bin.
    w = torch.rand(Q) * 3
    rep.prior.weights.copy_(w)
    nearest = colour.nearest_bin(rep.target_ab(colour.frames_to_lab(obs)).reshape(-1, 2), rep.centres)
    loss, _ = rep.loss({"obs": obs})
    assert loss.item() == pytest.approx(w[nearest].mean().item() * math.log(Q), rel=1e-5)


def test_encoder_takes_rgb_stacks_and_sees_only_lightness():
    rep = make("colorization", (6, 32, 32), arch="fast", latent_dim=8)
    assert rep.encoder.input_shape == (6, 32, 32)
    lab = torch.zeros(2, 2, 3, 32, 32)
    lab[:, :, 0] = torch.rand(2, 2, 32, 32) * 40 + 30  # L in [30, 70]
    other = lab.clone()
    lab[:, :, 1:] = torch.rand(2, 2, 2, 32, 32) * 20 - 10  # small ab: inside the gamut at these L
    other[:, :, 1:] = torch.rand(2, 2, 2, 32, 32) * 20 - 10
    x1 = colour.lab_to_rgb(lab, dim=2).reshape(2, 6, 32, 32)
    x2 = colour.lab_to_rgb(other, dim=2).reshape(2, 6, 32, 32)
    assert not torch.allclose(x1, x2, atol=1e-2)
    with torch.no_grad():
        z1, z2 = rep.encoder(x1), rep.encoder(x2)
        trunk = rep.encoder.parts["L"](colour.frames_to_lab(x1)[:, :, 0] / 100)
    assert z1.shape == (2, 8) and torch.allclose(z1, trunk)
    assert torch.allclose(z1, z2, atol=1e-4)  # same L, other colours: same embedding
    with pytest.raises(ValueError, match="shape"):
        rep.encoder(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_colorize_paints_the_predicted_colour_on_the_input_lightness():
    rep = make("colorization", (3, 32, 32), arch="fast", latent_dim=4).eval()
    last = rep.decoder.net[-1]
    torch.nn.init.zeros_(last.weight)
    grey = int(((rep.centres - torch.tensor([0.0, 0.0])).abs().sum(1) == 0).nonzero())
    red = int(((rep.centres - torch.tensor([80.0, 70.0])).abs().sum(1) == 0).nonzero())
    with torch.no_grad():
        last.bias.zero_()
        last.bias[grey] = 30.0  # every location: (almost) surely the grey bin
    frames = np.full((2, 3, 32, 32), 90, np.uint8)
    frames[1] = 200
    frames[1, 0, :, :16] = 230  # a tinted half: its lightness is kept, its colour becomes grey
    out = rep.colorize(frames)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.abs(out[0].astype(int) - 90).max() <= 1  # grey stays the same grey
    L_in = colour.frames_to_lab(torch.as_tensor(frames))[:, :, 0]
    L_out = colour.frames_to_lab(torch.as_tensor(out))[:, :, 0]
    assert (L_in - L_out).abs().max() < 1.0
    assert np.abs(out[1, 0].astype(int) - out[1, 1]).max() <= 1  # now neutral: R = G
    with torch.no_grad():
        last.bias[red] = 60.0
    red_out = rep.colorize(frames[:1])
    assert (red_out[0, 0].astype(int) > red_out[0, 1].astype(int) + 40).all()  # red dominates


def test_config_checks_name_the_numbers():
    with pytest.raises(ValueError, match=r"downsample=5 must divide the frame size 48x48"):
        make("colorization", (9, 48, 48), downsample=5)
    with pytest.raises(ValueError, match="rebalance_lambda"):
        make("colorization", (9, 48, 48), rebalance_lambda=1.5)
    with pytest.raises(ValueError, match="3k channels"):
        make("colorization", (4, 48, 48))


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("colorization", (9, 48, 48), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    assert bool(rep.prior.fitted)  # fitted from the data on the first batch, before any step
    assert rep.prior.smoothed.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (rep.prior.smoothed * rep.prior.weights).sum().item() == pytest.approx(1.0, abs=1e-5)
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "colorization",
        cartpole,
        out=tmp_path / "col",
        steps=20,
        batch_size=16,
        lr=3e-3,  # the logits start near 0 and take ~30 steps to move at the default 1e-3
        config={"arch": "fast", "latent_dim": 16},
        progress=False,
    )
    # From mean(v) log Q (~2.2 here: the common background colours weigh little) to ~1.2.
    assert summary["last"]["loss"] < 0.75 * summary["first_loss"]
    held_out = RolloutData(cartpole).split(0.2)[1]
    scores = model.extra_scores(held_out)
    assert scores["colorization_loss"] < math.log(Q) and 0.0 <= scores["colorization_acc"] <= 1.0
    loaded = load_representation(tmp_path / "col" / "model.pt")
    assert bool(loaded.prior.fitted) and torch.equal(loaded.prior.weights, model.prior.weights)
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    assert np.array_equal(loaded.colorize(frames), model.colorize(frames))


def test_pictures_show_grey_input_colouring_and_original_per_held_out_frame(cartpole, tmp_path):
    import imageio.v2 as imageio

    from ssrl.representations import RolloutData, make

    data = RolloutData(cartpole)
    rep = make("colorization", (9, 48, 48), arch="fast", latent_dim=8)
    rep.sample_batch(data, 4, np.random.default_rng(0))  # fits the colour prior, as training does
    (path,) = rep.pictures(data, tmp_path)
    picture = imageio.imread(path)
    assert picture.shape == (6 * 48 + 5 * 2, 3 * 48 + 2 * 2, 3)  # 6 frames x (grey, coloured, original), 2-px gaps
    first = data.stack(np.array([0]), k=3)[0, -3:].transpose(1, 2, 0)
    np.testing.assert_array_equal(picture[:48, 2 * 50 : 2 * 50 + 48], first)  # the original, untouched
    grey = picture[:48, :48].astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()  # no colour in the input


def test_the_lab_lookups_equal_the_conversion_for_every_colour():
    """frames_to_lab on uint8 frames and frames_to_lightness (one gather per pixel) against
    rgb_to_lab's conversion, bit for bit, on all 2^24 colours laid out as one frame."""
    from ssrl.representations.pretext.image import colour

    every = torch.arange(256**3, dtype=torch.int64)
    frame = (
        torch.stack([(every >> 16) & 255, (every >> 8) & 255, every & 255]).to(torch.uint8).reshape(1, 3, 4096, 4096)
    )
    with torch.autocast("cpu", enabled=False):
        converted = colour.rgb_to_lab(frame.reshape(1, 1, 3, 4096, 4096), dim=2)
    looked_up = colour.frames_to_lab(frame)
    assert looked_up.shape == converted.shape and torch.equal(looked_up, converted)
    assert torch.equal(colour.frames_to_lightness(frame), converted[:, :, 0])
    floats = frame[..., :64, :64].float() / 255.0  # float frames take the conversion itself
    assert torch.allclose(colour.frames_to_lab(frame[..., :64, :64]), colour.frames_to_lab(floats), atol=1e-4)
    identity = torch.nn.Identity()
    identity.feature_dim = 2 * 8 * 8
    encoder = colour.LabEncoder((6, 8, 8), L=identity)  # two frames: L / 100 of each, as the encoder sees it
    stack = torch.randint(0, 256, (3, 6, 8, 8), dtype=torch.uint8)
    assert torch.equal(encoder(stack), colour.frames_to_lab(stack)[:, :, 0] / colour.L_SCALE)
    with pytest.raises(ValueError, match="uint8"):
        colour.frames_to_lightness(stack.float())
