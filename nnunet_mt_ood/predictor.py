"""nnU-Net's predictor, collecting what the OOD methods need in the same pass.

Each override wraps one step of ``nnUNetPredictor`` and then calls it unchanged, so segmentations and
probabilities are exactly nnU-Net's (unless ``window_order="memory"``, below):
- ``predict_from_data_iterator`` and ``_manage_input_and_output_lists``: note which case is being
  predicted (the first in nnU-Net's multiprocessing path, the second in its sequential path);
- ``_internal_get_sliding_window_slicers``: remembers the windows, in nnU-Net's order (with
  ``window_order="memory"``: in ``memory_saving_order``, the only override that changes what nnU-Net sums,
  by the rounding of its float16 sum of overlapping windows' logits);
- ``_internal_predict_sliding_window_return_logits``: starts the feature accumulators on nnU-Net's results
  device, and again, on the CPU, when nnU-Net's out-of-memory fallback repeats the pass there (the failed
  pass's accumulators are dropped first, so the fallback finds their memory free);
- ``_internal_maybe_mirror_and_predict``: arms the feature hooks for the window's un-mirrored pass;
- ``predict_sliding_window_return_logits``: finishes the image's Gram matrices and channel sums; for an
  ensemble (nnU-Net calls it once per fold, in ``list_of_parameters`` order; seed members, added with
  ``add_members``, come after the folds) keeps each member's segmentation;
- ``predict_logits_from_preprocessed_data``: stores the case's results (signature, pooled features,
  softmax scores, MC-dropout score, member disagreement) and, for voxel maps, the case's MC-dropout mean
  probabilities. The logits it returns are nnU-Net's (for several members: their mean, as nnUNetv2_predict
  averages folds).

Whatever nnU-Net wraps around the network (``torch.compile`` with ``nnUNet_compile=t``), weights are loaded
into and hooks sit on the original module (``nnunet_mt.network.original_module``), and the hooks run outside
the compiled graphs. Under nnU-Net's autocast (float16 on CUDA) features arrive in half precision and are
accumulated in float32/float64; ``prediction_settings`` names the device and precision, which the fit files
record. MC dropout's passes go through nnU-Net's ``predict_sliding_window_return_logits``, so they get its
autocast, padding and out-of-memory fallback like every other prediction.

``mc_dropout_probabilities_in_image_space`` takes those back to the input image's grid with nnU-Net's own
preprocessor (for the crop and transpose of the case) and export function.
"""
import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from torch.nn.modules.dropout import _DropoutNd

from nnunet_mt.compat import warn_if_untested_nnunet
from nnunet_mt.network import DropoutConv3d, original_module
from nnunet_mt_ood.baselines import (foreground_entropy, max_softmax_score, mean_entropy, mean_pairwise_dice,
                                     voxel_disagreement)
from nnunet_mt_ood.features import FeatureCapture, GramAccumulator, PooledAccumulator, memory_saving_order
from nnunet_mt_ood.options import WINDOW_ORDERS
from nnunet_mt_ood.signatures import centred_signature, log_spectrum_from_gram, signature_from_gram, unit_length


warn_if_untested_nnunet()


class OODPredictor(nnUNetPredictor):
    """``nnUNetPredictor`` that also collects OOD inputs: ``results``: {case id: {name: value}} of the predicted cases.

    For the spectral layer L and each of ``spectral_layers``: ``signature_L`` (the paper's), ``centred_signature_L``
    (``signatures.centred_signature``) and ``pooled_L`` (channel means); for each further layer in ``layers``:
    ``pooled_L`` only (streamed without a Gram matrix or upsampling); with softmax scores:
    ``max_softmax_score`` and ``mean_entropy``; with MC-dropout samples: ``mc_dropout_foreground_entropy``;
    with member disagreement (an ensemble: several folds, or models trained with other seeds):
    ``member_dice_disagreement`` (1 - mean pairwise Dice of the members' segmentations) and
    ``member_voxel_disagreement``; for each of ``image_features`` (functions of the
    preprocessed image, no network): its value under its name. Named by what they hold: the methods
    (``methods.py``) say which they read.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # per-predictor state: set for real by enable_ood (no OOD collection before it)
        self.window_order = "nnunet"
        self.layer = None
        self.spectral_layers = []
        self.softmax_scores = self.member_disagreement = False
        self.image_features: Dict[str, Callable] = {}
        self.mc_dropout_samples = 0
        self.keep_mc_probabilities = None
        self._collecting = False
        self._captures: Dict[str, FeatureCapture] = {}
        self._reset_results()

    def _reset_results(self) -> None:
        """Empties what the predicted cases left: results, accumulators, case bookkeeping."""
        self.results: Dict[str, dict] = {}
        self._accumulators: Dict[str, object] = {}
        self._grams: Dict[str, tuple] = {}
        self._member_segmentations: list = []
        self._last_mc_probabilities: Optional[np.ndarray] = None
        self._current_case: Optional[str] = None
        self._pending_cases: list = []

    def load_parameters(self, index: int = 0) -> None:
        """Loads ``list_of_parameters[index]`` into the network (into the original module when nnU-Net has
        compiled it: the compiled wrapper's keys carry ``_orig_mod.``)."""
        original_module(self.network).load_state_dict(self.list_of_parameters[index])

    def add_members(self, parameters: Sequence[dict]) -> None:
        """Further ensemble members: state dicts of the same network (e.g. the fold's models trained with other
        seeds), predicted after the folds nnU-Net loaded and averaged with them as nnU-Net averages folds."""
        self.list_of_parameters = list(self.list_of_parameters) + list(parameters)

    def prediction_settings(self) -> dict:
        """{"device": cpu/cuda/..., "precision": the network's compute dtype}: float16 on CUDA (nnU-Net
        predicts under autocast there), an autocast the caller has entered on the CPU, else float32."""
        if self.device.type == "cuda":
            precision = torch.float16
        elif torch.is_autocast_enabled("cpu"):
            precision = torch.get_autocast_dtype("cpu")
        else:
            precision = torch.float32
        return {"device": self.device.type, "precision": str(precision).replace("torch.", "")}

    def enable_ood(self, layer: Optional[str] = "last", layers: Sequence[str] = (), softmax_scores: bool = False,
                   mc_dropout_samples: int = 0, keep_mc_probabilities: Optional[str] = None,
                   member_disagreement: bool = False, window_order: str = "nnunet",
                   image_features: Optional[Dict[str, Callable]] = None,
                   spectral_layers: Sequence[str] = ()) -> "OODPredictor":
        """Call after initialization (needs the network). Raises ValueError for a layer the network lacks.
        layer: the spectral layer (None: no Gram matrix). keep_mc_probabilities: a folder where each case's
        MC-dropout mean probabilities (preprocessed grid) are kept as <case>.npy, for voxel maps.
        member_disagreement: the ensemble members' segmentations are compared (needs two or more parameter
        sets in ``list_of_parameters``: folds, or ``add_members``; and then nothing else, as every other score
        belongs to one model). window_order: "nnunet" (nnU-Net's window order:
        segmentations and probabilities identical to nnUNetv2_predict's) or "memory" (``memory_saving_order``:
        fewer open cells for the spectral Gram matrix on large images, the same signature, and logits within
        the rounding of nnU-Net's float16 sum of overlapping windows). image_features: {result name: function
        of the preprocessed image (channels, z, y, x) tensor} (model-free values, e.g. an intensity histogram).
        spectral_layers: further layers with a Gram matrix (their signatures), besides `layer`."""
        if window_order not in WINDOW_ORDERS:
            raise ValueError(f"window_order must be one of {', '.join(WINDOW_ORDERS)}, not {window_order!r}")
        self.window_order = window_order
        if len(self.configuration_manager.patch_size) != 3:
            raise ValueError("OOD scores need a 3D configuration (3d_fullres, 3d_lowres, ...)")
        several = len(self.list_of_parameters) > 1
        if member_disagreement and not several:
            raise ValueError("the ensemble score needs two or more members (folds -f 0 1 ..., or --seeds)")
        if several and (not member_disagreement or layer or layers or spectral_layers or softmax_scores
                        or mc_dropout_samples or image_features):
            raise ValueError("OOD scores other than the ensembles' belong to one model: predict with a single fold")
        if mc_dropout_samples and not self._dropout_modules():
            raise ValueError("MC-dropout needs a network with dropout (train it with a _dropout variant, e.g. nnUNetTrainerMultiTask_dropout)")
        self.remove_hooks()  # a second enable_ood replaces the first one's hooks
        self.member_disagreement = member_disagreement
        self.layer = layer
        self.spectral_layers = [n for n in dict.fromkeys([layer, *spectral_layers]) if n]
        self.softmax_scores = softmax_scores
        self.image_features = dict(image_features or {})
        self.mc_dropout_samples = mc_dropout_samples
        self.keep_mc_probabilities = keep_mc_probabilities
        self._collecting = True
        self._reset_results()
        for name in dict.fromkeys([n for n in (layer, *spectral_layers, *layers) if n]):
            self._captures[name] = FeatureCapture(self.network, name, lambda f, n=name: self._on_features(n, f))
        return self

    def remove_hooks(self) -> None:
        for capture in self._captures.values():
            capture.remove()
        self._captures = {}

    # --- bookkeeping around nnU-Net's own steps ---------------------------------------------------
    def predict_from_data_iterator(self, data_iterator, *args, **kwargs):
        def tracked(iterator):
            for item in iterator:
                ofile = item.get("ofile") if isinstance(item, dict) else None
                self._current_case = os.path.basename(ofile) if ofile else None
                yield item
        return super().predict_from_data_iterator(tracked(data_iterator), *args, **kwargs)

    def _manage_input_and_output_lists(self, *args, **kwargs):
        inputs, outputs, previous_stage = super()._manage_input_and_output_lists(*args, **kwargs)
        self._pending_cases = [os.path.basename(o) for o in outputs] if outputs is not None else []
        return inputs, outputs, previous_stage

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        if len(self.list_of_parameters) != 1 and not self.member_disagreement:
            raise ValueError("OOD scores belong to one model: predict with a single fold (or score an ensemble)")
        self._member_segmentations = []
        logits = super().predict_logits_from_preprocessed_data(data)
        case, self._current_case = self._current_case, None  # set again by the next item of the iterator
        if case is None and self._pending_cases:  # sequential path: cases come in list order
            case = self._pending_cases.pop(0)
        if case is not None:
            self.results[case] = self.last_results(data, logits)
            if self.keep_mc_probabilities and self._last_mc_probabilities is not None:
                np.save(os.path.join(self.keep_mc_probabilities, case + ".npy"), self._last_mc_probabilities)
        return logits

    def _internal_get_sliding_window_slicers(self, image_size):
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        if self.window_order == "memory":
            slicers = [slicers[i] for i in memory_saving_order([s[1:] for s in slicers])]
        self._slicers = slicers
        return slicers

    def _internal_predict_sliding_window_return_logits(self, data, slicers, do_on_device: bool = True):
        if self._collecting:
            results_device = self.device if do_on_device else torch.device("cpu")  # nnU-Net's choice
            gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                        value_scaling_factor=10, device=results_device).float() \
                if self.use_gaussian else None
            self._windows = {}
            windows = [s[1:] for s in slicers]
            for name in self._captures:
                if name in self.spectral_layers:  # Gram matrix (and channel sums)
                    self._accumulators[name] = GramAccumulator(self.configuration_manager.patch_size, gaussian)
                    self._accumulators[name].begin(self._image_shape, data.shape[1:], windows, results_device)
                else:  # pooled statistics only
                    self._accumulators[name] = PooledAccumulator(self.configuration_manager.patch_size, gaussian)
                    self._accumulators[name].begin(self._image_shape, data.shape[1:], windows, results_device)
                self._windows[name] = 0
        try:
            return super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)
        except Exception:
            self._accumulators = {}  # freed before nnU-Net empties the cache and retries on the CPU
            raise

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if self._collecting:
            for capture in self._captures.values():
                capture.arm()
        return super()._internal_maybe_mirror_and_predict(x)

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        self._image_shape = tuple(input_image.shape[1:])
        logits = super().predict_sliding_window_return_logits(input_image)
        for name, acc in (self._accumulators.items() if self._collecting else ()):
            gram = acc.finish() if isinstance(acc, GramAccumulator) else None
            self._grams[name] = (None if gram is None else gram.cpu().numpy(), acc.channel_sums.cpu().numpy(),
                                 acc.voxels)
        if self.member_disagreement and self._collecting:  # one call per member (nnU-Net's loop over its parameters)
            segmentation = self.label_manager.convert_logits_to_segmentation(logits.float().cpu())
            self._member_segmentations.append(np.asarray(segmentation, dtype=np.int16))
        return logits

    def _on_features(self, layer: str, features: torch.Tensor) -> None:
        window = self._slicers[self._windows[layer]][1:]
        self._windows[layer] += 1
        self._accumulators[layer].add(features, window)

    # --- MC dropout ---------------------------------------------------------------------------------
    def _dropout_modules(self):
        return [m for m in original_module(self.network).modules()
                if (isinstance(m, DropoutConv3d) and m.dropout_p > 0) or (isinstance(m, _DropoutNd) and m.p > 0)]

    @torch.inference_mode()
    def mc_dropout_mean_probabilities(self, data: torch.Tensor, samples: int) -> np.ndarray:
        """Mean softmax of `samples` sliding-window passes with dropout active (all else in eval mode),
        without mirroring; (classes, *spatial) in the preprocessed grid. Each pass is nnU-Net's own
        ``predict_sliding_window_return_logits`` (its autocast, padding and out-of-memory fallback)."""
        mirroring, collecting = self.use_mirroring, self._collecting
        self.use_mirroring, self._collecting = False, False
        total = None
        try:
            for _ in range(samples):
                logits = self._dropout_pass(data)
                probabilities = torch.softmax(logits.float(), 0).cpu()
                total = probabilities if total is None else total + probabilities
        finally:
            self.network.eval()
            self.use_mirroring, self._collecting = mirroring, collecting
        return (total / samples).numpy()

    def _dropout_pass(self, data: torch.Tensor) -> torch.Tensor:
        """One pass of nnU-Net's sliding window with the dropout modules in train mode: nnU-Net calls
        ``network.eval()`` at the start of its pass, so the modules are switched back on by a pre-hook on
        the network's first call."""
        dropout = self._dropout_modules()

        def train_dropout(module, args):
            for m in dropout:
                m.train()
        handle = original_module(self.network).register_forward_pre_hook(torch.compiler.disable(train_dropout))
        try:
            return self.predict_sliding_window_return_logits(data)
        finally:
            handle.remove()

    # --- results ------------------------------------------------------------------------------------
    def last_signature(self, layer: Optional[str] = None) -> np.ndarray:
        """Signature of the image of the last sliding-window pass."""
        return signature_from_gram(self._grams[layer or self.layer][0])

    def last_results(self, data: torch.Tensor, logits: torch.Tensor) -> dict:
        results = {}
        for name, (gram, sums, voxels) in self._grams.items():
            if gram is not None:
                log_spectrum = log_spectrum_from_gram(gram)
                results[f"signature_{name}"] = unit_length(log_spectrum)
                results[f"centred_signature_{name}"] = centred_signature(log_spectrum)
            results[f"pooled_{name}"] = sums / max(voxels, 1)
        for name, function in self.image_features.items():
            results[name] = function(data)
        if self.softmax_scores:
            probabilities = torch.softmax(logits.float(), 0).numpy()
            results["max_softmax_score"] = max_softmax_score(probabilities)
            results["mean_entropy"] = mean_entropy(probabilities)
        if self.mc_dropout_samples:
            mean = self.mc_dropout_mean_probabilities(data, self.mc_dropout_samples)
            results["mc_dropout_foreground_entropy"] = foreground_entropy(mean)
            self._last_mc_probabilities = mean if self.keep_mc_probabilities else None  # held only for maps
        if self.member_disagreement:
            members = self._member_segmentations
            if len(members) != len(self.list_of_parameters):
                raise RuntimeError(f"{len(members)} segmentations for {len(self.list_of_parameters)} ensemble members")
            results["member_dice_disagreement"] = 1.0 - mean_pairwise_dice(members,
                                                                            self.label_manager.foreground_labels)
            results["member_voxel_disagreement"] = voxel_disagreement(members)
        return results

    def mc_dropout_probabilities_in_image_space(self, case_files: Sequence[str], mean_probabilities: np.ndarray):
        """The MC-dropout mean probabilities (classes, *preprocessed grid) of the case read from case_files,
        in the input image's array layout and size, as nnU-Net exports probabilities: resampled, uncropped
        and transposed back by nnU-Net's own functions (the case is preprocessed again for its crop)."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        _, _, properties = preprocessor.run_case(list(case_files), None, self.plans_manager,
                                                 self.configuration_manager, self.dataset_json)
        log_p = torch.log(torch.from_numpy(mean_probabilities).float().clamp_min(1e-12))  # softmax(log p) = p
        _, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
            log_p, self.plans_manager, self.configuration_manager, self.plans_manager.get_label_manager(
                self.dataset_json), properties, return_probabilities=True)
        return probabilities

    def image_results(self, data: torch.Tensor) -> dict:
        """Results for one preprocessed image (c, x, y, z) with the network's current weights (with member
        disagreement: with each member's weights, as nnU-Net's ensemble prediction)."""
        if self.member_disagreement:
            self._member_segmentations = []
            logits = nnUNetPredictor.predict_logits_from_preprocessed_data(self, data)
        else:
            logits = self.predict_sliding_window_return_logits(data)
        return self.last_results(data, logits.cpu())

    def image_signature(self, data: torch.Tensor) -> np.ndarray:
        """Signature of one preprocessed image (c, x, y, z) with the network's current weights."""
        self.predict_sliding_window_return_logits(data)
        return self.last_signature()
