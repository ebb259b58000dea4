"""The OOD methods, in one registry: what each needs from the prediction, its detector, its files in the
fold folder, and the defaults. Every command (fit, score, evaluate) and the experiments read it.

Files (open formats):
- spectral: ``spectral_signatures_<layer>.npz`` (``signatures``, float64 (n_cases, channels)) and ``.json``
  (case ids, source datasets, tau, C, leave-one-out scores, layer, model); its variants as
  ``ood_fit_spectral_centred_<layer>`` and ``ood_fit_spectral_multilayer`` (.npz ``signatures`` and .json);
- mahalanobis, knn: ``ood_fit_<method>_<POOLED_LAYER>.npz`` (``features``: per-image channel means) and ``.json``;
- ihf: ``ood_fit_ihf.npz`` (``features``: fine intensity histograms, (n_cases, channels * 2000)) and ``.json``;
- msp, entropy, mcdropout: ``ood_fit_<method>.json`` (training scores, tau, C, ...);
- ensemble (several folds of one model, ``-f 0 1 ...``): ``ood_fit_ensemble_folds_<f1>_<f2>....json`` in the
  model folder (beside the fold folders), as the fit belongs to no single fold;
- seed_ensemble (the ``-tr`` model and its ``_seed<N>`` variants, ``--seeds N ...``, of one fold):
  ``ood_fit_ensemble_seeds_<N1>_<N2>....json`` in the ``-tr`` model's fold folder.
"""
import os
from typing import Dict, Optional, Sequence, Tuple

from nnunet_mt_ood.baselines import KNNDetector, MahalanobisDetector, ThresholdDetector
from nnunet_mt_ood.detector import SpectralOODDetector
from nnunet_mt_ood.histogram import IntensityHistogramDetector, fine_intensity_histogram
from nnunet_mt_ood.options import LAYERS
from nnunet_mt_ood.signatures import multilayer_signature

DEFAULT_C = 2.5  # tau = mean + C std of the leave-one-out training scores
POOLED_LAYER = "bottleneck"  # the layer whose channel means mahalanobis and knn use
MC_DROPOUT_SAMPLES = 10


class OODMethod:
    """One OOD method: what it needs from nnU-Net's prediction (``predictor_options``), what its detector
    scores in one case's predictor results (``values``), its detector and its files. A new method is one
    subclass, registered with ``register``; every command and the experiments read its attributes, never
    its name."""
    name: str = ""
    summary: str = ""  # what it scores, in a few words (the commands' --method help)
    result_key: str = ""  # the predictor result (OODPredictor.results[case]) its detector scores, by default
    detector: type = ThresholdDetector  # fit(values, groups) / score / predict / threshold_, constructed with C
    stem: str = ""  # file name stem in the fold folder; {layer}: the spectral layer, {members}: an ensemble's folds/seeds
    npz_key: Optional[str] = None  # the training values' array in the .npz; None: scores kept in the .json
    uses_test_time_mirroring = False  # its scores change with nnU-Net's mirroring
    options: Tuple[str, ...] = ()  # detector arguments besides C, chosen at fit time and kept in the .json
    ensemble_of: Optional[str] = None  # "folds" (-f 0 1 ..., fitted in the model folder) or "seeds" (--seeds N ...):
    # scores the disagreement of an ensemble's members
    needs_dropout = False  # needs a network with dropout (a _dropout trainer)
    has_layer = False  # fitted on the spectral layer chosen with --layer
    nearest_neighbours = False  # its score is a distance to the nearest training images (rows name them)
    decides = False  # the method a user acts on: per-source distances and accept/flag in every report row
    fitted_by_training = False  # nnUNetv2_train fits it on the last layer at the end of training

    def predictor_options(self, layer: str, mc_samples: int) -> dict:
        """Keyword arguments of OODPredictor.enable_ood this method needs (combined over methods)."""
        return {}

    def values(self, results: dict, layer: str):
        """What the detector scores, from one case's predictor results (see OODPredictor.results)."""
        return results[self.result_key]

    def fitted_layer(self, layer: str) -> Optional[str]:
        return None

    def make_detector(self, c: float, fit_meta: Optional[dict] = None):
        """The detector, with the options a fit recorded (their defaults when fit_meta lacks them)."""
        recorded = fit_meta or {}
        return self.detector(c, **{o: recorded[o] for o in self.options if o in recorded})

    def paths(self, fold_dir: str, layer: str, members: Sequence = ()) -> Tuple[str, str]:
        """(.npz, .json) of this method's fit in a fold folder (for a fold ensemble: the model folder); members:
        an ensemble's folds or seeds, which its file names carry."""
        stem = os.path.join(fold_dir, self.stem.format(layer=layer, members="_".join(map(str, members))))
        return stem + ".npz", stem + ".json"

    def fit_warning(self, fit_meta: dict, mc_samples: int) -> Optional[str]:
        """A warning for a score run whose settings differ from the fit's in a way that moves this method's
        scores; None when they match."""
        return None


class Spectral(OODMethod):
    name, detector, stem, npz_key = "spectral", SpectralOODDetector, "spectral_signatures_{layer}", "signatures"
    summary = "the paper's: distance of the spectral signature to the nearest training image's"
    has_layer = nearest_neighbours = decides = fitted_by_training = True

    def predictor_options(self, layer, mc_samples):
        return {"layer": layer}

    def values(self, results, layer):
        return results[f"signature_{layer}"]

    def fitted_layer(self, layer):
        return layer


class SpectralCentred(Spectral):
    """The size- and scale-invariant variant (``signatures.centred_signature``), on the --layer feature map."""
    name, stem = "spectral_centred", "ood_fit_spectral_centred_{layer}"
    summary = "spectral with the log spectrum centred: invariant to feature scale and image size"
    decides = fitted_by_training = False

    def values(self, results, layer):
        return results[f"centred_signature_{layer}"]


class SpectralMultilayer(OODMethod):
    """The paper's signatures of every supported layer (last decoder stage, bottleneck), concatenated
    (``signatures.multilayer_signature``), after MedicOOD's multi-layer aggregation."""
    name, detector, stem, npz_key = "spectral_multilayer", SpectralOODDetector, "ood_fit_spectral_multilayer", \
        "signatures"
    summary = "spectral signatures of the last decoder stage and the bottleneck, concatenated"
    nearest_neighbours = True

    def predictor_options(self, layer, mc_samples):
        return {"spectral_layers": list(LAYERS)}

    def values(self, results, layer):
        return multilayer_signature([results[f"signature_{name}"] for name in LAYERS])

    def fitted_layer(self, layer):
        return "+".join(LAYERS)


class PooledFeatures(OODMethod):
    """A detector on the channel means of POOLED_LAYER (one vector per image)."""
    npz_key = "features"

    def predictor_options(self, layer, mc_samples):
        return {"layers": [POOLED_LAYER]}

    def values(self, results, layer):
        return results[f"pooled_{POOLED_LAYER}"]

    def fitted_layer(self, layer):
        return POOLED_LAYER


class Mahalanobis(PooledFeatures):
    name, detector, stem = "mahalanobis", MahalanobisDetector, f"ood_fit_mahalanobis_{POOLED_LAYER}"
    summary = "Mahalanobis distance of the pooled bottleneck features"


class KNN(PooledFeatures):
    name, detector, stem, options = "knn", KNNDetector, f"ood_fit_knn_{POOLED_LAYER}", ("k",)
    summary = "distance of the pooled bottleneck features to the k-th nearest training image's"
    nearest_neighbours = True


class IntensityHistogram(OODMethod):
    """Model-free baseline: the preprocessed image's intensity histogram, nearest training image's distance."""
    name, detector, stem, npz_key = "ihf", IntensityHistogramDetector, "ood_fit_ihf", "features"
    result_key = "fine_intensity_histogram"
    summary = "model-free: the image's intensity histogram, distance to the nearest training image's"
    options = ("bins",)
    nearest_neighbours = True

    def predictor_options(self, layer, mc_samples):
        return {"image_features": {self.result_key: fine_intensity_histogram}}


class SoftmaxScore(OODMethod):
    """A thresholded image score of the softmax probabilities."""
    uses_test_time_mirroring = True

    def predictor_options(self, layer, mc_samples):
        return {"softmax_scores": True}


class MaxSoftmax(SoftmaxScore):
    name, stem, result_key = "msp", "ood_fit_msp", "max_softmax_score"
    summary = "1 - mean maximum softmax probability"


class Entropy(SoftmaxScore):
    name, stem, result_key = "entropy", "ood_fit_entropy", "mean_entropy"
    summary = "mean softmax entropy"


class MCDropout(OODMethod):
    name, stem, result_key = "mcdropout", "ood_fit_mcdropout", "mc_dropout_foreground_entropy"
    summary = f"{MC_DROPOUT_SAMPLES} dropout passes (--mc_samples), foreground entropy; needs a _dropout model"
    needs_dropout = True

    def predictor_options(self, layer, mc_samples):
        return {"mc_dropout_samples": mc_samples}

    def fit_warning(self, fit_meta, mc_samples):
        if fit_meta.get("mc_samples") != mc_samples:
            return f"fitted with {fit_meta.get('mc_samples')} dropout samples"
        return None


class FoldEnsemble(OODMethod):
    name, stem, result_key = "ensemble", "ood_fit_ensemble_folds_{members}", "member_dice_disagreement"
    summary = "1 - mean pairwise Dice of the folds given with -f; writes nnU-Net's ensemble"
    uses_test_time_mirroring = True
    ensemble_of = "folds"

    def predictor_options(self, layer, mc_samples):
        return {"member_disagreement": True}


class SeedEnsemble(FoldEnsemble):
    """A deep ensemble in the sense of "Lost in the Folds" (2026): members trained on the same cases (one fold)
    with different seeds, so their disagreement is not mixed with differences in training data."""
    name, stem = "seed_ensemble", "ood_fit_ensemble_seeds_{members}"
    summary = ("1 - mean pairwise Dice of the -tr model and its _seed<N> variants (--seeds N ...) of one fold; "
               "writes their ensemble")
    ensemble_of = "seeds"


METHODS: Dict[str, OODMethod] = {}


def register(method: OODMethod) -> OODMethod:
    """Adds a method to the registry every command reads (its name must be new)."""
    if not method.name or method.name in METHODS:
        raise ValueError(f"an OOD method needs a new name, not {method.name!r}")
    METHODS[method.name] = method
    return method


for _method in (Spectral(), SpectralCentred(), SpectralMultilayer(), Mahalanobis(), KNN(), IntensityHistogram(),
                MaxSoftmax(), Entropy(), MCDropout(), FoldEnsemble(), SeedEnsemble()):
    register(_method)
DEFAULT_METHOD = Spectral.name  # what score and fit use without --method
PAPER_COMPARISON = (Spectral.name, MCDropout.name)  # the paper's tables IV-V


def predictor_options(methods: Sequence[str], layer: str, mc_samples: int = MC_DROPOUT_SAMPLES) -> dict:
    """Keyword arguments of OODPredictor.enable_ood for the requested methods: each method's needs combined."""
    options = {"layer": None, "layers": [], "spectral_layers": [], "softmax_scores": False, "mc_dropout_samples": 0,
               "member_disagreement": False, "image_features": {}}
    for method in methods:
        for key, value in METHODS[method].predictor_options(layer, mc_samples).items():
            if key in ("layers", "spectral_layers"):
                value = sorted(set(options[key]) | set(value))
            elif key == "image_features":
                value = dict(options[key], **value)
            options[key] = value
    return options
