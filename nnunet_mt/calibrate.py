"""`nnunet_mt calibrate`: a temperature fitted on a model's validation fold (or on a labelled reference set:
-i IMAGES / -prob FOLDER with -ref LABELS) and stored beside its weights (fold_X/temperature.json);
`nnunet_mt_ood score --save_probabilities` then writes calibrated probabilities.

The validation probabilities come from nnU-Net itself: fold_X/validation/*.npz when the model was trained
with `nnUNetv2_train ... --npz`, else nnU-Net's predictor on the validation cases' raw images, in this process
(what `nnUNetv2_predict --save_probabilities` writes). References: nnU-Net's copy of the labels in the
preprocessed dataset folder (``layout.GT_SEGMENTATIONS``).
"""
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_mt import layout
from nnunet_mt.atomic import save_npz_atomic, write_text_atomic, written_atomically
from nnunet_mt.errors import InputError
from nnunet_mt.metrics import ece, reference_roi
from nnunet_mt.temperature import (brier_score, choose_temperature, fit_by, negative_log_likelihood,
                                   scale_probabilities)

CALIBRATION_FILE = "temperature.json"
MAX_FIT_VOXELS = 2_000_000  # a seeded random sample of the region's voxels, shared equally by the cases
REGIONS = {"reference": "reference bounding box + 5 voxels", "image": "whole image"}


def validation_cases(preprocessed_dir: str, fold: str) -> List[str]:
    """The fold's validation case ids (nnU-Net's folds), sorted."""
    return sorted(layout.fold_cases(preprocessed_dir, fold, "val"))


def _link_validation_images(cases: Sequence[str], raw_dir: str, dataset_json: dict, images: str) -> None:
    """Links to the validation cases' raw images in `images` (nnUNetv2_predict's input layout)."""
    os.makedirs(images)
    for case in cases:
        for channel in range(len(dataset_json["channel_names"])):
            name = layout.image_file(case, channel, dataset_json["file_ending"])
            src = os.path.join(layout.images_folder(raw_dir), name)
            if not os.path.isfile(src):
                raise InputError(f"{src}: validation image missing")
            os.symlink(os.path.realpath(src), os.path.join(images, name))


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """NLL, Brier and ECE (foreground probability, 10 bins) of (classes, n) probabilities and (n,) labels."""
    return {"nll": negative_log_likelihood(probabilities, labels), "brier": brier_score(probabilities, labels),
            "ece": ece(1 - probabilities[0], labels > 0)}


def reference_cases(labels_dir: str, ending: str) -> List[str]:
    """Case ids of a folder of reference label maps (CASE<ending>), sorted; InputError when it has none."""
    if not os.path.isdir(labels_dir):
        raise InputError(f"{labels_dir}: reference label folder not found")
    cases = sorted(f[:-len(ending)] for f in os.listdir(labels_dir) if f.endswith(ending))
    if not cases:
        raise InputError(f"{labels_dir}: no reference label maps ending in {ending}")
    return cases


def calibrate(dataset: str, configuration: str, fold: str, trainer: str, plans: str = layout.DEFAULT_PLANS,
              region: str = "reference", per_source: bool = False, device: str = "cpu", mirroring: bool = True,
              log=print, images: Optional[str] = None, probabilities: Optional[str] = None,
              references: Optional[str] = None, objective: str = "held_out") -> dict:
    """Fits T (and one T per source dataset with per_source) and writes fold_X/temperature.json; returns it.

    objective: "held_out" (default): the fit (NLL or ECE) that lowers the ECE of held-out subjects, else T = 1
    (``temperature.choose_temperature``); "nll" (Guo et al.) or "ece": that fit, unchecked.

    Default: on the fold's validation cases (their saved probabilities, or nnU-Net's predictor on their raw images;
    references from nnU-Net's copy in the preprocessed folder, ``layout.GT_SEGMENTATIONS``). With references (a folder of label maps CASE<ending>): on a
    labelled reference set instead, predicted by nnU-Net's predictor from `images` (nnUNetv2_predict's input
    layout) or read from
    `probabilities` (an nnUNetv2_predict --save_probabilities folder); no training data of the model needed."""
    from nnunet_mt.merge import case_sources
    from nnunet_mt.nnunet_glue import dataset_name, model_folder, predict_folder, required_folder
    if (images or probabilities) and not references:
        raise InputError(f"{images or probabilities}: a reference set needs its labels (-ref LABELS_DIR)")
    if references and bool(images) == bool(probabilities):
        raise InputError(f"-ref {references}: give the reference images (-i) or their saved probabilities (-prob), "
                         f"one of the two")
    model_dir = model_folder(dataset, trainer, plans, configuration)
    fold_dir = layout.fold_folder(model_dir, fold)
    checkpoint = os.path.join(fold_dir, layout.FINAL_CHECKPOINT)
    if not os.path.isfile(checkpoint):
        raise InputError(f"{checkpoint}: checkpoint missing (train with nnUNetv2_train first)")
    name = dataset_name(dataset)
    with open(os.path.join(model_dir, layout.DATASET_JSON)) as f:
        dataset_json = json.load(f)
    ending = dataset_json["file_ending"]
    with tempfile.TemporaryDirectory() as tmp:
        if references:
            cases = reference_cases(references, ending)
            labels_dir = references
            if images:
                folder = os.path.join(tmp, "pred")
                log(f"predicting the reference images {images} (nnU-Net's predictor, probabilities saved)")
                predict_folder(model_dir, fold, layout.FINAL_CHECKPOINT, images, folder, device, mirroring)
                origin = f"nnU-Net's predictor (as nnUNetv2_predict --save_probabilities) on the reference images " \
                         f"{os.path.abspath(images)}"
            else:
                folder, origin = probabilities, f"saved probabilities {os.path.abspath(probabilities)}"
            missing = [c for c in cases if not os.path.isfile(os.path.join(folder, c + ".npz"))]
            if missing:
                raise InputError(f"{os.path.join(folder, missing[0] + '.npz')}: no probabilities for reference label "
                                 f"{missing[0]}{ending}" + (" (no image of that case in -i?)" if images else ""))
        else:
            preprocessed_dir = os.path.join(required_folder("nnUNet_preprocessed"), name)
            cases = validation_cases(preprocessed_dir, fold)
            labels_dir = os.path.join(preprocessed_dir, layout.GT_SEGMENTATIONS)
            saved = os.path.join(fold_dir, layout.VALIDATION_FOLDER)
            if all(os.path.isfile(os.path.join(saved, c + ".npz")) for c in cases):
                folder, origin = saved, f"{os.path.relpath(saved, model_dir)} (nnUNetv2_train --npz)"
            else:
                raw_dir = os.path.join(required_folder("nnUNet_raw"), name)
                _link_validation_images(cases, raw_dir, dataset_json, os.path.join(tmp, "images"))
                folder = os.path.join(tmp, "pred")
                log(f"predicting {len(cases)} validation cases (nnU-Net's predictor, probabilities saved)")
                predict_folder(model_dir, fold, layout.FINAL_CHECKPOINT, os.path.join(tmp, "images"), folder, device,
                               mirroring)
                origin = "nnU-Net's predictor (as nnUNetv2_predict --save_probabilities) on the validation images"
        fitted_probabilities, labels = _fit_voxels(cases, folder, labels_dir, ending, region)
    sources = case_sources(dataset_json, cases)
    from nnunet_mt.subjects import case_subjects
    subjects = case_subjects(dataset_json, cases)
    groups: Dict[str, np.ndarray] = {"all": np.ones(len(cases), bool)}
    if per_source:
        groups.update({s: np.array([c == s for c in sources]) for s in sorted(set(sources))})
    result = {"temperature": None, "per_source": None, "dataset": name, "trainer": trainer, "plans": plans,
              "configuration": configuration, "fold": fold, "region": REGIONS[region], "probabilities_from": origin,
              "reference": {"from": "labelled reference set", "labels": os.path.abspath(references)}
              if references else {"from": f"validation cases of fold {fold}"},
              "cases": cases, "sources": sources, "subjects": subjects, "objective": objective, "fit": {}}
    for group, members in groups.items():
        index = [i for i, m in enumerate(members) if m]
        p = np.concatenate([fitted_probabilities[i] for i in index], axis=1)
        y = np.concatenate([labels[i] for i in index])
        selection = None
        if objective == "held_out":
            selection = choose_temperature([fitted_probabilities[i] for i in index], [labels[i] for i in index],
                                           [subjects[i] for i in index], [sources[i] for i in index])
            t = selection["temperature"]
        else:
            t = fit_by(objective, p, y)
        fit = result["fit"][group] = {"temperature": t, "voxels": int(y.size), "before": _scores(p, y),
                                      "after": _scores(scale_probabilities(p, t), y), "selection": selection}
        log(f"{group}: T = {t:.3f} on {y.size} voxels; NLL {fit['before']['nll']:.4f} -> {fit['after']['nll']:.4f}, "
            f"ECE {fit['before']['ece']:.4f} -> {fit['after']['ece']:.4f}"
            + (f"; {selection['reason']}" if selection else f" ({objective} fit)"))
    result["temperature"] = result["fit"]["all"]["temperature"]
    if per_source:
        result["per_source"] = {s: result["fit"][s]["temperature"] for s in groups if s != "all"}
    path = os.path.join(fold_dir, CALIBRATION_FILE)
    write_text_atomic(path, json.dumps(result, indent=1))
    log(f"wrote {path}")
    return result


def _fit_voxels(cases: Sequence[str], folder: str, labels_dir: str, ending: str, region: str):
    """Per case: (classes, n) probabilities and (n,) labels of the region's voxels (a seeded sample when the
    region holds more than MAX_FIT_VOXELS voxels over all cases)."""
    from nnunet_mt.nnunet_glue import image_reader
    rng = np.random.default_rng(0)
    per_case = max(1, MAX_FIT_VOXELS // len(cases))
    probabilities, labels = [], []
    for case in cases:
        label_path = os.path.join(labels_dir, case + ending)
        reference = image_reader(ending, label_path).read_seg(label_path)[0][0].astype(np.int64)
        with np.load(os.path.join(folder, case + ".npz")) as npz:
            p = npz["probabilities"]
        if p.shape[1:] != reference.shape:
            raise InputError(f"{folder}/{case}.npz: probabilities {p.shape[1:]} do not match the reference "
                             f"{reference.shape} ({label_path})")
        mask = reference_roi(reference > 0) if region == "reference" else np.ones(reference.shape, bool)
        index = np.flatnonzero(mask)
        if index.size > per_case:
            index = np.sort(rng.choice(index, per_case, replace=False))
        probabilities.append(p.reshape(p.shape[0], -1)[:, index].astype(np.float64))
        labels.append(reference.reshape(-1)[index])
    return probabilities, labels


def load_calibration(fold_dir: str) -> Optional[dict]:
    """The fold's temperature.json (checked), or None when the model was not calibrated."""
    from nnunet_mt.schema import check_fields, read_json
    path = os.path.join(fold_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        return None
    data = read_json(path, {"temperature": "number", "region": "str", "cases": "strs"}, "calibration file")
    if not data["temperature"] > 0:
        raise InputError(f"{path}: field 'temperature' must be > 0 ({data['temperature']})")
    if data.get("per_source") is not None:
        check_fields(path, data["per_source"], {k: "number" for k in data["per_source"]}, where="per_source.")
    return data


def calibrate_saved_probabilities(npz_path: str, temperature: float) -> None:
    """Rewrites nnU-Net's probabilities file with softmax(log p / T) (atomically; other arrays kept)."""
    with np.load(npz_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    dtype = arrays["probabilities"].dtype
    arrays["probabilities"] = scale_probabilities(arrays["probabilities"], temperature).astype(dtype)
    save_npz_atomic(npz_path, compressed=True, **arrays)



def apply_to_folder(dataset: str, configuration: str, fold: str, trainer: str, plans: str, pred_dir: str,
                    out_dir: str, log=print) -> float:
    """A copy of an nnUNetv2_predict output folder (--save_probabilities) with every .npz rescaled by the
    model's global temperature; segmentations and other files copied unchanged. Built under its partial name
    (nnunet_mt.atomic) and renamed, so out_dir is complete or absent. Returns T."""
    import shutil
    from nnunet_mt.nnunet_glue import model_folder
    fold_dir = layout.fold_folder(model_folder(dataset, trainer, plans, configuration), fold)
    calibration = load_calibration(fold_dir)
    if calibration is None:
        raise InputError(f"{fold_dir}/{CALIBRATION_FILE}: no temperature fitted (run nnunet_mt calibrate without "
                         f"--apply first)")
    if not os.path.isdir(pred_dir):
        raise InputError(f"{pred_dir}: folder not found")
    files = sorted(f for f in os.listdir(pred_dir) if f.endswith(".npz"))
    if not files:
        raise InputError(f"{pred_dir}: no .npz probabilities (predict with --save_probabilities)")
    if os.path.exists(out_dir) or os.path.realpath(out_dir) == os.path.realpath(pred_dir):
        raise InputError(f"{out_dir}: exists (the calibrated copy goes to a new folder; the original stays)")
    with written_atomically(out_dir) as partial:
        shutil.copytree(pred_dir, partial)
        for name in files:
            calibrate_saved_probabilities(os.path.join(partial, name), calibration["temperature"])
    log(f"wrote {out_dir}: {len(files)} probability files rescaled with T = {calibration['temperature']:.3f}")
    return calibration["temperature"]
