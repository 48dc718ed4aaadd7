"""Context encoder: the masks, the removed region, L_rec on the hole only, the 0.999/0.001
weights by hand, one backward giving each player its own gradient, the discriminator learning,
learning on env frames and the checkpoint round trip."""

import json
import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.context_encoder import (
    context_encoder_loss,
    discriminator_loss,
    make_keep_masks,
    masked_l2,
)
from ssrl.representations.pretrain import pretrain

SIZE = 48


def test_masks_remove_a_quarter_of_the_image_the_same_in_every_channel():
    generator = torch.Generator().manual_seed(0)
    centre = make_keep_masks("center", 3, 84, 0.25)
    assert centre.shape == (3, 1, 84, 84)  # one mask per image, broadcast over all channels
    assert (centre == 0).sum().item() == 3 * 42 * 42 and (centre[:, :, 21:63, 21:63] == 0).all()
    region = make_keep_masks("random_region", 64, 84, 0.25, generator)
    assert ((region == 0).flatten(1).sum(1) == round(0.25 * 84 * 84)).all()  # exactly 1/4 each
    assert not torch.equal(region[0], region[1])  # a mask per image
    blocks = make_keep_masks("random_blocks", 64, 84, 0.25, generator)
    dropped = (blocks == 0).flatten(1).sum(1)
    assert (dropped >= 21 * 21).all() and (dropped <= 0.25 * 84 * 84).all()  # "up to 1/4"
    assert (dropped > 21 * 21).any() and not torch.equal(blocks[0], blocks[1])
    with pytest.raises(ValueError, match="mask"):
        make_keep_masks("stripes", 1, 84)


def test_the_input_really_has_the_region_removed():
    torch.manual_seed(0)
    rep = make("context-encoder", (9, 32, 32), arch="fast", latent_dim=8, mask="center")
    obs = torch.randint(0, 256, (4, 9, 32, 32), dtype=torch.uint8)
    keep = rep.keep_masks(4)
    p = rep.predict(obs, keep)
    hole = keep.expand_as(p["masked"]) == 0
    fill = (obs.float() / 255).mean(dim=(0, 2, 3)).view(1, 9, 1, 1).expand_as(p["masked"])
    assert torch.allclose(p["masked"][hole], fill[hole])  # every channel of the hole holds the data mean
    assert torch.equal(p["masked"][~hole], (obs.float() / 255)[~hole])  # the context is untouched
    # Whatever the hole held, the encoder sees the same input (with the fill fixed: "zero").
    rep.config.fill = "zero"
    changed = obs.clone()
    changed[:, :, 8:24, 8:24] = 255 - changed[:, :, 8:24, 8:24]  # the centre 16x16 hole of a 32 px frame
    a, b = rep.predict(obs, keep), rep.predict(changed, keep)
    assert torch.equal(a["masked"], b["masked"]) and (a["masked"][hole] == 0).all()
    assert torch.equal(rep.encoder(a["masked"]), rep.encoder(b["masked"]))
    changed[:, :, 0, 0] = 255 - changed[:, :, 0, 0]  # a context pixel does change the input
    assert not torch.equal(rep.predict(changed, keep)["masked"], a["masked"])


def test_reconstruction_counts_masked_pixels_only():
    target = torch.rand(2, 3, 8, 8)
    prediction = torch.rand(2, 3, 8, 8)
    keep = make_keep_masks("center", 2, 8, 0.25)  # 4x4 hole in the middle
    rec = masked_l2(prediction, target, keep)
    by_hand = ((target - prediction)[:, :, 2:6, 2:6] ** 2).sum() / (2 * 3 * 16)
    assert rec.item() == pytest.approx(by_hand.item(), rel=1e-6)
    outside = prediction.clone()
    outside[:, :, 0, 0] += 5.0  # an unmasked pixel of the prediction
    assert masked_l2(outside, target, keep).item() == rec.item()
    inside = prediction.clone()
    inside[:, :, 3, 3] += 5.0  # a masked one
    assert masked_l2(inside, target, keep).item() > rec.item()


def test_weights_0999_and_0001_by_hand():
    target = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    prediction = torch.full_like(target, 0.5)
    keep = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # the top-right pixel is dropped
    # L_rec = (1 - 0.5)^2 / 1 dropped entry = 0.25; D(x^) = sigmoid(0) = 1/2
    total, rec, adv = context_encoder_loss(prediction, target, keep, torch.zeros(1))
    assert rec.item() == 0.25 and adv.item() == pytest.approx(math.log(2))  # -log D(x^)
    assert total.item() == pytest.approx(0.999 * 0.25 + 0.001 * math.log(2))
    total, _, adv = context_encoder_loss(prediction, target, keep, torch.zeros(1), generator_loss="minimax")
    assert total.item() == pytest.approx(0.999 * 0.25 - 0.001 * math.log(2))  # log(1 - D(x^))
    # D's loss: -[log D(x) + log(1 - D(x^))] with D(x) = 3/4, D(x^) = 1/4: 2 log(4/3)
    assert discriminator_loss(torch.tensor([math.log(3)]), torch.tensor([-math.log(3)])).item() == pytest.approx(
        2 * math.log(4 / 3)
    )
    # The method applies its config's weights: its loss value is 0.999 rec + 0.001 adv.
    rep = make("context-encoder", (3, 32, 32), arch="fast", latent_dim=8)
    obs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loss, m = rep.loss({"obs": obs, "keep": rep.keep_masks(4)})
    assert loss.item() == pytest.approx(0.999 * m["rec"].item() + 0.001 * m["adv"].item(), rel=1e-6)
    rep.config.lambda_rec, rep.config.lambda_adv = 1.0, 0.0
    loss, m = rep.loss({"obs": obs, "keep": rep.keep_masks(4)})
    assert loss.item() == pytest.approx(m["rec"].item(), rel=1e-6)


def test_one_backward_gives_each_player_its_own_gradient():
    torch.manual_seed(0)
    rep = make("context-encoder", (3, 32, 32), arch="fast", latent_dim=8)
    batch = {"obs": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), "keep": rep.keep_masks(4)}
    loss, metrics = rep.loss(batch)
    loss.backward()
    disc = list(rep.discriminator.parameters())
    gen = list(rep.encoder.parameters()) + list(rep.decoder.parameters())
    assert all(p.requires_grad for p in disc)  # the freeze is undone
    # References, each from a plain forward: D's gradient is that of its BCE alone; the
    # generator's that of 0.999 L_rec + 0.001 L_adv alone (D fixed).
    p = rep.predict(batch["obs"], batch["keep"])
    d_ref = torch.autograd.grad(
        discriminator_loss(rep.discriminator(p["target"]), rep.discriminator(p["composite"])), disc
    )
    g_ref = torch.autograd.grad(
        context_encoder_loss(p["prediction"], p["target"], batch["keep"], rep.discriminator(p["composite"]))[0],
        gen,
        allow_unused=True,
    )
    for param, ref in zip(disc, d_ref):
        assert torch.allclose(param.grad, ref, atol=1e-6)
    for param, ref in zip(gen, g_ref):
        assert torch.allclose(param.grad, torch.zeros_like(param) if ref is None else ref, atol=1e-6)
    assert metrics["d_loss"].item() == pytest.approx(
        discriminator_loss(rep.discriminator(p["target"]), rep.discriminator(p["composite"])).item(), rel=1e-5
    )


def test_the_discriminator_learns_on_a_toy_problem():
    torch.manual_seed(0)
    rep = make("context-encoder", (3, 32, 32), arch="fast", latent_dim=8, mask="center")
    # Toy images: a bright square on black at a random place; the generator starts at grey.
    obs = torch.zeros(16, 3, 32, 32, dtype=torch.uint8)
    for i, (r, c) in enumerate(torch.randint(0, 24, (16, 2)).tolist()):
        obs[i, :, r : r + 8, c : c + 8] = 255
    batch = {"obs": obs, "keep": rep.keep_masks(16)}
    optimizer = torch.optim.Adam(rep.parameters(), lr=1e-3)
    d_losses = []
    for _ in range(30):
        loss, metrics = rep.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        d_losses.append(metrics["d_loss"].item())
    assert d_losses[0] == pytest.approx(2 * math.log(2), abs=0.1)  # D starts near chance
    assert np.mean(d_losses[-5:]) < 0.7 * d_losses[0]


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("context-encoder", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "context-encoder",
        cartpole,
        out=tmp_path / "ce",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16},
        log_every=1,
        progress=False,
    )
    records = [json.loads(line) for line in (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 20
    # The generator's objective on a fixed held-out batch (same masks) falls from the untrained model's.
    held_out = RolloutData(cartpole).split(0.2)[1]
    fixed = model.to_batch(model.sample_batch(held_out, 32, np.random.default_rng(1)))
    fixed["keep"] = model.keep_masks(32, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    untrained = make("context-encoder", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    with torch.no_grad():
        before, after = untrained.loss(fixed)[0].item(), model.loss(fixed)[0].item()
    assert after < 0.9 * before
    assert records[-1]["d_loss"] < records[0]["d_loss"]  # and D learns
    scores = model.extra_scores(held_out)
    assert scores["inpaint_mse"] < untrained.extra_scores(held_out)["inpaint_mse"]
    loaded = load_representation(tmp_path / "ce" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    filled = model.inpaint(frames)
    assert filled.dtype == np.uint8 and filled.shape == frames.shape
    keep = model.keep_masks(5, torch.Generator().manual_seed(0)).expand(5, 9, SIZE, SIZE).bool().numpy()
    assert np.array_equal(filled[keep], frames[keep])  # the context is the frame's own


def test_config_is_checked():
    with pytest.raises(ValueError, match="mask"):
        make("context-encoder", (9, 32, 32), mask="stripes")
    with pytest.raises(ValueError, match="mask_fraction"):
        make("context-encoder", (9, 32, 32), mask_fraction=0.0)
    with pytest.raises(ValueError, match="4 px wide"):
        make("context-encoder", (9, 4, 4), mask="center", mask_fraction=0.9, arch="fast")


def test_picture_shows_each_frame_with_its_hole_the_in_painting_and_the_original(cartpole, tmp_path):
    """inpainting.png, a row per held-out frame: the input with the hole (the original outside
    it, not inside), the in-painting (inpaint with the same masks), the original."""
    import imageio.v2 as imageio

    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("context-encoder", (9, SIZE, SIZE), arch="fast", latent_dim=8, mask="center")
    (path,) = rep.pictures(data, tmp_path)
    picture = imageio.imread(path)
    step = SIZE + 2
    assert picture.shape == (6 * step - 2, 3 * step - 2, 3)
    panel = lambda r, c: picture[r * step : r * step + SIZE, c * step : c * step + SIZE].transpose(2, 0, 1)  # noqa: E731
    frames = data.stack(np.linspace(0, len(data) - 1, 6).astype(int), k=3)
    keep = rep.keep_masks(6, torch.Generator().manual_seed(0))
    filled = rep.inpaint(frames, keep=keep)
    outside = keep[:, 0].bool().numpy()  # (6, H, W): pixels the input keeps
    assert 0 < outside.mean() < 1
    for i in range(6):
        np.testing.assert_array_equal(panel(i, 2), frames[i, -3:])
        np.testing.assert_array_equal(panel(i, 1), filled[i, -3:])
        masked = panel(i, 0)
        np.testing.assert_array_equal(masked[:, outside[i]], frames[i, -3:][:, outside[i]])
        assert not np.array_equal(masked[:, ~outside[i]], frames[i, -3:][:, ~outside[i]])
