"""benchmarks/realdata/pool_seeds.py: pooled mean +- std over cases and seeds, hand-computed, for a table II
(joint vs dedicated, with verdicts) and a table III (transfer) pair of run folders."""
import importlib.util
import json
import os

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("pool_seeds", os.path.join(REPO, "benchmarks", "realdata", "pool_seeds.py"))
pool_seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pool_seeds)


def write_run(folder, table, rows):
    """rows: [(method, data, [(dice, ece) per case])] -> folder/<table>.json and one metrics.json per row."""
    entries = []
    for i, (method, data, cases) in enumerate(rows):
        metrics = folder / "predictions" / str(i) / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"per_case": [{"case": f"c{j}", "subject": f"s{j // 2}", "dice": d, "ece": e}
                                                    for j, (d, e) in enumerate(cases)]}))
        entries.append({"method": method, "data": data, "metrics_file": str(metrics)})
    (folder / f"{table}.json").write_text(json.dumps(entries))
    return str(folder)


def test_table_III_rows_pool_cases_of_both_seeds(tmp_path):
    a = write_run(tmp_path / "transfer_seed0", "table_III", [("LiverMR -> LiverCT", "LiverCT", [(0.1, 0.2), (0.3, 0.2)])])
    b = write_run(tmp_path / "transfer_seed1", "table_III", [("LiverMR -> LiverCT", "LiverCT", [(0.5, 0.4), (0.7, 0.4)])])
    table = pool_seeds.pooled_table([a, b])
    # DSC 0.1 0.3 0.5 0.7: mean 0.4, population std sqrt((0.09+0.01)*2/4) = 0.2236; ECE 0.3 +- 0.1
    assert "| LiverMR -> LiverCT | LiverCT | 4 | 0.400 ± 0.224 | 0.300 ± 0.100 |" in table
    # with the scratch and joint rows: fine-tuned minus each, per image, pooled over both seeds (two-level bootstrap)
    rows = lambda ft, scratch: [("LiverCT", "LiverCT", scratch), ("LiverMR -> LiverCT", "LiverCT", ft),
                                ("joint", "LiverCT", [(0.2, 0.3)] * 4)]
    c = write_run(tmp_path / "t_seed0", "table_III", rows([(0.3, 0.2)] * 4, [(0.1, 0.2)] * 4))
    d = write_run(tmp_path / "t_seed1", "table_III", rows([(0.3, 0.2)] * 4, [(0.1, 0.2)] * 4))
    table = pool_seeds.pooled_table([c, d])
    assert "| LiverMR -> LiverCT | scratch | +0.200 [+0.200, +0.200], 2 subj. x 2 runs, better | " \
           "+0.000 [+0.000, +0.000], 2 subj. x 2 runs, no difference detected |" in table
    assert "| LiverMR -> LiverCT | joint | +0.100 [+0.100, +0.100], 2 subj. x 2 runs, better | " \
           "-0.100 [-0.100, -0.100], 2 subj. x 2 runs, better |" in table


def test_table_II_paired_intervals_over_subjects_and_mixed_folders(tmp_path):
    # one test image, one subject: the seeds do not make it two subjects, so there is no interval
    rows0 = [("dedicated", "LiverMR", [(0.96, 0.01)]), ("joint", "LiverMR", [(0.90, 0.03)])]
    rows1 = [("dedicated", "LiverMR", [(0.94, 0.01)]), ("joint", "LiverMR", [(0.92, 0.05)])]
    a = write_run(tmp_path / "jvd_seed0", "table_II", rows0)
    b = write_run(tmp_path / "jvd_seed1", "table_II", rows1)
    table = pool_seeds.pooled_table([a, b])
    # joint 0.910 vs dedicated 0.950: -0.040 DSC; ECE 0.040 vs 0.010: +0.030; per run -0.060, -0.020
    assert "| LiverMR | 2 | 0.950 ± 0.010 | 0.910 ± 0.010 | -0.040 (n=1 subj., no interval) | 0.010 ± 0.000 | " \
           "0.040 ± 0.010 | +0.030 (n=1 subj., no interval) | -0.060, -0.020 |" in table
    # four images of two subjects (s0: c0 c1, s1: c2 c3), joint better on every image of both seeds by 0.05 and
    # 0.15 (subject s0) and 0.10 and 0.10 (s1): subject means 0.10 and 0.10 -> interval [0.10, 0.10], better
    ded = [(0.5, 0.1)] * 4
    joint0 = [(0.55, 0.1), (0.65, 0.1), (0.6, 0.1), (0.6, 0.1)]
    c = write_run(tmp_path / "jvd4_seed0", "table_II", [("dedicated", "X", ded), ("joint", "X", joint0)])
    d = write_run(tmp_path / "jvd4_seed1", "table_II", [("dedicated", "X", ded), ("joint", "X", joint0)])
    assert "+0.100 [+0.100, +0.100], 2 subj. x 2 runs, better" in pool_seeds.pooled_table([c, d])
    # the seeds disagree: seed 0 as above (+0.1 per subject), seed 1 no gain: the runs are resampled too and the
    # interval reaches 0 (both draws seed 1, probability 1/4), so pooled over the seeds there is no verdict
    f = write_run(tmp_path / "jvd4b_seed1", "table_II", [("dedicated", "X", ded), ("joint", "X", ded)])
    assert "+0.050 [+0.000, +0.100], 2 subj. x 2 runs, no difference detected" in pool_seeds.pooled_table([c, f])
    # the same runs with every case one subject by --subject_pattern ('c[0-9]' -> 'c'): no interval is left
    assert "+0.050 (n=1 subj., no interval)" in pool_seeds.pooled_table([c, f], subject_pattern="^(c)[0-9]$")
    e = write_run(tmp_path / "transfer_seed0", "table_III", [("LiverMR", "LiverMR", [(0.96, 0.01)])])
    with pytest.raises(SystemExit, match="mixed experiment folders"):
        pool_seeds.pooled_table([a, e])


def test_table_II_surface_distances_pooled_with_infinite_left_out(tmp_path):
    """HD95 and ASSD joint - dedicated in mm, pooled like DSC; an infinite distance (an empty prediction) leaves
    that image out; folders without distances show '-'."""
    def run(folder, joint_hd95):
        entries = []
        for method, hd95 in (("dedicated", [4.0, 6.0, 2.0, 2.0]), ("joint", joint_hd95)):
            metrics = folder / method / "metrics.json"
            metrics.parent.mkdir(parents=True)
            metrics.write_text(json.dumps({"per_case": [
                {"case": f"c{j}", "subject": f"s{j // 2}", "dice": 0.5, "ece": 0.1, "hd95": h, "assd": h / 2}
                for j, h in enumerate(hd95)]}))
            entries.append({"method": method, "data": "X", "metrics_file": str(metrics)})
        (folder / "table_II.json").write_text(json.dumps(entries))
        return str(folder)
    # seed 0: differences -1, -3 (s0), -1, inf (s1: only -1 kept); seed 1 the same: subject means -2 and -1
    a = run(tmp_path / "a_seed0", [3.0, 3.0, 1.0, float("inf")])
    b = run(tmp_path / "a_seed1", [3.0, 3.0, 1.0, float("inf")])
    row = next(line for line in pool_seeds.pooled_table([a, b]).splitlines() if line.startswith("| X |"))
    hd95, assd = row.split(" | ")[-2:]
    assert hd95 == "-1.50 [-2.00, -1.00], 2 subj. x 2 runs, better"
    assert assd == "-0.75 [-1.00, -0.50], 2 subj. x 2 runs, better |"
    no_distances = write_run(tmp_path / "b_seed0", "table_II", [("dedicated", "X", [(0.5, 0.1)]), ("joint", "X", [(0.6, 0.1)])])
    assert pool_seeds.pooled_table([no_distances]).splitlines()[-1].endswith("| +0.100 | - | - |")
