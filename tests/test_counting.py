"""Counting: tile and downsample sizes, the loss by hand for a feature that really counts, learning
on env frames, the encoder's gradient and a round trip."""

import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import collect
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.backbones import min_input_size
from ssrl.representations.pretext.image.counting import counting_loss, downsample_2x, tile_2x2
from ssrl.representations.pretrain import pretrain


def test_tiles_and_downsampled_image_are_half_size_and_exact():
    x = torch.rand(2, 9, 84, 84)
    tiles = tile_2x2(x)
    assert [t.shape for t in tiles] == [(2, 9, 42, 42)] * 4
    assert torch.equal(tiles[0], x[..., :42, :42]) and torch.equal(tiles[1], x[..., :42, 42:])
    assert torch.equal(tiles[2], x[..., 42:, :42]) and torch.equal(tiles[3], x[..., 42:, 42:])
    for mode in ("area", "bilinear", "bicubic"):
        assert downsample_2x(x, mode).shape == (2, 9, 42, 42)
    # area: each pixel is the mean of its 2x2 block
    assert downsample_2x(x)[1, 4, 3, 5].item() == pytest.approx(x[1, 4, 6:8, 10:12].mean().item(), abs=1e-6)

    # The model's phi sees the 4 tiles and D(x) of every frame, all 42x42 at 84 px (fast trunk).
    rep = make("counting", (9, 84, 84), arch="fast", latent_dim=8)
    seen = []
    phi = rep.counts
    rep.counts = lambda images: seen.append(tuple(images.shape)) or phi(images)
    rep.loss({"obs": torch.randint(0, 256, (3, 9, 84, 84), dtype=torch.uint8)})
    assert seen == [(5 * 3, 9, 42, 42)]


def test_frame_sizes_are_checked_against_the_trunk():
    assert (min_input_size("dmc"), min_input_size("fast"), min_input_size("resnet")) == (15, 31, 1)
    with pytest.raises(ValueError, match=r"24x24, smaller than the 31x31 the 'fast' trunk"):
        make("counting", (9, 48, 48), arch="fast")
    with pytest.raises(ValueError, match="even side"):
        make("counting", (9, 47, 47), arch="dmc")
    make("counting", (9, 48, 48), arch="dmc")  # 24-px tiles fit the dmc trunk (15 px)
    with pytest.raises(ValueError, match="downsample"):
        make("counting", (9, 48, 48), arch="dmc", downsample="nearest")
    rep = make("counting", (9, 48, 48), arch="dmc", downsample="random")
    assert torch.isfinite(rep.loss({"obs": torch.randint(0, 256, (2, 9, 48, 48), dtype=torch.uint8)})[0])


def count_rectangles(images: torch.Tensor) -> torch.Tensor:
    """A phi that really counts: per colour channel, the number of bright axis-aligned rectangles
    (pixels that are lit while the pixels above and to the left are not: one per rectangle)."""
    lit = images > 0
    above = torch.nn.functional.pad(lit, (0, 0, 1, 0))[..., :-1, :]
    left = torch.nn.functional.pad(lit, (1, 0))[..., :-1]
    return (lit & ~above & ~left).sum((-2, -1)).float()


def dots(counts, size=16):
    """A black RGB image with counts[c] 2x2 dots of channel c, on even pixels, 4 px apart, none
    across the middle lines (so no tile cuts a dot and downsampling keeps each as one pixel)."""
    image = torch.zeros(3, size, size)
    spots = [(r, c) for r in (0, 4, 8, 12) for c in (0, 4, 8, 12)]
    n = 0
    for channel, count in enumerate(counts):
        for r, c in spots[n : n + count]:
            image[channel, r : r + 2, c : c + 2] = 1.0
        n += count
    return image


def test_loss_is_zero_for_a_feature_that_counts():
    x = dots([1, 2, 3])[None]
    # phi counts (1, 2, 3) in D(x) and in the four tiles together
    assert count_rectangles(downsample_2x(x)).tolist() == [[1, 2, 3]]
    assert sum(count_rectangles(t) for t in tile_2x2(x)).tolist() == [[1, 2, 3]]
    # y with counts (5, 2, 3): ||(5,2,3) - (1,2,3)||^2 = 16 >= M = 10, so the hinge is 0 as well.
    loss, terms = counting_loss(count_rectangles, x, dots([5, 2, 3])[None], margin=10.0)
    assert loss.item() == 0.0 and terms["feat"].item() == 0.0 and terms["diff"].item() == 0.0
    # y with counts (4, 2, 3): distance^2 = 9 < 10, the hinge is 10 - 9 = 1.
    loss, terms = counting_loss(count_rectangles, x, dots([4, 2, 3])[None], margin=10.0)
    assert terms["feat"].item() == 0.0 and loss.item() == 1.0
    # Default y: the batch rolled by one. Batch (x, y'): for x, y = y' (counts (4,2,3), hinge 1);
    # for y', y = x (distance^2 9, hinge 1); mean over the batch: 1.
    loss, _ = counting_loss(count_rectangles, torch.stack([x[0], dots([4, 2, 3])]), margin=10.0)
    assert loss.item() == 1.0


def test_loss_is_positive_for_a_constant_feature():
    x = torch.rand(4, 3, 16, 16)
    # phi = c for every image: ||c - 4c||^2 = 9||c||^2, and the same distance to any other image.
    for c, expected in ((0.0, 10.0), (0.5, 9 * 0.5 + 10 - 9 * 0.5), (1.0, 9 * 2.0)):  # D = 2 counts
        loss, terms = counting_loss(lambda im, c=c: torch.full((len(im), 2), c), x, margin=10.0)
        assert loss.item() == pytest.approx(expected) and loss.item() > 0
        assert terms["feat"].item() == pytest.approx(9 * 2 * c * c)


def collect_frames(out, env_id, episodes):
    collect(env_id, policy="sticky_random", episodes=episodes, out=out, size=48, max_steps=30, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    return collect_frames(tmp_path_factory.mktemp("data") / "cartpole", "ssrl/cartpole-swingup-v0", 4)


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    return collect_frames(tmp_path_factory.mktemp("data") / "cheetah", "ssrl/cheetah-run-v0", 2)


def test_learns_on_env_frames(cartpole, cheetah):
    """The loss falls from about M within 20 steps when the other image y differs: a fixed batch
    alternating cartpole and cheetah frames, so that each y (the previous frame of the batch) is
    from the other env. (On cartpole frames alone, all nearly alike, the loss sits at its plateau,
    about M, for the first ~100 steps: phi collapses towards 0, where the hinge's gradient, linear
    in phi(D y) - phi(D x), vanishes.)"""
    torch.manual_seed(0)
    rep = make("counting", (9, 48, 48), arch="dmc", latent_dim=16)
    rng = np.random.default_rng(0)
    frames = [rep.sample_batch(RolloutData(path), 8, rng)["obs"] for path in (cartpole, cheetah)]
    batch = rep.to_batch({"obs": np.stack(frames, 1).reshape(16, 9, 48, 48)})  # cartpole, cheetah, ...
    optimizer = torch.optim.Adam(rep.parameters(), lr=1e-3)
    losses = []
    for _ in range(21):
        loss, _ = rep.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(10.0, abs=0.05)  # phi is small at initialisation: the loss is about M
    assert losses[-1] < 0.75 * losses[0]


def test_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("counting", (9, 48, 48), arch="dmc", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    # phi is the pre-LayerNorm features: the trunk and the Linear layer learn, the LayerNorm does not.
    for name, p in rep.encoder.named_parameters():
        if name.startswith("norm."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    model, summary = pretrain(
        "counting",
        cartpole,
        out=tmp_path / "count",
        steps=20,
        batch_size=16,
        config={"arch": "dmc", "latent_dim": 16},
        progress=False,
    )
    assert np.isfinite(summary["last"]["loss"])
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert 0.0 <= model.extra_scores(held_out)["counting_acc"] <= 1.0
    loaded = load_representation(tmp_path / "count" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    untrained = make("counting", (9, 48, 48), arch="dmc", latent_dim=16)
    assert not np.array_equal(untrained.embed(frames), model.embed(frames))
