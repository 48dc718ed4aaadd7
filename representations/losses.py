"""The losses and distances of the self-supervised objectives, one function each.

Every function takes batches of embeddings (``(B, D)`` tensors) and returns a scalar (or per-
pair) tensor; the formula is in its docstring, taken from the papers named there (as summarised
in Lilian Weng's "Self-Supervised Representation Learning", 2019, where it defines one). Each is
tested against a hand computation in ``tests/test_representation_losses.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Triplet loss (FaceNet; TCN):

    L = mean_i max(0, ||a_i - p_i||^2 - ||a_i - n_i||^2 + margin)

    Squared Euclidean distances, as TCN uses them: the anchor must be closer to the positive
    than to the negative by ``margin``.
    """
    d_pos = (anchor - positive).pow(2).sum(-1)
    d_neg = (anchor - negative).pow(2).sum(-1)
    return F.relu(d_pos - d_neg + margin).mean()


def npairs(anchor: torch.Tensor, positive: torch.Tensor, reg: float = 0.002) -> torch.Tensor:
    """N-pairs loss (Sohn 2016; grasp2vec, TCN, mfTCN):

    NPair(a, p) = mean_i -log( exp(a_i . p_i) / sum_j exp(a_i . p_j) )
                  + lambda / 4 (mean_i ||a_i||^2 + mean_i ||p_i||^2)

    Every other positive in the batch is a negative for anchor i. This is softmax cross-entropy
    over the (B, B) matrix of dot products with the diagonal as labels, equal to Sohn's form
    log(1 + sum_{j != i} exp(a_i.p_j - a_i.p_i)).

    Departures from the source text's NPair (sum_i -log(exp(a_i.p_i) / sum_{j != i} exp(a_i.p_j))
    + lambda (||a_i||^2 + ||p_i||^2)), all as TensorFlow's ``npairs_loss``
    (``tf.contrib.losses.metric_learning`` / ``tf_slim``), which the public grasp2vec
    (google-research/tensor2robot ``research/grasp2vec/losses.py``) and TCN
    (tensorflow/models ``research/tcn``) code call with its default lambda = 0.002:

    * the positive is in the denominator (Sohn's form): without it the loss is not bounded below
      (pushing a_i . p_i up lowers it without end, held back only by the L2 term);
    * a mean over the batch, not a sum, so neither term scales with the batch size;
    * the L2 penalty is a quarter of lambda times the sum of the mean squared norms (the
      ``0.25 * reg_lambda`` of ``npairs_loss``).

    The dot products are not normalised, so the L2 penalty is what keeps embeddings bounded.
    """
    logits = anchor @ positive.T
    labels = torch.arange(len(anchor), device=anchor.device)
    penalty = 0.25 * reg * (anchor.pow(2).sum(-1).mean() + positive.pow(2).sum(-1).mean())
    return F.cross_entropy(logits, labels) + penalty


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, normalize: bool = True) -> torch.Tensor:
    """InfoNCE (CPC, CURL, SimCLR-style) with the other keys of the batch as negatives:

    L = mean_i -log( exp(sim(q_i, k_i) / T) / sum_j exp(sim(q_i, k_j) / T) )

    ``sim`` is the cosine similarity when ``normalize`` (SimCLR), else the dot product.
    """
    if normalize:
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    logits = query @ key.T / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ), summed over latent dims, one value per row:

    KL = 1/2 sum_d ( mu_d^2 + exp(logvar_d) - logvar_d - 1 )
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def gaussian_kl_between(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL( N(mu_q, var_q) || N(mu_p, var_p) ) for diagonal Gaussians, summed over dims:

    KL = 1/2 sum_d ( logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1 )
    """
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def w2_gaussian(mu_i: torch.Tensor, sigma_i: torch.Tensor, mu_j: torch.Tensor, sigma_j: torch.Tensor) -> torch.Tensor:
    """2-Wasserstein distance between diagonal Gaussians, one value per row (DBC, Eq. 4):

    W2(N(mu_i, S_i), N(mu_j, S_j)) = sqrt( ||mu_i - mu_j||_2^2 + ||S_i^{1/2} - S_j^{1/2}||_F^2 )

    with ``sigma`` the standard deviations (so S^{1/2} = diag(sigma)). A tiny constant under the
    root keeps its gradient finite when the two Gaussians coincide.
    """
    sq = (mu_i - mu_j).pow(2).sum(-1) + (sigma_i - sigma_j).pow(2).sum(-1)
    return torch.sqrt(sq + 1e-12)


def bisimulation_target(reward_i: torch.Tensor, reward_j: torch.Tensor, w2: torch.Tensor, gamma: float) -> torch.Tensor:
    """The on-policy bisimulation target of DBC (Eq. 4): |r_i - r_j| + gamma W2(P_i, P_j)."""
    return (reward_i - reward_j).abs() + gamma * w2


def bisimulation_loss(z_i: torch.Tensor, z_j: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DBC's encoder loss J(phi) = mean ( ||z_i - z_j||_1 - target )^2, with ``target`` from
    :func:`bisimulation_target` computed on stop-gradient latents."""
    return ((z_i - z_j).abs().sum(-1) - target).pow(2).mean()
