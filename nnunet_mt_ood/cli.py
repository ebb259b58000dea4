"""``nnunet_mt_ood`` command line: fit (training images' scores), score (prediction + OOD report), collect
(merge split score runs), evaluate."""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from nnunet_mt import layout
from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.arguments import COUNT, PROCESSES, add_renamed, number
from nnunet_mt.errors import InputError, run_guarded
from nnunet_mt_ood.options import LAYERS, WINDOW_ORDERS
from nnunet_mt_ood.baselines import KNN_NEIGHBOUR
from nnunet_mt_ood.methods import DEFAULT_C, DEFAULT_METHOD, MC_DROPOUT_SAMPLES, METHODS


def _device(name: str):
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device available (use -device cpu)")
    return torch.device(name)


def _model_dir(args) -> str:
    from nnunet_mt.nnunet_glue import model_folder
    model_dir = model_folder(args.d, args.tr, args.p, args.c)
    for fold in args.folds:
        checkpoint = os.path.join(layout.fold_folder(model_dir, fold), args.chk)
        if not os.path.isfile(checkpoint):
            raise InputError(f"{checkpoint}: checkpoint missing (train with nnUNetv2_train first)")
    return model_dir


def _check_folds(args) -> None:
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


def _fit_dir(args, model_dir: str) -> str:
    """Where the fits live: the fold folder, or for a fold ensemble the model folder."""
    return model_dir if len(args.folds) > 1 else layout.fold_folder(model_dir, args.f)


def _predictor(args, model_dir: str, use_mirroring: bool, methods=(DEFAULT_METHOD,), keep_mc_probabilities=None,
               window_order: str = "nnunet"):
    from nnunet_mt_ood.methods import predictor_options
    from nnunet_mt_ood.predictor import OODPredictor
    device = _device(args.device)
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


def _fit(args) -> None:
    from nnunet_mt.merge import case_sources
    from nnunet_mt.nnunet_glue import required_folder
    from nnunet_mt.subjects import case_subjects
    from nnunet_mt_ood.fit import compute_training_results, method_values, training_cases
    from nnunet_mt_ood.parts import check_part, load_fit_parts, part_share, save_fit_part
    check_part(args.num_parts, args.part_id)
    _check_folds(args)
    if args.i is not None:
        return _fit_on_reference_images(args)
    nnUNet_preprocessed = required_folder("nnUNet_preprocessed")
    model_dir = _model_dir(args)
    fold_dir = _fit_dir(args, model_dir)
    # features come from the un-mirrored pass only; softmax scores depend on test-time mirroring
    tta = any(METHODS[m].uses_test_time_mirroring for m in args.method) and not args.disable_tta
    model = {"trainer": args.tr, "plans": args.p, "configuration": args.c, "fold": args.f, "checkpoint": args.chk}
    if len(args.folds) > 1:
        model["folds"] = args.folds
    settings = {"model": model, "methods": list(args.method), "layer": args.layer, "tta": tta,
                "mc_samples": args.mc_samples, "step_size": args.step_size}
    predictor = _predictor(args, model_dir, use_mirroring=tta, methods=args.method,
                           window_order=args.window_order or "memory")
    base = os.path.join(str(nnUNet_preprocessed), predictor.plans_manager.dataset_name)
    folder = os.path.join(base, predictor.configuration_manager.data_identifier)
    case_ids = training_cases(base, folder, args.f)
    for other in args.folds[1:]:  # a fold ensemble: the images every one of its folds trained on
        kept = set(training_cases(base, folder, other))
        case_ids = [c for c in case_ids if c in kept]
    model["dataset"] = predictor.plans_manager.dataset_name
    reference = {"from": "training images of the fold" if len(args.folds) == 1 else "training images of every fold",
                 "n_images": len(case_ids)}
    if args.collect:
        values = load_fit_parts(fold_dir, args.num_parts, case_ids, args.method, settings)
    else:
        share = part_share(case_ids, args.num_parts, args.part_id) if args.num_parts > 1 else case_ids
        predictor.load_parameters(0)
        results = compute_training_results(predictor, folder, share)
        values = {m: method_values(m, results, args.layer) for m in args.method}
        if args.num_parts > 1:
            path = save_fit_part(fold_dir, args.num_parts, args.part_id, share, values, settings)
            print(f"part {args.part_id} of {args.num_parts}: {len(share)} of {len(case_ids)} training images; wrote "
                  f"{path} (then: the same command with --collect instead of -part_id)")
            return
    _save_fits(args, fold_dir, values, case_ids, case_sources(predictor.dataset_json, case_ids), model, tta,
               predictor, case_subjects(predictor.dataset_json, case_ids), reference)


def _fit_on_reference_images(args) -> None:
    """fit -i IMAGES: the detectors fitted on a folder of in-distribution images (nnUNetv2_predict's input
    layout) instead of the fold's training images; no raw or preprocessed data of the model needed."""
    from nnunet_mt_ood.fit import compute_reference_results, method_values
    if args.num_parts > 1 or args.collect:
        raise InputError(f"-i {args.i}: a fit on reference images runs in one part (no -num_parts / --collect)")
    if len(args.folds) > 1:
        raise InputError(f"-i {args.i}: the fold ensemble is fitted on training images only (give one fold)")
    model_dir = _model_dir(args)
    fold_dir = _fit_dir(args, model_dir)
    with open(os.path.join(model_dir, layout.DATASET_JSON)) as f:
        inputs = _check_inputs(args.i, json.load(f))
    if len(inputs) < 3:
        raise InputError(f"{args.i}: {len(inputs)} reference images; tau needs at least 3")
    tta = any(METHODS[m].uses_test_time_mirroring for m in args.method) and not args.disable_tta
    predictor = _predictor(args, model_dir, use_mirroring=tta, methods=args.method,
                           window_order=args.window_order or "memory")
    predictor.load_parameters(0)
    case_ids = sorted(inputs)
    results = compute_reference_results(predictor, inputs)
    values = {m: method_values(m, results, args.layer) for m in args.method}
    model = {"trainer": args.tr, "plans": args.p, "configuration": args.c, "fold": args.f, "checkpoint": args.chk,
             "dataset": predictor.plans_manager.dataset_name}
    reference = {"from": "images", "folder": os.path.abspath(args.i), "n_images": len(case_ids)}
    source = f"reference:{os.path.basename(os.path.abspath(args.i))}"
    _save_fits(args, fold_dir, values, case_ids, [source] * len(case_ids), model, tta, predictor, case_ids, reference)


def _save_fits(args, fold_dir, values, case_ids, sources, model, tta, predictor, subjects, reference) -> None:
    """Fits each method's threshold on its values and writes its files (nnunet_mt_ood.fit.save_fit)."""
    from nnunet_mt_ood.fit import save_fit
    for method in args.method:
        meta = save_fit(fold_dir, method, args.layer, values[method], case_ids, sources, model, args.C, tta,
                        args.mc_samples, options={"k": args.knn_k}, folds=args.folds,
                        prediction=predictor.prediction_settings(), subjects=subjects, reference=reference)
        where = f", {meta['layer']} layer" if meta["layer"] else ""
        n_subjects = len(set(meta["subjects"]))
        grouped = f" ({n_subjects} subjects, tau leaves a subject out)" if n_subjects < len(case_ids) else ""
        what = "reference images" if reference["from"] == "images" else "training images"
        print(f"{method}: {len(case_ids)} {what}{grouped}{where}, {meta['n_channels']} values each; "
              f"tau = {meta['tau']:.5f} (C = {meta['C']})")
    print(f"wrote {fold_dir}")


def _check_inputs(input_dir: str, dataset_json: dict) -> Dict[str, List[str]]:
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


def _check_segmentations_written(out_dir: str, first_images: Dict[str, str], ending: str) -> None:
    """Each segmentation nnU-Net wrote reads back with its input image's size (a full disk leaves 0-byte files)."""
    from nnunet_mt.validate import SITK_ENDINGS, check_written_image, image_header
    if not ending.endswith(SITK_ENDINGS):
        return
    for case, image in first_images.items():
        check_written_image(os.path.join(out_dir, case + ending), image_header(image).GetSize())


def _apply_calibration(fold_dir: str, out_dir: str, rows: List[dict], per_source: bool = True) -> Optional[dict]:
    """Rescales each case's saved probabilities with the model's temperature (nnunet_mt calibrate): the
    source's own T when the fit has one per source and the spectral detector names the case's nearest
    training source without flagging it OOD, else the global T. Records the T used in each row."""
    from nnunet_mt.calibrate import calibrate_saved_probabilities, load_calibration
    calibration = load_calibration(fold_dir)
    if calibration is None:
        return None
    by_source = (calibration.get("per_source") or {}) if per_source else {}
    for row in rows:
        source = row.get("nearest_source")
        if source in by_source and row.get("spectral_is_ood") is False:
            row["temperature"], row["temperature_from"] = by_source[source], f"source {source}"
        else:
            row["temperature"], row["temperature_from"] = calibration["temperature"], "global"
        calibrate_saved_probabilities(os.path.join(out_dir, row["case"] + ".npz"), row["temperature"])
    return {"file": os.path.join(fold_dir, "temperature.json"), "temperature": calibration["temperature"],
            "per_source": calibration.get("per_source"), "region": calibration["region"]}


def _score(args) -> None:
    from nnunet_mt_ood.fit import load_detectors
    _check_folds(args)
    model_dir = _model_dir(args)
    fold_dir = _fit_dir(args, model_dir)
    detectors = load_detectors(fold_dir, args.method, args.layer, args.C, folds=args.folds)
    from nnunet_mt_ood.parts import check_part, part_name, part_share, write_scores
    check_part(args.num_parts, args.part_id)
    from nnunet_mt.validate import refuse_output_inside_input
    refuse_output_inside_input(args.i, args.o)
    with open(os.path.join(model_dir, layout.DATASET_JSON)) as f:
        dataset_json = json.load(f)
    inputs, ending = _check_inputs(args.i, dataset_json), dataset_json["file_ending"]
    share = part_share(inputs, args.num_parts, args.part_id)  # the cases nnUNetv2_predict's part would take
    if not share:
        raise InputError(f"{args.i}: {len(inputs)} cases, nothing left for part {args.part_id} of {args.num_parts}")
    maps = _maps_setup(args, model_dir)
    predictor = _predictor(args, model_dir, use_mirroring=not args.disable_tta, methods=args.method,
                           window_order=args.window_order or "nnunet",
                           keep_mc_probabilities=maps)
    os.makedirs(args.o, exist_ok=True)
    files = [sorted(inputs[c]) for c in share]
    outputs = [os.path.join(args.o, c) for c in share]
    if args.npp == 0 and args.nps == 0:  # nnUNetv2_predict's sequential mode
        predictor.predict_from_files_sequential(files, outputs, save_probabilities=args.save_probabilities,
                                                overwrite=True)
    else:
        predictor.predict_from_files(files, outputs, save_probabilities=args.save_probabilities, overwrite=True,
                                     num_processes_preprocessing=max(args.npp, 1),
                                     num_processes_segmentation_export=max(args.nps, 1))
    cases = sorted(predictor.results)
    if not cases:
        raise InputError(f"{args.i}: no case was predicted")
    _check_segmentations_written(args.o, {c: sorted(inputs[c])[0] for c in share}, ending)
    rows = [{"case": c} for c in cases]
    methods = {}
    for method, (detector, meta) in detectors.items():
        spec = METHODS[method]
        values = np.stack([np.atleast_1d(spec.values(predictor.results[c], args.layer)) for c in cases])
        if values.shape[1] != meta["n_channels"]:
            raise InputError(f"{fold_dir}: the {method} fit has {meta['n_channels']} values per image, this "
                             f"network gives {values.shape[1]} (refit with nnunet_mt_ood fit)")
        scores, flags = detector.score(values), detector.predict(values)
        for row, s, o in zip(rows, scores, flags):
            row[f"{method}_score"], row[f"{method}_is_ood"] = float(s), bool(o)
        if spec.needs_several_folds:
            for row in rows:
                row["ensemble_disagreement"] = float(predictor.results[row["case"]]["ensemble_disagreement"])
        if spec.nearest_neighbours:  # distance-to-nearest-training-image methods
            for row, n in zip(rows, detector.nearest(values)):
                row["nearest_training_case"], row["nearest_source"] = meta["case_ids"][n], meta["sources"][n]
            if spec.decides:  # what a user acts on: how far from each source, accept or flag
                for source, distances in detector.distance_by_group(values, meta["sources"]).items():
                    for row, d in zip(rows, distances):
                        row[f"distance_to_{source}"] = float(d)
                for row, o in zip(rows, flags):
                    row["decision"] = "flag" if o else "accept"
        methods[method] = {"tau": detector.threshold_, "C": detector.c, "layer": meta["layer"],
                           "train_scores": detector.train_scores_.tolist(), "train_case_ids": meta["case_ids"],
                           "train_sources": meta["sources"]}
        if meta.get("tta") is not None and meta["tta"] != (not args.disable_tta):
            methods[method]["warning"] = "fitted with a different test-time mirroring setting"
        warning = spec.fit_warning(meta, args.mc_samples)
        if warning:
            methods[method]["warning"] = warning
        mismatch = prediction_mismatch(meta.get("prediction"), predictor.prediction_settings())
        if mismatch:
            methods[method]["warning"] = mismatch
            print(f"{method}: {mismatch}")
    calibration = None if args.no_calibration or not args.save_probabilities else \
        _apply_calibration(fold_dir, args.o, rows, per_source=not args.global_temperature)
    if maps:
        _write_maps(predictor, args.o, maps, cases, {c: sorted(inputs[c]) for c in share}, ending)
    report = {"model": next(iter(detectors.values()))[1]["model"], "spectral_layer": args.layer,
              "methods": methods, "cases": rows}
    if calibration is not None:
        report["calibration"] = calibration
    if args.num_parts > 1:
        report["part"] = {"part_id": args.part_id, "num_parts": args.num_parts}
        written = os.path.join(args.o, f"ood_scores.{part_name(args.part_id, args.num_parts)}.json")
        write_text_atomic(written, json.dumps(report, indent=1))
    else:
        written = write_scores(args.o, report)
    for method, info in methods.items():
        flagged = sum(r[f"{method}_is_ood"] for r in rows)
        print(f"\n{method}: tau = {info['tau']:.5f}, {flagged} of {len(rows)} cases flagged OOD")
    if rows and "decision" in rows[0]:
        from collections import Counter
        decisions, nearest = Counter(r["decision"] for r in rows), Counter(r["nearest_source"] for r in rows)
        print(f"decisions (spectral): {dict(sorted(decisions.items()))}; nearest training source: "
              f"{dict(sorted(nearest.items()))}")
    print("\n| case | " + " | ".join(f"{m} score | OOD" for m in methods) + " | nearest training case |")
    print("|---|" + "---|---|" * len(methods) + "---|")
    for r in rows:
        cells = " | ".join(f"{r[f'{m}_score']:.5f} | {'yes' if r[f'{m}_is_ood'] else 'no'}" for m in methods)
        nearest = f"{r['nearest_training_case']} ({r['nearest_source']})" if "nearest_source" in r else "-"
        print(f"| {r['case']} | {cells} | {nearest} |")
    print(f"wrote {written}" + (" and .csv" if args.num_parts == 1 else
                                " (merge the parts with: nnunet_mt_ood collect OUTPUT_FOLDER)"))
    plotted = [m for m in detectors if METHODS[m].decides]
    if args.plot and plotted:
        from nnunet_mt_ood.plots import plot_oodm_histogram, plot_signatures
        detector, meta = detectors[plotted[0]]
        test = np.stack([predictor.results[c][f"signature_{args.layer}"] for c in cases])
        p1 = plot_signatures(detector.train_signatures_, meta["sources"], test, detector.predict(test),
                             os.path.join(args.o, "ood_signatures.png"))
        p2 = plot_oodm_histogram(detector.train_scores_, detector.score(test), detector.threshold_,
                                 os.path.join(args.o, "ood_histogram.png"))
        print(f"wrote {p1} and {p2}")


def _maps_setup(args, model_dir: str):
    """For --save_maps: checks what the maps need and returns the scratch folder for MC-dropout probabilities
    (None without --save_maps)."""
    if not args.save_maps:
        return None
    if not args.save_probabilities:
        raise InputError(f"{args.o}: --save_maps needs --save_probabilities (the entropy map is of the "
                         f"probabilities nnU-Net writes)")
    with open(os.path.join(model_dir, layout.MODEL_PLANS)) as f:
        reader = json.load(f).get("image_reader_writer")
    if reader != "SimpleITKIO":
        raise InputError(f"{os.path.join(model_dir, 'plans.json')}: --save_maps writes images with SimpleITK; "
                         f"this model reads its images with {reader}")
    scratch = os.path.join(args.o, "maps", f".mc_probabilities_{args.part_id}_of_{args.num_parts}")  # one per part
    os.makedirs(scratch, exist_ok=True)
    return scratch


def _write_maps(predictor, out_dir: str, scratch: str, cases, files, ending: str) -> None:
    """maps/<case>_entropy<ending> (entropy of the probabilities written, calibrated if a temperature was
    applied) and, with mcdropout, maps/<case>_mcdropout_entropy<ending> (of the dropout passes' mean)."""
    import shutil
    from nnunet_mt_ood.maps import write_entropy_map
    folder = os.path.dirname(scratch)
    for case in cases:
        segmentation = os.path.join(out_dir, case + ending)
        with np.load(os.path.join(out_dir, case + ".npz")) as npz:
            write_entropy_map(npz["probabilities"], segmentation, os.path.join(folder, f"{case}_entropy{ending}"))
        mc = os.path.join(scratch, case + ".npy")
        if os.path.isfile(mc):
            probabilities = predictor.mc_dropout_probabilities_in_image_space(files[case], np.load(mc))
            write_entropy_map(probabilities, segmentation, os.path.join(folder, f"{case}_mcdropout_entropy{ending}"))
            os.remove(mc)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {len(cases)} voxel entropy map(s) per case into {folder}")


def _collect(args) -> None:
    from nnunet_mt_ood.parts import collect_scores
    collect_scores(args.folder)


def _evaluate(args) -> None:
    from nnunet_mt_ood.report import evaluate_scores
    evaluate_scores(args.scores, args.ood, args.id, args.o, references=args.ref, failure_dice=args.failure_dice,
                    subject_pattern=args.subject_pattern)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", required=True, help="dataset name or id the model was trained on")
    p.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer class (default nnUNetTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", nargs="+", required=True, help="one fold (signatures belong to one model), e.g. 0 or all; "
                   "several (e.g. 0 1 2 3 4, as nnUNetv2_predict) for --method ensemble")
    p.add_argument("-chk", default=layout.FINAL_CHECKPOINT, help=f"checkpoint name (default {layout.FINAL_CHECKPOINT})")
    p.add_argument("--layer", choices=LAYERS, default="last",
                   help="feature map: 'last' (input of the segmentation head, the paper's) or 'bottleneck'")
    p.add_argument("--method", nargs="+", choices=list(METHODS), default=[DEFAULT_METHOD],
                   help="OOD methods (several allowed): spectral (the paper's), mahalanobis and knn (pooled "
                        "bottleneck features: Gaussian, nearest-neighbour distance), msp (1 - mean max softmax), "
                        "entropy (mean softmax entropy), mcdropout "
                        f"({MC_DROPOUT_SAMPLES} dropout passes, foreground entropy; needs a _dropout model), "
                        "ensemble (1 - mean pairwise Dice of the folds given with -f; writes nnU-Net's ensemble)")
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
