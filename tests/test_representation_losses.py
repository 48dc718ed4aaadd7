"""Each loss and metric against a hand computation on small inputs."""

import math

import numpy as np
import pytest
import torch

from ssrl.representations import losses
from ssrl.representations.probe import gtc, knn_mse, linear_probe_r2


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_triplet_by_hand():
    a, p, n = t([[0.0, 0.0], [1.0, 0.0]]), t([[1.0, 0.0], [1.0, 1.0]]), t([[0.0, 2.0], [1.0, 0.5]])
    # row 0: d+ = 1, d- = 4 -> max(0, 1 - 4 + 1) = 0; row 1: d+ = 1, d- = 0.25 -> 1 - 0.25 + 1 = 1.75
    assert losses.triplet(a, p, n, margin=1.0).item() == pytest.approx(1.75 / 2)


def test_npairs_by_hand():
    a, p = t([[1.0, 0.0], [0.0, 2.0]]), t([[1.0, 1.0], [0.0, 1.0]])
    logits = [[1.0, 0.0], [2.0, 2.0]]
    ce = [-(logits[0][0] - math.log(math.exp(1) + math.exp(0))), -(logits[1][1] - math.log(2 * math.exp(2)))]
    norms = [1 + 2, 4 + 1]
    expected = np.mean(ce) + 0.1 * np.mean(norms)
    assert losses.npairs(a, p, reg=0.1).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_by_hand():
    q, k = t([[1.0, 0.0], [0.0, 1.0]]), t([[2.0, 0.0], [1.0, 1.0]])
    # cosine similarities: [[1, 1/sqrt2], [0, 1/sqrt2]], temperature 0.5
    s = np.array([[1.0, 2 ** -0.5], [0.0, 2 ** -0.5]]) / 0.5
    expected = np.mean([-(s[i, i] - np.log(np.exp(s[i]).sum())) for i in range(2)])
    assert losses.info_nce(q, k, temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_kl_by_hand_and_against_torch():
    mu, logvar = t([[0.5, -1.0]]), t([[0.0, math.log(4.0)]])
    expected = 0.5 * ((0.25 + 1 - 0 - 1) + (1 + 4 - math.log(4) - 1))
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    q = torch.distributions.Normal(t([0.3, 1.0]), t([0.5, 2.0]))
    p = torch.distributions.Normal(t([-0.2, 0.0]), t([1.5, 0.7]))
    ours = losses.gaussian_kl_between(t([[0.3, 1.0]]), 2 * t([[0.5, 2.0]]).log(), t([[-0.2, 0.0]]), 2 * t([[1.5, 0.7]]).log())
    assert ours.item() == pytest.approx(torch.distributions.kl_divergence(q, p).sum().item(), rel=1e-5)


def test_w2_and_bisimulation_by_hand():
    mu_i, s_i, mu_j, s_j = t([[0.0, 0.0]]), t([[1.0, 1.0]]), t([[3.0, 0.0]]), t([[1.0, 5.0]])
    w2 = losses.w2_gaussian(mu_i, s_i, mu_j, s_j)
    assert w2.item() == pytest.approx(5.0, rel=1e-6)  # sqrt(9 + 16)
    target = losses.bisimulation_target(t([1.0]), t([0.25]), w2, gamma=0.5)
    assert target.item() == pytest.approx(0.75 + 2.5)
    z_i, z_j = t([[1.0, 2.0]]), t([[0.0, 0.0]])  # L1 distance 3
    assert losses.bisimulation_loss(z_i, z_j, target).item() == pytest.approx((3 - 3.25) ** 2)


def test_probe_metrics_by_hand():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200, 3))
    z = s @ rng.standard_normal((3, 5))  # a linear image of the state: R^2 = 1
    r2, _ = linear_probe_r2(z[:150], s[:150], z[150:], s[150:], l2=1e-9)
    assert r2 == pytest.approx(1.0, abs=1e-6)
    noise = rng.standard_normal((200, 5))
    r2_noise, _ = linear_probe_r2(noise[:150], s[:150], noise[150:], s[150:])
    assert r2_noise < 0.2
    assert knn_mse(s, s, k=5) < knn_mse(noise, s, k=5)
    # k=1 by hand: neighbours of z = 0, 1, 3, 6 are 1, 0, 1, 3, so raw squared state errors are
    # 4, 4, 4, 16; standardised states (std 2.96) scale them by 1 / 8.75.
    z1, s1 = np.array([[0.0], [1.0], [3.0], [6.0]]), np.array([[0.0], [2.0], [4.0], [8.0]])
    assert knn_mse(z1, s1, k=1, standardize=False) == pytest.approx(7.0)
    assert knn_mse(z1, s1, k=1) == pytest.approx(7.0 / s1.var(), rel=1e-6)
    # GTC takes the best learned dimension per state dimension, never another state dimension.
    g, per_dim = gtc(np.c_[s[:, 0], rng.standard_normal(200)], np.c_[s[:, 0], s[:, 0] + 1e-3 * s[:, 1]])
    assert per_dim[0] == pytest.approx(1.0) and g == pytest.approx(1.0, abs=1e-3)
    g_random, _ = gtc(rng.standard_normal((200, 2)), s)
    assert g_random < 0.3
