"""OOD detection quality: confusion counts at a threshold and ROC AUC over all thresholds (numpy only)."""
from typing import Dict, Sequence, Tuple

import numpy as np

from nnunet_mt.statistics import N_BOOT, subject_bootstrap


def detection_counts(flagged: Sequence[bool], is_ood: Sequence[bool]) -> Dict[str, float]:
    """tp/fp/tn/fn (OOD = positive), accuracy, sensitivity (OOD found), specificity (in-distribution kept)."""
    flagged, is_ood = np.asarray(flagged, bool), np.asarray(is_ood, bool)
    tp, fn = int(np.sum(flagged & is_ood)), int(np.sum(~flagged & is_ood))
    fp, tn = int(np.sum(flagged & ~is_ood)), int(np.sum(~flagged & ~is_ood))
    n = tp + fp + tn + fn
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "accuracy": (tp + tn) / n if n else float("nan"),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


PAIRWISE_AUC_MAX_PAIRS = 1_000_000


def roc_auc(scores: Sequence[float], is_ood: Sequence[bool]) -> float:
    """Area under the ROC curve, higher score = more OOD; ties count one half (Mann-Whitney U)."""
    scores, is_ood = np.asarray(scores, float), np.asarray(is_ood, bool)
    n_pos, n_neg = int(is_ood.sum()), int((~is_ood).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if n_pos * n_neg <= PAIRWISE_AUC_MAX_PAIRS:  # U counted pair by pair: fast for the bootstrap's many small calls
        pos, neg = scores[is_ood][:, None], scores[~is_ood][None, :]
        return float((np.count_nonzero(pos > neg) + 0.5 * np.count_nonzero(pos == neg)) / (n_pos * n_neg))
    from scipy.stats import rankdata
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[is_ood].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], is_ood: Sequence[bool]) -> Tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) for every distinct threshold, from (0, 0) to (1, 1)."""
    scores, is_ood = np.asarray(scores, float), np.asarray(is_ood, bool)
    thresholds = np.unique(scores)[::-1]
    tpr = [0.0] + [float(np.mean(scores[is_ood] >= t)) if is_ood.any() else 0.0 for t in thresholds]
    fpr = [0.0] + [float(np.mean(scores[~is_ood] >= t)) if (~is_ood).any() else 0.0 for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


# --- failure detection (Zenk et al. 2025): does a high score predict a bad segmentation? -------------
def risk_coverage(scores: Sequence[float], risks: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): keep the cases in order of increasing score (least suspicious first); after k of n
    cases, coverage k / n and risk = mean risk (e.g. 1 - Dice) of the k kept. Equal scores keep case order."""
    scores, risks = np.asarray(scores, float), np.asarray(risks, float)
    order = np.argsort(scores, kind="stable")
    kept = np.arange(1, len(scores) + 1)
    return kept / len(scores), np.cumsum(risks[order]) / kept


def aurc(scores: Sequence[float], risks: Sequence[float]) -> float:
    """Area under the risk-coverage curve: the mean of its n risks (lower is better). A random order gives
    about the mean risk, the best order (scores = risks) the optimal_aurc."""
    return float(np.mean(risk_coverage(scores, risks)[1]))


def optimal_aurc(risks: Sequence[float]) -> float:
    """AURC of the best possible order: cases kept from the lowest risk up."""
    return aurc(risks, risks)


# --- with intervals over independent subjects (nnunet_mt.statistics) -------------------------------
def auc_with_interval(scores: Sequence[float], is_ood: Sequence[bool], subjects: Sequence[str],
                      n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """ROC AUC (higher score = more OOD) with a bootstrap interval over subjects; resamples that hold one
    class only are dropped."""
    scores, is_ood = np.asarray(scores, float), np.asarray(is_ood, bool)
    return subject_bootstrap(lambda idx: roc_auc(scores[idx], is_ood[idx]), subjects, n_boot, seed)


def aurc_with_interval(scores: Sequence[float], risks: Sequence[float], subjects: Sequence[str],
                       n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """AURC (lower is better) with a bootstrap interval over subjects."""
    scores, risks = np.asarray(scores, float), np.asarray(risks, float)
    return subject_bootstrap(lambda idx: aurc(scores[idx], risks[idx]), subjects, n_boot, seed)
