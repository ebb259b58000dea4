"""Tables II/III (segmentation, mean +- std per training method and test dataset) from metrics.json files."""
import csv
import io
import json
import os
from typing import Dict, List, Optional, Sequence


from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.evaluate import HEADERS, METRICS, cell, summarize


# the metrics compared pairwise, and which direction is better
PAIRED = {"dice": True, "hd95": False, "assd": False, "ece": False, "mce": False}


def paired_comparisons(table: Sequence[dict], per_case: Dict[tuple, List[dict]], reference: str) -> List[dict]:
    """Every row's method minus the reference method on the same test cases of its dataset, per metric: the
    mean over subjects of the per-subject difference, its bootstrap 95 % interval over subjects and the verdict
    (nnunet_mt.statistics.paired_difference). per_case: {(method, data): metrics.json's per_case list}."""
    from nnunet_mt.statistics import paired_difference
    out = []
    for row in table:
        key, ref_key = (row["method"], row["data"]), (reference, row["data"])
        if row["method"] == reference or ref_key not in per_case:
            continue
        ref_by_case = {c["case"]: c for c in per_case[ref_key]}
        cases = [c for c in per_case[key] if c["case"] in ref_by_case]
        subjects = [c.get("subject", c["case"]) for c in cases]
        comparison = {"method": row["method"], "reference": reference, "data": row["data"]}
        for metric, higher_is_better in PAIRED.items():
            if cases and metric in cases[0]:
                comparison[metric] = paired_difference([c[metric] for c in cases],
                                                       [ref_by_case[c["case"]][metric] for c in cases], subjects,
                                                       higher_is_better)
        out.append(comparison)
    return out


def paired_markdown(comparisons: Sequence[dict]) -> List[str]:
    """Markdown lines of the paired comparisons (empty when there are none)."""
    from nnunet_mt.statistics import format_difference
    if not comparisons:
        return []
    metrics = [m for m in PAIRED if all(m in c for c in comparisons)]
    lines = ["", f"**Paired differences** (method minus {comparisons[0]['reference']} on the same test images; "
                 "mean over independent subjects, bootstrap 95 % interval over subjects, Wilcoxon p from 6 subjects; "
                 "a verdict only where the interval excludes 0; one trained model per arm, so the interval leaves "
                 "out the variation between training seeds: pool seeds with benchmarks/realdata/pool_seeds.py)", "",
             "| method | test data | " + " | ".join(HEADERS[m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for c in comparisons:
        lines.append(f"| {c['method']} | {c['data']} | " + " | ".join(format_difference(c[m]) for m in metrics) + " |")
    return lines


def segmentation_table(rows: Sequence[dict], stem: str, title: str, log=print,
                       reference: Optional[str] = None) -> List[dict]:
    """rows: {"method", "data", "metrics": path to metrics.json, ...}; writes stem.md/.csv/.json and stem.png.

    Each cell is the mean +- std (ddof 0) over the test cases; HD95/ASSD in mm; infinite distances (empty
    prediction or reference) are left out of mean and std and counted. reference: the method every other is
    compared with, pairwise over subjects (paired_comparisons), in stem.md and stem_paired.json.
    """
    table, regions, per_case_of = [], set(), {}
    for row in rows:
        try:
            with open(row["metrics"]) as f:
                report = json.load(f)
            per_case = report["per_case"]
            regions.add(report.get("calibration_region", "?"))
            per_case_of[(row["method"], row["data"])] = per_case
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{row['metrics']}: cannot read evaluation results ({e}); run the experiment first")
        stats = {m: summarize([c[m] for c in per_case]) for m in METRICS if m in per_case[0]}
        table.append({k: v for k, v in row.items() if k not in ("metrics", "model")} |
                     {"n_cases": len(per_case), **stats, "metrics_file": row["metrics"],
                      "training": training_summary(row.get("model"))})
    metrics = [m for m in METRICS if all(m in r for r in table)]
    md = [f"**{title}**", "", "| training | test data | n | " + " | ".join(HEADERS[m] for m in metrics) +
          " | stopped | it. on data |",
          "|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    previous = None
    for r in table:
        method = r["method"] if r["method"] != previous else ""
        previous = r["method"]
        md.append(f"| {method} | {r['data']} | {r['n_cases']} | " + " | ".join(cell(r[m], m, "±") for m in metrics) +
                  f" | {stopped(r['training'])} | {iterations_on(r['training'], r.get('source', r['data']))} |")
    md += ["", "stopped: epochs trained, and whether the paper's convergence rule (conv.) or the epoch cap (cap) "
               "ended training (from each model's convergence.json); it. on data: training iterations spent on the "
               "test data's source (a joint model's iterations times that source's sampling share).",
           f"ECE/MCE/NLL/Brier counted over: {'; '.join(sorted(regions))}. Inference: nnU-Net's sliding window (step 0.5, "
           f"Gaussian weighting), not the paper's 24-voxel overlap."]
    paired = paired_comparisons(table, per_case_of, reference) if reference else []
    md += paired_markdown(paired)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["training", "test_data", "n_cases"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")])
    for r in table:
        writer.writerow([r["method"], r["data"], r["n_cases"]] + [r[m][s] for m in metrics for s in ("mean", "std")])
    texts = {stem + "_paired.json": json.dumps(paired, indent=1, default=float)} if reference else {}
    write_texts_atomic({**texts, stem + ".json": json.dumps(table, indent=1, default=float), stem + ".csv": buffer.getvalue(),
                        stem + ".md": "\n".join(md) + "\n"})  # one set: all three or none
    png = plot_table(table, metrics, stem + ".png", title)
    log("\n".join(md))
    log(f"wrote {stem}.md, {stem}.csv, {stem}.json, {png}")
    return table


def training_summary(fold_dir) -> dict:
    """The model's convergence.json (written by nnUNetTrainerMultiTask at the end of training), or {}."""
    try:
        with open(os.path.join(fold_dir, "convergence.json")) as f:
            return json.load(f)
    except (TypeError, OSError, ValueError):
        return {}


def stopped(summary: dict) -> str:
    """'23 ep., conv.' / '25 ep., cap' / '?' for a table cell."""
    if not summary:
        return "?"
    return f"{summary['epochs']} ep., {'conv.' if summary['converged'] else 'cap'}"


def iterations_on(summary: dict, data: str) -> str:
    """Training iterations a model spent on the source whose label is `data` ('?' when not recorded)."""
    per_source = summary.get("iterations_per_source") or {}
    mine = [v for k, v in per_source.items() if k.split("_", 1)[-1] == data]
    if mine:
        return f"{mine[0]:.0f}"
    return f"{summary['iterations']}" if summary and len(per_source) <= 1 and "iterations" in summary else "?"


def plot_table(table: Sequence[dict], metrics: Sequence[str], path: str, title: str) -> str:
    """One panel per metric: mean +- std as grouped bars, test datasets on the x axis, one bar per method."""
    from nnunet_mt.plots import save_png, subplots
    datasets = list(dict.fromkeys(r["data"] for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig, axes = subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    width = 0.8 / len(methods)
    by_key: Dict[tuple, dict] = {(r["method"], r["data"]): r for r in table}
    for ax, metric in zip(axes[0], metrics):
        for j, method in enumerate(methods):
            xs, means, stds = [], [], []
            for i, d in enumerate(datasets):
                if (method, d) in by_key:
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    means.append(by_key[(method, d)][metric]["mean"])
                    stds.append(by_key[(method, d)][metric]["std"])
            ax.bar(xs, means, width, yerr=stds, label=method, capsize=2)
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels(datasets, rotation=30, ha="right", fontsize=7)
        ax.set_title(HEADERS[metric])
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
