"""PNG figures of spectral OOD scoring, like the paper's figures 2 and 6."""
from typing import Sequence

import numpy as np

from nnunet_mt.plots import save_png, subplots


def plot_signatures(train: np.ndarray, train_sources: Sequence[str], test: np.ndarray, test_ood: Sequence[bool],
                    path: str) -> str:
    """Signature curves: training images coloured by source, scored images dashed (red = flagged OOD)."""
    fig, ax = subplots(figsize=(6.5, 4))
    index = np.arange(1, train.shape[1] + 1)
    from matplotlib import colormaps
    colours = colormaps["tab10"]
    for k, source in enumerate(sorted(set(train_sources))):
        rows = [i for i, s in enumerate(train_sources) if s == source]
        for j, i in enumerate(rows):
            ax.plot(index, train[i], color=colours(k % 10), lw=0.8, alpha=0.6,
                    label=f"train: {source}" if j == 0 else None)
    for i, flagged in enumerate(test_ood):
        ax.plot(index, test[i], ls="--", lw=1.2, color="red" if flagged else "black",
                label=("scored: OOD" if flagged else "scored: in-distribution")
                if i == list(test_ood).index(flagged) else None)
    ax.set_xlabel("singular value index")
    ax.set_ylabel("normalized log singular value")
    ax.set_title("Spectral signatures")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_oodm_histogram(train_scores: np.ndarray, test_scores: np.ndarray, tau: float, path: str) -> str:
    """Histograms of the training (leave-one-out) and scored OODM values with tau marked."""
    fig, ax = subplots(figsize=(6.5, 3.5))
    top = max(np.max(train_scores), np.max(test_scores) if len(test_scores) else 0, tau) * 1.05
    bins = np.linspace(0, top, 40)
    ax.hist(train_scores, bins=bins, alpha=0.6, label="training (leave-one-out)")
    ax.hist(test_scores, bins=bins, alpha=0.6, label="scored images")
    ax.axvline(tau, color="black", lw=1.5, label=f"tau = {tau:.4f}")
    ax.set_xlabel("OODM (distance to the nearest training signature)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return save_png(fig, path)
