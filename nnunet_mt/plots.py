"""PNG figures (matplotlib, headless)."""
import numpy as np

from nnunet_mt.atomic import written_atomically
from nnunet_mt.metrics import bins_from_histogram, ece_from_histogram, mce_from_histogram


def subplots(*args, **kwargs):
    """matplotlib's plt.subplots on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def save_png(fig, path: str) -> str:
    """Lays out, writes (temporary name, then rename) and closes fig; returns path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    try:
        with written_atomically(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def reliability_diagram_from_histogram(histogram: np.ndarray, path: str, title: str = "") -> str:
    """Writes a reliability diagram (accuracy and confidence per bin, gap shaded) as PNG; returns path.

    histogram: (3, n_bins + 1) from ``metrics.calibration_histogram`` (summed over images if wanted).
    """
    n_bins = histogram.shape[1] - 1
    width = 1.0 / n_bins
    centers = (np.arange(n_bins) + 0.5) * width
    merged = histogram[:, :n_bins].copy()  # the p == 1 bin is drawn together with the last one
    merged[:, n_bins - 1] += histogram[:, n_bins]
    acc, conf, _ = bins_from_histogram(merged)
    ece, mce = ece_from_histogram(histogram), mce_from_histogram(histogram)

    fig, (top, bottom) = subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    used = merged[0] > 0
    top.bar(centers[used], acc[used], width=width, edgecolor="black", color="#4c72b0", label="accuracy")
    top.bar(centers[used], conf[used] - acc[used], bottom=acc[used], width=width, color="#dd8452", alpha=0.6,
            edgecolor="#dd8452", hatch="//", label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_ylabel("fraction foreground")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}\nECE {ece:.4f}   MCE {mce:.4f}".strip(), fontsize=9)
    bottom.bar(centers, merged[0] / max(merged[0].sum(), 1), width=width, color="gray", edgecolor="black")
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted foreground probability")
    bottom.set_ylabel("voxel share")
    bottom.set_xlim(0, 1)
    return save_png(fig, path)

