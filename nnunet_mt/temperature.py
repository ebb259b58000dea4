"""Temperature scaling (Guo et al. 2017) of softmax probabilities, and the scores it is judged by (NLL,
Brier): numpy in, numbers out (no nnU-Net imports).

nnU-Net saves probabilities, not logits. log p differs from the logits z by one constant per voxel
(log p = z - logsumexp(z)), and a softmax ignores such a constant, so softmax(log p / T) is exactly the
temperature-scaled softmax(z / T): any saved probability map can be calibrated after the fact, and the
argmax (the segmentation) never changes for T > 0. Probabilities are clipped at PROBABILITY_FLOOR before
the log (exports hold exact zeros); that caps |log p| at 16.
"""
from typing import Sequence, Tuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

PROBABILITY_FLOOR = 1e-7
TEMPERATURE_RANGE = (0.05, 20.0)  # fitted temperatures are kept inside; 1 = unchanged


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log of (classes, ...) probabilities, clipped at PROBABILITY_FLOOR; float64."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1.0))


def scale_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the class axis 0 of (classes, ...) probabilities; float32, same shape."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return np.exp(log_softmax(log_probabilities(probabilities) / temperature, axis=0)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over voxels of -log p[label]: probabilities (classes, ...), labels (...) integer class indices."""
    log_p = log_probabilities(probabilities)
    return float(-np.mean(np.take_along_axis(log_p, labels[None].astype(np.int64), axis=0)))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over voxels of sum over classes of (p_c - [label == c])^2; 0 is perfect, 2 the worst."""
    p = np.asarray(probabilities, dtype=np.float64)
    onehot = labels[None] == np.arange(p.shape[0]).reshape((-1,) + (1,) * labels.ndim)
    return float(np.mean(np.sum((p - onehot) ** 2, axis=0)))


def _nll_at(inverse_temperature: float, log_p: np.ndarray, log_p_true: np.ndarray) -> float:
    """NLL of softmax(beta * log p): mean of logsumexp(beta * log p) - beta * log p[label]."""
    return float(np.mean(logsumexp(inverse_temperature * log_p, axis=0) - inverse_temperature * log_p_true))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> Tuple[float, float, float]:
    """The T in TEMPERATURE_RANGE minimising the NLL of softmax(log p / T) on these voxels.

    probabilities: (classes, n) (or (classes, ...)), labels: (n,) (or (...)) integer class indices.
    Returns (T, NLL at T = 1, NLL at T). The NLL is convex in 1 / T, so the bounded 1-D search finds
    the global minimum; the NLL at T is never above the NLL at T = 1 (T = 1 is kept if it is not beaten).
    """
    log_p = log_probabilities(probabilities).reshape(probabilities.shape[0], -1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    log_p_true = log_p[labels, np.arange(labels.size)]
    low, high = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    found = minimize_scalar(_nll_at, bounds=(low, high), args=(log_p, log_p_true), method="bounded",
                            options={"xatol": 1e-5})
    before = _nll_at(1.0, log_p, log_p_true)
    if not found.fun < before:
        return 1.0, before, before
    return float(1 / found.x), before, float(found.fun)


# --- a temperature judged by the ECE of cases it was not fitted on ---------------------------------------------
ECE_BINS = 10
ECE_GRID = 0.25 * 2.0 ** (np.arange(33) / 8)  # temperatures the ECE fit tries: 0.25 to 4, steps of 2^(1/8), 1 exact
OBJECTIVES = ("nll", "ece")
HELD_OUT_TOLERANCE = 1e-3  # a source's held-out ECE may not rise by more than this
SELECTION_VOXELS = 200_000  # the held-out check runs on a seeded sample of at most this many voxels, shared by the cases


def foreground_ece(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the foreground probability 1 - p[background] against label > 0 over every voxel given (as
    ``evaluate`` counts it): probabilities (classes, n), labels (n,)."""
    from nnunet_mt.metrics import ece
    foreground = 1.0 - np.asarray(probabilities, dtype=np.float64)[0]
    return ece(foreground, np.asarray(labels) > 0, n_bins, roi=np.ones(foreground.shape, bool))


def fit_temperature_ece(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """The T of ECE_GRID (0.25 to 4, T = 1 included) with the lowest foreground ECE on these voxels; among equal
    ECEs the one closest to 1. ECE is not smooth in T (voxels change bins), hence a grid, not a 1-D search."""
    errors = [foreground_ece(scale_probabilities(probabilities, t), labels, n_bins) for t in ECE_GRID]
    best = min(range(len(ECE_GRID)), key=lambda i: (round(errors[i], 12), abs(np.log(ECE_GRID[i]))))
    return float(ECE_GRID[best])


def fit_by(objective: str, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """T fitted by "nll" (Guo et al.: the NLL minimum) or "ece" (fit_temperature_ece)."""
    if objective == "nll":
        return fit_temperature(probabilities, labels)[0]
    if objective == "ece":
        return fit_temperature_ece(probabilities, labels)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")


def choose_temperature(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], subjects: Sequence[str],
                       sources: Sequence[str]) -> dict:
    """The temperature that lowers ECE on cases it was not fitted on, or T = 1.

    probabilities, labels: per case, (classes, n) and (n,); subjects, sources: one per case. Each subject's cases
    in turn are held out (on a seeded sample of SELECTION_VOXELS voxels): T is fitted by each objective (OBJECTIVES) on the other subjects' voxels and applied
    to the held-out cases. Pooled over subjects, each objective gets a held-out ECE, overall and per source,
    beside T = 1's. Kept: the objective with the lowest overall held-out ECE, if that is below T = 1's and no
    source's held-out ECE rises by more than HELD_OUT_TOLERANCE; T is then fitted by it on every case. Else
    T = 1. Returns {"temperature", "objective" (None for T = 1), "held_out_ece": {"none", "nll", "ece"},
    "held_out_ece_per_source": {source: {...}}, "reason": one line}."""
    subjects, sources = [str(s) for s in subjects], [str(s) for s in sources]
    distinct = sorted(set(subjects))
    rng, share = np.random.default_rng(0), max(1, SELECTION_VOXELS // max(len(labels), 1))
    picks = [np.sort(rng.choice(len(y), share, replace=False)) if len(y) > share else np.arange(len(y))
             for y in labels]
    sampled_p = [np.asarray(p)[:, k] for p, k in zip(probabilities, picks)]  # the selection's voxels
    sampled_y = [np.asarray(y)[k] for y, k in zip(labels, picks)]
    if len(distinct) < 2:
        return {"temperature": 1.0, "objective": None, "held_out_ece": None, "held_out_ece_per_source": None,
                "reason": f"T = 1 kept: a temperature is checked on held-out subjects, these cases come from "
                          f"{len(distinct)}"}
    held_out = {name: [] for name in ("none", *OBJECTIVES)}  # per held-out case: calibrated probabilities
    order = []
    for subject in distinct:
        inside = [i for i, s in enumerate(subjects) if s != subject]
        p_in = np.concatenate([sampled_p[i] for i in inside], axis=1)
        y_in = np.concatenate([sampled_y[i] for i in inside])
        fitted = {name: fit_by(name, p_in, y_in) for name in OBJECTIVES}
        for i in (i for i, s in enumerate(subjects) if s == subject):
            order.append(i)
            held_out["none"].append(np.asarray(sampled_p[i], dtype=np.float64))
            for name, t in fitted.items():
                held_out[name].append(scale_probabilities(sampled_p[i], t))
    y = [sampled_y[i] for i in order]

    def pooled(name, cases):
        return foreground_ece(np.concatenate([held_out[name][k] for k in cases], axis=1),
                              np.concatenate([y[k] for k in cases]))
    everything = range(len(order))
    overall = {name: pooled(name, everything) for name in held_out}
    per_source = {}
    for source in sorted(set(sources)):
        cases = [k for k, i in enumerate(order) if sources[i] == source]
        per_source[source] = {name: pooled(name, cases) for name in held_out}
    best = min(OBJECTIVES, key=lambda name: overall[name])
    worse = [s for s, e in per_source.items() if e[best] > e["none"] + HELD_OUT_TOLERANCE]
    result = {"held_out_ece": overall, "held_out_ece_per_source": per_source}
    if overall[best] < overall["none"] and not worse:
        t = fit_by(best, np.concatenate(probabilities, axis=1), np.concatenate(labels))  # every voxel
        return dict(result, temperature=t, objective=best,
                    reason=f"T = {t:.3f} ({best} fit) kept: held-out ECE {overall['none']:.4f} -> {overall[best]:.4f}")
    why = (f"it raised the held-out ECE of {worse[0]} ({per_source[worse[0]]['none']:.4f} -> "
           f"{per_source[worse[0]][best]:.4f})" if worse and overall[best] < overall["none"] else
           f"no fit lowered the held-out ECE ({overall['none']:.4f} at T = 1, best {overall[best]:.4f} by {best})")
    return dict(result, temperature=1.0, objective=None, reason=f"T = 1 kept: {why}")
