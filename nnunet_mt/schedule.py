"""The paper's learning-rate and stopping rules, as pure functions of the loss history.

Both rules look at windows of ``window`` epochs (2000 training iterations in the paper). The state is
the logged loss history itself, which nnU-Net checkpoints, so ``nnUNetv2_train --c`` resumes exactly.
"""
from typing import Dict, Sequence

import numpy as np

CONVERGENCE_FILE = "convergence.json"  # where and why training stopped, written by the trainer into fold_X


def _window_means(losses: Sequence[float], window: int) -> np.ndarray:
    """Means of the complete windows of `window` consecutive values (incomplete tail dropped); NaN values
    (e.g. a source not drawn in an epoch) are skipped, a window of NaN only has mean NaN."""
    n = len(losses) // window
    if not n:
        return np.zeros(0)
    windows = np.asarray(losses[:n * window], dtype=np.float64).reshape(n, window)
    counts = np.isfinite(windows).sum(1)
    sums = np.where(np.isfinite(windows), windows, 0).sum(1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def plateau_learning_rate(train_losses: Sequence[float], initial_lr: float, window: int,
                          factor: float = 0.9) -> float:
    """Learning rate after the given per-epoch training losses.

    The rate is multiplied by `factor` after every window whose mean loss did not decrease compared
    with the previous window's.
    """
    means = _window_means(train_losses, window)
    plateaus = int(np.sum(means[1:] >= means[:-1]))
    return initial_lr * factor ** plateaus


def has_converged(eval_losses: Sequence[float], window: int, patience: int = 2) -> bool:
    """True when the evaluated loss (mean over a window) did not decrease for `patience` consecutive
    evaluations, i.e. the last `patience` window means are all >= the best mean before them."""
    means = _window_means(eval_losses, window)
    means = means[np.isfinite(means)]  # windows without a value (a source not drawn) are not evaluations
    if len(means) <= patience:
        return False
    return bool(np.all(means[-patience:] >= means[:-patience].min()))


def has_converged_per_source(eval_losses_by_epoch: Sequence[Dict[str, float]], window: int,
                             patience: int = 2) -> bool:
    """has_converged for every source at once: each epoch's entry holds the evaluated loss of each source
    drawn in it; training stops only when no source's loss decreased for `patience` evaluations, so a
    source that still improves keeps training going even when the pooled loss has stopped falling."""
    sources = sorted({s for epoch in eval_losses_by_epoch for s in epoch})
    if not sources:
        return False
    return all(has_converged([epoch.get(s, np.nan) for epoch in eval_losses_by_epoch], window, patience)
               for s in sources)
