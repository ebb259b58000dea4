"""``nnunet_mt evaluate``: DSC, HD95, ASSD, ECE and MCE of an nnU-Net prediction folder, per source dataset.

Reads the folders with nnU-Net's own image readers; spacing (mm) comes from the image headers.
Foreground = reference labels > 0 (the merged datasets are binary); the foreground probability of
nnU-Net's ``--save_probabilities`` output is 1 - p(background).
"""
import csv
import io
import json
import os
from multiprocessing import get_context
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_mt import layout
from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.temperature import brier_score, negative_log_likelihood
from nnunet_mt.validate import refuse_stray_images
from nnunet_mt.merge import case_sources
from nnunet_mt.subjects import case_subjects
from nnunet_mt.metrics import (DEFAULT_ROI_MARGIN, calibration_histogram, default_roi, dice, ece_from_histogram,
                               hd95_and_assd, mce_from_histogram, reference_roi)

METRICS = ("dice", "hd95", "assd", "ece", "mce", "nll", "brier")
HEADERS = {"dice": "DSC", "hd95": "HD95 (mm)", "assd": "ASSD (mm)", "ece": "ECE", "mce": "MCE", "nll": "NLL",
           "brier": "Brier"}


def _reader(file_ending: str, example: str):
    from nnunet_mt.nnunet_glue import image_reader
    return image_reader(file_ending, example)


ORIGIN_TOLERANCE_MM = 1e-3  # nnU-Net copies the reference's header into its predictions exactly
DIRECTION_TOLERANCE = 1e-4  # per entry of the direction cosine matrix
PROBABILITY_TOLERANCE = 1e-3  # float16 storage and rounding: probabilities in [-tol, 1 + tol], sums within tol of 1


def _read_seg(reader, path: str):
    """(label map (z, y, x), spacing (mm), geometry: {'origin' / 'direction' / 'affine': array} as the reader
    reports it)."""
    try:
        seg, props = reader.read_seg(path)
    except Exception as e:  # nnU-Net's readers raise assorted errors on broken files
        raise InputError(f"{path}: unreadable segmentation ({str(e).strip().splitlines()[-1] if str(e) else e!r})")
    stuff = props.get("sitk_stuff") or {}
    geometry = {k: np.asarray(stuff[k], float) for k in ("origin", "direction") if k in stuff}
    if "nibabel_stuff" in props:
        geometry["affine"] = np.asarray(props["nibabel_stuff"]["original_affine"], float)
    return seg[0], np.asarray(props["spacing"], dtype=float), geometry


def check_same_grid(pred_path: str, pred, pred_spacing, pred_geometry, ref, ref_spacing, ref_geometry) -> None:
    """Raises InputError unless the prediction lies on the reference's voxel grid: same shape, spacing,
    origin (mm) and direction (or affine, for nibabel-read files)."""
    if ref.shape != pred.shape:
        raise InputError(f"{pred_path}: shape {pred.shape} differs from the reference's {ref.shape}")
    if not np.allclose(ref_spacing, pred_spacing, rtol=1e-4):
        raise InputError(f"{pred_path}: spacing {tuple(pred_spacing)} differs from the reference's "
                         f"{tuple(ref_spacing)}")
    for key, tolerance in (("origin", ORIGIN_TOLERANCE_MM), ("direction", DIRECTION_TOLERANCE),
                           ("affine", ORIGIN_TOLERANCE_MM)):
        if key in ref_geometry and key in pred_geometry and not np.allclose(
                ref_geometry[key], pred_geometry[key], rtol=0, atol=tolerance):
            raise InputError(f"{pred_path}: {key} {np.round(pred_geometry[key], 4).tolist()} differs from the "
                             f"reference's {np.round(ref_geometry[key], 4).tolist()} (shifted or flipped)")


def check_probabilities(prob_path: str, probabilities: np.ndarray) -> None:
    """Raises InputError unless `probabilities` (classes, z, y, x) are finite, within [0, 1] and sum to 1 over
    the classes (logits or scores in their place are refused)."""
    if not np.issubdtype(probabilities.dtype, np.floating) and not np.issubdtype(probabilities.dtype, np.integer):
        raise InputError(f"{prob_path}: probabilities of type {probabilities.dtype}, expected numbers")
    if not np.all(np.isfinite(probabilities)):
        raise InputError(f"{prob_path}: {int(np.sum(~np.isfinite(probabilities)))} probabilities are NaN or infinite")
    low, high = float(probabilities.min()), float(probabilities.max())
    if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
        raise InputError(f"{prob_path}: values from {low:.4g} to {high:.4g} are not probabilities in [0, 1] "
                         f"(logits? save them with --save_probabilities)")
    worst = float(np.max(np.abs(probabilities.sum(0, dtype=np.float64) - 1)))
    if worst > PROBABILITY_TOLERANCE * probabilities.shape[0]:
        raise InputError(f"{prob_path}: class probabilities do not sum to 1 (off by up to {worst:.4g})")


def read_on_one_grid(ref_path: str, pred_path: str, file_ending: str):
    """(reference, prediction, spacing (mm)) label maps (z, y, x), read with nnU-Net's reader for the ending;
    InputError unless both lie on the same voxel grid (check_same_grid)."""
    reader = _reader(file_ending, ref_path)
    ref, ref_spacing, ref_geometry = _read_seg(reader, ref_path)
    pred, pred_spacing, pred_geometry = _read_seg(reader, pred_path)
    for path, labels in ((ref_path, ref), (pred_path, pred)):
        if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):  # NaN > 0 is False: it would count as background
            raise InputError(f"{path}: {int(np.sum(~np.isfinite(labels)))} NaN or infinite voxels in a label map")
    check_same_grid(pred_path, pred, pred_spacing, pred_geometry, ref, ref_spacing, ref_geometry)
    return ref, pred, ref_spacing


def evaluate_case(case: str, ref_path: str, pred_path: str, prob_path: Optional[str], file_ending: str,
                  n_bins: int = 10, roi: str = "box") -> dict:
    """Metrics of one case; distances in mm. Raises InputError on mismatching files."""
    ref, pred, ref_spacing = read_on_one_grid(ref_path, pred_path, file_ending)
    ref_fg, pred_fg = ref > 0, pred > 0
    hd, sd = hd95_and_assd(pred_fg, ref_fg, ref_spacing)
    result = {"case": case, "dice": dice(pred_fg, ref_fg), "hd95": hd, "assd": sd,
              "ref_voxels": int(ref_fg.sum()), "pred_voxels": int(pred_fg.sum())}
    if prob_path is not None:
        try:
            probabilities = np.load(prob_path)["probabilities"]
        except Exception as e:
            raise InputError(f"{prob_path}: unreadable probabilities file ({e})")
        if probabilities.shape[1:] != ref.shape:
            raise InputError(f"{prob_path}: probabilities of shape {probabilities.shape[1:]} do not match the "
                             f"segmentation {ref.shape}")
        check_probabilities(prob_path, probabilities)
        if np.mean((probabilities.argmax(0) > 0) == pred_fg) < 0.99:
            raise InputError(f"{prob_path}: probabilities do not match the segmentation {pred_path}")
        fg_prob = 1.0 - probabilities[0].astype(np.float64)
        region = {"image": lambda: np.ones(ref.shape, bool), "reference": lambda: reference_roi(ref_fg),
                  "box": lambda: default_roi(fg_prob, ref_fg)}[roi]()
        histogram = calibration_histogram(fg_prob, ref_fg, n_bins, region)
        if int(ref.max()) >= probabilities.shape[0]:
            raise InputError(f"{ref_path}: label {int(ref.max())} but only {probabilities.shape[0]} classes in {prob_path}")
        labels = ref[region].astype(np.int64)
        result.update(ece=ece_from_histogram(histogram), mce=mce_from_histogram(histogram),
                      nll=negative_log_likelihood(probabilities[:, region], labels),
                      brier=brier_score(probabilities[:, region], labels), calibration_histogram=histogram.tolist())
    return result


def calibration_region(roi: str) -> str:
    """How the voxels counted for ECE/MCE were chosen, in words for reports and tables."""
    return {"image": "whole image",
            "reference": f"reference bounding box + {DEFAULT_ROI_MARGIN} voxels (same voxels for every model)",
            "box": f"bounding box of reference | prediction + {DEFAULT_ROI_MARGIN} voxels"}[roi]


def _evaluate_star(args):
    return evaluate_case(*args)


def summarize(values: Sequence[float]) -> dict:
    """mean and std (ddof 0) over the finite values; inf values counted apart."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    return {"mean": float(finite.mean()) if len(finite) else float("nan"),
            "std": float(finite.std()) if len(finite) else float("nan"),
            "n": int(len(v)), "n_inf": int(np.sum(np.isinf(v)))}


def cell(stats: dict, metric: str, sep: str = "+-") -> str:
    """'mean +- std' of summarize()'s stats, 3 decimals for DSC/ECE/MCE, 2 for distances (mm)."""
    if stats["n"] == 0 or (np.isnan(stats["mean"]) and stats["n_inf"] == 0):
        return "-"
    digits = 3 if metric in ("dice", "ece", "mce") else 2
    text = f"{stats['mean']:.{digits}f} {sep} {stats['std']:.{digits}f}"
    return text + (f" ({stats['n_inf']} inf)" if stats["n_inf"] else "")


def markdown_table(groups: Dict[str, Dict[str, dict]], metrics: Sequence[str]) -> str:
    """The paper's table layout: one row per source dataset, mean +- std per metric."""
    lines = ["| source | n | " + " | ".join(HEADERS[m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for source, stats in groups.items():
        n = stats[metrics[0]]["n"]
        lines.append(f"| {source} | {n} | " + " | ".join(cell(stats[m], m) for m in metrics) + " |")
    return "\n".join(lines)


def _load_dataset_json(dataset: Optional[str], pred_dir: str) -> dict:
    """dataset.json of -d (raw folder) if given, else the one nnUNetv2_predict copies into its output."""
    if dataset is not None:
        from nnunet_mt.nnunet_glue import dataset_name, required_folder
        path = os.path.join(required_folder("nnUNet_raw"), dataset_name(dataset), layout.DATASET_JSON)
    else:
        path = os.path.join(pred_dir, layout.DATASET_JSON)
        if not os.path.isfile(path):
            return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read dataset.json ({e})")


def evaluate_folder(ref_dir: str, pred_dir: str, prob_dir: Optional[str] = None, dataset: Optional[str] = None,
                    output: Optional[str] = None, num_processes: int = 1, n_bins: int = 10, roi: str = "box",
                    plots: Optional[str] = None, log=print) -> dict:
    """Evaluates every reference case; writes JSON (per case + per source), CSV and Markdown; returns the JSON."""
    for d in (ref_dir, pred_dir, prob_dir):
        if d is not None and not os.path.isdir(d):
            raise InputError(f"{d}: folder not found")
    dataset_json = _load_dataset_json(dataset, pred_dir)
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    for d in (ref_dir, pred_dir):
        refuse_stray_images(d, file_ending)
    cases = sorted(f[:-len(file_ending)] for f in os.listdir(ref_dir) if f.endswith(file_ending))
    if not cases:
        raise InputError(f"{ref_dir}: no reference files ending in {file_ending}")
    jobs = []
    for case in cases:
        pred = os.path.join(pred_dir, case + file_ending)
        if not os.path.isfile(pred):
            raise InputError(f"{pred}: prediction missing for reference case '{case}'")
        prob = None
        if prob_dir is not None:
            prob = os.path.join(prob_dir, case + ".npz")
            if not os.path.isfile(prob):
                raise InputError(f"{prob}: probabilities missing for case '{case}' (predict with "
                                 f"--save_probabilities)")
        jobs.append((case, os.path.join(ref_dir, case + file_ending), pred, prob, file_ending, n_bins, roi))

    from tqdm import tqdm
    per_case = []
    with tqdm(total=len(jobs), desc="evaluating") as bar:  # closed (own line) before any error message
        if num_processes > 1:
            with get_context("spawn").Pool(num_processes) as pool:
                for result in pool.imap(_evaluate_star, jobs):
                    per_case.append(result)
                    bar.update()
        else:
            for job in jobs:
                per_case.append(evaluate_case(*job))
                bar.update()

    sources = case_sources(dataset_json, cases) if dataset_json.get("nnunet_mt") else ["all"] * len(cases)
    metrics = [m for m in METRICS if m in per_case[0]]
    groups: Dict[str, List[dict]] = {}
    for source, subject, result in zip(sources, case_subjects(dataset_json, cases), per_case):
        result["source"], result["subject"] = source, subject
        groups.setdefault(source, []).append(result)
    if len(groups) > 1:
        groups["all"] = per_case
    summary = {s: {m: summarize([r[m] for r in rs]) for m in metrics} for s, rs in groups.items()}
    table = markdown_table(summary, metrics)
    report = {"reference": os.path.abspath(ref_dir), "prediction": os.path.abspath(pred_dir),
              "probabilities": os.path.abspath(prob_dir) if prob_dir else None, "n_bins": n_bins,
              "calibration_region": calibration_region(roi),
              "per_source": summary, "per_case": per_case}

    output = output or os.path.join(pred_dir, "metrics.json")
    stem = output[:-5] if output.endswith(".json") else output
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "source"] + metrics)
    for r in per_case:
        writer.writerow([r["case"], r["source"]] + [r[m] for m in metrics])
    write_texts_atomic({output: json.dumps(report, indent=1, default=float), stem + ".csv": buffer.getvalue(),
                        stem + ".md": table + "\n"})  # one set: all three or none
    if plots and "ece" in metrics:
        from nnunet_mt.plots import reliability_diagram_from_histogram
        os.makedirs(plots, exist_ok=True)
        for source, rs in groups.items():
            histogram = np.sum([np.asarray(r["calibration_histogram"]) for r in rs], axis=0)
            png = reliability_diagram_from_histogram(histogram, os.path.join(plots, f"reliability_{source}.png"),
                                                     title=f"{source} ({len(rs)} cases)")
            log(f"wrote {png}")
    log(table)
    log(f"wrote {output}, {stem}.csv, {stem}.md")
    return report
