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


def _binary_cases(true_temperature, n_cases, voxels, seed):
    """Per case: reported probabilities softmax(z) of a binary model (2, voxels) and labels drawn from
    softmax(z / true_temperature): the model is over- (T > 1) or underconfident (T < 1) by that factor."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        z = rng.normal(0, 3, voxels)
        reported = np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))])
        labels = (rng.random(voxels) < 1 / (1 + np.exp(-z / true_temperature))).astype(np.int64)
        cases.append((reported, labels))
    return cases


def test_ece_fit_finds_the_grid_temperature_nearest_the_true_one():
    from nnunet_mt.temperature import ECE_GRID, fit_temperature_ece, foreground_ece
    assert 1.0 in ECE_GRID and 2.0 in ECE_GRID and ECE_GRID[0] == pytest.approx(0.25)
    (p, y), = _binary_cases(2.0, 1, 200_000, seed=3)
    t = fit_temperature_ece(p, y)
    assert t in ECE_GRID and abs(np.log2(t / 2.0)) <= 1 / 8 + 1e-9  # 2, or one grid step (2^(1/8)) away
    assert foreground_ece(scale_probabilities(p, t), y) < foreground_ece(p, y) / 3
    # foreground ECE by hand: two voxels of foreground probability 0.9, one of them foreground -> |0.5 - 0.9|
    assert foreground_ece(np.array([[0.1, 0.1], [0.9, 0.9]]), np.array([1, 0])) == pytest.approx(0.4)


def test_held_out_choice_keeps_a_temperature_that_helps_every_source():
    from nnunet_mt.temperature import choose_temperature
    cases = _binary_cases(2.5, 6, 5000, seed=0)  # one source, six subjects, every one overconfident
    choice = choose_temperature([p for p, _ in cases], [y for _, y in cases], list("abcdef"), ["S"] * 6)
    assert choice["objective"] in ("nll", "ece") and choice["temperature"] == pytest.approx(2.5, rel=0.2)
    held_out = choice["held_out_ece"]
    assert held_out[choice["objective"]] < held_out["none"] / 2 and choice["reason"].startswith(
        f"T = {choice['temperature']:.3f} ({choice['objective']} fit) kept: held-out ECE")


def test_held_out_choice_keeps_t_1_when_a_source_would_get_worse():
    """Four overconfident subjects of source B, two underconfident of source A: the fits soften (T > 1), which
    lowers B's held-out ECE and the pooled one but raises A's: T = 1 is kept, and the line names A."""
    from nnunet_mt.temperature import choose_temperature
    over, under = _binary_cases(2.5, 4, 5000, seed=1), _binary_cases(0.6, 2, 5000, seed=2)
    cases = over + under
    choice = choose_temperature([p for p, _ in cases], [y for _, y in cases], list("abcdef"), ["B"] * 4 + ["A"] * 2)
    per_source = choice["held_out_ece_per_source"]
    best = min(("nll", "ece"), key=lambda name: choice["held_out_ece"][name])
    assert per_source["B"][best] < per_source["B"]["none"] and per_source["A"][best] > per_source["A"]["none"]
    assert choice["temperature"] == 1.0 and choice["objective"] is None
    assert choice["reason"].startswith("T = 1 kept: it raised the held-out ECE of A (")


def test_held_out_choice_needs_two_subjects():
    from nnunet_mt.temperature import choose_temperature
    cases = _binary_cases(2.5, 2, 1000, seed=4)
    choice = choose_temperature([p for p, _ in cases], [y for _, y in cases], ["s", "s"], ["S", "S"])
    assert choice["temperature"] == 1.0 and "held-out subjects, these cases come from 1" in choice["reason"]
