"""How much of the ground-truth state an embedding holds.

Three scores, each computed on embeddings of *held-out episodes* (the encoder and the probe's
regression never saw them):

* **linear-probe R^2**: ridge regression from embedding to the state, fit on the training
  episodes, scored on the held-out ones; variance-weighted over state dimensions standardised
  with the training statistics (see :func:`linear_probe_r2`). 1 is perfect, 0 is no better than
  predicting the mean, and it can be negative.
* **kNN-MSE** (S-RL Toolbox, Raffin et al. 2018): for each held-out embedding, the mean
  squared distance between its ground-truth state and those of its k=5 nearest neighbours in
  embedding space (itself excluded), states standardised per dimension. Lower is better.
* **GTC** (ground-truth correlation, S-RL Toolbox): for each state dimension, the largest
  absolute Pearson correlation with any *learned* dimension (the toolbox's code also counts
  correlations between ground-truth dimensions, which inflates it; we take learned dimensions
  only), averaged over state dimensions.
"""

from __future__ import annotations

import numpy as np


def ridge_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form ridge on standardised inputs; returns (weights, bias, x mean, x std)."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xs = (x - mu) / sd
    xb = np.concatenate([xs, np.ones((len(xs), 1))], axis=1)
    reg = l2 * len(xs) * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    w = np.linalg.solve(xb.T @ xb + reg, xb.T @ y)
    return w[:-1], w[-1], mu, sd


def r2_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """R^2 per column; NaN for columns without variance."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12, 1.0 - ss_res / ss_tot, np.nan)


def linear_probe_r2(z_train, s_train, z_test, s_test, l2: float = 1e-2) -> tuple[float, np.ndarray]:
    """Held-out R^2 of a ridge regression z -> s, and the per-dimension values.

    The score is variance-weighted over state dimensions, on targets standardised with the
    training statistics: R^2 = 1 - sum_d SS_res,d / sum_d SS_tot,d. A plain average of per-dimension
    R^2 is dominated by dimensions that barely vary in the held-out episodes (a resting object's
    velocity), where any error is a huge negative R^2; dimensions constant in training are left out.
    """
    mu, sd = s_train.mean(0), s_train.std(0)
    keep = sd > 1e-6
    if not keep.any():
        raise ValueError("the probe target does not vary in the training episodes")
    s_train = (s_train[:, keep] - mu[keep]) / sd[keep]
    s_test = (s_test[:, keep] - mu[keep]) / sd[keep]
    w, b, zmu, zsd = ridge_fit(z_train, s_train, l2)
    pred = ((z_test - zmu) / zsd) @ w + b
    ss_res = ((s_test - pred) ** 2).sum()
    ss_tot = ((s_test - s_test.mean(0)) ** 2).sum()
    return float(1.0 - ss_res / ss_tot), r2_scores(s_test, pred)


def knn_mse(z: np.ndarray, s: np.ndarray, k: int = 5, standardize: bool = True) -> float:
    """Mean squared state distance to the k nearest embeddings (self excluded).

    S-RL Toolbox measures it on raw states; by default we standardise each state dimension
    first, so that the dimensions with large ranges (velocities) do not decide the score alone
    and scores compare across tasks. ``standardize=False`` gives the toolbox's number.
    """
    if len(z) <= k:
        raise ValueError(f"kNN-MSE needs more than k={k} samples, got {len(z)}")
    if standardize:
        s = (s - s.mean(0)) / (s.std(0) + 1e-8)
    sq = (z * z).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * z @ z.T
    np.fill_diagonal(d, np.inf)
    nn = np.argpartition(d, k, axis=1)[:, :k]
    return float(((s[nn] - s[:, None, :]) ** 2).sum(-1).mean())


def gtc(z: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over state dims of max |corr(state dim, learned dim)|; and the per-dim maxima."""
    zc = z - z.mean(0)
    sc = s - s.mean(0)
    zn = np.linalg.norm(zc, axis=0)
    sn = np.linalg.norm(sc, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (sc.T @ zc) / (sn[:, None] * zn[None, :])
    corr = np.where(np.isfinite(corr), np.abs(corr), 0.0)
    per_dim = corr.max(1)
    per_dim = np.where(sn > 1e-12, per_dim, np.nan)
    return float(np.nanmean(per_dim)), per_dim


def probe_embeddings(
    z_train, s_train, z_test, s_test, k: int = 5, max_knn: int = 2000, seed: int = 0
) -> dict[str, float]:
    """All three scores; kNN-MSE on at most ``max_knn`` held-out points (as the toolbox does)."""
    r2, _ = linear_probe_r2(z_train, s_train, z_test, s_test)
    idx = np.arange(len(z_test))
    if len(idx) > max_knn:
        idx = np.random.default_rng(seed).choice(idx, max_knn, replace=False)
    g, _ = gtc(z_test, s_test)
    return {
        "r2": r2,
        "knn_mse": knn_mse(z_test[idx], s_test[idx], k),
        "gtc": g,
        "n_train": int(len(z_train)),
        "n_test": int(len(z_test)),
    }


def probe(
    representation, train, test, camera: str | None = None, max_frames: int = 5000, seed: int = 0
) -> dict[str, float]:
    """Embed the frames of two :class:`~ssrl.representations.data.RolloutData` and score them
    against the data's probe target (the env's state observation when recorded, else the
    physical state).

    Observations are built the way the representation's encoder expects them (the frame stack
    of its input), from ``camera`` (default the one its config trains on, else the data's first
    camera); at most ``max_frames`` frames of each part are used, drawn at random.
    """
    rng = np.random.default_rng(seed)
    camera = camera or getattr(representation.config, "camera", None)
    k = representation.obs_shape[0] // 3

    def embed(data):
        idx = np.arange(len(data))
        if len(idx) > max_frames:
            idx = np.sort(rng.choice(idx, max_frames, replace=False))
        return representation.embed(data.stack(idx, camera, k)), data.probe_target()[1][idx]

    z_train, s_train = embed(train)
    z_test, s_test = embed(test)
    return dict(probe_embeddings(z_train, s_train, z_test, s_test), target=train.probe_target()[0])
