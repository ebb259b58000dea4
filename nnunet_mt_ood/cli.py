"""``nnunet_mt_ood`` command line: fit (training images' scores), score (prediction + OOD report), collect
(merge split score runs), evaluate."""
import argparse
import sys
from typing import List, Optional

from nnunet_mt import layout
from nnunet_mt.arguments import COUNT, PROCESSES, SEED, add_renamed, number
from nnunet_mt.errors import run_guarded
from nnunet_mt_ood.options import LAYERS, WINDOW_ORDERS
from nnunet_mt_ood.baselines import KNN_NEIGHBOUR
from nnunet_mt_ood.methods import DEFAULT_C, DEFAULT_METHOD, MC_DROPOUT_SAMPLES, METHODS


def _fit(args) -> None:
    from nnunet_mt_ood.fit_command import run_fit
    run_fit(args)


def _score(args) -> None:
    from nnunet_mt_ood.score_command import run_score
    run_score(args)


def _collect(args) -> None:
    from nnunet_mt_ood.parts import collect_scores
    collect_scores(args.folder)


def _evaluate(args) -> None:
    from nnunet_mt_ood.report import evaluate_scores
    evaluate_scores(args.scores, args.ood, args.id, args.o, references=args.ref, failure_dice=args.failure_dice,
                    subject_pattern=args.subject_pattern, subject_map=args.subject_map)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", required=True, help="dataset name or id the model was trained on")
    p.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer class (default nnUNetTrainer)")
    p.add_argument("-p", default=layout.DEFAULT_PLANS, help=f"plans identifier (default {layout.DEFAULT_PLANS})")
    p.add_argument("-f", nargs="+", required=True, help="one fold (signatures belong to one model), e.g. 0 or all; "
                   "several (e.g. 0 1 2 3 4, as nnUNetv2_predict) for --method ensemble")
    p.add_argument("-chk", default=layout.FINAL_CHECKPOINT, help=f"checkpoint name (default {layout.FINAL_CHECKPOINT})")
    p.add_argument("--seeds", nargs="+", type=SEED, default=[], metavar="SEED",
                   help="for --method seed_ensemble: the other members' seeds, i.e. the models <trainer>_seed<N> of "
                        "the same fold (trained with nnUNetv2_train ... -tr <trainer>_seed<N>); -tr is the first member")
    p.add_argument("--layer", choices=LAYERS, default="last",
                   help="feature map: 'last' (input of the segmentation head, the paper's) or 'bottleneck'")
    p.add_argument("--method", nargs="+", choices=list(METHODS), default=[DEFAULT_METHOD],
                   help="OOD methods (several allowed): " + "; ".join(f"{m.name} ({m.summary})"
                                                                       for m in METHODS.values()))
    p.add_argument("--mc_samples", type=COUNT, default=MC_DROPOUT_SAMPLES,
                   help=f"dropout passes of mcdropout (default {MC_DROPOUT_SAMPLES})")
    p.add_argument("-step_size", type=number(float, 0, 1, low_open=True), default=0.5, help="sliding window step, as nnUNetv2_predict")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring, as nnUNetv2_predict")
    p.add_argument("-device", choices=["cuda", "cpu"], default="cuda", help="as nnUNetv2_predict (default cuda)")
    p.add_argument("--window_order", choices=WINDOW_ORDERS, default=None,
                   help="sliding-window order: nnunet (segmentations identical to nnUNetv2_predict's; score's "
                        "default) or memory (the axis with the least overlap outermost: about half the spectral "
                        "signature's memory on CT-sized images, the same signature, logits within the rounding "
                        "of nnU-Net's float16 sum; fit's default, which writes no segmentations)")


def _part_arguments(p: argparse.ArgumentParser, what: str, writes: str) -> None:
    p.add_argument("-num_parts", type=COUNT, default=1, help=f"split the {what} into this many parts, as "
                   f"nnUNetv2_predict (default 1)")
    p.add_argument("-part_id", type=PROCESSES, default=0, help=f"which part this process computes (0 to num_parts - 1); "
                   f"writes {writes}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet_mt_ood", description="Spectral out-of-distribution detection "
                                     "for nnU-Net v2 models (Karimi & Gholipour).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="spectral signatures of the fold's training images (or of -i reference images) "
                       "and the threshold tau")
    p.add_argument("-i", metavar="IMAGES", help="fit on this folder of in-distribution images (nnUNetv2_predict's "
                   "input layout) instead of the fold's training images: for a model whose training data you do "
                   "not have (e.g. one you downloaded); needs no nnUNet_raw or nnUNet_preprocessed")
    _model_arguments(p)
    p.add_argument("-C", type=number(float, 0), default=DEFAULT_C,
                   help=f"tau = mean + C * std of leave-one-out scores (default {DEFAULT_C})")
    p.add_argument("--knn_k", type=COUNT, default=KNN_NEIGHBOUR,
                   help=f"knn: distance to the k-th nearest training image (default {KNN_NEIGHBOUR}; kept with the fit)")
    _part_arguments(p, "training images", "fold_X/ood_fit_parts/part_<i>_of_<K>.npz")
    p.add_argument("--collect", action="store_true", help="merge the K parts (-num_parts K) and fit tau")
    p.set_defaults(func=_fit)
    p = sub.add_parser("score", help="nnUNetv2_predict plus ood_scores.json/.csv in the output folder")
    p.add_argument("-i", required=True, help="input folder, as nnUNetv2_predict")
    p.add_argument("-o", required=True, help="output folder, as nnUNetv2_predict")
    _model_arguments(p)
    p.add_argument("-C", type=number(float, 0), default=None, help="override the fitted C (>= 0)")
    p.add_argument("--save_probabilities", action="store_true", help="as nnUNetv2_predict; calibrated with the "
                   "model's temperature when nnunet_mt calibrate has fitted one")
    add_renamed(p, "--no_calibration", "--no-calibration", action="store_true",
                help="save the model's probabilities as they are, even when a temperature was fitted")
    add_renamed(p, "--global_temperature", "--global-temperature", action="store_true",
                help="use the global temperature even where one per source dataset was fitted (calibrate --per_source)")
    p.add_argument("-npp", type=PROCESSES, default=3, help="preprocessing processes, as nnUNetv2_predict")
    p.add_argument("-nps", type=PROCESSES, default=3, help="export processes, as nnUNetv2_predict")
    p.add_argument("--plot", action="store_true", help="write ood_signatures.png and ood_histogram.png")
    p.add_argument("--save_maps", action="store_true", help="voxel entropy maps with the input's geometry in "
                   "OUTPUT/maps/: <case>_entropy (of the probabilities written; needs --save_probabilities) and, "
                   "with mcdropout, <case>_mcdropout_entropy (of the dropout passes' mean)")
    _part_arguments(p, "cases", "ood_scores.part_<i>_of_<K>.json (merge with nnunet_mt_ood collect)")
    p.set_defaults(func=_score)
    p = sub.add_parser("collect", help="merge the ood_scores.part_<i>_of_<K>.json of a split score run")
    p.add_argument("folder", help="the -o folder the parts were scored into")
    p.set_defaults(func=_collect)
    p = sub.add_parser("evaluate", help="accuracy, sensitivity, specificity (at tau) and ROC AUC per method")
    p.add_argument("scores", nargs="+", metavar="SCORES.json", help="ood_scores.json files of one model")
    p.add_argument("--ood", nargs="+", required=True, metavar="CASE_OR_PATTERN",
                   help="truly OOD cases: case ids, glob patterns (e.g. 'hippocampus*') or a CSV of case ids")
    p.add_argument("--id", nargs="+", metavar="CASE_OR_PATTERN",
                   help="in-distribution cases (default: every case not matched by --ood)")
    p.add_argument("-o", metavar="PREFIX", help="output prefix (default: ood_evaluation beside the first file); "
                   "writes PREFIX.json, .md and .png")
    p.add_argument("-ref", nargs="+", metavar="LABELS_DIR", help="reference labels, one folder per scores file (same "
                   "order): adds failure detection (AUROC for Dice < --failure_dice, Spearman, risk-coverage and "
                   "AURC) over every scored case, and PREFIX_risk_coverage.png")
    add_renamed(p, "--failure_dice", "--failure-dice", type=number(float, 0, 1), default=0.5,
                help="a segmentation with Dice below this counts as a failure (default 0.5)")
    p.add_argument("--subject_pattern", metavar="REGEX", help="cases whose ids give the same match (first group, or "
                   "the whole match) are one subject: the AUC and AURC intervals resample subjects (default: each "
                   "case its own subject)")
    p.add_argument("--subject_map", metavar="FILE", help="or the subjects from a file as nnunet_mt merge reads it "
                   "(JSON object or two-column CSV/TSV: case id, subject; the source's id of a merged test case "
                   "'D011_x' is 'x')")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def action():
        if args.command in ("fit", "score"):  # they build the network (and apply the model's T themselves)
            from nnunet_mt.prediction_temperature import refuse_prediction_temperature
            refuse_prediction_temperature(f"nnunet_mt_ood {args.command} (it applies the model's temperature itself)")
        args.func(args)
    return run_guarded(f"nnunet_mt_ood {args.command}", action)


if __name__ == "__main__":
    sys.exit(main())
