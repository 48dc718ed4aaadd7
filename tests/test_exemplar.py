"""Exemplar-CNN: surrogate classes, gradient-weighted exemplars, transformation ranges, exact
identity rendering, the loss by hand, learning on env frames, round trip."""

import colorsys
import json
import math

import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import Episode
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.exemplar import gradient_energy, hsv_to_rgb, rgb_to_hsv, select_exemplars
from ssrl.representations.pretrain import pretrain

NEUTRAL = {
    "shift": np.zeros((1, 2), np.float32),
    "scale": np.ones(1, np.float32),
    "angle": np.zeros(1, np.float32),
    "pca": np.ones((1, 3), np.float32),
    "sv_power": np.ones((1, 2), np.float32),
    "sv_factor": np.ones((1, 2), np.float32),
    "sv_shift": np.zeros((1, 2), np.float32),
    "hue": np.zeros(1, np.float32),
}


def episode_data(frames):
    t = len(frames) - 1
    episode = Episode(
        frames={"cam": frames},
        action=np.zeros((t, 1), np.float32),
        reward=np.zeros(t, np.float32),
        terminated=np.zeros(t, bool),
        truncated=np.zeros(t, bool),
        state=np.zeros((t + 1, 1), np.float32),
        info={},
    )
    return RolloutData([episode])


def test_exemplars_come_from_regions_with_gradients():
    rng = np.random.default_rng(0)
    frame = np.zeros((3, 16, 16), np.uint8)
    frame[:, 9:, 10:] = rng.integers(0, 256, (1, 7, 6))  # texture in the lower right corner only
    # Exemplars of 8 px: position (top, left) with probability ~ its window's mean squared gradient.
    ex = select_exemplars(frame[None], 20000, 8, (1.0, 1.0), rng)
    assert (ex[:, 0] == 0).all() and (ex[:, 3] == 8).all()
    energy = gradient_energy(frame.mean(0))
    window = np.array([[energy[t : t + 8, x : x + 8].sum() for x in range(9)] for t in range(9)])
    expected = window / window.sum()
    observed = np.bincount(ex[:, 1] * 9 + ex[:, 2], minlength=81).reshape(9, 9) / len(ex)
    assert np.abs(observed - expected).max() < 0.01
    assert observed[expected == 0].sum() == 0 and (expected == 0).sum() > 10  # flat windows: never
    # Frames without replacement while they last; varying scales; a flat frame: uniform positions.
    frames = rng.integers(0, 256, (40, 3, 48, 48), dtype=np.uint8)
    ex = select_exemplars(frames, 100, 20, (0.75, 1.5), rng)
    assert sorted(set(ex[:40, 0].tolist())) == list(range(40)) and np.bincount(ex[:, 0]).max() == 3
    assert ex[:, 3].min() < 17 and ex[:, 3].max() > 27 and ex[:, 3].min() >= 15 and ex[:, 3].max() <= 30
    flat = select_exemplars(np.zeros((3, 3, 48, 48), np.uint8), 50, 12, (1.0, 1.0), rng)
    assert flat[:, 1].max() <= 36 and len(set(flat[:, 2].tolist())) > 10


def test_identity_transform_gives_the_exemplar_and_two_transforms_share_its_label():
    frames = np.random.default_rng(0).integers(0, 256, (6, 3, 48, 48), dtype=np.uint8)
    data = episode_data(frames)
    rep = make("exemplar", (9, 48, 48), arch="fast", n_exemplars=6, patch_size=32, source_scale=(1.0, 1.0))
    exemplars = rep.exemplars_for(data)
    assert (exemplars[:, 3] == 32).all() and torch.equal(rep.exemplars, torch.as_tensor(exemplars))
    frame, top, left, side = exemplars[2]
    batch = dict(rep.draw(data, exemplars, np.array([2]), np.random.default_rng(0)), **NEUTRAL)
    patch = rep.render(rep.to_batch(batch))[0]
    stack = data.stack(np.array([frame]), k=3)[0]  # the newest frame of the stack is the exemplar's
    expected = torch.as_tensor(stack[:, top : top + 32, left : left + 32]).float() / 255
    assert torch.allclose(patch, expected, atol=1e-5)

    views = rep.draw(data, exemplars, np.array([2, 2]), np.random.default_rng(1))
    assert views["label"].tolist() == [2, 2] and np.array_equal(views["box"][0], views["box"][1])
    rendered = rep.render(rep.to_batch(views))
    assert not torch.allclose(rendered[0], rendered[1])  # different transformations, same class
    assert rep.to_batch(views)["label"].tolist() == [2, 2]
    other = rep.exemplars_for(data)  # drawn once: later calls return the same
    assert np.array_equal(other, exemplars)
    with pytest.raises(ValueError, match="drawn from a data set of 6 frames"):
        rep.exemplars_for(episode_data(frames[:5]))


def test_transformation_parameters_stay_in_their_ranges():
    rep = make("exemplar", (9, 84, 84), arch="fast")
    cfg = rep.config
    t = rep.sample_transforms(20000, np.random.default_rng(0))
    bounds = {
        "shift": (-cfg.translation, cfg.translation),
        "scale": cfg.scale,
        "angle": (-cfg.rotation, cfg.rotation),
        "pca": cfg.pca_factor,
        "sv_power": cfg.sv_power,
        "sv_factor": cfg.sv_factor,
        "sv_shift": (-cfg.sv_shift, cfg.sv_shift),
        "hue": (-cfg.hue_shift, cfg.hue_shift),
    }
    assert bounds["scale"] == (0.7, 1.4) and bounds["angle"] == (-20.0, 20.0) and bounds["sv_power"] == (0.25, 4.0)
    for key, (lo, hi) in bounds.items():
        values = t[key]
        assert values.min() >= lo - 1e-6 and values.max() <= hi + 1e-6, key
        span = hi - lo
        assert values.min() < lo + 0.01 * span and values.max() > hi - 0.01 * span, key  # the whole range is used
    # Multiplicative factors are log-uniform: as many below 1 as above (for ranges symmetric in log).
    assert abs((t["sv_power"] < 1).mean() - 0.5) < 0.02 and abs((t["pca"] < 1).mean() - 0.5) < 0.02


def test_hsv_round_trip_matches_colorsys():
    rgb = torch.rand(1, 3, 4, 5)
    hsv = rgb_to_hsv(rgb)
    for y, x in [(0, 0), (1, 3), (3, 4)]:
        expected = colorsys.rgb_to_hsv(*rgb[0, :, y, x].tolist())
        assert np.allclose(hsv[0, :, y, x].numpy(), expected, atol=1e-6)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-6)
    grey = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(grey)), grey)


def test_config_is_checked_against_the_trunk():
    with pytest.raises(ValueError, match="patch_size 24 px is below the 31 px"):
        make("exemplar", (9, 84, 84), arch="fast", patch_size=24)
    with pytest.raises(ValueError, match="scale must be a range"):
        make("exemplar", (9, 84, 84), scale=(1.4, 0.7))
    assert make("exemplar", (9, 84, 84), arch="dmc", patch_size=24).config.patch_size == 24


def test_loss_is_log_n_at_uniform_logits_and_zero_when_always_right():
    frames = np.random.default_rng(0).integers(0, 256, (10, 3, 48, 48), dtype=np.uint8)
    data = episode_data(frames)
    rep = make("exemplar", (9, 48, 48), arch="fast", latent_dim=8, n_exemplars=7)
    for p in rep.head[-1].parameters():
        torch.nn.init.zeros_(p)  # all 7 surrogate classes get the same logit
    batch = rep.to_batch(rep.sample_batch(data, 5, np.random.default_rng(0)))
    loss, _ = rep.loss(batch)
    assert loss.item() == pytest.approx(math.log(7), abs=1e-6)
    # Logit 50 on the true class, 0 elsewhere: -log(e^50 / (e^50 + 6)) = log(1 + 6 e^-50).
    rep.logits = lambda b: torch.nn.functional.one_hot(b["label"], 7).float() * 50.0
    loss, metrics = rep.loss(batch)
    assert loss.item() == pytest.approx(6 * math.exp(-50.0), abs=1e-12) and metrics["accuracy"] == 1.0


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    config = {"arch": "fast", "latent_dim": 16, "n_exemplars": 8, "lr": 3e-3}
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("exemplar", (9, 48, 48), **config)
    rep.loss(rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0))))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, _ = pretrain(
        "exemplar", cartpole, out=tmp_path / "ex", steps=20, batch_size=32, config=config, log_every=1, progress=False
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ex" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.15  # from about log 8 = 2.08
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert 0.0 <= model.extra_scores(held_out)["exemplar_retrieval_acc"] <= 1.0
    loaded = load_representation(tmp_path / "ex" / "model.pt")
    assert torch.equal(loaded.exemplars, model.exemplars) and (loaded.exemplars[:, 0] >= 0).all()
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    assert loaded.embed(frames).shape == (5, 16)  # the pooled encoder takes full frames
