"""The model an ``nnunet_mt_ood`` command works on: its folder and folds, where its fits live, the input images
it is given, and nnU-Net's predictor over it with the OOD collection the requested methods need."""
import os
from typing import Dict, List, Optional

from nnunet_mt import layout
from nnunet_mt.errors import InputError
from nnunet_mt_ood.methods import DEFAULT_METHOD, METHODS


def select_device(name: str):
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device available (use -device cpu)")
    return torch.device(name)


def find_model_dir(args) -> str:
    from nnunet_mt.nnunet_glue import model_folder
    model_dir = model_folder(args.d, args.tr, args.p, args.c)
    for fold in args.folds:
        checkpoint = os.path.join(layout.fold_folder(model_dir, fold), args.chk)
        if not os.path.isfile(checkpoint):
            raise InputError(f"{checkpoint}: checkpoint missing (train with nnUNetv2_train first)")
    return model_dir


def check_folds(args) -> None:
    """-f: one fold, or (for --method ensemble only) two or more; sets args.folds (all) and args.f (the first)."""
    folds = list(dict.fromkeys(args.f))
    ensemble = [m for m in args.method if METHODS[m].needs_several_folds]
    if ensemble and len(folds) < 2:
        raise InputError(f"-f {' '.join(args.f)}: --method ensemble needs two or more folds (e.g. -f 0 1 2 3 4)")
    if len(folds) > 1 and len(ensemble) != len(args.method):
        others = " ".join(m for m in args.method if m not in ensemble)
        raise InputError(f"-f {' '.join(args.f)}: {others} belong(s) to one model: give one fold (several folds "
                         f"are for --method ensemble alone)")
    args.folds, args.f = folds, folds[0]


def prediction_mismatch(fitted: Optional[dict], now: dict) -> Optional[str]:
    """One line when the fit's device or precision (fit file "prediction") differs from this run's, else None
    (also for fits written before the fit files recorded them)."""
    if not isinstance(fitted, dict) or all(fitted.get(k) == now[k] for k in ("device", "precision")):
        return None
    return (f"fitted on {fitted.get('device')} ({fitted.get('precision')}), scored on {now['device']} "
            f"({now['precision']}): scores near tau may fall on the other side (documentation/ood.md)")


def fits_dir(args, model_dir: str) -> str:
    """Where the fits live: the fold folder, or for a fold ensemble the model folder."""
    return model_dir if len(args.folds) > 1 else layout.fold_folder(model_dir, args.f)


def make_predictor(args, model_dir: str, use_mirroring: bool, methods=(DEFAULT_METHOD,), keep_mc_probabilities=None,
               window_order: str = "nnunet"):
    from nnunet_mt_ood.methods import predictor_options
    from nnunet_mt_ood.predictor import OODPredictor
    device = select_device(args.device)
    predictor = OODPredictor(tile_step_size=args.step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                  perform_everything_on_device=device.type == "cuda", device=device,
                                  verbose=False, allow_tqdm=False)
    from nnunet_mt.schema import check_checkpoint
    for fold in args.folds:
        check_checkpoint(os.path.join(layout.fold_folder(model_dir, fold), args.chk))
    folds = tuple(f if f == "all" else int(f) for f in args.folds)
    predictor.initialize_from_trained_model_folder(model_dir, folds, args.chk)
    try:
        predictor.enable_ood(**predictor_options(methods, args.layer, args.mc_samples),
                             keep_mc_probabilities=keep_mc_probabilities, window_order=window_order)
    except ValueError as e:
        raise InputError(f"{model_dir}: {e}")
    return predictor


def check_input_images(input_dir: str, dataset_json: dict) -> Dict[str, List[str]]:
    """One-line errors for inputs nnU-Net would choke on: channel count, unreadable headers, bad directions."""
    from nnunet_mt.validate import check_case, refuse_stray_images
    if not os.path.isdir(input_dir):
        raise InputError(f"{input_dir}: input folder not found")
    ending = dataset_json["file_ending"]
    refuse_stray_images(input_dir, ending)
    n_channels = len(dataset_json["channel_names"])
    cases = {}
    for fname in sorted(os.listdir(input_dir)):
        if fname.endswith(ending):
            case, _, channel = fname[:-len(ending)].rpartition("_")
            cases.setdefault(case, []).append(os.path.join(input_dir, fname))
    if not cases:
        raise InputError(f"{input_dir}: no images ending in {ending}")
    for case, files in cases.items():
        if len(files) != n_channels:
            raise InputError(f"{files[0]}: case '{case}' has {len(files)} channel files, the model expects "
                             f"{n_channels}")
        check_case(sorted(files))
    return cases
