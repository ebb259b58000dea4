"""``nnunet_mt_ood evaluate``: how well each method's scores separate in-distribution from OOD cases."""
import csv
import fnmatch
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.schema import check_scores_report
from nnunet_mt_ood.evaluation import detection_counts, roc_auc, roc_curve


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


def evaluate_scores(paths: Sequence[str], ood: Sequence[str], in_distribution: Optional[Sequence[str]] = None,
                    output: Optional[str] = None, log=print) -> dict:
    reports = _load(paths)
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
    for m in methods:
        scores = np.array([r[f"{m}_score"] for r, _ in labelled])
        flags = np.array([r[f"{m}_is_ood"] for r, _ in labelled])
        info = reports[0][1]["methods"][m]
        results[m] = {**detection_counts(flags, is_ood), "auc": roc_auc(scores, is_ood), "tau": info["tau"],
                      "scores_id": scores[~is_ood].tolist(), "scores_ood": scores[is_ood].tolist(),
                      "scores_train": info.get("train_scores", [])}
    table = ["| method | accuracy | sensitivity | specificity | AUC |", "|---|---|---|---|---|"]
    for m, r in results.items():
        table.append(f"| {m} | {r['accuracy']:.2f} | {r['sensitivity']:.2f} | {r['specificity']:.2f} | "
                     f"{r['auc']:.2f} |")
    table = "\n".join(table)
    stem = output or os.path.join(os.path.dirname(os.path.abspath(paths[0])), "ood_evaluation")
    summary = {"scores_files": [os.path.abspath(p) for p in paths], "n_in_distribution": int((~is_ood).sum()),
               "n_ood": int(is_ood.sum()), "ood_cases": [r["case"] for r, o in labelled if o], "methods": results}
    write_texts_atomic({stem + ".json": json.dumps(summary, indent=1), stem + ".md": table + "\n"})
    png = plot_evaluation(results, stem + ".png")
    log(f"{int((~is_ood).sum())} in-distribution and {int(is_ood.sum())} OOD cases")
    log(table)
    log(f"wrote {stem}.json, {stem}.md, {png}")
    return summary


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
