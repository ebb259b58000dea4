"""``nnunet_mt_ood score``: nnU-Net's prediction of a folder of images with the requested methods' scores, the
accept/flag decision, the model's temperature and voxel maps; ood_scores.json/.csv beside nnU-Net's outputs."""
import json
import os
from typing import Dict, List, Optional

import numpy as np

from nnunet_mt import layout
from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt_ood.methods import METHODS
from nnunet_mt_ood.model import (check_input_images, check_members, ensemble_members, find_model_dir, fits_dir,
                                 make_predictor, prediction_mismatch)


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


def run_score(args) -> None:
    from nnunet_mt_ood.fit import load_detectors
    check_members(args)
    model_dir = find_model_dir(args)
    fold_dir = fits_dir(args, model_dir)
    detectors = load_detectors(fold_dir, args.method, args.layer, args.C, members=ensemble_members(args))
    from nnunet_mt_ood.parts import check_part, part_name, part_share, write_scores
    check_part(args.num_parts, args.part_id)
    from nnunet_mt.validate import refuse_output_inside_input
    refuse_output_inside_input(args.i, args.o)
    with open(os.path.join(model_dir, layout.DATASET_JSON)) as f:
        dataset_json = json.load(f)
    inputs, ending = check_input_images(args.i, dataset_json), dataset_json["file_ending"]
    share = part_share(inputs, args.num_parts, args.part_id)  # the cases nnUNetv2_predict's part would take
    if not share:
        raise InputError(f"{args.i}: {len(inputs)} cases, nothing left for part {args.part_id} of {args.num_parts}")
    maps = _maps_setup(args, model_dir)
    predictor = make_predictor(args, model_dir, use_mirroring=not args.disable_tta, methods=args.method,
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
        if spec.ensemble_of:
            for row in rows:
                row["ensemble_disagreement"] = float(predictor.results[row["case"]]["member_voxel_disagreement"])
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
        test = np.stack([METHODS[plotted[0]].values(predictor.results[c], args.layer) for c in cases])
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
