"""The paper's learning-rate and stopping rules, as pure functions of the loss history.

Both rules look at windows of ``window`` epochs (2000 training iterations in the paper). The state is
the logged loss history itself, which nnU-Net checkpoints, so ``nnUNetv2_train --c`` resumes exactly.
"""
from typing import Sequence

import numpy as np


def _window_means(losses: Sequence[float], window: int) -> np.ndarray:
    """Means of the complete windows of `window` consecutive values (incomplete tail dropped)."""
    n = len(losses) // window
    return np.asarray(losses[:n * window], dtype=np.float64).reshape(n, window).mean(1) if n else np.zeros(0)


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
    if len(means) <= patience:
        return False
    return bool(np.all(means[-patience:] >= means[:-patience].min()))
