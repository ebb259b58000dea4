"""The OOD method registry (nnunet_mt_ood/methods.py): one class per method, its needs combined into the
predictor's options, its values read from one case's predictor results, its files; the one threshold rule."""
import numpy as np
import pytest

from nnunet_mt_ood.baselines import KNNDetector, MahalanobisDetector, ThresholdDetector
from nnunet_mt_ood.detector import SpectralOODDetector, mean_plus_c_std
from nnunet_mt_ood.methods import (METHODS, OODMethod, POOLED_LAYER, FoldEnsemble, Spectral, predictor_options,
                                   register)

NOTHING = {"layer": None, "layers": [], "spectral_layers": [], "softmax_scores": False, "mc_dropout_samples": 0,
           "member_disagreement": False, "image_features": {}}


def test_predictor_options_combine_what_each_method_needs():
    assert predictor_options(["spectral"], "last") == dict(NOTHING, layer="last")
    assert predictor_options(["knn", "msp", "mcdropout"], "bottleneck", 4) == dict(
        NOTHING, layers=[POOLED_LAYER], softmax_scores=True, mc_dropout_samples=4)
    assert predictor_options(["spectral", "mahalanobis", "knn", "entropy"], "bottleneck") == dict(
        NOTHING, layer="bottleneck", layers=[POOLED_LAYER], softmax_scores=True)
    assert predictor_options(["ensemble"], "last") == dict(NOTHING, member_disagreement=True)
    assert predictor_options(["seed_ensemble"], "last") == dict(NOTHING, member_disagreement=True)
    from nnunet_mt_ood.histogram import fine_intensity_histogram
    assert predictor_options(["ihf", "spectral"], "last") == dict(
        NOTHING, layer="last", image_features={"fine_intensity_histogram": fine_intensity_histogram})
    assert predictor_options(["spectral_centred", "spectral_multilayer"], "last") == dict(
        NOTHING, layer="last", spectral_layers=["bottleneck", "last"])


def test_each_method_reads_its_values_and_names_its_files():
    results = {"signature_last": np.ones(4), f"pooled_{POOLED_LAYER}": np.arange(8.0), "max_softmax_score": 0.1,
               "mean_entropy": 0.2, "mc_dropout_foreground_entropy": 0.3, "member_dice_disagreement": 0.4,
               "fine_intensity_histogram": np.full(2000, 5e-4), "centred_signature_last": np.zeros(4),
               "signature_bottleneck": np.full(6, 2.0)}
    expected = {"spectral": np.ones(4), "mahalanobis": np.arange(8.0), "knn": np.arange(8.0), "msp": 0.1,
                "entropy": 0.2, "mcdropout": 0.3, "ensemble": 0.4, "seed_ensemble": 0.4, "ihf": np.full(2000, 5e-4),
                "spectral_centred": np.zeros(4),
                "spectral_multilayer": np.concatenate([np.ones(4), np.full(6, 2.0)]) / np.sqrt(2)}
    assert set(METHODS) == set(expected)
    for name, method in METHODS.items():
        assert method.name == name and isinstance(method, OODMethod)
        np.testing.assert_array_equal(method.values(results, "last"), expected[name])
    assert METHODS["spectral"].paths("/f", "last") == ("/f/spectral_signatures_last.npz",
                                                       "/f/spectral_signatures_last.json")
    assert METHODS["knn"].paths("/f", "last")[1] == f"/f/ood_fit_knn_{POOLED_LAYER}.json"
    assert METHODS["ensemble"].paths("/m", "last", ["0", "1"])[1] == "/m/ood_fit_ensemble_folds_0_1.json"
    assert METHODS["seed_ensemble"].paths("/f", "last", [1, 2])[1] == "/f/ood_fit_ensemble_seeds_1_2.json"
    assert {m: spec.ensemble_of for m, spec in METHODS.items() if spec.ensemble_of} == {
        "ensemble": "folds", "seed_ensemble": "seeds"}
    assert [m for m, spec in METHODS.items() if spec.decides] == ["spectral"]
    assert [m for m, spec in METHODS.items() if spec.needs_dropout] == ["mcdropout"]
    assert METHODS["knn"].make_detector(2.0, {"k": 3}).k == 3 and METHODS["knn"].make_detector(2.0).k == 1
    assert METHODS["ihf"].paths("/f", "last") == ("/f/ood_fit_ihf.npz", "/f/ood_fit_ihf.json")
    assert METHODS["spectral_centred"].paths("/f", "bottleneck")[1] == "/f/ood_fit_spectral_centred_bottleneck.json"
    assert METHODS["spectral_multilayer"].paths("/f", "last")[1] == "/f/ood_fit_spectral_multilayer.json"
    assert METHODS["spectral_multilayer"].fitted_layer("last") == "last+bottleneck"
    assert METHODS["ihf"].make_detector(2.0, {"bins": 7}).bins == 7
    assert METHODS["mcdropout"].fit_warning({"mc_samples": 5}, 10) == "fitted with 5 dropout samples"
    assert METHODS["mcdropout"].fit_warning({"mc_samples": 10}, 10) is None


def test_register_refuses_a_taken_or_empty_name():
    with pytest.raises(ValueError, match="new name"):
        register(Spectral())
    with pytest.raises(ValueError, match="new name"):
        register(OODMethod())
    assert FoldEnsemble.name in METHODS


def test_one_threshold_rule_for_every_detector():
    """tau = mean + C std (ddof 0) of train_scores_, whatever the detector; spectral is the nearest neighbour
    (k = 1) of unit vectors, knn the same on vectors it normalises itself."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for detector, train in ((SpectralOODDetector(2.0), unit), (KNNDetector(2.0), x), (MahalanobisDetector(2.0), x),
                            (ThresholdDetector(2.0), x[:, 0])):
        detector.fit(train)
        s = detector.train_scores_
        assert detector.threshold_ == pytest.approx(s.mean() + 2.0 * s.std(ddof=0), rel=1e-12)
        assert detector.threshold_ == mean_plus_c_std(s, 2.0)
        np.testing.assert_array_equal(detector.predict(train), detector.score(train) > detector.threshold_)
    spectral, knn = SpectralOODDetector(2.0).fit(unit), KNNDetector(2.0).fit(x)
    np.testing.assert_allclose(spectral.train_scores_, knn.train_scores_, rtol=1e-12)
    np.testing.assert_allclose(spectral.score(unit[:3] * -1), knn.score(x[:3] * -1), rtol=1e-12)
