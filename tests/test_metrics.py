"""Shared metrics against known answers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sccourse import metrics

# ``blobs`` (four well-separated Gaussian clusters) comes from conftest.py


def test_separable_blobs_give_ari_one(blobs):
    X, y = blobs
    assert metrics.evaluate_ari(X, y) == pytest.approx(1.0)


def test_shuffled_labels_give_ari_near_zero(blobs):
    X, y = blobs
    y_shuffled = np.random.default_rng(0).permutation(y)
    assert abs(metrics.evaluate_ari(X, y_shuffled)) < 0.05


def test_missing_labels_are_excluded(blobs):
    X, y = blobs
    labels = pd.Series(y.astype(object))
    # corrupt a tenth of the labels, then hide exactly those: the score must stay perfect
    bad = np.arange(0, len(y), 10)
    labels.iloc[bad] = "wrong"
    assert metrics.evaluate_ari(X, labels) < 1.0
    labels.iloc[bad] = np.nan
    assert metrics.evaluate_ari(X, labels) == pytest.approx(1.0)


def test_evaluate_ari_accepts_torch_and_checks_shapes(blobs):
    import torch

    X, y = blobs
    assert metrics.evaluate_ari(torch.from_numpy(X).float(), y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels must have one entry per cell"):
        metrics.evaluate_ari(X, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        metrics.evaluate_ari(X[:, 0], y)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate_ari(Xn, y)


def test_leiden_resolution_changes_cluster_count(blobs):
    X, _ = blobs
    low = len(np.unique(metrics.leiden_labels(X, resolution=0.05)))
    high = len(np.unique(metrics.leiden_labels(X, resolution=3.0)))
    assert high > low


def test_knn_preservation_identity_and_random():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10))
    assert metrics.knn_preservation(X, X, k=10) == 1.0
    # a scaled/rotated copy keeps every neighbourhood
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert metrics.knn_preservation(X, 3 * X @ Q, k=10) == 1.0
    # an unrelated embedding keeps about k/(N-1) by chance
    assert metrics.knn_preservation(X, rng.normal(size=(300, 2)), k=10) < 0.15


def test_knn_preservation_by_hand():
    X_high = np.array([[0.0], [1.0], [10.0], [11.0]])
    X_low = np.array([[0.0], [10.0], [1.0], [11.0]])
    # k=1: high-dim neighbours 0<->1, 2<->3; low-dim: 0<->2, 1<->3 → none kept
    assert metrics.knn_preservation(X_high, X_low, k=1) == 0.0


def test_trustworthiness_matches_sklearn():
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    Y = X[:, :2] + 0.1 * rng.normal(size=(200, 2))
    assert metrics.trustworthiness(X, Y, k=7) == pytest.approx(trustworthiness(X, Y, n_neighbors=7))
    with pytest.raises(ValueError, match="same number of rows"):
        metrics.trustworthiness(X, Y[:-1])


def test_knn_preservation_at_size_scores_equal_size_subsets():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 6))
    Y = X[:, :2] + 0.5 * rng.normal(size=(120, 2))
    idx = np.arange(20, 120)
    # one draw, against the same subset scored directly (the documented generator and order)
    mean, sd = metrics.knn_preservation_at_size(X, Y, 40, k=5, index=idx, n_draws=1, seed=9)
    pick = np.random.default_rng(9).choice(idx, size=40, replace=False)
    assert mean == metrics.knn_preservation(X[pick], Y[pick], k=5) and sd == 0.0
    # the whole candidate set: the plain score; a boolean mask works as an index
    mask = np.zeros(120, dtype=bool)
    mask[idx] = True
    assert metrics.knn_preservation_at_size(X, Y, 100, k=5, index=mask)[0] == metrics.knn_preservation(
        X[idx], Y[idx], k=5
    )
    # the size effect it exists for: a random map keeps about k / (size - 1) of the neighbours
    R = rng.normal(size=(120, 2))
    small = metrics.knn_preservation_at_size(X, R, 20, k=5, n_draws=30, seed=0)[0]
    large = metrics.knn_preservation(X, R, k=5)
    assert small > 2 * large
    with pytest.raises(ValueError, match="size"):
        metrics.knn_preservation_at_size(X, Y, 5, k=5)


def test_an_ari_evaluation_keeps_torchs_thread_count():
    import torch

    from sccourse.metrics import evaluate_ari

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        emb = np.r_[rng.normal(0, 1, (30, 3)), rng.normal(6, 1, (30, 3))]
        evaluate_ari(emb, np.repeat(["a", "b"], 30))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
