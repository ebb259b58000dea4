"""Training-image scores of a model, the fitted thresholds, and their files next to the checkpoint.

Files in the fold folder (open formats):
- spectral: ``spectral_signatures_<layer>.npz`` (``signatures``, float64 (n_cases, channels)) and
  ``spectral_signatures_<layer>.json`` (case ids, source datasets, tau, C, leave-one-out scores, layer,
  model);
- mahalanobis: ``ood_fit_mahalanobis_<layer>.npz`` (``features``: per-image channel means) and ``.json``;
- msp, entropy, mcdropout: ``ood_fit_<method>.json`` (training scores, tau, C, ...).
"""
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.merge import case_sources
from nnunet_mt_ood.baselines import MahalanobisDetector, ThresholdDetector
from nnunet_mt_ood.detector import SpectralOODDetector

DEFAULT_C = 2.5
METHODS = ("spectral", "mahalanobis", "msp", "entropy", "mcdropout")
MAHALANOBIS_LAYER = "bottleneck"
MC_DROPOUT_SAMPLES = 10


def fit_paths(fold_dir: str, method: str, layer: str) -> Tuple[str, str]:
    """(.npz, .json) of a method's fit in a fold folder."""
    if method == "spectral":
        stem = f"spectral_signatures_{layer}"
    elif method == "mahalanobis":
        stem = f"ood_fit_mahalanobis_{MAHALANOBIS_LAYER}"
    else:
        stem = f"ood_fit_{method}"
    stem = os.path.join(fold_dir, stem)
    return stem + ".npz", stem + ".json"


def predictor_options(methods: Sequence[str], layer: str, mc_samples: int = MC_DROPOUT_SAMPLES) -> dict:
    """Keyword arguments of OODPredictor.enable_ood for the requested methods."""
    return {"layer": layer, "layers": [MAHALANOBIS_LAYER] if "mahalanobis" in methods else [],
            "softmax_scores": bool({"msp", "entropy"} & set(methods)),
            "mc_dropout_samples": mc_samples if "mcdropout" in methods else 0}


def method_input(method: str, results: dict, layer: str):
    """What a method's detector scores, from one case's predictor results."""
    if method == "spectral":
        return results[f"signature_{layer}"]
    if method == "mahalanobis":
        return results[f"pooled_{MAHALANOBIS_LAYER}"]
    return results[method]


def new_detector(method: str, c: float):
    if method == "spectral":
        return SpectralOODDetector(c)
    if method == "mahalanobis":
        return MahalanobisDetector(c)
    return ThresholdDetector(c)


def training_cases(preprocessed_base: str, preprocessed_folder: str, fold) -> List[str]:
    """The fold's training case ids from nnU-Net's splits_final.json (fold 'all': every case)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    if not os.path.isdir(preprocessed_folder):
        raise InputError(f"{preprocessed_folder}: preprocessed data missing (run nnUNetv2_plan_and_preprocess)")
    if str(fold) == "all":
        return sorted(infer_dataset_class(preprocessed_folder).get_identifiers(preprocessed_folder))
    splits_file = os.path.join(preprocessed_base, "splits_final.json")
    if not os.path.isfile(splits_file):
        raise InputError(f"{splits_file}: missing (train the model first, or run nnU-Net's planning)")
    with open(splits_file) as f:
        splits = json.load(f)
    if int(fold) >= len(splits):
        raise InputError(f"{splits_file}: has no fold {fold}")
    return list(splits[int(fold)]["train"])


def compute_training_results(predictor, preprocessed_folder: str, case_ids: Sequence[str],
                             progress: bool = True) -> List[dict]:
    """Predictor results of preprocessed training images, whole images by sliding window."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from tqdm import tqdm
    dataset = infer_dataset_class(preprocessed_folder)(preprocessed_folder, list(case_ids))
    results = []
    for case in tqdm(case_ids, desc="training images", disable=not progress):
        data = np.asarray(dataset.load_case(case)[0], dtype=np.float32)
        results.append(predictor.image_results(torch.from_numpy(data)))
    return results


def method_values(method: str, results: Sequence[dict], layer: str) -> np.ndarray:
    """(n_cases, n_values) float64: what the method's detector is fitted on, one row per case."""
    return np.stack([np.atleast_1d(method_input(method, r, layer)) for r in results]).astype(np.float64)


def save_fit(fold_dir: str, method: str, layer: str, values: np.ndarray, case_ids: Sequence[str],
             sources: Sequence[str], model: dict, c: float = DEFAULT_C, tta: bool = False,
             mc_samples: int = MC_DROPOUT_SAMPLES) -> dict:
    """Fits a method's threshold on the training values (see method_values) and writes its files; returns
    the JSON content."""
    if len(values) < 3:
        raise InputError(f"{fold_dir}: {len(values)} training images; tau needs at least 3")
    detector = new_detector(method, c).fit(values)
    npz, meta_path = fit_paths(fold_dir, method, layer)
    if method in ("spectral", "mahalanobis"):
        key = "signatures" if method == "spectral" else "features"
        np.savez(npz + ".partial.npz", **{key: values})
        os.replace(npz + ".partial.npz", npz)
    meta = {"method": method, "layer": layer if method == "spectral" else
            (MAHALANOBIS_LAYER if method == "mahalanobis" else None),
            "C": c, "tau": detector.threshold_, "n_channels": int(values.shape[1]), "case_ids": list(case_ids),
            "sources": list(sources), "train_scores": detector.train_scores_.tolist(), "model": model,
            "tta": tta if method in ("msp", "entropy") else None}
    if method == "mcdropout":
        meta["mc_samples"] = mc_samples
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


def load_detector(fold_dir: str, method: str, layer: str, c=None):
    """(fitted detector, metadata) of a method; InputError when not fitted."""
    npz, meta_path = fit_paths(fold_dir, method, layer)
    if not os.path.isfile(meta_path) or (method in ("spectral", "mahalanobis") and not os.path.isfile(npz)):
        flag = f"--method {method}" + (f" --layer {layer}" if method == "spectral" else "")
        raise InputError(f"{meta_path}: not fitted (run: nnunet_mt_ood fit -d ... -c ... -tr ... -f ... {flag})")
    with open(meta_path) as f:
        meta = json.load(f)
    c = meta["C"] if c is None else c
    if method == "spectral":
        values = np.load(npz)["signatures"]
    elif method == "mahalanobis":
        values = np.load(npz)["features"]
    else:
        values = np.asarray(meta["train_scores"])
    if len(values) < 3:
        raise InputError(f"{meta_path}: {len(values)} training images; tau needs at least 3")
    return new_detector(method, c).fit(values), meta


def load_detectors(fold_dir: str, methods: Sequence[str], layer: str, c=None) -> Dict[str, tuple]:
    return {m: load_detector(fold_dir, m, layer, c) for m in methods}


def fit_after_training(trainer, layer: str = "last") -> dict:
    """Spectral signatures of the fold's training images with the trained network, saved in its fold folder."""
    from nnunet_mt_ood.predictor import OODPredictor
    network = trainer.network.module if trainer.is_ddp else trainer.network
    network = getattr(network, "_orig_mod", network)
    predictor = OODPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                  perform_everything_on_device=trainer.device.type == "cuda",
                                  device=trainer.device, verbose=False, allow_tqdm=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    predictor.enable_ood(layer)
    try:
        case_ids = trainer.do_split()[0]
        results = compute_training_results(predictor, trainer.preprocessed_dataset_folder, case_ids)
    finally:
        predictor.remove_hooks()
    model = {"trainer": type(trainer).__name__, "plans": trainer.plans_manager.plans_name,
             "configuration": trainer.configuration_name, "fold": trainer.fold, "checkpoint": "checkpoint_final.pth",
             "dataset": trainer.plans_manager.dataset_name}
    meta = save_fit(trainer.output_folder, "spectral", layer, method_values("spectral", results, layer), case_ids,
                    case_sources(trainer.dataset_json, case_ids), model)
    trainer.print_to_log_file(f"Spectral OOD: {len(case_ids)} training signatures ({layer} layer), "
                              f"tau = {meta['tau']:.5f} (C = {meta['C']})")
    return meta
