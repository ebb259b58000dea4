"""Training-image scores of a model, the fitted thresholds, and their files next to the checkpoint
(file names and formats: ``nnunet_mt_ood.methods``)."""
import json
import os
import zipfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from nnunet_mt import layout
from nnunet_mt.atomic import save_npz_atomic, write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.schema import read_json
from nnunet_mt_ood.methods import DEFAULT_C, MC_DROPOUT_SAMPLES, METHODS


def training_cases(preprocessed_base: str, preprocessed_folder: str, fold) -> List[str]:
    """The fold's training case ids (nnU-Net's folds; fold 'all': every case)."""
    from nnunet_mt.nnunet_glue import preprocessed_case_ids
    if not os.path.isdir(preprocessed_folder):
        raise InputError(f"{preprocessed_folder}: preprocessed data missing (run nnUNetv2_plan_and_preprocess)")
    if str(fold) == "all":
        return preprocessed_case_ids(preprocessed_folder)
    return layout.fold_cases(preprocessed_base, fold, "train")


def compute_training_results(predictor, preprocessed_folder: str, case_ids: Sequence[str],
                             progress: bool = True) -> List[dict]:
    """Predictor results of preprocessed training images, whole images by sliding window."""
    from tqdm import tqdm
    from nnunet_mt.nnunet_glue import preprocessed_dataset
    dataset = preprocessed_dataset(preprocessed_folder, case_ids)
    results = []
    for case in tqdm(case_ids, desc="training images", disable=not progress):
        data = np.asarray(dataset.load_case(case)[0], dtype=np.float32)
        results.append(predictor.image_results(torch.from_numpy(data)))
    return results


def compute_reference_results(predictor, images: Dict[str, Sequence[str]], progress: bool = True) -> List[dict]:
    """Predictor results of reference images (raw files, nnUNetv2_predict's input layout: {case: channel
    files}), each preprocessed by nnU-Net as nnUNetv2_predict would, whole images by sliding window."""
    from tqdm import tqdm
    from nnunet_mt.nnunet_glue import preprocess_images
    results = []
    for case in tqdm(sorted(images), desc="reference images", disable=not progress):
        data = preprocess_images(predictor, sorted(images[case]))
        results.append(predictor.image_results(torch.from_numpy(data)))
    return results


def method_values(method: str, results: Sequence[dict], layer: str) -> np.ndarray:
    """(n_cases, n_values) float64: what the method's detector is fitted on, one row per case."""
    return np.stack([np.atleast_1d(METHODS[method].values(r, layer)) for r in results]).astype(np.float64)


def save_fit(fold_dir: str, method: str, layer: str, values: np.ndarray, case_ids: Sequence[str],
             sources: Sequence[str], model: dict, c: float = DEFAULT_C, tta: bool = False,
             mc_samples: int = MC_DROPOUT_SAMPLES, options: Optional[dict] = None, members: Sequence = (),
             prediction: Optional[dict] = None, subjects: Optional[Sequence[str]] = None,
             reference: Optional[dict] = None) -> dict:
    """Fits a method's threshold on the training values (see method_values) and writes its files; returns
    the JSON content. options: the method's detector options (e.g. knn's k; the JSON keeps the values used,
    defaults included); members: an
    ensemble's folds or seeds (its file names carry them); prediction: the device and precision the values were
    computed with (``OODPredictor.prediction_settings``), kept in the JSON for score to compare; subjects: one
    per case (default: each case its own): neighbour-based taus leave a whole subject out; reference: where the
    fitted images came from (the fold's training images or a folder given with fit -i), kept in the JSON."""
    if len(values) < 3:
        raise InputError(f"{fold_dir}: {len(values)} training images; tau needs at least 3")
    spec = METHODS[method]
    options = {o: v for o, v in (options or {}).items() if o in spec.options}
    subjects = list(map(str, subjects)) if subjects is not None else list(case_ids)
    try:
        detector = spec.make_detector(c, options).fit(values, groups=subjects)
    except ValueError as e:  # e.g. every training image from one subject
        raise InputError(f"{fold_dir}: cannot fit {method}'s tau ({e})")
    npz, meta_path = spec.paths(fold_dir, layer, members)
    if spec.npz_key:
        save_npz_atomic(npz, **{spec.npz_key: values})
    meta = {"method": method, "layer": spec.fitted_layer(layer),
            "C": c, "tau": detector.threshold_, "n_channels": int(values.shape[1]), "case_ids": list(case_ids),
            "sources": list(sources), "subjects": subjects, "train_scores": detector.train_scores_.tolist(),
            "model": model,
            "tta": tta if spec.uses_test_time_mirroring else None, "prediction": prediction, "reference": reference}
    if spec.needs_dropout:
        meta["mc_samples"] = mc_samples
    meta.update({o: getattr(detector, o) for o in spec.options})  # what it was fitted with, defaults included
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


FIT_FIELDS = {"method": "str", "C": "number", "tau": "number", "n_channels": "int", "case_ids": "strs",
              "sources": "strs", "train_scores": "numbers", "model": "dict", "layer": "str or null"}


def load_detector(fold_dir: str, method: str, layer: str, c=None, members: Sequence = ()):
    """(fitted detector, metadata) of a method (members: an ensemble's folds or seeds); InputError when not fitted."""
    spec = METHODS[method]
    npz, meta_path = spec.paths(fold_dir, layer, members)
    if not os.path.isfile(meta_path) or (spec.npz_key and not os.path.isfile(npz)):
        flag = f"--method {method}" + (f" --layer {layer}" if spec.has_layer else "") + \
            (f" --seeds {' '.join(map(str, members))}" if spec.ensemble_of == "seeds" else "")
        fold = " ".join(members) if spec.ensemble_of == "folds" else "..."
        raise InputError(f"{meta_path}: not fitted (run: nnunet_mt_ood fit -d ... -c ... -tr ... -f {fold} {flag})")
    meta = read_json(meta_path, FIT_FIELDS, f"{method} fit file")
    c = meta["C"] if c is None else c
    if spec.npz_key:
        try:
            with np.load(npz) as arrays:
                values = np.asarray(arrays[spec.npz_key], dtype=np.float64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise InputError(f"{npz}: unreadable {method} fit ({type(e).__name__}: {str(e)[:80]})")
    else:
        values = np.asarray(meta["train_scores"], dtype=np.float64)
    values = values.reshape(len(values), -1)
    if not np.all(np.isfinite(values)) or values.shape != (len(meta["case_ids"]), meta["n_channels"]):
        raise InputError(f"{npz if spec.npz_key else meta_path}: {values.shape} training values, expected "
                         f"{(len(meta['case_ids']), meta['n_channels'])} finite ones")
    if len(values) < 3:
        raise InputError(f"{meta_path}: {len(values)} training images; tau needs at least 3")
    try:
        groups = meta.get("subjects")  # fits before subjects were recorded: each case its own subject
        if groups is not None and len(groups) != len(values):
            raise InputError(f"{meta_path}: {len(groups)} subjects for {len(values)} training images")
        return spec.make_detector(c, meta).fit(values, groups=groups), meta
    except (TypeError, ValueError) as e:  # a recorded option the detector cannot take
        raise InputError(f"{meta_path}: {method} fit cannot be used ({str(e)[:120]})")


def load_detectors(fold_dir: str, methods: Sequence[str], layer: str, c=None,
                   members: Sequence = ()) -> Dict[str, tuple]:
    return {m: load_detector(fold_dir, m, layer, c, members) for m in methods}
