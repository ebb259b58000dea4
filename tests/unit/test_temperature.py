"""Temperature scaling: known answers, an independent fit (torch's LBFGS on the logits, as in Guo et al.'s
reference code), the argmax kept, ECE lower on held-out voxels, NLL never higher on the fitting set."""
import numpy as np
import pytest
import torch

from nnunet_mt.metrics import ece
from nnunet_mt.temperature import (brier_score, fit_temperature, negative_log_likelihood, scale_probabilities)


def _overconfident(n, classes, true_temperature, seed):
    """Logits z; labels drawn from softmax(z / T0); the 'model' reports softmax(z): overconfident by T0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4, size=(classes, n))
    true_p = torch.softmax(torch.from_numpy(z / true_temperature), 0).numpy()
    labels = (rng.random(n)[None] > np.cumsum(true_p, 0)).sum(0)
    return z, torch.softmax(torch.from_numpy(z), 0).numpy(), labels


@pytest.mark.parametrize("true_temperature,classes", [(2.5, 2), (0.6, 3), (1.0, 2)])
def test_fit_recovers_a_known_temperature(true_temperature, classes):
    _, p, labels = _overconfident(200_000, classes, true_temperature, seed=0)
    t, before, after = fit_temperature(p, labels)
    assert t == pytest.approx(true_temperature, rel=0.03)
    assert after <= before


def test_fit_equals_an_independent_lbfgs_fit_on_the_logits():
    z, p, labels = _overconfident(50_000, 3, 1.8, seed=1)
    log_t = torch.zeros(1, requires_grad=True, dtype=torch.float64)
    logits, target = torch.from_numpy(z), torch.from_numpy(labels)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy((logits / log_t.exp()).T, target)
        loss.backward()
        return loss
    optimizer.step(closure)
    t, _, after = fit_temperature(p, labels)
    assert t == pytest.approx(float(log_t.detach().exp()), rel=1e-3)
    # equal up to the clipping of p at 1e-7 (the logits here reach probabilities below it)
    assert after == pytest.approx(float(closure().detach()), rel=1e-5)


def test_scaling_keeps_the_argmax_and_lowers_ece_on_held_out_voxels():
    _, p_fit, labels_fit = _overconfident(100_000, 2, 3.0, seed=2)
    _, p_test, labels_test = _overconfident(100_000, 2, 3.0, seed=3)
    t, _, _ = fit_temperature(p_fit, labels_fit)
    scaled = scale_probabilities(p_test, t)
    assert np.array_equal(scaled.argmax(0), p_test.argmax(0))
    assert np.allclose(scaled.sum(0), 1, atol=1e-5)
    before, after = ece(p_test[1], labels_test == 1), ece(scaled[1], labels_test == 1)
    assert after < before / 3, (before, after)
    assert negative_log_likelihood(scaled, labels_test) < negative_log_likelihood(p_test, labels_test)


def test_a_well_calibrated_model_keeps_t_near_1_and_nll_never_rises():
    _, p, labels = _overconfident(100_000, 2, 1.0, seed=4)
    t, before, after = fit_temperature(p, labels)
    assert abs(t - 1) < 0.03 and after <= before


def test_nll_and_brier_known_answers():
    p = np.array([[0.9, 0.2], [0.1, 0.8]])  # two voxels, labels 0 and 1
    labels = np.array([0, 1])
    assert negative_log_likelihood(p, labels) == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)
    assert brier_score(p, labels) == pytest.approx(((0.1 ** 2 + 0.1 ** 2) + (0.2 ** 2 + 0.2 ** 2)) / 2)
    assert brier_score(np.array([[0.0], [1.0]]), np.array([0])) == pytest.approx(2.0)  # the worst
    assert negative_log_likelihood(np.array([[0.0], [1.0]]), np.array([0])) == pytest.approx(-np.log(1e-7))


def test_temperature_1_is_the_identity_and_t_must_be_positive():
    _, p, _ = _overconfident(1000, 3, 1.0, seed=5)
    assert np.allclose(scale_probabilities(p, 1.0), p, atol=1e-6)
    with pytest.raises(ValueError):
        scale_probabilities(p, 0.0)


def test_prediction_temperature_from_the_environment(tmp_path, monkeypatch, capsys):
    import json
    import torch
    from nnunet_mt.errors import InputError
    from nnunet_mt.prediction_temperature import (ENV, divide_logits, temperature_from_environment,
                                                  with_prediction_temperature)
    monkeypatch.delenv(ENV, raising=False)
    assert temperature_from_environment() is None
    monkeypatch.setenv(ENV, "0.5")
    assert temperature_from_environment() == 0.5
    fit = tmp_path / "temperature.json"
    fit.write_text(json.dumps({"temperature": 1.25, "region": "whole image", "cases": ["a"]}))
    monkeypatch.setenv(ENV, str(fit))
    assert temperature_from_environment() == 1.25
    for bad, needle in (("0", "> 0"), ("nan", "> 0"), ("inf", "> 0"), (str(tmp_path / "missing.json"), "neither"),
                        (str(tmp_path), "neither")):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(InputError, match=needle):
            temperature_from_environment()
    fit.write_text("{}")
    monkeypatch.setenv(ENV, str(fit))
    with pytest.raises(InputError, match="not a temperature.json"):
        temperature_from_environment()
    # the hook divides every output, tensor or list; the weights are untouched
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 2, 2, 2)
    before = net(x)
    handle = divide_logits(net, 2.0)
    torch.testing.assert_close(net(x), before / 2.0)
    handle.remove()
    torch.testing.assert_close(net(x), before)
    monkeypatch.setenv(ENV, "4")
    capsys.readouterr()
    torch.testing.assert_close(with_prediction_temperature(net)(x), before / 4.0)
    assert "logits divided by T = 4" in capsys.readouterr().out
    monkeypatch.setenv(ENV, "x")
    with pytest.raises(SystemExit) as stop:
        with_prediction_temperature(torch.nn.Identity())
    assert stop.value.code == 2 and "nnUNet_mt_temperature=x" in capsys.readouterr().err
