import numpy as np
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


def test_windows_skip_epochs_without_a_value():
    from nnunet_mt.schedule import _window_means
    nan = float("nan")
    assert list(_window_means([1.0, nan, 3.0, 5.0], 2)) == [1.0, 4.0]
    assert np.isnan(_window_means([nan, nan], 2)[0])
    assert not has_converged([nan, nan, 2.0, 2.0, 2.0, 2.0], window=2)  # a window without any value


def test_per_source_convergence_waits_for_the_last_source_that_improves():
    from nnunet_mt.schedule import has_converged_per_source
    # A stops improving after epoch 1 while B keeps falling: the rule waits for B
    a, b = [3, 2, 2.5, 2.1, 2.2], [3.0, 2.0, 1.2, 0.6, 0.3]
    assert has_converged(a, window=1) and not has_converged(b, window=1)
    assert not has_converged_per_source([{"A": x, "B": y} for x, y in zip(a, b)], window=1)
    b_done = [3.0, 2.0, 1.2, 1.3, 1.25]
    assert has_converged_per_source([{"A": x, "B": y} for x, y in zip(a, b_done)], window=1)
    # a source missing from an epoch is skipped in that window's mean
    # a window in which a source was not drawn is no evaluation of it: B's are 5, 4, 6, 7
    assert has_converged_per_source([{"A": 3}, {"A": 2, "B": 5}, {"A": 2.5, "B": 4}, {"A": 2.2, "B": 6},
                                     {"A": 2.4, "B": 7}], window=1)
    assert not has_converged_per_source([{"A": 3}, {"A": 2, "B": 5}, {"A": 2.5, "B": 4}, {"A": 2.2, "B": 6},
                                         {"A": 2.4, "B": 3}], window=1)
    assert not has_converged_per_source([], window=1)
