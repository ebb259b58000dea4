"""``nnunet_mt`` command line: demo-data, merge, evaluate, calibrate, experiment, share-plans, export, install,
trainer-path."""
import argparse
import os
import sys
from typing import List, Optional

from nnunet_mt.arguments import COUNT, DATASET_ID, SEED, add_renamed, add_subject_arguments, number
from nnunet_mt import layout
from nnunet_mt.errors import InputError, run_guarded


def _demo_data(args) -> None:
    from nnunet_mt.demo_data import DEMO_DATASETS, write_dataset
    raw_dir = args.output or os.environ.get("nnUNet_raw")
    if not raw_dir:
        raise InputError("no output folder: pass -o RAW_DIR or set nnUNet_raw")
    from dataclasses import replace
    known = {ds.dataset_id: ds for ds in DEMO_DATASETS}
    wanted = args.d or sorted(known)
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise InputError(f"-d {unknown[0]}: not a demo dataset (choose from {' '.join(map(str, sorted(known)))})")
    if (args.n_train is not None and args.n_train < 5) or (args.n_test is not None and args.n_test < 1):
        raise InputError("--n_train must be at least 5 (nnU-Net's 5-fold split) and --n_test at least 1")
    if args.as_id is not None and (len(wanted) != 1 or args.as_id in known):
        raise InputError(f"--as_id {args.as_id}: give exactly one -d and an id that is not a demo dataset's "
                         f"({' '.join(map(str, sorted(known)))})")
    os.makedirs(raw_dir, exist_ok=True)
    for ds in (known[d] for d in wanted):
        ds = replace(ds, n_train=args.n_train or ds.n_train, n_test=args.n_test or ds.n_test,
                     dataset_id=args.as_id or ds.dataset_id, varied_contrast=args.varied_contrast)
        path = write_dataset(ds, raw_dir, args.seed)
        print(f"{path}: {ds.n_train} training + {ds.n_test} test cases, {ds.modality}, role: {ds.role}")


def _merge(args) -> None:
    from nnunet_mt.merge import SourceSpec, merge_datasets
    from nnunet_mt.subjects import SubjectRule
    rule = SubjectRule(args.subject_pattern, args.subject_map)
    merge_datasets([SourceSpec.parse(d) for d in args.d], args.o, args.n, alpha=args.alpha,
                   overwrite=args.overwrite, normalization=args.normalization, subjects=rule)


def _evaluate(args) -> None:
    from nnunet_mt.evaluate import evaluate_folder
    evaluate_folder(args.ref, args.pred, args.prob, args.d, args.o, args.np, args.n_bins, args.roi, args.plots)


def _calibrate(args) -> None:
    from nnunet_mt.calibrate import apply_to_folder, calibrate
    if args.apply:
        if not args.o:
            raise InputError("--apply needs -o OUT_DIR (a new folder for the calibrated copy)")
        apply_to_folder(args.d, args.c, args.f, args.tr, args.p, args.apply, args.o)
    else:
        from nnunet_mt.prediction_temperature import refuse_prediction_temperature
        refuse_prediction_temperature("nnunet_mt calibrate (it fits T on the model's own probabilities)")
        calibrate(args.d, args.c, args.f, args.tr, args.p, args.roi, args.per_source, args.device, not args.disable_tta,
                  images=args.i, probabilities=args.prob, references=args.ref, objective=args.objective)


def _share_plans(args) -> None:
    from nnunet_mt.experiments.sharing import share_plans_and_splits
    share_plans_and_splits(args.s, args.t, args.p, args.c, args.f)


def _export(args) -> None:
    from nnunet_mt.export import export_model
    export_model(args.d, args.c, args.tr, args.p, args.f, args.o, args.chk)


def _install(args) -> None:
    from nnunet_mt.export import install_model
    install_model(args.zip)


def _trainer_path(args) -> None:
    from nnunet_mt._startup import TRAINER_DIR
    print(TRAINER_DIR)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """-d -c -tr -p: the trained model a command reads, with nnU-Net's defaults."""
    p.add_argument("-d", required=True, metavar="DATASET", help="dataset the model was trained on")
    p.add_argument("-c", default="3d_fullres", metavar="CONFIGURATION", help="configuration (default 3d_fullres)")
    p.add_argument("-tr", default="nnUNetTrainer", metavar="TRAINER", help="trainer class (default nnUNetTrainer)")
    p.add_argument("-p", default=layout.DEFAULT_PLANS, metavar="PLANS",
                   help=f"plans identifier (default {layout.DEFAULT_PLANS})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet_mt", description="Multi-task training for nnU-Net v2.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write the synthetic demo datasets (Dataset011-015) into nnUNet_raw")
    p.add_argument("-o", "--output", help="raw folder (default: $nnUNet_raw)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0); same seed, same files")
    p.add_argument("-d", type=DATASET_ID, nargs="+", metavar="ID", help="only these demo datasets (default: 11 12 13 14 15)")
    p.add_argument("--n_train", type=COUNT, help="training cases per dataset instead of the default (>= 5)")
    p.add_argument("--n_test", type=COUNT, help="test cases per dataset instead of the default")
    p.add_argument("--as_id", type=DATASET_ID, metavar="ID", help="write the one -d dataset under this id instead: "
                   "new cases of the same distribution (the cases are drawn from the seed and the id)")
    p.add_argument("--varied_contrast", action="store_true", help="the organ darker than the tissue in some cases "
                   "and brighter in others, drawn per case (a variation nnU-Net's augmentation does not make)")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("merge", help="merge nnU-Net raw datasets into one multi-task dataset")
    p.add_argument("-d", nargs="+", required=True, metavar="DATASET[:LABELS]",
                   help="source dataset ids or folder names; ':1,2' picks the foreground labels of a "
                        "multi-label source, e.g. -d 11 12 13:1,2")
    p.add_argument("-o", type=DATASET_ID, required=True, metavar="ID", help="id of the merged dataset, e.g. 500")
    p.add_argument("-n", default="MultiTask", metavar="NAME", help="name of the merged dataset (default MultiTask)")
    p.add_argument("--alpha", type=number(float, 0, 1), default=0.5,
                   help="sampling exponent: each case of a source with n cases has weight n**-alpha "
                        "(0.5 = the paper's 1/sqrt(n), 0 = uniform per case, 1 = uniform per source)")
    p.add_argument("--normalization", choices=["paper", "nnunet"], default="paper",
                   help="paper (default): CT clipped to [-1000, 1000] HU -> [0, 1], MR divided by its std, "
                        "decided per image (CT = minimum below -200); nnunet: nnU-Net's scheme per channel name, "
                        "z-score where sources differ")
    add_subject_arguments(p, "every split keeps a subject's cases on one side")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    p.set_defaults(func=_merge)

    p = sub.add_parser("evaluate", help="DSC, HD95, ASSD, ECE, MCE of a prediction folder, per source dataset")
    p.add_argument("-ref", required=True, metavar="LABELS_DIR", help="reference segmentations (e.g. a raw dataset's " + os.path.basename(layout.labels_folder("", "Ts")) + ")")
    p.add_argument("-pred", required=True, metavar="PRED_DIR", help="nnUNetv2_predict output folder")
    p.add_argument("-prob", metavar="PROB_DIR", help="folder with nnU-Net's .npz probabilities "
                   "(--save_probabilities; usually PRED_DIR) for ECE and MCE")
    p.add_argument("-d", metavar="DATASET", help="dataset id or name whose dataset.json groups cases by source "
                   "(default: the dataset.json nnUNetv2_predict wrote into PRED_DIR)")
    p.add_argument("-o", metavar="metrics.json", help="output JSON (default PRED_DIR/metrics.json); .csv and .md "
                   "are written beside it")
    p.add_argument("-np", type=COUNT, default=1, help="worker processes (default 1)")
    add_renamed(p, "--n_bins", "--n-bins", type=COUNT, default=10, help="calibration bins (default 10)")
    p.add_argument("--roi", choices=["box", "reference", "image"], default="box",
                   help="voxels counted for ECE/MCE: bounding box of reference | prediction grown by 5 voxels "
                        "(default), of the reference alone grown by 5 voxels (the same voxels for every model: "
                        "use it to compare models), or the whole image")
    p.add_argument("--plots", metavar="DIR", help="write a reliability diagram PNG per source dataset")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("calibrate", help="fit a temperature on a model's validation fold (stored with the model; "
                       "nnunet_mt_ood score --save_probabilities then writes calibrated probabilities)")
    _model_arguments(p)
    p.add_argument("-f", required=True, metavar="FOLD", help="fold whose validation cases fit the temperature")
    p.add_argument("--roi", choices=["reference", "image"], default="reference",
                   help="voxels the temperature is fitted on: the reference's bounding box grown by 5 voxels "
                        "(default, as evaluate --roi reference) or the whole image")
    p.add_argument("--objective", choices=["held_out", "nll", "ece"], default="held_out",
                   help="held_out (default): T fitted by NLL and by ECE is checked on held-out subjects of the "
                   "fitting cases, and kept only if it lowers their ECE (no source's rising), else T = 1; nll: "
                   "the NLL fit of Guo et al. as it is; ece: the ECE fit as it is")
    add_renamed(p, "--per_source", "--per-source", action="store_true", help="also one temperature per source "
                "dataset of a merged dataset (picked at prediction by the nearest training signature)")
    p.add_argument("-device", choices=["cpu", "cuda"], default="cuda", help="device for predicting the "
                   "validation cases when the fold has no saved probabilities (default cuda)")
    p.add_argument("--disable_tta", action="store_true", help="predict the validation cases without mirroring")
    p.add_argument("-i", metavar="IMAGES", help="fit on these labelled reference images (nnUNetv2_predict's input "
                   "layout; labels in -ref) instead of the validation fold: for a model whose training data you "
                   "do not have")
    p.add_argument("-prob", metavar="PROB_DIR", help="fit on these saved probabilities (an nnUNetv2_predict "
                   "--save_probabilities folder; labels in -ref) instead of the validation fold")
    p.add_argument("-ref", metavar="LABELS_DIR", help="reference label maps (CASE<file ending>) of -i or -prob")
    p.add_argument("--apply", metavar="PRED_DIR", help="instead of fitting: copy an nnUNetv2_predict output folder "
                   "(--save_probabilities) to -o with its probabilities rescaled by the fitted global temperature")
    p.add_argument("-o", metavar="OUT_DIR", help="with --apply: the new folder for the calibrated copy")
    p.set_defaults(func=_calibrate)

    from nnunet_mt.experiments.cli import add_parser, run_experiment
    add_parser(sub)
    sub.choices["experiment"].set_defaults(func=run_experiment)

    p = sub.add_parser("share-plans", help="give datasets the plans and the cross-validation folds of another "
                       "(merged) dataset, restricted to their cases, so their models are comparable")
    p.add_argument("-s", required=True, metavar="DATASET", help="dataset whose plans and folds are shared (the joint one)")
    p.add_argument("-t", nargs="+", required=True, metavar="DATASET", help="datasets that receive them (then run "
                   "nnUNetv2_preprocess -d T -plans_name P, or give -c)")
    p.add_argument("-p", default=layout.DEFAULT_PLANS, metavar="PLANS",
                   help=f"plans identifier (default {layout.DEFAULT_PLANS})")
    p.add_argument("-c", nargs="+", default=[], metavar="CONFIGURATION", help="also copy the source's preprocessed "
                   "arrays of these configurations for each target's cases: what nnUNetv2_preprocess would write "
                   "with the shared plans, in seconds (the source must be preprocessed)")
    p.add_argument("-f", nargs="+", type=int, default=None, metavar="FOLD", help="folds each target must be able to "
                   "train: a training and a validation case of it in each (default: all; a target with fewer "
                   "subjects than folds cannot fill every fold)")
    p.set_defaults(func=_share_plans)

    p = sub.add_parser("export", help="write a model zip as nnUNetv2_export_model_to_zip does, with the model's OOD "
                       "fits, temperature and convergence record added (install: nnunet_mt install, or nnU-Net's "
                       "nnUNetv2_install_pretrained_model_from_zip)")
    _model_arguments(p)
    p.add_argument("-o", required=True, metavar="MODEL.zip", help="the zip to write (a new file)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], metavar="FOLD",
                   help="folds to export (default 0 1 2 3 4, as nnU-Net's export)")
    p.add_argument("-chk", default=layout.FINAL_CHECKPOINT, metavar="CHECKPOINT",
                   help=f"checkpoint file name (default {layout.FINAL_CHECKPOINT})")
    p.set_defaults(func=_export)

    p = sub.add_parser("install", help="install a model zip into $nnUNet_results after checking it: every file is "
                       "the one exported, every fit belongs to its model; nothing is written when a check fails")
    p.add_argument("zip", metavar="MODEL.zip", help="a zip of nnunet_mt export (or a plain nnU-Net model zip)")
    p.set_defaults(func=_install)

    p = sub.add_parser("trainer-path", help="print the folder to add to nnUNet_extTrainer by hand")
    p.set_defaults(func=_trainer_path)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_guarded(f"nnunet_mt {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
