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


def mean_plus_c_std(train_scores, c: float) -> float:
    """tau = mean + c * std (population std, ddof 0) of the training images' scores: the one threshold rule of
    every detector (Karimi & Gholipour, section III-C)."""
    s = np.asarray(train_scores, dtype=np.float64)
    return float(s.mean() + c * s.std())


class ThresholdedDetector:
    """Base of every detector (scikit-learn style): ``score(x)`` gives one score per image (higher = more OOD);
    ``fit`` sets ``train_scores_`` (the training images' own scores, left out where the score is a distance
    to them) and ``threshold_`` = mean_plus_c_std(train_scores_, c); ``predict(x)`` is score > threshold_."""

    def __init__(self, c: float = 2.5):
        self.c = c

    def _set_threshold(self, train_scores) -> None:
        self.train_scores_ = np.asarray(train_scores, dtype=np.float64)
        self.threshold_ = mean_plus_c_std(self.train_scores_, self.c)

    def score(self, x) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x) -> np.ndarray:
        """True where the image is out of distribution (score > threshold_)."""
        return self.score(x) > self.threshold_


class NearestNeighbourDetector(ThresholdedDetector):
    """Distance of a vector (one per image) to its k-th nearest training vector; train_scores_ leave each
    training image's own subject out (groups: one subject per row; None: each row its own). With
    ``unit_length`` the vectors are L2-normalised first (distances in [0, 2])."""

    def __init__(self, c: float = 2.5, k: int = 1, unit_length: bool = False):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        super().__init__(c)
        self.k, self.unit_length = k, unit_length

    def _rows(self, x) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if not self.unit_length:
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    def _kth_distance(self, x: np.ndarray, leave_out: bool = False, groups=None) -> np.ndarray:
        distances = pairwise_distances(x, self.train_)
        if leave_out:
            distances = leave_subject_out(distances, groups)
        return np.sort(distances, axis=1)[:, self.k - 1]

    def fit(self, train, groups=None):
        x = np.asarray(train, dtype=np.float64)
        if x.ndim != 2 or len(x) < max(3, self.k + 1):
            raise ValueError(f"need at least {max(3, self.k + 1)} training vectors (rows) to fit tau, got shape "
                             f"{x.shape}")
        self.train_ = self._rows(x)
        train_scores = self._kth_distance(self.train_, leave_out=True, groups=groups)
        if not np.all(np.isfinite(train_scores)):
            raise ValueError(f"k={self.k}: some training image has fewer than k images of other subjects")
        self._set_threshold(train_scores)
        return self

    def score(self, x) -> np.ndarray:
        return self._kth_distance(self._rows(x))

    def nearest(self, x) -> np.ndarray:
        """Index of the nearest training vector for each row."""
        return pairwise_distances(self._rows(x), self.train_).argmin(1)

    def distance_by_group(self, x, groups) -> dict:
        """{group: distance of each row to the nearest training vector of that group}; groups: one label per
        training vector (e.g. its source dataset)."""
        distances = pairwise_distances(self._rows(x), self.train_)
        groups = np.asarray(groups)
        return {str(g): distances[:, groups == g].min(1) for g in sorted(set(groups.tolist()))}


class SpectralOODDetector(NearestNeighbourDetector):
    """OODM(x) = distance from x's signature to the nearest training signature; OOD when OODM > tau,
    tau = mean + c * std (ddof 0) of the leave-one-out OODM of the training signatures; with groups (one subject
    per signature), leave-one-subject-out: a near-copy of the same subject is not a neighbour. The nearest
    neighbour (k = 1) of signatures that are already unit length (signatures.py normalises them)."""

    def __init__(self, c: float = 2.5):
        super().__init__(c, k=1, unit_length=False)

    @property
    def train_signatures_(self) -> np.ndarray:
        return self.train_
