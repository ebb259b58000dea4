"""Nearest-neighbour OOD detector on spectral signatures (Karimi & Gholipour, eq. 1-2), scikit-learn style."""
import numpy as np


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, shape (len(a), len(b))."""
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


def leave_subject_out(distances: np.ndarray, groups=None) -> np.ndarray:
    """Training-to-training distances (n, n) with every pair of one subject (groups: one subject per row;
    None: each row its own) set to inf, so a row's nearest neighbour comes from another subject."""
    distances = np.array(distances, dtype=np.float64)
    if groups is None:
        np.fill_diagonal(distances, np.inf)
        return distances
    groups = np.asarray([str(g) for g in groups])
    if groups.shape != (len(distances),):
        raise ValueError(f"need one subject per training row: {len(groups)} subjects, {len(distances)} rows")
    if len(set(groups.tolist())) < 2:
        raise ValueError("need training images of at least 2 subjects to fit tau leaving a subject out")
    distances[groups[:, None] == groups[None, :]] = np.inf
    return distances


class SpectralOODDetector:
    """OODM(x) = distance from x's signature to the nearest training signature; OOD when OODM > tau,
    tau = mean + c * std (population std, ddof 0) of the leave-one-out OODM of the training signatures; with
    groups (one subject per signature), leave-one-subject-out: a near-copy of the same subject is not a
    neighbour."""

    def __init__(self, c: float = 2.5):
        self.c = c

    def fit(self, train_signatures, groups=None) -> "SpectralOODDetector":
        train = np.asarray(train_signatures, dtype=np.float64)
        if train.ndim != 2 or len(train) < 3:
            raise ValueError(f"need at least 3 training signatures (rows) to fit tau, got shape {train.shape}")
        distances = leave_subject_out(pairwise_distances(train, train), groups)
        self.train_signatures_ = train
        self.train_scores_ = distances.min(1)  # leave-one-(subject-)out OODM
        self.threshold_ = float(self.train_scores_.mean() + self.c * self.train_scores_.std())
        return self

    def nearest(self, signatures) -> np.ndarray:
        """Index of the nearest training signature for each row."""
        return pairwise_distances(np.atleast_2d(signatures), self.train_signatures_).argmin(1)

    def distance_by_group(self, signatures, groups) -> dict:
        """{group: distance of each row to the nearest training signature of that group}; groups: one label
        per training signature (e.g. its source dataset)."""
        distances = pairwise_distances(np.atleast_2d(np.asarray(signatures, float)), self.train_signatures_)
        groups = np.asarray(groups)
        return {str(g): distances[:, groups == g].min(1) for g in sorted(set(groups.tolist()))}

    def score(self, signatures) -> np.ndarray:
        """OODM of each signature (row): distance to the nearest training signature."""
        return pairwise_distances(np.atleast_2d(np.asarray(signatures, float)), self.train_signatures_).min(1)

    def predict(self, signatures) -> np.ndarray:
        """True where the signature is out of distribution (OODM > threshold_)."""
        return self.score(signatures) > self.threshold_
