import numpy as np
import pytest
import torch

from nnunet_mt_ood import SpectralOODDetector, spectral_signature


def test_signature_known_answer_diagonal_features():
    # F (voxels x channels) with orthogonal columns of norms 4, 2, 1 -> singular values 4, 2, 1
    f = np.zeros((3, 2, 2, 2))
    f[0, 0, 0, 0], f[1, 0, 0, 1], f[2, 1, 1, 1] = 4.0, 2.0, 1.0
    log_s = np.log([4.0, 2.0, 1.0])
    np.testing.assert_allclose(spectral_signature(f), log_s / np.linalg.norm(log_s), atol=1e-12)


def test_signature_matches_numpy_svd_and_torch_input():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(14, 6, 7, 8)) * rng.uniform(0.1, 5, size=(14, 1, 1, 1))
    s = np.linalg.svd(f.reshape(14, -1).T, compute_uv=False)
    expected = np.log(s) / np.linalg.norm(np.log(s))
    np.testing.assert_allclose(spectral_signature(f), expected, atol=1e-9)
    np.testing.assert_allclose(spectral_signature(torch.from_numpy(f).float()), expected, atol=1e-5)


def test_zero_channels_give_finite_signature():
    f = np.zeros((4, 5, 5, 5))
    f[0] = 1.0
    sig = spectral_signature(f)
    assert np.all(np.isfinite(sig)) and np.linalg.norm(sig) == pytest.approx(1.0)
    assert np.all(np.isfinite(spectral_signature(np.zeros((3, 4, 4, 4)))))


def test_leave_one_out_threshold_by_hand():
    train = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    # nearest other point: 1, 1, 2, 4 -> mean 2, population std sqrt(1.5)
    det = SpectralOODDetector(c=2.5).fit(train)
    np.testing.assert_allclose(det.train_scores_, [1, 1, 2, 4])
    assert det.threshold_ == pytest.approx(2 + 2.5 * np.sqrt(1.5))
    np.testing.assert_allclose(det.score([[3.0, 10.0], [0.5, 0.0]]), [6.0, 0.5])
    assert det.predict([[3.0, 10.0], [0.5, 0.0]]).tolist() == [True, False]
    assert det.nearest([[3.0, 10.0]]).tolist() == [3]


def test_fewer_than_three_training_signatures_is_an_error():
    with pytest.raises(ValueError, match="at least 3"):
        SpectralOODDetector().fit(np.zeros((2, 14)))


def test_distance_by_group_is_the_nearest_signature_of_each_group():
    train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
    detector = SpectralOODDetector().fit(train)
    by_group = detector.distance_by_group([[0.0, 4.0], [0.9, 0.0]], ["A", "A", "B", "B"])
    assert by_group["A"] == pytest.approx([4.0, 0.1])  # nearest A signatures: (0, 0) and (1, 0)
    assert by_group["B"] == pytest.approx([1.0, np.hypot(0.9, 3.0)])
    assert np.minimum(by_group["A"], by_group["B"]) == pytest.approx(detector.score([[0.0, 4.0], [0.9, 0.0]]))


def test_prediction_mismatch_line():
    """score says in one line when the fit's device or precision differs from its own; nothing when they agree
    or when the fit file predates the record."""
    from nnunet_mt_ood.model import prediction_mismatch
    cpu = {"device": "cpu", "precision": "float32"}
    assert prediction_mismatch(dict(cpu), cpu) is None
    assert prediction_mismatch(None, cpu) is None
    line = prediction_mismatch({"device": "cuda", "precision": "float16"}, cpu)
    assert line.startswith("fitted on cuda (float16), scored on cpu (float32)") and "\n" not in line
    assert "fitted on cpu (bfloat16)" in prediction_mismatch({"device": "cpu", "precision": "bfloat16"}, cpu)


def test_centred_signature_ignores_feature_scale_and_image_size_where_the_papers_does_not():
    """Known answers: features scaled by a (Gram times a^2) and the same content twice over (Gram times 2) add a
    constant to every log singular value; the centred signature is unchanged, the paper's is not."""
    from nnunet_mt_ood.signatures import (centred_signature, log_spectrum_from_gram, multilayer_signature,
                                          signature_from_gram)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 500)) * np.arange(1, 7)[:, None]
    gram = features @ features.T
    twice = np.concatenate([features, features], axis=1)  # an image holding the same content twice
    centred = centred_signature(log_spectrum_from_gram(gram))
    for other in (9.0 * gram, twice @ twice.T):
        np.testing.assert_allclose(centred_signature(log_spectrum_from_gram(other)), centred, atol=1e-12)
        assert np.abs(signature_from_gram(other) - signature_from_gram(gram)).max() > 1e-3
    assert np.linalg.norm(centred) == pytest.approx(1.0) and centred.sum() == pytest.approx(0.0, abs=1e-12)
    # by hand: singular values 4, 2, 1 -> log 4, log 2, 0 -> centred log 2 * (1, 0, -1) -> (1, 0, -1) / sqrt(2)
    np.testing.assert_allclose(centred_signature(np.log([4.0, 2.0, 1.0])), np.array([1, 0, -1]) / np.sqrt(2))
    both = multilayer_signature([centred, signature_from_gram(gram)])
    assert both.shape == (12,) and np.linalg.norm(both) == pytest.approx(1.0)
