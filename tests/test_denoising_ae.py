"""Denoising autoencoder: the corruptions, the loss by hand, the clean target, learning on env
frames, the encoder's gradient and the checkpoint round trip."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.image.denoising_ae import gaussian_noise, masking_noise, reconstruction_loss
from ssrl.representations.pretrain import pretrain

SIZE = 48


def test_zero_corruption_leaves_the_input_unchanged():
    x = torch.rand(4, 9, 8, 8)
    assert torch.equal(masking_noise(x, 0.0)[0], x)
    assert torch.equal(masking_noise(x, 0.0, shared=False)[0], x)
    assert torch.equal(gaussian_noise(x, 0.0), x)
    for corruption in ("masking", "gaussian"):
        rep = make("denoising-ae", (9, 32, 32), arch="fast", corruption=corruption, mask_fraction=0.0, noise_std=0.0)
        y = torch.rand(2, 9, 32, 32)
        assert torch.equal(rep.corrupt(y), y)
    # and a non-zero level does change it (so the checks above can fail)
    assert not torch.equal(masking_noise(x, 0.25)[0], x) and not torch.equal(gaussian_noise(x, 0.1), x)


def test_masking_zeroes_a_share_nu_of_pixel_locations_in_every_channel():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 6, 8, 8) * 0.9 + 0.1  # no zero pixel before corruption
    noisy, keep = masking_noise(x, 0.25, shared=True, generator=generator)
    zero = noisy == 0
    # the same locations in all channels: a pixel is zeroed in every channel or in none
    assert torch.equal(zero.all(1), zero.any(1)) and keep.shape == (2000, 1, 8, 8)
    # exactly round(0.25 * 64) = 16 locations per image (the paper's fixed count), so nu on average
    assert (zero[:, 0].flatten(1).sum(1) == 16).all()
    # ... spread evenly: each location is dropped in ~25% of the images (binomial sd ~0.01)
    per_location = zero[:, 0].float().mean(0)
    assert per_location.min() > 0.2 and per_location.max() < 0.3
    # the kept entries are untouched
    assert torch.equal(noisy[~zero], x[~zero])
    # per component (shared=False): 0.25 of all C*H*W entries, different channels differ
    noisy, keep = masking_noise(x[:200], 0.25, shared=False, generator=generator)
    assert ((noisy == 0).flatten(1).sum(1) == round(0.25 * 6 * 64)).all() and keep.shape == (200, 6, 8, 8)
    assert not torch.equal((noisy == 0).all(1), (noisy == 0).any(1))
    # Gaussian: the noise has standard deviation sigma
    eps = gaussian_noise(torch.zeros(100, 3, 16, 16), 0.2, torch.Generator().manual_seed(1))
    assert eps.std().item() == pytest.approx(0.2, rel=0.02) and abs(eps.mean().item()) < 0.005


def test_reconstruction_loss_by_hand_on_a_2x2_image():
    target = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])  # one image, one channel, 2x2
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    p = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.0, 3.0)]
    x = (0.0, 1.0, 0.5, 0.25)
    cross_entropy = -sum(xi * math.log(pi) + (1 - xi) * math.log(1 - pi) for xi, pi in zip(x, p))
    # -log(1 - s(2)) - log s(-1) + log 2 - 0.25 log s(3) - 0.75 log(1 - s(3))
    assert cross_entropy == pytest.approx(2.1269 + 1.3133 + 0.6931 + 0.0121 + 2.2864, abs=1e-3)
    assert reconstruction_loss(logits, target, "cross_entropy").item() == pytest.approx(cross_entropy, rel=1e-6)
    squared = sum((xi - pi) ** 2 for xi, pi in zip(x, p))
    assert reconstruction_loss(logits, target, "squared").item() == pytest.approx(squared, rel=1e-6)
    # zero logits: p = 1/2 everywhere, cross-entropy 4 log 2 whatever the target
    assert reconstruction_loss(torch.zeros_like(logits), target, "cross_entropy").item() == pytest.approx(
        4 * math.log(2)
    )
    with pytest.raises(ValueError, match="reconstruction"):
        reconstruction_loss(logits, target, "l1")


class _Echo(torch.nn.Module):
    """A stand-in decoder whose output (logits) is a given image, whatever the latent."""

    def __init__(self):
        super().__init__()
        self.image = None

    def forward(self, z):
        p = self.image.clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)


@pytest.mark.parametrize("reconstruction", ["cross_entropy", "squared"])
def test_the_target_is_the_clean_image(reconstruction):
    torch.manual_seed(0)
    rep = make("denoising-ae", (3, 32, 32), arch="fast", latent_dim=8, reconstruction=reconstruction)
    obs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    clean = obs.float() / 255
    echo = _Echo()
    rep.decoder = echo
    corrupt = rep.corrupt

    def outputs(what):
        def spy(x, generator=None):
            noisy = corrupt(x, generator)
            echo.image = x if what == "clean" else noisy
            return noisy

        rep.corrupt = spy
        return rep.loss({"obs": obs})[0].item()

    best, copy = outputs("clean"), outputs("corrupted")
    if reconstruction == "cross_entropy":
        # the minimum is the summed binary entropy of the clean pixels, per image
        p = clean.double().clamp(1e-6, 1 - 1e-6)
        entropy = -(clean * p.log() + (1 - clean) * (1 - p).log()).flatten(1).sum(1).mean().item()
        assert best == pytest.approx(entropy, rel=1e-4)
    else:
        assert best == pytest.approx(0.0, abs=1e-6)
    assert copy > best + 100  # ~1/4 of 3072 entries wrong


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("denoising-ae", (9, SIZE, SIZE), arch="fast", latent_dim=16)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())

    model, summary = pretrain(
        "denoising-ae",
        cartpole,
        out=tmp_path / "dae",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16},
        progress=False,
    )
    # From the decoder's start (every pixel 1/2, 9*48*48 log 2 = 14373 nats) towards the entropy
    # floor of these mostly black frames (~3700): the first steps are slow (a sigmoid output at 1/2).
    assert summary["last"]["loss"] < 0.92 * summary["first_loss"]
    held_out = RolloutData(cartpole).split(0.2)[1]
    torch.manual_seed(0)
    untrained = make("denoising-ae", (9, SIZE, SIZE), arch="fast", latent_dim=16).extra_scores(held_out)
    scores = model.extra_scores(held_out)
    assert scores["denoise_mse"] < 0.95 * untrained["denoise_mse"]
    assert scores["corrupted_mse"] == pytest.approx(untrained["corrupted_mse"])  # same seeded corruption
    loaded = load_representation(tmp_path / "dae" / "model.pt")
    frames = held_out.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))
    noisy, denoised = model.denoise(frames)
    assert noisy.dtype == denoised.dtype == np.uint8 and denoised.shape == frames.shape


def test_config_is_checked():
    with pytest.raises(ValueError, match="mask_fraction"):
        make("denoising-ae", (9, 32, 32), mask_fraction=1.0)
    with pytest.raises(ValueError, match="corruption"):
        make("denoising-ae", (9, 32, 32), corruption="salt")
    with pytest.raises(ValueError, match="noise_std"):
        make("denoising-ae", (9, 32, 32), noise_std=-0.1)
