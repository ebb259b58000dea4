import numpy as np
import pytest

from nnunet_mt.sampling import case_sampling_probabilities, source_shares


def test_paper_example_10_and_100_cases():
    sources = ["A"] * 10 + ["B"] * 100
    p = case_sampling_probabilities(sources)
    shares = source_shares(sources, p)
    # 10 / sqrt(10) = 3.162 and 100 / sqrt(100) = 10 -> 3.162 / 13.162 = 0.2403
    assert shares["A"] == pytest.approx(np.sqrt(10) / (np.sqrt(10) + 10), abs=1e-12)
    assert round(shares["A"], 3) == 0.240 and round(shares["B"], 3) == 0.760
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p[:10] == p[0]) and np.all(p[10:] == p[10])


def test_alpha_zero_is_uniform_per_case_and_one_is_uniform_per_source():
    sources = ["A"] * 3 + ["B"] * 9
    np.testing.assert_allclose(case_sampling_probabilities(sources, alpha=0), np.full(12, 1 / 12))
    shares = source_shares(sources, case_sampling_probabilities(sources, alpha=1))
    assert shares == pytest.approx({"A": 0.5, "B": 0.5})


def test_order_of_cases_is_kept():
    p = case_sampling_probabilities(["B", "A", "B", "B", "B"])  # A: 1 case, B: 4 cases
    expected = np.array([0.5, 1.0, 0.5, 0.5, 0.5]) / 3.0
    np.testing.assert_allclose(p, expected)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        case_sampling_probabilities([])
