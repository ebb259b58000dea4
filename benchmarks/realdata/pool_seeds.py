"""Tables II and III pooled over seeds: mean +- std over test cases and seeds per model and dataset, from the
per-case metrics of several runs; with it the paired differences with their bootstrap 95 % interval and verdict
(nnunet_mt.statistics): table II joint - dedicated per dataset (DSC, ECE, HD95, ASSD), table III each fine-tuned model minus training
from scratch and minus the joint model.

    python benchmarks/realdata/pool_seeds.py WORK/joint_vs_dedicated_paper_seed0_cap60 \
        WORK/joint_vs_dedicated_paper_seed1_cap60 [-o pooled.md]
    python benchmarks/realdata/pool_seeds.py WORK/transfer_nnunet_seed0_cap60 WORK/transfer_nnunet_seed1_cap60
    ... --subject_pattern '^(D903_mr)_crop[0-9]+$'   (test cases whose ids match in one group are one subject)

Verdict rule (issue 30): each test image's difference joint - dedicated is averaged over the images of its subject
(mirrors and crops count once) in each run (seed); the interval resamples runs and subjects (two-level bootstrap,
nnunet_mt.statistics.paired_difference_over_runs), so it includes the training variation between seeds that one
run's interval cannot see; "better" / "worse" only when it excludes 0, else "no difference detected". The per-run
mean differences are shown beside. The subjects are those merge recorded (nnunet_mt evaluate's metrics.json);
--subject_pattern regroups test cases the merge had to keep apart (crops of the one patient a source has, which
could not be split into folds by subject), the first group (or whole match) of the regex on the case id.
"""
import argparse
import json
import os
import re
from collections import defaultdict
from typing import Optional

import numpy as np

from nnunet_mt.experiments.tables import PAIRED  # the paired metrics of the tables: name -> higher is better
from nnunet_mt.statistics import format_difference, paired_difference_over_runs
from nnunet_mt.subjects import pattern_subject


def table_name(run_dir: str) -> str:
    """"table_II" (joint-vs-dedicated folder) or "table_III" (transfer folder)."""
    for name in ("table_II", "table_III"):
        if os.path.isfile(os.path.join(run_dir, name + ".json")):
            return name
    raise SystemExit(f"{run_dir}: neither table_II.json nor table_III.json found")


def per_case_values(run_dir: str, subject_pattern: Optional[str] = None) -> dict:
    """{(method, data): {metric: [values per case]}} of one experiment folder (table_*.json + metrics files);
    subject_pattern: a case whose id it matches belongs to the subject of the match, not to the recorded one."""
    regex = re.compile(subject_pattern) if subject_pattern else None
    with open(os.path.join(run_dir, table_name(run_dir) + ".json")) as f:
        table = json.load(f)
    values = {}
    for row in table:
        path = row["metrics_file"]
        if not os.path.isfile(path):  # the experiment folder was moved or renamed since: same layout below it
            path = os.path.join(run_dir, path[path.index("predictions" + os.sep):])
        with open(path) as f:
            cases = json.load(f)["per_case"]
        values[(row["method"], row["data"])] = {m: [c.get(m, np.nan) for c in cases] for m in PAIRED} | {
            "case": [c.get("case", str(i)) for i, c in enumerate(cases)],
            "subject": [(pattern_subject(regex, c.get("case", "")) if regex else None) or
                        c.get("subject", c.get("case", str(i))) for i, c in enumerate(cases)]}
    return values


def paired_over_runs(runs, data: str, metric: str, method: str = "joint", baseline: str = "dedicated") -> dict:
    """method - baseline on `data` per image and run, then paired_difference_over_runs: the interval resamples
    the runs (seeds) and the subjects, so a difference one seed shows and another does not is no verdict."""
    by_case, subject_of = defaultdict(dict), {}
    for r, run in enumerate(runs):
        arm, base = run[(method, data)], run[(baseline, data)]
        ref = dict(zip(base["case"], base[metric]))
        for case, subject, value in zip(arm["case"], arm["subject"], arm[metric]):
            if case in ref:  # an infinite distance (empty mask) is left out, as in the tables' paired differences
                difference = value - ref[case]
                by_case[case][r] = difference if np.isfinite(difference) else np.nan
                subject_of[case] = subject
    cases = sorted(by_case)
    differences = [[by_case[c].get(r, np.nan) for c in cases] for r in range(len(runs))]
    return paired_difference_over_runs(differences, [subject_of[c] for c in cases],
                                       higher_is_better=PAIRED[metric])


def pool(runs) -> dict:
    """{(method, data): {metric: [values of every case of every run]}}."""
    pooled = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for key, metrics in run.items():
            for m, v in metrics.items():
                if m in ("dice", "ece"):
                    pooled[key][m].extend(v)
    return pooled


def distance_cell(result: dict) -> str:
    """A surface-distance difference in mm, or '-' where no image has a finite distance in both arms."""
    return format_difference(result, digits=2) if result["n_subjects"] else "-"


def fmt(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def pooled_table(run_dirs, subject_pattern: Optional[str] = None) -> str:
    """The pooled table of the runs' kind: table II with verdicts, table III one row per model and test data."""
    names = {table_name(d) for d in run_dirs}
    if len(names) != 1:
        raise SystemExit(f"mixed experiment folders ({', '.join(sorted(names))}): pool one table at a time")
    runs = [per_case_values(d, subject_pattern) for d in run_dirs]
    pooled = pool(runs)
    header = (f"Pooled over {len(runs)} runs ({', '.join(os.path.basename(d.rstrip('/')) for d in run_dirs)}); "
              "mean ± std over test cases and runs.")
    if names == {"table_III"}:
        lines = [header, "", "| training | test data | n | DSC | ECE |", "|---|---|---|---|---|"]
        lines += [f"| {method} | {data} | {len(v['dice'])} | {fmt(v['dice'])} | {fmt(v['ece'])} |"
                  for (method, data), v in pooled.items()]
        # each fine-tuned model (source -> data) against training on `data` from scratch and against the joint model
        lines += ["", "| fine-tuned | minus | DSC difference | ECE difference |", "|---|---|---|---|"]
        for method, data in [k for k in pooled if " -> " in k[0]]:
            for baseline in (data, "joint"):
                if (baseline, data) in pooled:
                    lines.append(f"| {method} | {'scratch' if baseline == data else 'joint'} | "
                                 f"{format_difference(paired_over_runs(runs, data, 'dice', method, baseline))} | "
                                 f"{format_difference(paired_over_runs(runs, data, 'ece', method, baseline))} |")
        return "\n".join(lines) + "\n"
    datasets = sorted({data for _, data in pooled})
    lines = [header, "",
             "| test data | n | DSC dedicated | DSC joint | DSC joint - dedicated | ECE dedicated | ECE joint | "
             "ECE joint - dedicated | per-run mean DSC joint - dedicated | HD95 joint - dedicated (mm) | "
             "ASSD joint - dedicated (mm) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data in datasets:
        d, j = pooled[("dedicated", data)], pooled[("joint", data)]
        per_run = ", ".join(f"{np.mean(r[('joint', data)]['dice']) - np.mean(r[('dedicated', data)]['dice']):+.3f}"
                            for r in runs)
        lines.append(f"| {data} | {len(d['dice'])} | {fmt(d['dice'])} | {fmt(j['dice'])} | "
                     f"{format_difference(paired_over_runs(runs, data, 'dice'))} | {fmt(d['ece'])} | {fmt(j['ece'])} | "
                     f"{format_difference(paired_over_runs(runs, data, 'ece'))} | {per_run} | "
                     f"{distance_cell(paired_over_runs(runs, data, 'hd95'))} | "
                     f"{distance_cell(paired_over_runs(runs, data, 'assd'))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="joint_vs_dedicated_* (table II) or transfer_* (table III) folders of `nnunet_mt experiment`")
    parser.add_argument("-o", help="also write the table to this markdown file")
    parser.add_argument("--subject_pattern", metavar="REGEX", help="test cases whose ids give the same match (first "
                        "group, or the whole match) are one subject, whatever merge recorded")
    args = parser.parse_args(argv)
    table = pooled_table(args.runs, args.subject_pattern)
    print(table)
    if args.o:
        with open(args.o, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
