"""Relative position: patches sit where the label says, gap and jitter bounds, the colour and
pixelation counter-measures, the loss by hand, learning on env frames, round trip."""

import json
import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.relative_position import OFFSETS, drop_colors, project_colors
from ssrl.representations.pretrain import pretrain


def coordinate_frames(n=64, size=48):
    """Frames whose pixels give their coordinates: channel 0 the row, channel 1 the column."""
    frames = np.zeros((n, 3, size, size), np.uint8)
    frames[:, 0] = np.arange(size)[:, None]
    frames[:, 1] = np.arange(size)[None, :]
    return frames


def test_patches_sit_where_the_label_says_within_the_gap_and_jitter_bounds():
    p, gap, jitter, size = 12, 8, 3, 48
    rep = make("relative-position", (3, size, size), arch="resnet", frame_stack=1, patch_size=p, gap=gap, jitter=jitter)
    pairs = rep.pairs(coordinate_frames(4000, size), np.random.default_rng(0))
    patches, corners, label = pairs["patches"], pairs["corners"], pairs["label"]
    # Each patch is the crop whose top-left pixel is its corner, rows and columns contiguous.
    assert np.array_equal(patches[:, :, 0, :, 0], corners[..., :1] + np.arange(p))
    assert np.array_equal(patches[:, :, 1, 0, :], corners[..., 1:] + np.arange(p))
    assert corners.min() >= 0 and corners.max() <= size - p  # inside the frame
    # The neighbour is one grid step (patch + gap) from the centre in the label's direction,
    # up to the two patches' jitters: |deviation| <= 2 * jitter, and all of that range is used.
    deviation = corners[:, 1] - corners[:, 0] - OFFSETS[label] * (p + gap)
    assert np.abs(deviation).max() == 2 * jitter
    assert set(np.unique(deviation).tolist()) == set(range(-2 * jitter, 2 * jitter + 1))
    # So patches never overlap: along a moved axis they are at least gap - 2 jitter apart.
    moved = OFFSETS[label] != 0
    assert (np.abs(corners[:, 1] - corners[:, 0])[moved] >= p + gap - 2 * jitter).all()
    assert np.bincount(label, minlength=8).min() > 400  # all 8 positions, about uniformly
    # Label k in raster order: 0 is up-left, 4 right, 6 down.
    assert OFFSETS[0].tolist() == [-1, -1] and OFFSETS[4].tolist() == [0, 1] and OFFSETS[6].tolist() == [1, 0]


def test_centre_and_neighbour_reach_the_encoder_in_turn():
    rep = make(
        "relative-position",
        (3, 48, 48),
        arch="dmc",
        frame_stack=1,
        patch_size=16,
        gap=6,
        jitter=2,
        color="none",
        pixelate_prob=0.0,
    )
    assert rep.config.encoder_input == 16  # the dmc trunk takes 16-px patches as they are
    arrays = rep.pairs(coordinate_frames(8), np.random.default_rng(1))
    del arrays["corners"]
    seen = []
    rep.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    rep.loss(rep.to_batch(arrays))
    assert torch.equal(seen[0], torch.as_tensor(arrays["patches"]).flatten(0, 1).float() / 255)


def test_colour_dropping_projection_and_pixelation():
    x = torch.rand(4, 6, 10, 10)  # 4 patches of 2 RGB frames
    keep = torch.tensor([0, 1, 2, 1])
    out = drop_colors(x, keep, torch.Generator().manual_seed(0)).reshape(4, 2, 3, 10, 10)
    rgb = x.reshape(4, 2, 3, 10, 10)
    for n, k in enumerate(keep.tolist()):
        assert torch.equal(out[n, :, k], rgb[n, :, k])  # the kept channel, in every frame
        for other in {0, 1, 2} - {k}:  # the others: the kept channel's mean, noise 1/100 of its std
            mean, std = rgb[n, :, k].mean(dim=(1, 2)), rgb[n, :, k].std(dim=(1, 2), unbiased=False)
            assert torch.allclose(out[n, :, other].mean(dim=(1, 2)), mean, atol=0.01 * std.max())
            assert (out[n, :, other].std(dim=(1, 2)) < 0.02 * std).all()
    projected = project_colors(x).reshape(4, 2, 3, 10, 10)
    a = torch.tensor([-1.0, 2.0, -1.0])
    assert torch.allclose(torch.einsum("c,nkchw->nkhw", a, projected), torch.zeros(4, 2, 10, 10), atol=1e-5)
    grey = torch.full((1, 3, 1, 1), 0.4)  # grey has no green-magenta component: unchanged
    assert torch.allclose(project_colors(grey), grey)

    rep = make("relative-position", (9, 84, 84), arch="fast")
    pairs = rep.pairs(np.zeros((3000, 9, 84, 84), np.uint8), np.random.default_rng(0))
    sides = pairs["pixelate"]
    assert abs((sides > 0).mean() - 1 / 3) < 0.02  # a third of the patches
    assert sides[sides > 0].min() == 10 and sides.max() == 22  # from 100 pixels to below (24 - 1)^2
    assert set(pairs["keep"].ravel().tolist()) == {0, 1, 2}
    patches = torch.rand(2, 2, 9, 24, 24)
    batch = {"patches": patches, "pixelate": torch.tensor([[10, 0], [0, 0]]), "keep": torch.zeros(2, 2).long()}
    batch["noise_seed"] = torch.tensor([0])
    inputs = make("relative-position", (9, 84, 84), arch="dmc", color="none").patch_inputs(batch)
    assert torch.equal(inputs[1:], patches.flatten(0, 1)[1:])  # untouched
    assert not torch.allclose(inputs[0], patches[0, 0])  # pixelated: 10x10 blocks, blurred back up
    assert inputs[0].std() < patches[0, 0].std()


def test_config_is_checked_against_the_frame_and_the_trunk():
    with pytest.raises(ValueError, match="spans 100 px, more than the 84-px frame"):
        make("relative-position", (9, 84, 84), patch_size=30, gap=30, jitter=5)
    with pytest.raises(ValueError, match="input_size 24 px is below the 31 px"):
        make("relative-position", (9, 84, 84), arch="fast", input_size=24)
    with pytest.raises(ValueError, match="could touch"):
        make("relative-position", (9, 84, 84), gap=4, jitter=3)
    assert make("relative-position", (9, 84, 84), arch="fast").config.encoder_input == 31


def test_loss_is_log8_at_uniform_logits_and_zero_when_always_right():
    rep = make("relative-position", (9, 48, 48), arch="fast", latent_dim=8, patch_size=14, gap=6)
    for p in rep.head[-1].parameters():
        torch.nn.init.zeros_(p)  # all 8 positions get the same logit
    arrays = rep.pairs(np.random.randint(0, 256, (5, 9, 48, 48), np.uint8), np.random.default_rng(0))
    del arrays["corners"]
    batch = rep.to_batch(arrays)
    loss, _ = rep.loss(batch)
    assert loss.item() == pytest.approx(math.log(8), abs=1e-6)
    # Logit 50 on the true position, 0 elsewhere: -log(e^50 / (e^50 + 7)) = log(1 + 7 e^-50).
    rep.logits = lambda b: torch.nn.functional.one_hot(b["label"], 8).float() * 50.0
    loss, metrics = rep.loss(batch)
    assert loss.item() == pytest.approx(7 * math.exp(-50.0), abs=1e-12) and metrics["accuracy"] == 1.0


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    config = {"arch": "fast", "latent_dim": 16, "patch_size": 14, "gap": 6, "jitter": 2}
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("relative-position", (9, 48, 48), **config)
    rep.loss(rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0))))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, _ = pretrain(
        "relative-position",
        cartpole,
        out=tmp_path / "rp",
        steps=20,
        batch_size=16,
        config=config,
        log_every=1,
        progress=False,
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "rp" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.15  # from about log 8 = 2.08
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert 0.0 <= model.extra_scores(held_out)["relative_position_acc"] <= 1.0
    loaded = load_representation(tmp_path / "rp" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    assert loaded.embed(frames).shape == (5, 16)  # the pooled encoder takes full frames


def test_pictures_show_the_pair_as_seen_and_the_predicted_position(cartpole, tmp_path):
    """relative_position.png, a row per held-out frame: the frame with centre (yellow), true
    neighbour (green) and a wrong pick (red) outlined; the two patches as the network sees them
    (here untreated, so the frame's own crops, enlarged 3x); the probabilities over the 8 positions."""
    import imageio.v2 as imageio

    from ssrl.representations.pretext.image.patches import GREEN, RED, YELLOW

    data = RolloutData(cartpole)
    config = {"patch_size": 15, "gap": 6, "jitter": 2, "color": "none", "pixelate_prob": 0.0}
    rep = make("relative-position", (9, 48, 48), arch="dmc", latent_dim=8, **config)
    guess = 4  # "right"
    torch.nn.init.zeros_(rep.head[-1].weight)
    with torch.no_grad():
        rep.head[-1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(guess), 8) * 50.0)
    (path,) = rep.pictures(data, tmp_path)
    picture = imageio.imread(path)
    assert picture.shape == (6 * 96 + 5 * 2, 4 * 96 + 3 * 2, 3)

    def panel(row, col):
        top, left = row * 98, col * 98
        return picture[top : top + 96 : 2, left : left + 96 : 2]

    frames = data.stack(np.linspace(0, len(data) - 1, 6).astype(int), k=3)
    pairs = rep.pairs(frames, np.random.default_rng(0))
    frames = frames[:, -3:].transpose(0, 2, 3, 1)
    wrong = 0
    for i in range(6):
        (cy, cx), (ny, nx) = pairs["corners"][i]
        assert tuple(panel(i, 0)[cy, cx]) == YELLOW and tuple(panel(i, 0)[ny, nx]) == GREEN
        for col, (y, x) in ((1, (cy, cx)), (2, (ny, nx))):  # 15-px patches enlarged 3x, centred in 48 px (offset 1)
            np.testing.assert_array_equal(
                panel(i, col)[1:46, 1:46], frames[i, y : y + 15, x : x + 15].repeat(3, 0).repeat(3, 1)
            )
        board = panel(i, 3)  # 16-px cells; the pick's cell is white (probability 1), the others black
        assert tuple(board[24, 24]) == YELLOW and tuple(board[24, 40]) == (255, 255, 255)
        assert tuple(board[8, 8]) == (0, 0, 0)
        dy, dx = OFFSETS[pairs["label"][i]]
        truth_edge = tuple(board[(1 + dy) * 16, (1 + dx) * 16])
        assert truth_edge == GREEN
        if pairs["label"][i] != guess:
            wrong += 1
            assert tuple(board[16, 32]) == RED  # the pick's cell framed red
            y, x = cy, cx + 21  # one pitch (15 + 6) to the right
            if x + 15 <= 48:
                assert tuple(panel(i, 0)[y, x]) == RED
        else:
            assert tuple(board[16, 32]) == GREEN
    assert 0 < wrong < 6  # both verdicts are drawn
