"""Per-case sampling probabilities for multi-dataset training (Karimi & Gholipour, sec. III-C)."""
from collections import Counter
from typing import Sequence

import numpy as np


def case_sampling_probabilities(sources: Sequence[str], alpha: float = 0.5) -> np.ndarray:
    """Probability of drawing each case when every case of source d has weight n_d ** -alpha.

    sources: the source dataset of each case, in order. alpha=0.5 is the paper's 1/sqrt(n) rule
    (two sources of 10 and 100 cases get 0.240 and 0.760 of the draws); alpha=0 is uniform per
    case, alpha=1 is uniform per source. Returns float64 array of len(sources), summing to 1.
    """
    if len(sources) == 0:
        raise ValueError("no cases to sample from")
    counts = Counter(sources)
    weights = np.array([counts[s] ** -float(alpha) for s in sources], dtype=np.float64)
    return weights / weights.sum()


def source_shares(sources: Sequence[str], probabilities: np.ndarray) -> dict:
    """Total probability of each source: {source: share}."""
    shares: dict = {}
    for s, p in zip(sources, probabilities):
        shares[s] = shares.get(s, 0.0) + float(p)
    return shares
