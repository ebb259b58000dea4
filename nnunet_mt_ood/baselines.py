"""Baseline OOD scores and detectors (scikit-learn style): Mahalanobis and k-nearest-neighbour distance on
pooled features, thresholded uncertainty scores (MC-dropout entropy, max-softmax, mean entropy, fold-ensemble
disagreement). numpy in, numbers out."""
import numpy as np

from nnunet_mt_ood.detector import NearestNeighbourDetector, ThresholdedDetector

ENTROPY_EPS = 1e-12  # p log p with p clipped here: 0 log 0 = 0


def voxel_entropy(probabilities: np.ndarray) -> np.ndarray:
    """-sum_c p_c log p_c per voxel (nats); probabilities: (classes, *spatial)."""
    p = np.clip(probabilities.astype(np.float64), ENTROPY_EPS, 1.0)
    return -np.sum(p * np.log(p), axis=0)


def mean_entropy(probabilities: np.ndarray) -> float:
    """Mean voxel entropy over the whole image (Hendrycks & Gimpel's reference, per image)."""
    return float(voxel_entropy(probabilities).mean())


def max_softmax_score(probabilities: np.ndarray) -> float:
    """1 - mean over voxels of the largest class probability (higher = more uncertain)."""
    return float(1.0 - probabilities.max(0).astype(np.float64).mean())


def foreground_entropy(mean_probabilities: np.ndarray) -> float:
    """MC-dropout image score: mean voxel entropy of the mean probability map over its predicted
    foreground (argmax > 0); over the whole image when nothing is predicted (documented fallback)."""
    entropy = voxel_entropy(mean_probabilities)
    foreground = mean_probabilities.argmax(0) > 0
    return float(entropy[foreground].mean() if foreground.any() else entropy.mean())


def mean_pairwise_dice(segmentations, labels) -> float:
    """Agreement of several models' segmentations of one image (same shape, integer labels): the mean over
    model pairs of the mean over `labels` (foreground) of Dice; a label neither of a pair predicts counts 1
    (they agree). 1 = identical segmentations."""
    if len(segmentations) < 2:
        raise ValueError(f"need two or more segmentations, got {len(segmentations)}")
    labels = list(labels)
    if not labels:
        raise ValueError("need at least one foreground label")
    pairs = []
    for i in range(len(segmentations)):
        for j in range(i + 1, len(segmentations)):
            a, b = np.asarray(segmentations[i]), np.asarray(segmentations[j])
            if a.shape != b.shape:
                raise ValueError(f"segmentation shapes differ: {a.shape} vs {b.shape}")
            dice = []
            for label in labels:
                in_a, in_b = a == label, b == label
                total = int(in_a.sum()) + int(in_b.sum())
                dice.append(1.0 if total == 0 else 2.0 * int(np.logical_and(in_a, in_b).sum()) / total)
            pairs.append(np.mean(dice))
    return float(np.mean(pairs))


def voxel_disagreement(segmentations) -> float:
    """Fraction of the voxels some model labels foreground (> 0) on which the models do not all give the same
    label; 0 when no model predicts any foreground."""
    stack = np.stack([np.asarray(s) for s in segmentations])
    if len(stack) < 2:
        raise ValueError(f"need two or more segmentations, got {len(stack)}")
    foreground = (stack > 0).any(0)
    if not foreground.any():
        return 0.0
    disagree = (stack != stack[0]).any(0)
    return float(disagree[foreground].mean())


def ledoit_wolf_covariance(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrinkage covariance of samples x (n, p): (1 - s) S + s mu I, s estimated."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    x = x - x.mean(0)
    emp = x.T @ x / n
    mu = np.trace(emp) / p
    x2 = x ** 2
    delta_ = np.sum(emp ** 2)
    beta = (np.sum(x2.T @ x2) / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * np.trace(emp) + p * mu ** 2) / p
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * emp + shrinkage * mu * np.eye(p)


class ThresholdDetector(ThresholdedDetector):
    """OOD when a scalar score (one per image) > tau = mean + c * std (ddof 0) of the training images' scores."""

    def fit(self, train_scores, groups=None) -> "ThresholdDetector":  # groups: unused (no neighbours)
        s = np.asarray(train_scores, dtype=np.float64).ravel()
        if len(s) < 3:
            raise ValueError(f"need at least 3 training scores to fit tau, got {len(s)}")
        self._set_threshold(s)
        return self

    def score(self, scores) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64).ravel()


class MahalanobisDetector(ThresholdedDetector):
    """Mahalanobis distance of pooled features (one vector per image) to a Gaussian fitted on the
    training images with Ledoit-Wolf shrinkage (Lee et al. 2018); tau on the training images' own distances."""

    def fit(self, train_features, groups=None) -> "MahalanobisDetector":  # groups: unused (no neighbours)
        x = np.asarray(train_features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 3:
            raise ValueError(f"need at least 3 training feature vectors (rows), got shape {x.shape}")
        self.mean_ = x.mean(0)
        self.precision_ = np.linalg.pinv(ledoit_wolf_covariance(x))
        self._set_threshold(self.score(x))
        return self

    def score(self, features) -> np.ndarray:
        d = np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.mean_
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision_, d), 0))


# k of knn: Sun et al. (2022) take k = 50 of CIFAR-10's 50,000 training images, one in a thousand; at the
# tens of training images of a medical dataset that fraction is below one image: the nearest one, as the
# spectral method does.
KNN_NEIGHBOUR = 1


class KNNDetector(NearestNeighbourDetector):
    """Distance of L2-normalised pooled features (one vector per image) to the k-th nearest training
    image's (Sun et al. 2022; Woodland et al. 2024 on nnU-Net bottleneck features); tau = mean + c * std
    (ddof 0) of the training images' leave-one-(subject-)out distances. Distances are between unit vectors, in
    [0, 2]."""

    def __init__(self, c: float = 2.5, k: int = KNN_NEIGHBOUR):
        super().__init__(c, k=k, unit_length=True)
