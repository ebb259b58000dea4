"""Paired comparisons and detection scores with intervals over independent subjects (numpy/scipy only).

Images of one subject (repeat scans, mirrors, crops) are not independent: every function here first
reduces them to one value per subject and then resamples subjects, never images. Intervals are
percentile bootstrap intervals (``n_boot`` resamples of the subjects with replacement, fixed ``seed``).
"""
import warnings
from typing import Callable, Dict, Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
N_BOOT = 10000
MIN_SUBJECTS_WILCOXON = 6  # below 6 pairs the exact two-sided p-value cannot fall below 0.05 (2 / 2**5)


def subject_means(values: Sequence[float], subjects: Sequence[str]) -> Dict[str, float]:
    """{subject: mean of its images' finite values}; subjects with no finite value are left out."""
    values = np.asarray(values, dtype=np.float64)
    out = {}
    for subject in dict.fromkeys(map(str, subjects)):
        mine = values[np.asarray([str(s) == subject for s in subjects])]
        mine = mine[np.isfinite(mine)]
        if mine.size:
            out[subject] = float(mine.mean())
    return out


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n_subjects: int, n_boot: int = N_BOOT,
                       seed: int = 0, confidence: float = CONFIDENCE) -> Optional[tuple]:
    """(low, high) percentile interval of statistic(indices) over resamples of range(n_subjects) with
    replacement; resamples where the statistic is not finite are dropped. None when no resample is finite."""
    rng = np.random.RandomState(seed)
    return percentile_interval([statistic(rng.randint(0, n_subjects, n_subjects)) for _ in range(n_boot)], confidence)


def percentile_interval(draws: Sequence[float], confidence: float = CONFIDENCE) -> Optional[tuple]:
    """(low, high) percentiles of the finite bootstrap draws; None when none is finite."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def paired_difference(a: Sequence[float], b: Sequence[float], subjects: Sequence[str],
                      higher_is_better: bool = True, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """a - b on the same images (e.g. joint minus dedicated Dice), as a mean over subjects.

    Returns {"n_subjects", "n_images", "difference" (mean over subjects of the per-subject mean difference),
    "interval" ([low, high], bootstrap over subjects, or None with fewer than 2 subjects), "p_wilcoxon"
    (two-sided signed-rank test of the per-subject differences; None below MIN_SUBJECTS_WILCOXON subjects),
    "verdict" ("better" / "worse" when the interval excludes 0, from a's side, else "no difference detected")}.
    Images where either value is not finite are left out."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape != (len(subjects),):
        raise ValueError(f"a, b and subjects must have one entry per image: {a.shape}, {b.shape}, {len(subjects)}")
    keep = np.isfinite(a) & np.isfinite(b)
    per_subject = subject_means((a - b)[keep], np.asarray(subjects, dtype=object)[keep])
    d = np.asarray(list(per_subject.values()))
    result = {"n_subjects": len(d), "n_images": int(keep.sum()),
              "difference": float(d.mean()) if d.size else float("nan"), "interval": None, "p_wilcoxon": None}
    if len(d) >= 2:
        result["interval"] = list(bootstrap_interval(lambda idx: d[idx].mean(), len(d), n_boot, seed))
    if len(d) >= MIN_SUBJECTS_WILCOXON and np.any(d != 0):
        from scipy.stats import wilcoxon  # (scipy.stats takes 1-2 s to import: only where it is used)
        result["p_wilcoxon"] = float(wilcoxon(d, zero_method="wilcox").pvalue)
    result["verdict"] = verdict(result["interval"], higher_is_better)
    return result


def paired_difference_over_runs(differences: Sequence[Sequence[float]], subjects: Sequence[str],
                                higher_is_better: bool = True, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """a - b per image for several independent training runs (seeds) of both models, as one mean over runs
    and subjects, with an interval that resamples runs and subjects (two-level bootstrap).

    differences: shape (runs, images), the same images (and `subjects`, one per image) in every run; NaN
    where an image has no value in a run. A single run's interval covers the test subjects only: it is
    conditional on the two trained models. With runs drawn as well, a difference that one seed shows and
    another does not no longer reads as a detected effect. Returns paired_difference's keys plus "n_runs";
    "p_wilcoxon" tests the per-subject differences averaged over the runs."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != len(subjects) or d.shape[0] < 1:
        raise ValueError(f"differences must be (runs, images) with one subject per image: {d.shape}, {len(subjects)}")
    names = list(dict.fromkeys(map(str, subjects)))
    per_run = np.full((d.shape[0], len(names)), np.nan)  # (runs, subjects): mean over a subject's images
    for r in range(d.shape[0]):
        for s, mean in subject_means(d[r], subjects).items():
            per_run[r, names.index(s)] = mean
    present = np.isfinite(per_run).any(axis=0)
    per_run = per_run[:, present]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample is dropped by percentile_interval
        over_runs = np.nanmean(per_run, axis=0)  # (subjects,)
        n_runs, n_subjects = per_run.shape
        result = {"n_subjects": n_subjects, "n_runs": n_runs, "n_images": int(np.isfinite(d).any(axis=0).sum()),
                  "difference": float(over_runs.mean()) if n_subjects else float("nan"), "interval": None,
                  "p_wilcoxon": None}
        if n_subjects >= 2:  # one subject: no interval, however many runs
            rng = np.random.RandomState(seed)
            interval = percentile_interval([
                np.nanmean(per_run[rng.randint(0, n_runs, n_runs)][:, rng.randint(0, n_subjects, n_subjects)])
                for _ in range(n_boot)])
            result["interval"] = list(interval) if interval else None
    if n_subjects >= MIN_SUBJECTS_WILCOXON and np.any(over_runs != 0):
        from scipy.stats import wilcoxon
        result["p_wilcoxon"] = float(wilcoxon(over_runs, zero_method="wilcox").pvalue)
    result["verdict"] = verdict(result["interval"], higher_is_better)
    return result


def verdict(interval: Optional[Sequence[float]], higher_is_better: bool = True) -> str:
    """'better' / 'worse' when the interval of a difference excludes 0, else 'no difference detected'."""
    if interval is None or not (interval[0] > 0 or interval[1] < 0):
        return "no difference detected"
    return "better" if (interval[0] > 0) == higher_is_better else "worse"


def _by_subject(subjects: Sequence[str]) -> list:
    """Image indices of each subject, in first-seen order."""
    groups: Dict[str, list] = {}
    for i, s in enumerate(map(str, subjects)):
        groups.setdefault(s, []).append(i)
    return [np.asarray(v) for v in groups.values()]


def subject_bootstrap(statistic: Callable[[np.ndarray], float], subjects: Sequence[str], n_boot: int = N_BOOT,
                      seed: int = 0) -> dict:
    """statistic(image indices) on all images, with a bootstrap interval that resamples subjects (all images
    of a drawn subject enter, as often as it is drawn). {"value", "interval", "n_subjects", "n_images"}."""
    groups = _by_subject(subjects)
    value = float(statistic(np.arange(len(subjects))))
    interval = bootstrap_interval(lambda idx: statistic(np.concatenate([groups[i] for i in idx])), len(groups),
                                  n_boot, seed) if len(groups) >= 2 else None
    return {"value": value, "interval": list(interval) if interval else None, "n_subjects": len(groups),
            "n_images": len(subjects)}


def format_difference(result: dict, digits: int = 3) -> str:
    """'+0.041 [-0.012, +0.090], 4 subj., no difference detected' for a table cell ('4 subj. x 2 runs' where the
    interval also resamples training runs)."""
    if result["interval"] is None:
        return f"{result['difference']:+.{digits}f} (n={result['n_subjects']} subj., no interval)"
    low, high = result["interval"]
    p = f", p={result['p_wilcoxon']:.3f}" if result.get("p_wilcoxon") is not None else ""
    runs = f" x {result['n_runs']} runs" if result.get("n_runs", 1) > 1 else ""
    return (f"{result['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], "
            f"{result['n_subjects']} subj.{runs}{p}, {result['verdict']}")
