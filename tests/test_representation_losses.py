"""Each loss and metric against a hand computation on small inputs, and each method's loss
(TCN, mfTCN, grasp2vec, DBC, DeepMDP) on latents small enough to work out by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from ssrl.representations import losses, make
from ssrl.representations.control.dbc import DBCConfig, DBCObjective
from ssrl.representations.control.deepmdp import DeepMDPConfig, DeepMDPObjective
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
    # TensorFlow's npairs_loss penalty: lambda/4 (mean ||a_i||^2 + mean ||p_i||^2) = 0.1/4 ((1+4)/2 + (2+1)/2)
    expected = np.mean(ce) + 0.1 / 4 * (2.5 + 1.5)
    assert losses.npairs(a, p, reg=0.1).item() == pytest.approx(expected, rel=1e-6)
    assert losses.npairs(a, p, reg=0.0).item() == pytest.approx(np.mean(ce), rel=1e-6)


def test_info_nce_by_hand():
    q, k = t([[1.0, 0.0], [0.0, 1.0]]), t([[2.0, 0.0], [1.0, 1.0]])
    # cosine similarities: [[1, 1/sqrt2], [0, 1/sqrt2]], temperature 0.5
    s = np.array([[1.0, 2**-0.5], [0.0, 2**-0.5]]) / 0.5
    expected = np.mean([-(s[i, i] - np.log(np.exp(s[i]).sum())) for i in range(2)])
    assert losses.info_nce(q, k, temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_kl_by_hand_and_against_torch():
    mu, logvar = t([[0.5, -1.0]]), t([[0.0, math.log(4.0)]])
    expected = 0.5 * ((0.25 + 1 - 0 - 1) + (1 + 4 - math.log(4) - 1))
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    q = torch.distributions.Normal(t([0.3, 1.0]), t([0.5, 2.0]))
    p = torch.distributions.Normal(t([-0.2, 0.0]), t([1.5, 0.7]))
    ours = losses.gaussian_kl_between(
        t([[0.3, 1.0]]), 2 * t([[0.5, 2.0]]).log(), t([[-0.2, 0.0]]), 2 * t([[1.5, 0.7]]).log()
    )
    assert ours.item() == pytest.approx(torch.distributions.kl_divergence(q, p).sum().item(), rel=1e-5)


def test_w2_and_bisimulation_by_hand():
    mu_i, s_i, mu_j, s_j = t([[0.0, 0.0]]), t([[1.0, 1.0]]), t([[3.0, 0.0]]), t([[1.0, 5.0]])
    w2 = losses.w2_gaussian(mu_i, s_i, mu_j, s_j)
    assert w2.item() == pytest.approx(5.0, rel=1e-6)  # sqrt(9 + 16)
    target = losses.bisimulation_target(t([1.0]), t([0.25]), w2, gamma=0.5)
    assert target.item() == pytest.approx(0.75 + 2.5)
    z_i, z_j = t([[1.0, 2.0]]), t([[0.0, 0.0]])  # L1 distance 3
    assert losses.bisimulation_loss(z_i, z_j, target).item() == pytest.approx((3 - 3.25) ** 2)


# -- each method's loss on hand-made latents ----------------------------------------------------


def test_tcn_triplet_loss_normalises_then_applies_the_margin():
    rep = make("tcn", (9, 16, 16), arch="dmc", margin=0.2)
    rep.encoder = nn.Identity()  # the batch holds the embeddings themselves
    batch = {
        "anchor": t([[3.0, 4.0], [1.0, 0.0]]),
        "positive": t([[0.0, 2.0], [0.0, 1.0]]),
        "negative": t([[2.0, 0.0], [1.0, 1.0]]),
    }
    loss, metrics = rep.loss(batch)
    # Row 0, normalised: a = (.6, .8), p = (0, 1), n = (1, 0): d+ = .36 + .04 = .4, d- = .16 + .64 = .8,
    # max(0, .4 - .8 + .2) = 0. Row 1: a = (1, 0), p = (0, 1), n = (1, 1)/sqrt2: d+ = 2,
    # d- = (1 - 1/sqrt2)^2 + 1/2 = 2 - sqrt2, so 2 - (2 - sqrt2) + .2 = sqrt2 + .2.
    assert loss.item() == pytest.approx((0 + math.sqrt(2) + 0.2) / 2, rel=1e-6)
    assert metrics["triplet_acc"].item() == 0.5  # row 0 has d+ < d-, row 1 not


@pytest.mark.parametrize("method,config", [("tcn", dict(loss="npairs")), ("mftcn", {})])
def test_tcn_and_mftcn_npairs_loss_by_hand(method, config):
    rep = make(method, (9, 20, 20), arch="dmc", reg=0.1, **config)
    rep.encoder = nn.Identity()
    loss, metrics = rep.loss({"anchor": t([[2.0, 0.0], [0.0, 1.0]]), "positive": t([[1.0, 0.0], [3.0, 1.0]])})
    # a . p^T = [[2, 6], [0, 1]]: row 0 -log(e^2 / (e^2 + e^6)), row 1 -log(e^1 / (e^0 + e^1));
    # L2: 0.1/4 (mean(4, 1) + mean(1, 10)) = 0.025 (2.5 + 5.5) = 0.2.
    ce = (math.log(math.exp(2) + math.exp(6)) - 2 + math.log(1 + math.e) - 1) / 2
    assert loss.item() == pytest.approx(ce + 0.2, rel=1e-6)
    assert metrics["retrieval_acc"].item() == 0.5  # row 0 retrieves positive 1, row 1 its own


def test_grasp2vec_loss_and_its_l2_penalty_by_hand(monkeypatch):
    """Two-way n-pairs, each direction with TensorFlow's npairs_loss penalty (as the public
    grasp2vec code): lambda/2 (mean ||d||^2 + mean ||phi_o||^2) in all, not 2 lambda (...)."""
    rep = make("grasp2vec", (3, 16, 16), arch="dmc", reg=0.1)
    diff, obj = t([[3.0, 0.0], [0.0, 4.0]]), t([[1.0, 0.0], [0.0, 0.0]])
    monkeypatch.setattr(rep, "embeddings", lambda batch: (diff, obj))
    loss, metrics = rep.loss({})
    # d . o^T = o . d^T = [[3, 0], [0, 0]]: each direction's cross-entropy is
    # mean(-log(e^3 / (e^3 + 1)), -log(1/2)); the two directions are equal.
    ce = 2 * (math.log(math.exp(3) + 1) - 3 + math.log(2)) / 2
    penalty = 2 * 0.1 / 4 * ((9 + 16) / 2 + (1 + 0) / 2)  # = 0.65
    assert loss.item() == pytest.approx(ce + penalty, rel=1e-6)
    rep.config.reg = 0.0
    assert loss.item() - rep.loss({})[0].item() == pytest.approx(0.65, rel=1e-5)
    assert metrics["retrieval_acc"].item() == 0.5  # row 1's scores tie; argmax takes object 0


class _Fixed(nn.Module):
    """A stand-in model: ``fn`` of its inputs, no parameters."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *x):
        return self.fn(*x)


@pytest.mark.parametrize("reward_source,bisim", [("true", 2.0), ("model", 3.5)])
def test_dbc_loss_by_hand(monkeypatch, reward_source, bisim):
    obj = DBCObjective(
        DBCConfig(latent_dim=2, action_dim=1, hidden=4, gamma=0.5, bisim_weight=0.5, reward_source=reward_source)
    )
    mu, sigma = t([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]), torch.full((3, 2), 2.0)
    obj.transition = _Fixed(lambda z, a: (mu, sigma))
    obj.reward = _Fixed(lambda x: x[:, 0] - x[:, 1])
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.tensor([1, 2, 0]))  # pairs (0,1) (1,2) (2,0)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.ones_like(x))  # eps = 1
    z = t([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]]).requires_grad_(True)
    reward, next_z = t([1.0, 0.5, 0.0]), t([[0.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    loss, m = obj.latent_loss(z, torch.zeros(3, 1), reward, next_z, torch.ones(3))
    # Transition NLL: (z' - mu)/sigma = [[0, 1], [0, 0], [1, 0]], so the mean over the 6 entries of
    # 1/2 ((z' - mu)/sigma)^2 + log sigma is (0.5 + 0.5)/6 + log 2.
    assert m["transition_nll"].item() == pytest.approx(1 / 6 + math.log(2), rel=1e-6)
    # Reward of z-hat = mu + sigma * 1 = [[2, 2], [5, 2], [2, 6]]: R = [0, 3, -4] against r = [1, .5, 0]:
    # mean(1, 2.5^2, 4^2) = 23.25 / 3.
    assert m["reward_loss"].item() == pytest.approx(23.25 / 3, rel=1e-6)
    # Bisimulation: ||z_i - z_j||_1 = 3, 5, 4; W2 = ||mu_i - mu_j|| = 3, 5, 4 (equal sigmas).
    # true rewards: |r_i - r_j| = .5, .5, 1, targets .5 + .5*3 = 2, .5 + .5*5 = 3, 1 + .5*4 = 3,
    #   loss ((3-2)^2 + (5-3)^2 + (4-3)^2) / 3 = 2;
    # model rewards R(z) = [0, -1, 4]: |dR| = 1, 5, 4, targets 2.5, 7.5, 6,
    #   loss (.5^2 + 2.5^2 + 2^2) / 3 = 3.5.
    assert m["bisim_loss"].item() == pytest.approx(bisim, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * bisim + 1 / 6 + math.log(2) + 23.25 / 3, rel=1e-5)
    if reward_source == "true":
        # Only the L1 distances carry gradient (targets are stop-gradient): d/dz of
        # 0.5 mean_k (d_k - target_k)^2 = 0.5 * 2/3 (d_k - target_k) sign(z_i - z_j) on z_i, minus on z_j.
        loss.backward()
        expected = t([[-2 / 3, 0.0], [-1 / 3, 1.0], [1.0, -1.0]])
        torch.testing.assert_close(z.grad, expected)


@pytest.mark.parametrize(
    "distance,gp_weight,expected",
    [("w1", 0.0, 1.5 + 0.5 * 2.5), ("mmd", 0.0, 1.5 + 0.5 * 25), ("w1", 0.1, 1.5 + 0.5 * 2.5 + 0.1 * 9)],
)
def test_deepmdp_loss_by_hand(monkeypatch, distance, gp_weight, expected):
    obj = DeepMDPObjective(
        DeepMDPConfig(
            latent_dim=2, action_dim=1, hidden=4, transition=distance, transition_weight=0.5, gp_weight=gp_weight
        )
    )
    obj.reward = _Fixed(lambda x: x.sum(-1))  # R-bar([z, a]) = z_1 + z_2 + a
    obj.transition = _Fixed(lambda z, a: (z + a, torch.ones_like(z)))  # P-bar(z, a) = z + a
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.ones_like(x))  # v = 1
    z, action = t([[0.0, 0.0], [1.0, 1.0]]), t([[1.0], [-1.0]])
    reward, next_z = t([0.0, 3.0]), t([[4.0, 5.0], [0.0, 0.0]])
    loss, m = obj.latent_loss(z, action, reward, next_z, torch.ones(2))
    # L_R: R-bar = [1, 1] against r = [0, 3]: mean(|1 - 0|, |1 - 3|) = 1.5 (an L1 loss: squared, 2.5).
    assert m["reward_loss"].item() == pytest.approx(1.5)
    # P-bar = [[1, 1], [0, 0]] against z' = [[4, 5], [0, 0]]: errors (-3, -4) and 0, so
    # W1 = mean(5, 0) = 2.5 and the MMD estimate 2 mean(25, 0) = 25.
    assert m["transition_loss"].item() == pytest.approx(2.5 if distance == "w1" else 25.0)
    if gp_weight:
        # dR/d[z, a] = (1, 1, 1): 3; J_P^T v with v = 1: (1, 1, 1 + 1): 6; per row, so GP = 9.
        assert m["gradient_penalty"].item() == pytest.approx(9.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


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
