import pytest

from nnunet_mt.schedule import has_converged, plateau_learning_rate


def test_learning_rate_decays_once_per_window_without_decrease():
    # windows of 2 epochs: means 1.0, 0.8 (decrease), 0.9 (no), 0.95 (no), 0.5 (decrease), tail ignored
    losses = [1.0, 1.0, 0.8, 0.8, 0.9, 0.9, 0.95, 0.95, 0.5, 0.5, 9.0]
    assert plateau_learning_rate(losses, 1e-4, window=2) == pytest.approx(1e-4 * 0.9 ** 2)
    assert plateau_learning_rate(losses[:4], 1e-4, window=2) == pytest.approx(1e-4)
    assert plateau_learning_rate([], 1e-4, window=8) == 1e-4


def test_convergence_needs_two_consecutive_evaluations_without_decrease():
    assert not has_converged([3, 2, 1], window=1)
    assert not has_converged([3, 2, 2.5], window=1)  # one evaluation without decrease
    assert has_converged([3, 2, 2.5, 2.1], window=1)  # two, both above the best (2)
    assert not has_converged([3, 2, 2.5, 1.9], window=1)
    # windows of 2: means 3, 2, 2.05, 2.0 -> the last two are not below 2
    assert has_converged([3, 3, 2, 2, 2.1, 2.0, 2.0, 2.0], window=2)
    assert not has_converged([1.0, 2.0], window=1)  # too few evaluations
