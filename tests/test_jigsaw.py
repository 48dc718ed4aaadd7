"""Jigsaw: the permutation set, the tiles in label order, per-tile normalisation, the loss by
hand, learning on env frames, round trip."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import Episode
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.backbones import min_input_size
from ssrl.representations.pretext.image.jigsaw import hamming_permutations, hamming_stats
from ssrl.representations.pretrain import pretrain


def coordinate_data(size=48, n_frames=6):
    """One episode whose pixels give their coordinates: channel 0 the row, channel 1 the column."""
    frames = np.zeros((n_frames, 3, size, size), np.uint8)
    frames[:, 0] = np.arange(size)[:, None]
    frames[:, 1] = np.arange(size)[None, :]
    frames[:, 2] = np.arange(n_frames)[:, None, None]
    t = n_frames - 1
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


def test_permutation_set_is_greedy_max_hamming_without_duplicates():
    perms = hamming_permutations(100)
    assert perms.shape == (100, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100  # no duplicates
    stats = hamming_stats(perms)
    print("|P|=100, paper's rule:", stats)  # min 2, mean 8.08 (the paper: mean 8.00 for |P|=1000)
    assert stats["mean"] > 8.0 and stats["min"] >= 1
    constrained = hamming_permutations(100, min_distance=6)
    print("|P|=100, min_distance=6:", hamming_stats(constrained))
    assert hamming_stats(constrained)["min"] >= 6 and len({tuple(p) for p in constrained.tolist()}) == 100
    assert np.array_equal(hamming_permutations(100), perms)  # seeded
    assert not np.array_equal(hamming_permutations(100, seed=1), perms)
    # All 4! permutations of 4 tiles when asked for all of them.
    assert sorted(map(tuple, hamming_permutations(24, n_tiles=4).tolist())) == list(itertools.permutations(range(4)))
    with pytest.raises(ValueError, match="lower min_distance"):
        hamming_permutations(100, min_distance=7)


def test_each_permutation_maximises_the_summed_distance_to_those_before():
    perms = hamming_permutations(12, n_tiles=5, seed=3).tolist()
    every = list(itertools.permutations(range(5)))
    for k in range(1, len(perms)):
        total = {
            p: sum(sum(a != b for a, b in zip(p, q)) for q in perms[:k]) for p in every if list(p) not in perms[:k]
        }
        best = max(total.values())
        assert total[tuple(perms[k])] == best
        assert tuple(perms[k]) == min(p for p, v in total.items() if v == best)  # ties: lexicographic first


def test_tiles_reach_the_encoder_in_the_order_the_label_says():
    data = coordinate_data()
    # dmc trunk (15 px minimum), 15-px tiles, no normalisation: the encoder sees the tiles / 255.
    rep = make(
        "jigsaw", (3, 48, 48), arch="dmc", frame_stack=1, cell_size=16, tile_size=15, tile_norm=False, permutations=20
    )
    arrays = rep.sample_batch(data, 16, np.random.default_rng(0))
    tiles, label = arrays["tiles"], arrays["label"]
    seen = []
    rep.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    rep.loss(rep.to_batch(arrays))
    assert torch.equal(seen[0], torch.as_tensor(tiles).flatten(0, 1).float() / 255)
    perms = rep.permutations.numpy()
    for b in range(len(tiles)):
        for slot in range(9):
            row, col = divmod(int(perms[label[b], slot]), 3)
            top, left = int(tiles[b, slot, 0, 0, 0]), int(tiles[b, slot, 1, 0, 0])
            # 48-px frame = the 3 x 16 px grid: the tile sits inside its cell, jitter 0 or 1.
            assert row * 16 <= top <= row * 16 + 1 and col * 16 <= left <= col * 16 + 1
            assert np.array_equal(tiles[b, slot, 0, :, 0], top + np.arange(15))  # a contiguous crop
            assert np.array_equal(tiles[b, slot, 1, 0, :], left + np.arange(15))
    assert len(set(label.tolist())) > 5


def test_tiles_are_normalised_one_by_one_and_resized_for_the_trunk():
    # dmc trunk: 15-px tiles reach the encoder at their size, so their statistics can be read.
    rep = make("jigsaw", (3, 48, 48), arch="dmc", frame_stack=1, cell_size=16, tile_size=15)
    tiles = torch.rand(2, 9, 3, 15, 15) * (0.2 + 0.8 * torch.rand(2, 9, 1, 1, 1)) + torch.rand(2, 9, 1, 1, 1)
    tiles[0, 4] = 0.3  # a flat tile
    x = rep.tile_inputs(tiles)
    assert x.shape == (18, 3, 15, 15)
    mean, std = x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.full_like(mean, 0.5), atol=1e-5)  # tile_mean, whatever the tile's own
    textured = torch.arange(18) != 4
    assert torch.allclose(std[textured], torch.full_like(std[textured], 0.25), atol=1e-5)  # tile_std
    assert torch.allclose(x[4], torch.full_like(x[4], 0.5))  # a flat tile: the constant tile_mean
    # The fast trunk needs 31 px: 13-px tiles are resized bilinearly to it.
    rep = make("jigsaw", (3, 48, 48), arch="fast", frame_stack=1, cell_size=16, tile_size=13)
    assert rep.config.encoder_input == min_input_size("fast") == 31
    assert rep.tile_inputs(torch.rand(2, 9, 3, 13, 13)).shape == (18, 3, 31, 31)


def test_config_is_checked_against_the_frame_and_the_trunk():
    with pytest.raises(ValueError, match="input_size 20 px is below the 31 px"):
        make("jigsaw", (9, 84, 84), arch="fast", input_size=20)
    with pytest.raises(ValueError, match=r"3 cells of 30 px \(90 px\) does not fit 84-px frames"):
        make("jigsaw", (9, 84, 84), cell_size=30)
    with pytest.raises(ValueError, match="tile_size"):
        make("jigsaw", (9, 84, 84), tile_size=28)
    assert make("jigsaw", (9, 84, 84), arch="dmc").config.encoder_input == 23  # dmc takes 23-px tiles as they are


def test_loss_is_log_P_at_uniform_logits_and_zero_when_always_right():
    rep = make("jigsaw", (9, 48, 48), arch="fast", latent_dim=8, cell_size=16, tile_size=13, permutations=10)
    for p in rep.head[-1].parameters():
        torch.nn.init.zeros_(p)  # every permutation gets the same logit
    tiles, label = rep.puzzles(np.random.randint(0, 256, (5, 9, 48, 48), np.uint8), np.random.default_rng(0))
    batch = rep.to_batch({"tiles": tiles, "label": label})
    loss, _ = rep.loss(batch)
    assert loss.item() == pytest.approx(math.log(10), abs=1e-6)
    # A head that puts logit 50 on the true class, 0 elsewhere: -log(e^50 / (e^50 + 9)) = log(1 + 9 e^-50).
    rep.logits = lambda tiles: torch.nn.functional.one_hot(batch["label"], 10).float() * 50.0
    loss, metrics = rep.loss(batch)
    assert loss.item() == pytest.approx(9 * math.exp(-50.0), abs=1e-12) and metrics["accuracy"] == 1.0


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    config = {"arch": "fast", "latent_dim": 16, "cell_size": 16, "tile_size": 13, "permutations": 10}
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("jigsaw", (9, 48, 48), **config)
    rep.loss(rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0))))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, _ = pretrain(
        "jigsaw", cartpole, out=tmp_path / "jig", steps=20, batch_size=16, config=config, log_every=1, progress=False
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "jig" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3  # from about log 10 = 2.30
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert 0.0 <= model.extra_scores(held_out)["jigsaw_acc"] <= 1.0
    loaded = load_representation(tmp_path / "jig" / "model.pt")
    assert torch.equal(loaded.permutations, model.permutations)
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    assert loaded.embed(frames).shape == (5, 16)  # the pooled encoder takes full frames


def test_pictures_show_the_puzzle_the_networks_solution_and_the_truth(cartpole, tmp_path):
    """jigsaw.png, a row per held-out frame: the frame with the tile crops outlined, the shuffled
    tiles in slot order, the tiles placed by the predicted permutation (framed green when it is the
    applied one, red when not) and the tiles in their true cells; checked against crops of the frame."""
    import imageio.v2 as imageio

    from ssrl.representations.pretext.image.patches import GREEN, RED, YELLOW

    data = RolloutData(cartpole)
    rep = make("jigsaw", (9, 48, 48), arch="fast", latent_dim=8, cell_size=16, tile_size=13, permutations=4)
    guess = 2
    torch.nn.init.zeros_(rep.head[-1].weight)
    with torch.no_grad():
        rep.head[-1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(guess), 4) * 50.0)  # always permutation 2
    (path,) = rep.pictures(data, tmp_path)
    picture = imageio.imread(path)
    assert picture.shape == (6 * 96 + 5 * 2, 4 * 96 + 3 * 2, 3)  # 6 frames x 4 panels of 48 px, doubled

    def panel(row, col):  # back to the panel's own pixels
        top, left = row * 98, col * 98
        return picture[top : top + 96 : 2, left : left + 96 : 2]

    def cell(image, k):  # the mosaic's cell k: 13-px tiles 2 px apart, centred (offset 2)
        r, c = divmod(k, 3)
        return image[2 + 15 * r : 15 + 15 * r, 2 + 15 * c : 15 + 15 * c]

    frames = data.stack(np.linspace(0, len(data) - 1, 6).astype(int), k=3)[:, -3:].transpose(0, 2, 3, 1)
    corner, label = rep.layout(6, 48, np.random.default_rng(0))
    perms = rep.permutations.numpy()
    assert (label == guess).any() and (label != guess).any()  # both verdicts are drawn below
    for i in range(6):
        crops = [frames[i, y : y + 13, x : x + 13] for y, x in corner[i]]
        for slot in range(9):
            np.testing.assert_array_equal(cell(panel(i, 1), slot), crops[perms[label[i]][slot]])  # the puzzle
            np.testing.assert_array_equal(cell(panel(i, 3), slot), crops[slot])  # the truth
            placed = cell(panel(i, 2), perms[guess][slot])  # the network's solution, minus the frame
            np.testing.assert_array_equal(placed, crops[perms[label[i]][slot]])
        assert tuple(panel(i, 2)[0, 24]) == (GREEN if label[i] == guess else RED)
        y, x = corner[i, 4]
        assert tuple(panel(i, 0)[y, x]) == YELLOW and tuple(panel(i, 0)[y + 13, x + 13]) == tuple(
            frames[i, y + 13, x + 13]
        )
