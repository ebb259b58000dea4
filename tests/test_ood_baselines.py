import numpy as np
import pytest

from nnunet_mt_ood.baselines import (KNNDetector, MahalanobisDetector, ThresholdDetector, foreground_entropy,
                                     ledoit_wolf_covariance, max_softmax_score, mean_entropy)


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
