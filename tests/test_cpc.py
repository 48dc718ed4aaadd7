"""CPC on images: the patch grid, InfoNCE's closed-form limits, a context that never sees the rows
it predicts (bit for bit), learning on env frames, the encoder's gradient and a round trip."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.cpc import RowCausalContext, patch_grid, row_info_nce
from ssrl.representations.pretrain import pretrain

SMALL = {"arch": "dmc", "latent_dim": 16, "patch_size": 16, "patch_stride": 8}  # 48 px: a 5x5 grid, k = 2, 3, 4


def test_patch_grid_geometry_at_84_pixels():
    x = torch.randint(0, 256, (2, 9, 84, 84), dtype=torch.uint8)
    for arch, (size, stride, g, offsets) in {"fast": (32, 13, 5, (3, 4)), "dmc": (24, 10, 7, (3, 4, 5))}.items():
        rep = make("cpc", (9, 84, 84), arch=arch)
        assert (rep.config.patch_size, rep.config.patch_stride) == (size, stride)
        assert (rep.grid_size, rep.offsets) == (g, offsets)
        assert size + (g - 1) * stride == 84  # the grid covers the frame exactly
        patches = patch_grid(x, size, stride)
        assert patches.shape == (2, g, g, 9, size, size)
        for i in range(g):
            for j in range(g):
                assert torch.equal(
                    patches[:, i, j], x[:, :, i * stride : i * stride + size, j * stride : j * stride + size]
                )
        # offsets start at the first row whose patches share no pixel with the context's row
        assert offsets[0] * stride >= size and (offsets[0] - 1) * stride < size
        assert rep.latents(x).shape == (2, g, g, 50)
        assert rep.encoder(x).shape == (2, 50)  # the same encoder on full frames


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="patch_size 24 is smaller than the 31 px the 'fast' trunk needs"):
        make("cpc", (9, 84, 84), arch="fast", patch_size=24, patch_stride=10)
    with pytest.raises(ValueError, match=r"24-px patches at stride 10 do not tile 80-px frames"):
        make("cpc", (9, 80, 80), arch="dmc")
    with pytest.raises(ValueError, match="has no row 5 rows below another"):
        make("cpc", (9, 48, 48), **SMALL, first_offset=5)
    rep = make("cpc", (9, 48, 48), **SMALL, num_offsets=10)  # cut at the grid's last row
    assert (rep.grid_size, rep.offsets) == (5, (2, 3, 4))


def test_info_nce_closed_form_limits():
    b, g, k = 2, 3, 1
    n = b * g * g  # 18 candidates for every prediction
    z = torch.eye(n).reshape(b, g, g, n)  # orthonormal latents
    # Uniform scores: -log(1/18) = log 18.
    assert row_info_nce(torch.zeros(b, g - k, g, n), z, k).item() == pytest.approx(math.log(n))
    # Score log 17 on the target and 0 on the 17 others: -log(17 / (17 + 17)) = log 2.
    pred = math.log(n - 1) * z[:, k:]
    assert row_info_nce(pred, z, k).item() == pytest.approx(math.log(2))
    # A margin of 30: log(1 + 17 e^-30) ~ 17 e^-30, essentially 0.
    assert row_info_nce(30 * z[:, k:], z, k).item() == pytest.approx(17 * math.exp(-30), abs=1e-9)
    # The whole model with W_k = 0: each of the K = 3 offsets gives log(B G^2) = log 75 (B = 3).
    for bidirectional, directions in ((False, 1), (True, 2)):
        rep = make("cpc", (9, 48, 48), **SMALL, bidirectional=bidirectional)
        for w in rep.predictors.parameters():
            torch.nn.init.zeros_(w)
        loss, metrics = rep.loss({"obs": torch.randint(0, 256, (3, 9, 48, 48), dtype=torch.uint8)})
        assert loss.item() == pytest.approx(directions * 3 * math.log(75), rel=1e-6)
        assert len(metrics) == directions * 3


def test_context_never_sees_the_rows_it_predicts():
    torch.manual_seed(0)
    # The context network alone: changing rows > i of the latents leaves c rows <= i bit for bit.
    context = RowCausalContext(dim=8, hidden=16, blocks=5)
    z = torch.randn(2, 8, 6, 6)
    for i in range(5):
        changed = z.clone()
        changed[:, :, i + 1 :] = torch.randn_like(changed[:, :, i + 1 :])
        assert torch.equal(context(changed)[:, :, : i + 1], context(z)[:, :, : i + 1])
        assert not torch.equal(context(changed)[:, :, i + 1], context(z)[:, :, i + 1])  # row i+1 does see it

    # The whole model, from pixels: 16-px patches at stride 8, so patch row r covers y in [8r, 8r + 16).
    # Changing the pixels below y = 8i + 16 (only patch rows > i see them) leaves every prediction
    # made from rows <= i unchanged (top-down); changing those above y = 8(4 - i) leaves the
    # bottom-up predictions from the i+1 bottom rows unchanged.
    rep = make("cpc", (9, 48, 48), **SMALL, bidirectional=True).eval()
    for module in rep.encoder.modules():  # dense kernels (the delta-orthogonal init sees one pixel per tap)
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    obs = torch.randint(0, 256, (2, 9, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        base = rep.predictions(rep.latents(obs))
        for i in range(4):
            below, above = obs.clone(), obs.clone()
            below[..., 8 * i + 16 :, :] = torch.randint_like(below[..., 8 * i + 16 :, :], 0, 256)
            above[..., : 8 * (4 - i), :] = torch.randint_like(above[..., : 8 * (4 - i), :], 0, 256)
            down = rep.predictions(rep.latents(below))[0][1]
            up = rep.predictions(rep.latents(above))[1][1]
            for k in rep.offsets:
                assert torch.equal(down[k][:, : i + 1], base[0][1][k][:, : i + 1]), (i, k)
                assert torch.equal(up[k][:, : i + 1], base[1][1][k][:, : i + 1]), (i, k)
                if i + 1 < 5 - k:  # the next row sees changed pixels: its predictions differ
                    assert not torch.equal(down[k][:, i + 1], base[0][1][k][:, i + 1])


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("cpc", (9, 48, 48), **SMALL)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "cpc", cartpole, out=tmp_path / "cpc", steps=20, batch_size=16, config=SMALL, progress=False
    )
    # From about K log(16 * 25) = 3 log 400 = 18.0 at initialisation.
    assert summary["first_loss"] == pytest.approx(3 * math.log(400), abs=0.5)
    assert summary["last"]["loss"] < 0.9 * summary["first_loss"]  # about 14.7 after 20 steps
    held_out = RolloutData(cartpole).split(0.2)[1]
    assert 0.0 <= model.extra_scores(held_out)["cpc_acc"] <= 1.0
    loaded = load_representation(tmp_path / "cpc" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
