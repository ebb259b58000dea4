"""``nnunet_mt_ood evaluate``: how well each method's scores separate in-distribution from OOD cases."""
import csv
import fnmatch
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_mt import layout
from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.schema import check_scores_report
from nnunet_mt_ood.evaluation import (auc_with_interval, aurc, aurc_with_interval, detection_counts, optimal_aurc,
                                      risk_coverage, roc_auc, roc_curve)


def _load(paths: Sequence[str]):
    reports = []
    for path in paths:
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read OOD scores ({e})")
        if not isinstance(report, dict) or "methods" not in report or "cases" not in report:
            raise InputError(f"{path}: not an ood_scores.json written by nnunet_mt_ood score")
        check_scores_report(path, report)
        if reports and report.get("model") != reports[0][1].get("model"):
            raise InputError(f"{path}: scores come from another model than {reports[0][0]}")
        reports.append((path, report))
    return reports


def _patterns(values: Sequence[str]) -> List[str]:
    """Glob patterns and case ids; a CSV file contributes the case ids of its first column."""
    patterns = []
    for v in values:
        if v.endswith(".csv") and os.path.isfile(v):
            with open(v) as f:
                patterns += [row[0] for row in csv.reader(f) if row and row[0] and row[0] != "case"]
        else:
            patterns.append(v)
    return patterns


def _matches(case: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(case, p) for p in patterns)


def _case_dice(scores_path: str, reference_dir: str, cases: Sequence[str]) -> Dict[str, float]:
    """Dice of each case's segmentation (beside scores_path, as score wrote it) against reference_dir; read
    and grid-checked as `nnunet_mt evaluate` does."""
    from nnunet_mt.evaluate import read_on_one_grid
    from nnunet_mt.metrics import dice
    folder = os.path.dirname(os.path.abspath(scores_path))
    ending = ".nii.gz"
    if os.path.isfile(os.path.join(folder, layout.DATASET_JSON)):
        with open(os.path.join(folder, layout.DATASET_JSON)) as f:
            ending = json.load(f).get("file_ending", ending)
    values = {}
    for case in cases:
        seg_path, ref_path = os.path.join(folder, case + ending), os.path.join(reference_dir, case + ending)
        for path, what in ((seg_path, "segmentation"), (ref_path, "reference")):
            if not os.path.isfile(path):
                raise InputError(f"{path}: {what} of case '{case}' missing (-ref needs one per scored case)")
        ref, seg, _ = read_on_one_grid(ref_path, seg_path, ending)
        values[case] = dice(seg > 0, ref > 0)
    return values


def case_subject(case: str, pattern: Optional[str], mapping: Optional[Dict[str, str]] = None) -> str:
    """The subject of a scored case: the first group (or whole match) of `pattern` searched in its id, prefixed
    with nothing (one scored folder per dataset); else its entry in `mapping` (nnunet_mt merge's --subject_map:
    the scored id, or for a merged test case 'D011_x' the source's id 'x'); else the case itself."""
    import re
    from nnunet_mt.merge import source_case_id
    from nnunet_mt.subjects import pattern_subject
    matched = pattern_subject(re.compile(pattern), case) if pattern else None
    if matched is not None:
        return matched
    for key in (case, source_case_id(case)) if mapping else ():
        if key in mapping:
            return mapping[key]
    return case


def _interval(result: dict) -> str:
    low_high = result["interval"]
    return f"[{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else "(no interval)"


def failure_detection(scores: np.ndarray, dice: np.ndarray, failure_dice: float,
                      subjects: Optional[Sequence[str]] = None) -> dict:
    """How well scores predict bad segmentations: AUROC for Dice < failure_dice, Spearman of score and Dice,
    AURC (risk = 1 - Dice) with the random (mean risk) and optimal references, and AURC's bootstrap interval
    over subjects (default: each case its own)."""
    from scipy.stats import spearmanr
    risks = 1 - dice
    coverage, risk = risk_coverage(scores, risks)
    rho = spearmanr(scores, dice)[0] if len(dice) > 2 and np.ptp(dice) > 0 and np.ptp(scores) > 0 else float("nan")
    return {"failure_auroc": roc_auc(scores, dice < failure_dice), "spearman_score_dice": float(rho),
            "aurc": aurc(scores, risks), "aurc_random": float(np.mean(risks)), "aurc_optimal": optimal_aurc(risks),
            "coverage": coverage.tolist(), "risk": risk.tolist(), "n_failed": int(np.sum(dice < failure_dice)),
            "aurc_interval": aurc_with_interval(scores, risks, subjects if subjects is not None else
                                                [str(i) for i in range(len(scores))])["interval"]}


def evaluate_scores(paths: Sequence[str], ood: Sequence[str], in_distribution: Optional[Sequence[str]] = None,
                    output: Optional[str] = None, log=print, references: Optional[Sequence[str]] = None,
                    failure_dice: float = 0.5, subject_pattern: Optional[str] = None,
                    subject_map: Optional[str] = None) -> dict:
    """OOD-vs-ID detection per method; with references (one label folder per scores file), also failure
    detection over every scored case: does a high score predict Dice < failure_dice? AUC and AURC come with
    bootstrap 95 % intervals over subjects (subject_pattern or subject_map, a file as nnunet_mt merge reads it:
    see case_subject; default each case its own)."""
    from nnunet_mt.subjects import SubjectRule
    mapping = SubjectRule(subject_pattern, subject_map).mapping  # refuses both, or an unreadable map, first
    reports = _load(paths)
    if references is not None and len(references) != len(paths):
        raise InputError(f"-ref: {len(references)} folders for {len(paths)} scores files (one per file, same order)")
    ood_patterns = _patterns(ood)
    id_patterns = _patterns(in_distribution) if in_distribution else None
    rows = [r for _, report in reports for r in report["cases"]]
    methods = [m for m in reports[0][1]["methods"] if all(m in rep["methods"] for _, rep in reports)]
    labelled = []
    for r in rows:
        if _matches(r["case"], ood_patterns):
            labelled.append((r, True))
        elif id_patterns is None or _matches(r["case"], id_patterns):
            labelled.append((r, False))
    is_ood = np.array([o for _, o in labelled], bool)
    if not is_ood.any() or is_ood.all():
        raise InputError(f"{paths[0]}: need both OOD and in-distribution cases, got {int(is_ood.sum())} OOD of "
                         f"{len(is_ood)} (check --ood / --id)")
    results: Dict[str, dict] = {}
    subjects = [f"{'ood' if o else 'id'}/{case_subject(r['case'], subject_pattern, mapping)}" for r, o in labelled]
    for m in methods:
        scores = np.array([r[f"{m}_score"] for r, _ in labelled])
        flags = np.array([r[f"{m}_is_ood"] for r, _ in labelled])
        info = reports[0][1]["methods"][m]
        auc = auc_with_interval(scores, is_ood, subjects)
        results[m] = {**detection_counts(flags, is_ood), "auc": roc_auc(scores, is_ood), "tau": info["tau"],
                      "auc_interval": auc["interval"], "n_subjects": auc["n_subjects"],
                      "scores_id": scores[~is_ood].tolist(), "scores_ood": scores[is_ood].tolist(),
                      "scores_train": info.get("train_scores", [])}
    n_subjects = {o: len({s for s, oo in zip(subjects, is_ood) if oo == o}) for o in (False, True)}
    table = [f"{int((~is_ood).sum())} in-distribution images of {n_subjects[False]} subjects, {int(is_ood.sum())} OOD "
             f"images of {n_subjects[True]} subjects; AUC with its bootstrap 95 % interval over subjects", "",
             "| method | accuracy | sensitivity | specificity | AUC | AUC 95 % interval |", "|---|---|---|---|---|---|"]
    for m, r in results.items():
        table.append(f"| {m} | {r['accuracy']:.2f} | {r['sensitivity']:.2f} | {r['specificity']:.2f} | "
                     f"{r['auc']:.2f} | {_interval({'interval': r['auc_interval']})} |")
    table = "\n".join(table)
    stem = output or os.path.join(os.path.dirname(os.path.abspath(paths[0])), "ood_evaluation")
    summary = {"scores_files": [os.path.abspath(p) for p in paths], "n_in_distribution": int((~is_ood).sum()),
               "n_ood": int(is_ood.sum()), "ood_cases": [r["case"] for r, o in labelled if o], "methods": results}
    pngs = []
    if references is not None:
        dice_of = {}
        for (path, report), ref in zip(reports, references):
            dice_of.update(_case_dice(path, ref, [r["case"] for r in report["cases"]]))
        dice = np.array([dice_of[r["case"]] for r in rows])
        row_subjects = [case_subject(r["case"], subject_pattern, mapping) for r in rows]
        failure = {m: failure_detection(np.array([r[f"{m}_score"] for r in rows]), dice, failure_dice, row_subjects)
                   for m in methods}
        summary["failure"] = {"failure_dice": failure_dice, "n_cases": len(rows), "dice": dice.tolist(),
                              "methods": failure}
        lines = [f"Failure detection over {len(rows)} cases ({failure[methods[0]]['n_failed']} with Dice < "
                 f"{failure_dice}; risk = 1 - Dice):", "",
                 "| method | failure AUROC | Spearman (score, Dice) | AURC | AURC 95 % interval |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {f['failure_auroc']:.2f} | {f['spearman_score_dice']:.2f} | {f['aurc']:.3f} | "
                  f"{_interval({'interval': f['aurc_interval']})} |" for m, f in failure.items()]
        f0 = failure[methods[0]]
        lines += [f"| random order | 0.50 | 0 | {f0['aurc_random']:.3f} | |",
                  f"| best order | 1.00 | - | {f0['aurc_optimal']:.3f} | |"]
        table += "\n\n" + "\n".join(lines)
        pngs.append(plot_risk_coverage(failure, stem + "_risk_coverage.png"))
    write_texts_atomic({stem + ".json": json.dumps(summary, indent=1), stem + ".md": table + "\n"})
    png = ", ".join([plot_evaluation(results, stem + ".png")] + pngs)
    log(f"{int((~is_ood).sum())} in-distribution and {int(is_ood.sum())} OOD cases")
    log(table)
    log(f"wrote {stem}.json, {stem}.md, {png}")
    return summary


def plot_risk_coverage(failure: Dict[str, dict], path: str) -> str:
    """Risk-coverage curves of all methods, with the random (mean risk) and the best possible order."""
    from nnunet_mt.plots import save_png, subplots
    fig, axes = subplots(1, 1, figsize=(5, 4), squeeze=False)
    ax = axes[0, 0]
    for m, f in failure.items():
        ax.plot(f["coverage"], f["risk"], marker=".", label=f"{m} (AURC {f['aurc']:.3f})")
    any_f = next(iter(failure.values()))
    ax.axhline(any_f["aurc_random"], color="gray", ls=":", label=f"random (AURC {any_f['aurc_random']:.3f})")
    ax.set_xlabel("coverage (cases kept, least suspicious first)")
    ax.set_ylabel("risk of the kept cases (1 - Dice)")
    ax.set_title(f"risk-coverage (best possible AURC {any_f['aurc_optimal']:.3f})")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_evaluation(results: Dict[str, dict], path: str) -> str:
    """ROC curves of all methods, and per method the score histograms (training, in-distribution, OOD)."""
    from nnunet_mt.plots import save_png, subplots
    n = len(results)
    fig, axes = subplots(1, n + 1, figsize=(4 * (n + 1), 3.6), squeeze=False)
    roc = axes[0, 0]
    for m, r in results.items():
        scores = np.array(r["scores_id"] + r["scores_ood"])
        labels = np.array([False] * len(r["scores_id"]) + [True] * len(r["scores_ood"]))
        fpr, tpr = roc_curve(scores, labels)
        roc.plot(fpr, tpr, label=f"{m} (AUC {r['auc']:.2f})")
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set_xlabel("1 - specificity")
    roc.set_ylabel("sensitivity")
    roc.set_title("ROC")
    roc.legend(fontsize=7)
    for ax, (m, r) in zip(axes[0, 1:], results.items()):
        values = r["scores_train"] + r["scores_id"] + r["scores_ood"]
        bins = np.linspace(min(values + [r["tau"]]), max(values + [r["tau"]]), 30)
        for key, label in (("scores_train", "training"), ("scores_id", "in-distribution test"),
                           ("scores_ood", "OOD")):
            if r[key]:
                ax.hist(r[key], bins=bins, alpha=0.55, label=label)
        ax.axvline(r["tau"], color="black", lw=1.2, label="tau")
        ax.set_title(m)
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    return save_png(fig, path)
