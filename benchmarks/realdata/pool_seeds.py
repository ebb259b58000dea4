"""Table II pooled over seeds: mean +- std over test cases and seeds per model and dataset, and the verdict
per dataset (joint better / on par / worse than dedicated), from the per-case metrics of several runs.

    python benchmarks/realdata/pool_seeds.py WORK/joint_vs_dedicated_paper_seed0_cap60 \
        WORK/joint_vs_dedicated_paper_seed1_cap60 [-o pooled.md]

Verdict rule (issue 12): DSC on par within 0.02; ECE on par within 0.01 (the spread between seeds of one
model is reported beside it, as the evidence a difference needs to exceed).
"""
import argparse
import json
import os
from collections import defaultdict

import numpy as np

ON_PAR = {"dice": 0.02, "ece": 0.01}


def per_case_values(run_dir: str) -> dict:
    """{(method, data): {metric: [values per case]}} of one experiment folder (table_II.json + metrics files)."""
    with open(os.path.join(run_dir, "table_II.json")) as f:
        table = json.load(f)
    values = {}
    for row in table:
        path = row["metrics_file"]
        if not os.path.isfile(path):  # the experiment folder was moved or renamed since: same layout below it
            path = os.path.join(run_dir, path[path.index("predictions" + os.sep):])
        with open(path) as f:
            cases = json.load(f)["per_case"]
        values[(row["method"], row["data"])] = {m: [c[m] for c in cases] for m in ("dice", "ece")}
    return values


def verdict(joint: float, dedicated: float, metric: str) -> str:
    delta = joint - dedicated
    if abs(delta) <= ON_PAR[metric]:
        return f"on par ({delta:+.3f})"
    better = delta > 0 if metric == "dice" else delta < 0
    return f"{'better' if better else 'worse'} ({delta:+.3f})"


def pooled_table(run_dirs) -> str:
    runs = [per_case_values(d) for d in run_dirs]
    pooled = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for key, metrics in run.items():
            for m, v in metrics.items():
                pooled[key][m].extend(v)
    datasets = sorted({data for _, data in pooled})
    fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
    lines = [f"Pooled over {len(runs)} runs ({', '.join(os.path.basename(d.rstrip('/')) for d in run_dirs)}); "
             "mean ± std over test cases and runs.", "",
             "| test data | n | DSC dedicated | DSC joint | DSC verdict | ECE dedicated | ECE joint | ECE verdict | "
             "per-run mean DSC joint - dedicated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for data in datasets:
        d, j = pooled[("dedicated", data)], pooled[("joint", data)]
        per_run = ", ".join(f"{np.mean(r[('joint', data)]['dice']) - np.mean(r[('dedicated', data)]['dice']):+.3f}"
                            for r in runs)
        lines.append(f"| {data} | {len(d['dice'])} | {fmt(d['dice'])} | {fmt(j['dice'])} | "
                     f"{verdict(np.mean(j['dice']), np.mean(d['dice']), 'dice')} | {fmt(d['ece'])} | {fmt(j['ece'])} | "
                     f"{verdict(np.mean(j['ece']), np.mean(d['ece']), 'ece')} | {per_run} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="joint_vs_dedicated_* folders of `nnunet_mt experiment joint-vs-dedicated`")
    parser.add_argument("-o", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    table = pooled_table(args.runs)
    print(table)
    if args.o:
        with open(args.o, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
