"""Temperature scaling (Guo et al. 2017) of softmax probabilities, and the scores it is judged by (NLL,
Brier): numpy in, numbers out (no nnU-Net imports).

nnU-Net saves probabilities, not logits. log p differs from the logits z by one constant per voxel
(log p = z - logsumexp(z)), and a softmax ignores such a constant, so softmax(log p / T) is exactly the
temperature-scaled softmax(z / T): any saved probability map can be calibrated after the fact, and the
argmax (the segmentation) never changes for T > 0. Probabilities are clipped at PROBABILITY_FLOOR before
the log (exports hold exact zeros); that caps |log p| at 16.
"""
from typing import Tuple

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
