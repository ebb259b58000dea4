import numpy as np
import pytest

from nnunet_mt_ood.baselines import (KNNDetector, MahalanobisDetector, ThresholdDetector, foreground_entropy,
                                     ledoit_wolf_covariance, max_softmax_score, mean_entropy, mean_pairwise_dice,
                                     voxel_disagreement)


def test_entropy_scores_by_hand():
    p = np.zeros((2, 2, 1, 1))
    p[:, 0, 0, 0] = [0.5, 0.5]  # voxel 0: maximal uncertainty, log 2
    p[:, 1, 0, 0] = [1.0, 0.0]  # voxel 1: certain background
    assert mean_entropy(p) == pytest.approx(np.log(2) / 2)
    assert max_softmax_score(p) == pytest.approx(1 - 0.75)
    # argmax > 0 nowhere (0.5/0.5 ties go to background) -> fallback: whole image
    assert foreground_entropy(p) == pytest.approx(np.log(2) / 2)
    q = p.copy()
    q[:, 0, 0, 0] = [0.2, 0.8]  # voxel 0 now foreground
    h = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8))
    assert foreground_entropy(q) == pytest.approx(h)


def test_ledoit_wolf_matches_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(0)
    for n, p in ((10, 14), (40, 5), (6, 112)):
        x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
        np.testing.assert_allclose(ledoit_wolf_covariance(x), covariance.LedoitWolf().fit(x).covariance_,
                                   rtol=1e-10, atol=1e-12)


def test_mahalanobis_known_answer_and_threshold():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    det = MahalanobisDetector(c=2.5).fit(train)
    cov = ledoit_wolf_covariance(train)
    x = np.array([[3.0, 0.0, 0.0]])
    d = x - train.mean(0)
    assert det.score(x)[0] == pytest.approx(np.sqrt(d @ np.linalg.inv(cov) @ d.T).item())
    assert det.threshold_ == pytest.approx(det.train_scores_.mean() + 2.5 * det.train_scores_.std())
    assert det.predict([[0, 0, 0], [0, 0, 10]]).tolist() == [False, True]


def test_threshold_detector():
    det = ThresholdDetector(c=1.0).fit([1, 2, 3])
    assert det.threshold_ == pytest.approx(2 + np.std([1, 2, 3]))
    assert det.predict([2.5, 3.0]).tolist() == [False, True]
    with pytest.raises(ValueError, match="at least 3"):
        ThresholdDetector().fit([1, 2])


def test_knn_known_answer_scale_invariance_and_sklearn():
    # unit vectors after normalisation: (1,0), (0,1), (1,1)/sqrt2, (-1,0); 45 degrees apart: 2 sin(22.5 deg)
    train = np.array([[2.0, 0.0], [0.0, 5.0], [3.0, 3.0], [-0.5, 0.0]])
    det = KNNDetector(c=2.5).fit(train)
    chord45 = 2 * np.sin(np.pi / 8)
    np.testing.assert_allclose(det.train_scores_, [chord45, chord45, chord45, np.sqrt(2)])
    assert det.threshold_ == pytest.approx(det.train_scores_.mean() + 2.5 * det.train_scores_.std())
    np.testing.assert_allclose(det.score([[7.0, 0.0], [0.0, -1.0]]), [0.0, np.sqrt(2)])  # scale does not matter
    assert det.predict([[0.0, -1.0]]).tolist() == [False]  # sqrt 2 < tau here
    # k-th neighbour distances against scikit-learn on random 16-dimensional features
    from sklearn.neighbors import NearestNeighbors
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 16)), rng.normal(size=(5, 16))
    ux, uy = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    for k in (1, 3):
        det = KNNDetector(k=k).fit(x)
        ref = NearestNeighbors(n_neighbors=k + 1).fit(ux)
        np.testing.assert_allclose(det.score(y), ref.kneighbors(uy, n_neighbors=k)[0][:, -1])
        np.testing.assert_allclose(det.train_scores_, ref.kneighbors(ux)[0][:, k])  # itself first, then k others
    with pytest.raises(ValueError, match="at least 4"):
        KNNDetector(k=3).fit(x[:3])


def test_fold_ensemble_agreement_by_hand():
    # three folds' segmentations of a 1 x 2 x 4 image, labels 0 (background), 1, 2
    a = np.array([[[1, 1, 2, 0], [0, 0, 0, 0]]])
    b = np.array([[[1, 0, 2, 2], [0, 0, 0, 0]]])
    c = a.copy()
    # a-b: label 1 Dice 2*1/(2+1) = 2/3, label 2 Dice 2*1/(1+2) = 2/3; a-c: 1, 1; b-c as a-b
    assert mean_pairwise_dice([a, b], [1, 2]) == pytest.approx(2 / 3)
    assert mean_pairwise_dice([a, b, c], [1, 2]) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert mean_pairwise_dice([a, c], [1, 2]) == 1.0
    # a label no fold predicts counts as agreement; label 3 absent everywhere
    assert mean_pairwise_dice([a, b], [1, 2, 3]) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # foreground somewhere in 4 voxels (a or b > 0); the folds differ on 2 of them (column 1 and column 3)
    assert voxel_disagreement([a, b]) == pytest.approx(2 / 4)
    assert voxel_disagreement([a, b, c]) == pytest.approx(2 / 4)
    assert voxel_disagreement([a, c]) == 0.0
    empty = np.zeros_like(a)
    assert voxel_disagreement([empty, empty]) == 0.0 and mean_pairwise_dice([empty, empty], [1, 2]) == 1.0
    with pytest.raises(ValueError):
        mean_pairwise_dice([a], [1])
    with pytest.raises(ValueError):
        voxel_disagreement([a])
    with pytest.raises(ValueError):
        mean_pairwise_dice([a, a[:, :1]], [1])
