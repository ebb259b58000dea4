"""The OOD methods, in one registry: what each needs from the prediction, its detector, its files in the
fold folder, and the defaults. Every command (fit, score, evaluate) and the experiments read it.

Files (open formats):
- spectral: ``spectral_signatures_<layer>.npz`` (``signatures``, float64 (n_cases, channels)) and ``.json``
  (case ids, source datasets, tau, C, leave-one-out scores, layer, model);
- mahalanobis, knn: ``ood_fit_<method>_<POOLED_LAYER>.npz`` (``features``: per-image channel means) and ``.json``;
- msp, entropy, mcdropout: ``ood_fit_<method>.json`` (training scores, tau, C, ...);
- ensemble (several folds of one model, ``-f 0 1 ...``): ``ood_fit_ensemble_folds_<f1>_<f2>....json`` in the
  model folder (beside the fold folders), as the fit belongs to no single fold.
"""
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from nnunet_mt_ood.baselines import KNNDetector, MahalanobisDetector, ThresholdDetector
from nnunet_mt_ood.detector import SpectralOODDetector

DEFAULT_C = 2.5  # tau = mean + C std of the leave-one-out training scores
POOLED_LAYER = "bottleneck"  # the layer whose channel means mahalanobis and knn use
MC_DROPOUT_SAMPLES = 10


@dataclass(frozen=True)
class OODMethod:
    name: str
    needs: str  # from the prediction: "gram" (spectral layer), "pooled" (channel means), "softmax", "mc_dropout",
    # "folds" (one segmentation per fold of an ensemble)
    detector: type  # fit(values) / score(values) with threshold_, constructed with C
    stem: str  # file name stem in the fold folder; {layer}: the spectral layer
    npz_key: Optional[str] = None  # the training values' array in the .npz; None: scores kept in the .json
    uses_test_time_mirroring: bool = False  # the scores change with nnU-Net's mirroring
    options: Tuple[str, ...] = ()  # detector arguments besides C, chosen at fit time and kept in the .json

    def make_detector(self, c: float, fit_meta: Optional[dict] = None):
        """The detector, with the options a fit recorded (their defaults when fit_meta lacks them)."""
        recorded = fit_meta or {}
        return self.detector(c, **{o: recorded[o] for o in self.options if o in recorded})

    @property
    def needs_several_folds(self) -> bool:
        return self.needs == "folds"

    def paths(self, fold_dir: str, layer: str, folds: Sequence[str] = ()) -> Tuple[str, str]:
        """(.npz, .json) of this method's fit in a fold folder (for ensemble: the model folder, and its folds)."""
        stem = os.path.join(fold_dir, self.stem.format(layer=layer, folds="_".join(map(str, folds))))
        return stem + ".npz", stem + ".json"

    def fitted_layer(self, layer: str) -> Optional[str]:
        return layer if self.needs == "gram" else POOLED_LAYER if self.needs == "pooled" else None

    def input(self, results: dict, layer: str):
        """What the detector scores, from one case's predictor results (see OODPredictor.results)."""
        if self.needs == "gram":
            return results[f"signature_{layer}"]
        if self.needs == "pooled":
            return results[f"pooled_{POOLED_LAYER}"]
        return results[self.name]


METHODS: Dict[str, OODMethod] = {m.name: m for m in (
    OODMethod("spectral", "gram", SpectralOODDetector, "spectral_signatures_{layer}", "signatures"),
    OODMethod("mahalanobis", "pooled", MahalanobisDetector, f"ood_fit_mahalanobis_{POOLED_LAYER}", "features"),
    OODMethod("knn", "pooled", KNNDetector, f"ood_fit_knn_{POOLED_LAYER}", "features", options=("k",)),
    OODMethod("msp", "softmax", ThresholdDetector, "ood_fit_msp", uses_test_time_mirroring=True),
    OODMethod("entropy", "softmax", ThresholdDetector, "ood_fit_entropy", uses_test_time_mirroring=True),
    OODMethod("mcdropout", "mc_dropout", ThresholdDetector, "ood_fit_mcdropout"),
    OODMethod("ensemble", "folds", ThresholdDetector, "ood_fit_ensemble_folds_{folds}", uses_test_time_mirroring=True),
)}


def predictor_options(methods: Sequence[str], layer: str, mc_samples: int = MC_DROPOUT_SAMPLES) -> dict:
    """Keyword arguments of OODPredictor.enable_ood for the requested methods."""
    needs = {METHODS[m].needs for m in methods}
    return {"layer": None if needs == {"folds"} else layer, "layers": [POOLED_LAYER] if "pooled" in needs else [],
            "softmax_scores": "softmax" in needs, "mc_dropout_samples": mc_samples if "mc_dropout" in needs else 0,
            "fold_disagreement": "folds" in needs}
