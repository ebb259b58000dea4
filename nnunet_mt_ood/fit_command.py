"""``nnunet_mt_ood fit``: the requested methods' values on the fold's training images (or on reference images
given with -i), their thresholds and files (``nnunet_mt_ood.fit``), in one process or in parts."""
import json
import os

from nnunet_mt import layout
from nnunet_mt.errors import InputError
from nnunet_mt_ood.methods import METHODS
from nnunet_mt_ood.model import (check_input_images, check_members, ensemble_members, find_model_dir, fits_dir,
                                 make_predictor)


def run_fit(args) -> None:
    from nnunet_mt.merge import case_sources
    from nnunet_mt.nnunet_glue import required_folder
    from nnunet_mt.subjects import case_subjects
    from nnunet_mt_ood.fit import compute_training_results, method_values, training_cases
    from nnunet_mt_ood.parts import check_part, load_fit_parts, part_share, save_fit_part
    check_part(args.num_parts, args.part_id)
    check_members(args)
    if args.i is not None:
        return _fit_on_reference_images(args)
    nnUNet_preprocessed = required_folder("nnUNet_preprocessed")
    model_dir = find_model_dir(args)
    fold_dir = fits_dir(args, model_dir)
    # features come from the un-mirrored pass only; softmax scores depend on test-time mirroring
    tta = any(METHODS[m].uses_test_time_mirroring for m in args.method) and not args.disable_tta
    model = {"trainer": args.tr, "plans": args.p, "configuration": args.c, "fold": args.f, "checkpoint": args.chk}
    if len(args.folds) > 1:
        model["folds"] = args.folds
    if args.seed_trainers:
        model["seeds"], model["seed_trainers"] = list(args.seeds), args.seed_trainers
    settings = {"model": model, "methods": list(args.method), "layer": args.layer, "tta": tta,
                "mc_samples": args.mc_samples, "step_size": args.step_size}
    predictor = make_predictor(args, model_dir, use_mirroring=tta, methods=args.method,
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
    model_dir = find_model_dir(args)
    fold_dir = fits_dir(args, model_dir)
    with open(os.path.join(model_dir, layout.DATASET_JSON)) as f:
        inputs = check_input_images(args.i, json.load(f))
    if len(inputs) < 3:
        raise InputError(f"{args.i}: {len(inputs)} reference images; tau needs at least 3")
    tta = any(METHODS[m].uses_test_time_mirroring for m in args.method) and not args.disable_tta
    predictor = make_predictor(args, model_dir, use_mirroring=tta, methods=args.method,
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
                        args.mc_samples, options={"k": args.knn_k}, members=ensemble_members(args),
                        prediction=predictor.prediction_settings(), subjects=subjects, reference=reference)
        where = f", {meta['layer']} layer" if meta["layer"] else ""
        n_subjects = len(set(meta["subjects"]))
        grouped = f" ({n_subjects} subjects, tau leaves a subject out)" if n_subjects < len(case_ids) else ""
        what = "reference images" if reference["from"] == "images" else "training images"
        print(f"{method}: {len(case_ids)} {what}{grouped}{where}, {meta['n_channels']} values each; "
              f"tau = {meta['tau']:.5f} (C = {meta['C']})")
    print(f"wrote {fold_dir}")
