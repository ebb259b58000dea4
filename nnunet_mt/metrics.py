"""Segmentation and calibration metrics: numpy in, numbers out (no nnU-Net imports).

Surface distances follow MONAI's conventions exactly (``compute_hausdorff_distance``,
``compute_average_surface_distance``): an object's surface is its voxels that binary erosion (3x3x3
cross) removes; a distance is from a surface voxel centre of one object to the nearest surface voxel
centre of the other, in mm. HD95 = max of the two directed 95th percentiles; ASSD = mean of the pooled
distances of both directions. Instead of distance maps over the volume, the nearest neighbours are
found with a k-d tree over the surface voxels only.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_ROI_MARGIN = 5  # voxels around the bounding box of reference | prediction, for ECE / MCE


def _check_binary(*masks: np.ndarray) -> None:
    for m in masks:
        if m.dtype != bool and not np.isin(np.unique(m), (0, 1)).all():
            raise ValueError("masks must be binary (bool or 0/1)")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty (nothing to find, nothing found)."""
    _check_binary(pred, ref)
    pred, ref = pred.astype(bool), ref.astype(bool)
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, ref).sum() / total)


def _bounding_box(mask: np.ndarray):
    """(lo, hi) voxel bounds of the True region, from per-axis projections (no index arrays)."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(present[0])
        hi.append(present[-1] + 1)
    return np.array(lo), np.array(hi)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """(n, ndim) indices of the voxels on the object's surface: those that binary erosion with a cross
    (border value 0) removes, i.e. with at least one of their 2 * ndim face neighbours outside."""
    if not mask.any():
        return np.zeros((0, mask.ndim), dtype=np.int64)
    lo, hi = _bounding_box(mask)
    crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))], 1)
    inner = tuple(slice(1, -1) for _ in range(crop.ndim))
    interior = crop[inner].copy()
    for axis in range(crop.ndim):
        for shift in (0, 2):
            neighbour = list(inner)
            neighbour[axis] = slice(shift, crop.shape[axis] - 2 + shift)
            interior &= crop[tuple(neighbour)]
    return np.argwhere(crop[inner] & ~interior) + lo


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> ref surface, ref surface -> pred surface).

    Empty arrays when both masks are empty; inf-filled when only one is.
    """
    _check_binary(pred, ref)
    pred, ref = pred.astype(bool), ref.astype(bool)
    if pred.shape != ref.shape or len(spacing) != pred.ndim:
        raise ValueError(f"shape {pred.shape} vs {ref.shape}, spacing {tuple(spacing)}: must agree")
    scale = np.asarray(spacing, dtype=np.float64)
    a, b = surface_voxels(pred) * scale, surface_voxels(ref) * scale
    if len(a) == 0 or len(b) == 0:
        return np.full(len(a), np.inf), np.full(len(b), np.inf)
    return cKDTree(b).query(a, workers=-1)[0], cKDTree(a).query(b, workers=-1)[0]


def _hd95_of(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    if len(d_pred) == 0 and len(d_ref) == 0:
        return 0.0
    if len(d_pred) == 0 or len(d_ref) == 0 or np.isinf(d_pred).any() or np.isinf(d_ref).any():
        return float("inf")
    return float(max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)))


def _assd_of(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    pooled = np.concatenate([d_pred, d_ref])
    return 0.0 if len(pooled) == 0 else float(pooled.mean())


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance (mm), MONAI's convention: max of the directed percentiles.

    0 when both masks are empty, inf when exactly one is.
    """
    return _hd95_of(*surface_distances(pred, ref, spacing))


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance (mm): mean of both directions' distances pooled.

    0 when both masks are empty, inf when exactly one is.
    """
    return _assd_of(*surface_distances(pred, ref, spacing))


def hd95_and_assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> Tuple[float, float]:
    """(hd95, assd) in mm from one surface-distance computation."""
    distances = surface_distances(pred, ref, spacing)
    return _hd95_of(*distances), _assd_of(*distances)


def grown_box(mask: np.ndarray, margin: int = DEFAULT_ROI_MARGIN) -> np.ndarray:
    """Boolean mask of the bounding box of `mask`, grown by `margin` voxels per side (clipped to the
    image); the whole image when `mask` is empty."""
    roi = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        roi[...] = True
        return roi
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    roi[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return roi


def default_roi(prob: np.ndarray, ref: np.ndarray, margin: int = DEFAULT_ROI_MARGIN) -> np.ndarray:
    """Bounding box of (ref | prob >= 0.5), grown by `margin` voxels per side; whole image if both are empty.
    Depends on the model's own prediction: use ``reference_roi`` to compare models on the same voxels."""
    return grown_box(ref.astype(bool) | (prob >= 0.5), margin)


def reference_roi(ref: np.ndarray, margin: int = DEFAULT_ROI_MARGIN) -> np.ndarray:
    """Bounding box of the reference foreground grown by `margin` voxels: the same voxels for every model
    evaluated on this image; the whole image when the reference is empty."""
    return grown_box(ref.astype(bool), margin)


def calibration_histogram(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10,
                          roi: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-bin sums over the counted voxels, shape (3, n_bins + 1): voxel count, sum of foreground
    probabilities, sum of reference foreground. Histograms of several images add up.

    Bins are equal-width on [0, 1]: bin k holds p in [k/n, (k+1)/n); p == 1 has a bin of its own
    (index n), as in torchmetrics. roi: boolean mask of the counted voxels; None = ``default_roi``;
    np.ones(shape, bool) counts the whole image.
    """
    _check_binary(ref)
    if prob.shape != ref.shape:
        raise ValueError(f"probabilities {prob.shape} and reference {ref.shape} differ in shape")
    roi = default_roi(prob, ref) if roi is None else roi.astype(bool)
    p = prob[roi].astype(np.float64).ravel()
    y = ref[roi].astype(np.float64).ravel()
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1), p, side="right") - 1
    return np.stack([np.bincount(bins, minlength=n_bins + 1).astype(np.float64),
                     np.bincount(bins, p, minlength=n_bins + 1), np.bincount(bins, y, minlength=n_bins + 1)])


def calibration_bins(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10, roi: Optional[np.ndarray] = None):
    """Per-bin (accuracy, confidence, share), each of length n_bins + 1 (empty bins: 0); see
    ``calibration_histogram`` for the bins and the region counted."""
    return bins_from_histogram(calibration_histogram(prob, ref, n_bins, roi))


def bins_from_histogram(histogram: np.ndarray):
    """(accuracy, confidence, share) per bin from a (3, n_bins + 1) calibration histogram."""
    count, sum_p, sum_y = histogram
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.nan_to_num(sum_p / count)
        accuracy = np.nan_to_num(sum_y / count)
    return accuracy, confidence, count / max(count.sum(), 1)


def ece_from_histogram(histogram: np.ndarray) -> float:
    """ECE of a (3, n_bins + 1) calibration histogram."""
    accuracy, confidence, share = bins_from_histogram(histogram)
    return float(np.sum(share * np.abs(accuracy - confidence)))


def mce_from_histogram(histogram: np.ndarray) -> float:
    """MCE of a (3, n_bins + 1) calibration histogram."""
    accuracy, confidence, _ = bins_from_histogram(histogram)
    return float(np.max(np.abs(accuracy - confidence)))


def ece(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10, roi: Optional[np.ndarray] = None) -> float:
    """Expected calibration error (Naeini et al.): sum over bins of share * |accuracy - confidence|."""
    return ece_from_histogram(calibration_histogram(prob, ref, n_bins, roi))


def mce(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10, roi: Optional[np.ndarray] = None) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over the bins."""
    return mce_from_histogram(calibration_histogram(prob, ref, n_bins, roi))
