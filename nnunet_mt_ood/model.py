"""The model an ``nnunet_mt_ood`` command works on: its folder and folds, where its fits live, the input images
it is given, and nnU-Net's predictor over it with the OOD collection the requested methods need."""
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from nnunet_mt import layout
from nnunet_mt.errors import InputError
from nnunet_mt_ood.methods import DEFAULT_METHOD, METHODS


def select_device(name: str):
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device available (use -device cpu)")
    return torch.device(name)


def find_model_dir(args) -> str:
    """The -tr model's folder; InputError when a checkpoint of it (each fold of -f) or of a seed member is missing."""
    from nnunet_mt.nnunet_glue import model_folder
    model_dir = model_folder(args.d, args.tr, args.p, args.c)
    for folder, trainer in zip([model_dir, *seed_model_dirs(args)], [args.tr, *args.seed_trainers]):
        for fold in args.folds:
            checkpoint = os.path.join(layout.fold_folder(folder, fold), args.chk)
            if not os.path.isfile(checkpoint):
                raise InputError(f"{checkpoint}: checkpoint missing (train with nnUNetv2_train ... -tr {trainer} first)")
    return model_dir


def seed_model_dirs(args) -> List[str]:
    """The model folders of a seed ensemble's other members (args.seed_trainers, set by check_members)."""
    from nnunet_mt.nnunet_glue import model_folder
    return [model_folder(args.d, t, args.p, args.c) for t in args.seed_trainers]


SEED_SUFFIX = re.compile(r"_seed(\d+)$")


def seed_trainers(trainer: str, seeds: Sequence[int]) -> List[str]:
    """The trainer names of a seed ensemble's other members: -tr's recipe with each of `seeds`
    (``<recipe>_seed<N>``, the name grammar of nnunet_mt.trainer); InputError for -tr's own seed or a repeat."""
    match = SEED_SUFFIX.search(trainer)
    recipe, own = (trainer[:match.start()], int(match[1])) if match else (trainer, 0)
    if own in seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {' '.join(map(str, seeds))}: give each seed once, other than -tr's own ({own})")
    return [f"{recipe}_seed{seed}" for seed in seeds]


def check_members(args) -> None:
    """-f: one fold, or (for --method ensemble only) two or more; --seeds (for --method seed_ensemble only): the
    other members of a seed ensemble. Sets args.folds (all), args.f (the first) and args.seed_trainers."""
    folds = list(dict.fromkeys(args.f))
    by_folds = [m for m in args.method if METHODS[m].ensemble_of == "folds"]
    by_seeds = [m for m in args.method if METHODS[m].ensemble_of == "seeds"]
    seeds = list(getattr(args, "seeds", None) or [])
    if by_folds and len(folds) < 2:
        raise InputError(f"-f {' '.join(args.f)}: --method ensemble needs two or more folds (e.g. -f 0 1 2 3 4)")
    if len(folds) > 1 and len(by_folds) != len(args.method):
        others = " ".join(m for m in args.method if m not in by_folds)
        raise InputError(f"-f {' '.join(args.f)}: {others} belong(s) to one model: give one fold (several folds "
                         f"are for --method ensemble alone)")
    if by_seeds and not seeds:
        raise InputError("--method seed_ensemble needs the other members' seeds (e.g. --seeds 1 2: the -tr model "
                         "and <trainer>_seed1, <trainer>_seed2)")
    if seeds and (len(by_seeds) != len(args.method) or len(folds) > 1):
        raise InputError(f"--seeds {' '.join(map(str, seeds))}: for --method seed_ensemble alone, with one fold "
                         f"(every other method belongs to one model)")
    args.seed_trainers = seed_trainers(args.tr, seeds) if seeds else []
    args.folds, args.f = folds, folds[0]


def ensemble_members(args) -> list:
    """What an ensemble's fit files are named by: its folds (-f), its seeds (--seeds), else nothing."""
    return args.folds if len(args.folds) > 1 else list(getattr(args, "seeds", None) or [])


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
    if args.seed_trainers:  # a seed ensemble: the other members' weights of the same fold, after -tr's
        with open(os.path.join(model_dir, layout.MODEL_PLANS)) as f:
            plans = json.load(f)
        members = []
        for folder in seed_model_dirs(args):
            with open(os.path.join(folder, layout.MODEL_PLANS)) as f:
                if json.load(f) != plans:
                    raise InputError(f"{folder}: other plans than {model_dir}: not a member of its seed ensemble")
            members.append(check_checkpoint(os.path.join(layout.fold_folder(folder, args.f), args.chk))
                           ["network_weights"])
        predictor.add_members(members)
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
