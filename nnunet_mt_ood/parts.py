"""Work split into K parts (like ``nnUNetv2_predict -num_parts K -part_id i``) and merged back.

Part i of K takes every K-th case of the sorted case list starting at i, the same assignment as nnU-Net's.
Each part writes its own file; merging refuses when a part is missing, two parts overlap or the parts
disagree on model or settings.
"""
import csv
import glob
import io
import json
import os
import re
from typing import Dict, List, Sequence

import numpy as np

from nnunet_mt.atomic import save_npz_atomic, write_text_atomic, write_texts_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.schema import check_scores_report

SCORES_PART = re.compile(r"^ood_scores\.part_(\d+)_of_(\d+)\.json$")


def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise InputError(f"-part_id {part_id} -num_parts {num_parts}: need 0 <= part_id < num_parts "
                         f"(counting starts at 0)")


def part_share(items: Sequence[str], num_parts: int, part_id: int) -> List[str]:
    """The items part part_id of num_parts works on (sorted, every num_parts-th)."""
    check_part(num_parts, part_id)
    return sorted(items)[part_id::num_parts]


def part_name(part_id: int, num_parts: int) -> str:
    return f"part_{part_id}_of_{num_parts}"


def write_scores(out_dir: str, report: dict) -> str:
    """ood_scores.json and ood_scores.csv (one row per case) in out_dir, written as one set (both or neither)."""
    rows = report["cases"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    written = os.path.join(out_dir, "ood_scores.json")
    write_texts_atomic({written: json.dumps(report, indent=1), os.path.join(out_dir, "ood_scores.csv"): buffer.getvalue()})
    return written


def collect_scores(out_dir: str, log=print) -> dict:
    """Merges ood_scores.part_<i>_of_<K>.json of out_dir into ood_scores.json/.csv; returns the report."""
    if not os.path.isdir(out_dir):
        raise InputError(f"{out_dir}: folder not found")
    found = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "ood_scores.part_*_of_*.json"))):
        match = SCORES_PART.match(os.path.basename(path))
        if match:
            key = (int(match[1]), int(match[2]))
            if key in found:
                raise InputError(f"{path}: names the same part as {found[key]} (part {key[0]} of {key[1]}); "
                                 f"remove one")
            found[key] = path
    if not found:
        raise InputError(f"{out_dir}: no ood_scores.part_<i>_of_<K>.json files (score with -num_parts K -part_id i)")
    totals = sorted({k for _, k in found})
    if len(totals) != 1:
        raise InputError(f"{out_dir}: parts of different splits ({', '.join(f'of {k}' for k in totals)}); "
                         f"remove the stale ones")
    num_parts = totals[0]
    beyond = [path for (i, k), path in sorted(found.items()) if not 0 <= i < k]
    if beyond:
        raise InputError(f"{beyond[0]}: not a part of a split (part numbers count from 0 to K - 1 of K >= 1)")
    missing = [i for i in range(num_parts) if (i, num_parts) not in found]
    if missing:
        raise InputError(f"{os.path.join(out_dir, 'ood_scores.' + part_name(missing[0], num_parts) + '.json')}: "
                         f"part missing ({len(missing)} of {num_parts} not written yet)")
    merged, owner = None, {}
    for i in range(num_parts):
        path = found[(i, num_parts)]
        try:
            with open(path) as f:
                part = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read scores part ({e})")
        check_scores_report(path, part)
        declared = part.get("part")
        if declared is not None and (not isinstance(declared, dict) or
                                     (declared.get("part_id"), declared.get("num_parts")) != (i, num_parts)):
            raise InputError(f"{path}: its 'part' field {json.dumps(declared)} contradicts the file name "
                             f"(part {i} of {num_parts})")
        cases = part["cases"]
        if not cases:
            raise InputError(f"{path}: scores part holds no cases (a part of an empty share is not written by score)")
        if merged is None:
            merged = {k: v for k, v in part.items() if k != "part"}
            merged["cases"] = []
        elif (part["model"], part["methods"], part["spectral_layer"]) != \
                (merged["model"], merged["methods"], merged["spectral_layer"]):
            raise InputError(f"{path}: scored with another model or other settings than part 0")
        for row in cases:
            if row["case"] in owner:
                raise InputError(f"{path}: case '{row['case']}' is also in {owner[row['case']]} (parts overlap)")
            owner[row["case"]] = path
            merged["cases"].append(row)
    merged["cases"].sort(key=lambda r: r["case"])
    written = write_scores(out_dir, merged)
    log(f"merged {num_parts} parts ({len(merged['cases'])} cases) into {written} and .csv")
    return merged


def save_fit_part(fold_dir: str, num_parts: int, part_id: int, case_ids: Sequence[str],
                  values: Dict[str, np.ndarray], settings: dict) -> str:
    """One part's training values per method (rows in case_ids order) under fold_dir/ood_fit_parts/."""
    folder = os.path.join(fold_dir, "ood_fit_parts")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, part_name(part_id, num_parts))
    save_npz_atomic(stem + ".npz", case_ids=np.asarray(case_ids), **{f"values_{m}": v for m, v in values.items()})
    write_text_atomic(stem + ".json", json.dumps(settings, indent=1))
    return stem + ".npz"


def load_fit_parts(fold_dir: str, num_parts: int, case_ids: Sequence[str], methods: Sequence[str],
                   settings: dict) -> Dict[str, np.ndarray]:
    """Training values per method for case_ids (in that order) from the parts; refuses gaps and overlaps."""
    rows: Dict[str, tuple] = {}
    for i in range(num_parts):
        stem = os.path.join(fold_dir, "ood_fit_parts", part_name(i, num_parts))
        if not os.path.isfile(stem + ".npz") or not os.path.isfile(stem + ".json"):
            raise InputError(f"{stem}.npz: fit part missing (run nnunet_mt_ood fit ... -num_parts {num_parts} "
                             f"-part_id {i})")
        with open(stem + ".json") as f:
            if json.load(f) != settings:
                raise InputError(f"{stem}.json: part computed with other settings (model, layer, methods, "
                                 f"mirroring, dropout samples) than this fit")
        with np.load(stem + ".npz") as part:
            for j, case in enumerate(part["case_ids"].tolist()):
                if case in rows:
                    raise InputError(f"{stem}.npz: case '{case}' is also in {rows[case][0]} (parts overlap)")
                rows[case] = (stem + ".npz", {m: part[f"values_{m}"][j] for m in methods})
    absent = [c for c in case_ids if c not in rows]
    if absent:
        raise InputError(f"{fold_dir}: no fit part holds training case '{absent[0]}' ({len(absent)} missing)")
    return {m: np.stack([rows[c][1][m] for c in case_ids]) for m in methods}
