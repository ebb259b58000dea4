"""Every refusal of every command in one table: a bad input (file, folder, number, environment, a file our commands
wrote and read back broken) is answered with one line naming the file or argument and the problem, exit code 2,
no traceback, and nothing written or changed anywhere in the workspace (the user's source data included).

Each row: (id, workspace, setup(ws) -> [command, *argv], words the error line must contain). Workspaces (see
refusal_setups.py): DEMO, demo Dataset012 in raw/; BARE, empty raw/, pre/, res/ and in/; "no <variable>", BARE
with that nnU-Net variable unset. Rows in SUBPROCESS_ROWS run the installed console script (every command's
real entry point and exit code); the others call the same main(argv) in this process (the error path is the
same code; a process costs seconds of torch and nnU-Net imports per row)."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import BIN, nnunet_env, run, run_main
from refusal_setups import (GOOD_FIT, GOOD_REPORT, SOURCE, _calibrate, _collect_degenerate, _collect_contradicting_part,
                            _collect_same_part, _disk_full, _edit_json, _evaluate_setup, _inf, _merge, _merge_after,
                            _nan, _nan_probabilities, _replace_image, _score, _scores, _sheared, _src,
                            _taken_output, _truncate, _write, evaluate_one_case, ood_collect_parts,
                            ood_evaluate_report, ood_score_fit, ood_score_knn)

DEMO, BARE = "demo", "bare"
MODEL = ["-d", "12", "-c", "3d_fullres", "-f", "0", "-device", "cpu"]
JVD = ["experiment", "joint-vs-dedicated", "-d", "12", "13", "-o", "{ws}/exp"]
OOD_EXP = ["experiment", "ood", "--train", "12", "--ood", "13", "-o", "{ws}/exp"]
SCORE = ["score", "-i", "{ws}/in", "-o", "{ws}/out", *MODEL]
EVALUATE = ["evaluate", "-ref", "{ws}/in", "-pred", "{ws}/in"]


def _copy_source(ws, dataset_id, labels=None):
    """A copy of the demo source under another id (its labels replaced when given): a further dataset."""
    target = ws / "raw" / f"Dataset{dataset_id:03d}_CorticalPlateMR"
    shutil.copytree(ws / "raw" / SOURCE, target)
    if labels is not None:
        meta = json.loads((target / "dataset.json").read_text())
        (target / "dataset.json").write_text(json.dumps(dict(meta, labels=labels)))


def _line(*command):
    """A fixed command line, {ws} standing for the workspace."""
    return lambda ws: [a.format(ws=ws) for a in command]


def _number(command, argv, argument, says):
    """A number (or choice) refused by the parser: the error names the argument and says what is wrong."""
    return (f"{command}-{argv[0]}-{argument}-{argv[-1]}", BARE, _line(command, *argv), [argument, says])


def _unset(command, argv, variable):
    """An nnU-Net folder variable unset: the error names it."""
    return (f"{command}-{argv[0]}-no-{variable}", f"no {variable}", _line(command, *argv), [variable])


ROWS = [
    # --- raw datasets, predictions and commands on the demo dataset (merge, evaluate, demo-data, experiment, ood)
    ("merge-dataset-json-invalid", DEMO, _merge_after(lambda ws: _src(ws, "dataset.json").write_text("{not json")),
     ["dataset.json", "invalid JSON"]),
    ("merge-dataset-json-missing-key", DEMO, _merge_after(lambda ws: _edit_json(ws, lambda d: d.pop("labels"))),
     ["dataset.json", "'labels' missing"]),
    ("merge-dataset-json-wrong-type", DEMO, _merge_after(lambda ws: _edit_json(ws, lambda d: d.update(channel_names=["MR"]))),
     ["dataset.json", "'channel_names'", "not a dict"]),
    ("merge-dataset-json-absent", DEMO, _merge_after(lambda ws: _src(ws, "dataset.json").unlink()),
     ["dataset.json", "missing dataset.json"]),
    ("merge-image-without-label", DEMO, _merge_after(lambda ws: _src(ws, "labelsTr", "corticalplatemr_001.nii.gz").unlink()),
     ["corticalplatemr_001_0000.nii.gz", "image without label"]),
    ("merge-label-without-image", DEMO,
     _merge_after(lambda ws: _src(ws, "imagesTr", "corticalplatemr_001_0000.nii.gz").unlink()),
     ["labelsTr/corticalplatemr_001.nii.gz", "label without image"]),
    ("merge-shape-mismatch", DEMO, _merge_after(lambda ws: _replace_image(ws, edit=lambda a: a[:-1])),
     ["labelsTr/corticalplatemr_000.nii.gz", "label size"]),
    ("merge-spacing-mismatch", DEMO, _merge_after(lambda ws: _replace_image(ws, spacing=(1.0, 1.0, 1.5))),
     ["labelsTr/corticalplatemr_000.nii.gz", "label spacing"]),
    ("merge-origin-mismatch", DEMO, _merge_after(lambda ws: _replace_image(ws, origin=(0.0, 5.0, 0.0))),
     ["labelsTr/corticalplatemr_000.nii.gz", "label origin"]),
    ("merge-nan-voxels", DEMO, _merge_after(lambda ws: _replace_image(ws, edit=_nan)),
     ["corticalplatemr_000_0000.nii.gz", "NaN or infinite"]),
    ("merge-inf-voxels", DEMO, _merge_after(lambda ws: _replace_image(ws, edit=_inf)),
     ["corticalplatemr_000_0000.nii.gz", "NaN or infinite"]),
    ("merge-undeclared-label", DEMO, _merge_after(lambda ws: _write(_src(ws, "labelsTr", "corticalplatemr_002.nii.gz"),
                                                                np.full((48, 48, 48), 7, np.uint8))),
     ["corticalplatemr_002.nii.gz", "[7]", "not declared"]),
    ("merge-2d-image", DEMO, _merge_after(lambda ws: sitk.WriteImage(sitk.Image(16, 16, sitk.sitkFloat32),
                                                                 str(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz")))),
     ["corticalplatemr_000_0000.nii.gz", "2D image"]),
    ("merge-wrong-channel-count", DEMO, _merge_after(lambda ws: shutil.copy(
        _src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz"), _src(ws, "imagesTr", "corticalplatemr_000_0001.nii.gz"))),
     ["imagesTr", "2 channel files", "declares 1"]),
    ("merge-truncated-file", DEMO, _merge_after(lambda ws: _truncate(_src(ws, "imagesTr", "corticalplatemr_003_0000.nii.gz"))),
     ["corticalplatemr_003_0000.nii.gz", "unreadable"]),
    ("merge-non-orthonormal", DEMO, _merge_after(lambda ws: (_sheared(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz")),
                                                       _sheared(_src(ws, "labelsTr", "corticalplatemr_000.nii.gz")))),
     ["corticalplatemr_000_0000.nii.gz", "non-orthonormal"]),
    ("merge-duplicate-case-id", DEMO, _merge_after(lambda ws: (
        shutil.copy(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz"), _src(ws, "imagesTs", "corticalplatemr_000_0000.nii.gz")),
        shutil.copy(_src(ws, "labelsTr", "corticalplatemr_000.nii.gz"), _src(ws, "labelsTs", "corticalplatemr_000.nii.gz")))),
     [SOURCE, "corticalplatemr_000", "duplicate case ids"]),
    ("merge-output-exists", DEMO, _taken_output, ["Dataset600_Other", "output dataset exists"]),
    ("evaluate-prediction-missing", DEMO, _evaluate_setup(drop=True), ["corticalplatemr_000.nii.gz", "prediction missing"]),
    ("evaluate-shape-mismatch", DEMO, _evaluate_setup(shape_change=True), ["corticalplatemr_000.nii.gz", "differs"]),
    ("evaluate-probabilities-missing", DEMO, _evaluate_setup(probabilities=False), ["corticalplatemr_000.npz", "missing"]),
    ("evaluate-disk-full", DEMO, _disk_full, ["pred/metrics.json", "No space left"]),
    ("demo-data-unknown-dataset", DEMO, lambda ws: ["nnunet_mt", "demo-data", "-o", str(ws / "demo"), "-d", "99"],
     ["-d 99", "not a demo dataset"]),
    ("demo-data-too-few-cases", DEMO, lambda ws: ["nnunet_mt", "demo-data", "-o", str(ws / "demo"), "--n_train", "3"],
     ["--n_train", "at least 5"]),
    ("demo-data-output-is-a-file", DEMO, lambda ws: ((ws / "afile").write_text("x"), ["nnunet_mt", "demo-data", "-o",
                                                                                 str(ws / "afile")])[1],
     ["afile", "exists"]),
    ("experiment-unknown-dataset", DEMO, lambda ws: ["nnunet_mt", "experiment", "joint-vs-dedicated", "-d", "12", "77",
                                               "-o", str(ws / "exp")], ["Dataset077_*", "no nnU-Net raw dataset"]),
    ("experiment-predictions-of-another-model", DEMO, lambda ws: (  # an -o reused with another --budget or seed
        (ws / "exp").mkdir(), (ws / "exp/output_models.json").write_text(
            '{"predictions/dedicated/CorticalPlateMR": "/elsewhere/T_5epochs__nnUNetPlans__3d_fullres/fold_0"}'),
        ["nnunet_mt", "experiment", "joint-vs-dedicated", "-d", "12", "-o", str(ws / "exp")])[2],
     ["exp/predictions/dedicated/CorticalPlateMR", "made by /elsewhere/T_5epochs", "use another -o"]),
    # --external_test T=E: E's test cases as a further test set of target T (same labels, not a training source)
    ("experiment-external-test-without-target", DEMO, _line("nnunet_mt", *JVD[:4], "--external_test", "17",
                                                            "-o", "{ws}/exp"), ["--external_test 17", "TARGET=DATASET"]),
    ("experiment-external-test-training-source", DEMO, _line("nnunet_mt", *JVD[:4], "--external_test", "12=12",
                                                             "-o", "{ws}/exp"),
     ["--external_test 12=12", "Dataset012_CorticalPlateMR is a training source"]),
    ("experiment-external-test-unknown-dataset", DEMO, _line("nnunet_mt", *JVD[:4], "--external_test", "12=77",
                                                             "-o", "{ws}/exp"), ["Dataset077_*", "no nnU-Net raw dataset"]),
    ("experiment-external-test-target-not-evaluated", DEMO, lambda ws: (_copy_source(ws, 17), _copy_source(ws, 18), [
        "nnunet_mt", *JVD[:4], "17", "--targets", "17", "--external_test", "12=18", "-o", str(ws / "exp")])[2],
     ["--external_test 12=18", "Dataset012_CorticalPlateMR is not evaluated"]),
    ("experiment-external-test-other-labels", DEMO, lambda ws: (_copy_source(ws, 17, {"background": 0, "lesion": 1}), [
        "nnunet_mt", *JVD[:4], "--external_test", "12=17", "-o", str(ws / "exp")])[1],
     ["Dataset017_CorticalPlateMR: foreground labels ['lesion']", "Dataset012_CorticalPlateMR's ['cortical_plate']"]),
    ("experiment-external-test-twice", DEMO, lambda ws: (_copy_source(ws, 17), [
        "nnunet_mt", *JVD[:4], "--external_test", "12=17", "12=17", "-o", str(ws / "exp")])[1],
     ["--external_test 12=17 12=17", "listed twice"]),
    ("experiment-external-test-id-range", DEMO, lambda ws: (_copy_source(ws, 17), [
        "nnunet_mt", *JVD[:4], "--external_test", "12=17", "--id", "998", "-o", str(ws / "exp")])[1],
     ["--id 998", "up to id 1000"]),
    ("experiment-ood-scores-of-other-methods", DEMO, lambda ws: (  # an -o reused with another --method or model
        _copy_source(ws, 17), (ws / "exp").mkdir(), (ws / "exp/output_models.json").write_text(
            '{"scores/in_distribution": "/elsewhere/T__nnUNetPlans__3d_fullres/fold_0 --method entropy"}'),
        ["nnunet_mt", "experiment", "ood", "--train", "12", "--ood", "17", "--method", "spectral", "-o",
         str(ws / "exp")])[3],
     ["exp/scores/in_distribution", "made by /elsewhere/T__nnUNetPlans__3d_fullres/fold_0 --method entropy",
      "--method spectral; use another -o"]),
    ("experiment-bad-chain", DEMO, lambda ws: ["nnunet_mt", "experiment", "transfer", "-d", "12", "--chains", "12,99",
                                         "-o", str(ws / "exp")], ["--chains 12,99", "'99'"]),
    ("ood-fit-no-checkpoint", DEMO, lambda ws: ["nnunet_mt_ood", "fit", "-d", "12", "-c", "3d_fullres", "-tr",
                                          "nnUNetTrainerMultiTask", "-f", "0", "-device", "cpu"],
     ["checkpoint_final.pth", "checkpoint missing"]),
    ("ood-score-no-signatures", DEMO, lambda ws: (
        os.makedirs(ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0"),
        (ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth").write_text(""),
        ["nnunet_mt_ood", "score", "-i", str(_src(ws, "imagesTs")), "-o", str(ws / "out"), "-d", "12", "-c",
         "3d_fullres", "-tr", "T", "-f", "0", "-device", "cpu"])[2],
     ["spectral_signatures_last.json", "not fitted"]),
    # seed ensembles: --seeds goes with --method seed_ensemble alone; -tr's own seed is no other member; every
    # member's checkpoint is needed (checked before any network is read)
    ("ood-score-seeds-without-seed-ensemble", DEMO, _line("nnunet_mt_ood", *SCORE, "-tr", "T", "--seeds", "1"),
     ["--seeds 1", "for --method seed_ensemble alone"]),
    ("ood-fit-seed-ensemble-without-seeds", DEMO, _line("nnunet_mt_ood", "fit", *MODEL, "-tr", "T", "--method",
                                                       "seed_ensemble"), ["seed_ensemble", "other members' seeds"]),
    ("ood-fit-seeds-own-seed", DEMO, _line("nnunet_mt_ood", "fit", *MODEL, "-tr", "T_seed2", "--seeds", "2",
                                           "--method", "seed_ensemble"), ["--seeds 2", "other than -tr's own (2)"]),
    ("ood-fit-seed-member-missing", DEMO, lambda ws: (
        os.makedirs(ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0"),
        (ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth").write_text(""),
        ["nnunet_mt_ood", "fit", *MODEL, "-tr", "T", "--seeds", "1", "--method", "seed_ensemble"])[2],
     ["T_seed1__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth", "-tr T_seed1 first"]),
    ("ood-evaluate-other-model", DEMO, lambda ws: ["nnunet_mt_ood", "evaluate", _scores(ws, "a", {"trainer": "A"}),
                                             _scores(ws, "b", {"trainer": "B"}), "--ood", "a", "-o", str(ws / "ev")],
     ["b/ood_scores.json", "another model"]),
    ("ood-evaluate-invalid-json", DEMO, lambda ws: ((ws / "bad.json").write_text("[1,"), ["nnunet_mt_ood", "evaluate",
                                              str(ws / "bad.json"), "--ood", "x", "-o", str(ws / "ev")])[1],
     ["bad.json", "cannot read"]),
    ("ood-collect-no-parts", DEMO, lambda ws: ["nnunet_mt_ood", "collect", str(_src(ws, "imagesTs"))],
     ["imagesTs", "no ood_scores.part"]),
    # --- geometry and content, stray endings, output inside input, duplicate parts, checkpoints, calibrate
    # class 3: geometry and content
    ("evaluate-origin-shifted", BARE, evaluate_one_case(pred_geometry={"origin": (0.0, 0.0, 5.0)}), ["pred/case.nii.gz", "origin", "shifted"]),
    ("evaluate-direction-flipped", BARE, evaluate_one_case(pred_geometry={"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}),
     ["pred/case.nii.gz", "direction"]),
    ("evaluate-probabilities-nan", BARE, evaluate_one_case(probabilities=_nan_probabilities), ["pred/case.npz", "NaN or infinite"]),
    ("evaluate-logits", BARE, evaluate_one_case(probabilities=lambda p: 8 * p - 4), ["pred/case.npz", "not probabilities in [0, 1]"]),
    ("evaluate-probabilities-no-sum", BARE, evaluate_one_case(probabilities=lambda p: p * 0.5), ["pred/case.npz", "do not sum to 1"]),
    # class 4: refuse or name, never skip
    ("evaluate-stray-ending-reference", BARE, evaluate_one_case(stray="ref/other.nii"), ["ref/other.nii", "file ending"]),
    ("evaluate-stray-ending-prediction", BARE, evaluate_one_case(stray="pred/other.mha"), ["pred/other.mha", "file ending"]),
    ("merge-stray-image-ending", BARE, _merge("imagesTr/c_0000.nii"), ["imagesTr/c_0000.nii", "file ending"]),
    ("merge-stray-label-ending", BARE, _merge("labelsTr/a.mha"), ["labelsTr/a.mha", "file ending"]),
    ("score-output-is-input", BARE, _score(output="in"), ["in: output folder is the input folder"]),
    ("score-output-inside-input", BARE, _score(output="in/predictions"), ["in/predictions", "inside the input folder"]),
    ("score-stray-ending", BARE, _score(stray=True), ["in/y_0000.nii", "file ending"]),
    ("collect-same-part-twice", BARE, _collect_same_part, ["ood_scores.part_0_of_2.json", "ood_scores.part_00_of_2.json",
                                                     "same part"]),
    ("collect-part-field-contradicts-name", BARE, _collect_contradicting_part,
     ["ood_scores.part_1_of_2.json", "contradicts the file name"]),
    ("collect-zero-parts", BARE, _collect_degenerate("ood_scores.part_0_of_0.json"),
     ["ood_scores.part_0_of_0.json", "not a part of a split"]),
    ("collect-part-beyond-the-split", BARE, _collect_degenerate("ood_scores.part_2_of_2.json"),
     ["ood_scores.part_2_of_2.json", "not a part of a split"]),
    ("collect-part-without-cases", BARE, _collect_degenerate(), ["ood_scores.part_1_of_2.json", "holds no cases"]),
    # class 1: checkpoints read back
    ("score-checkpoint-empty", BARE, _score(checkpoint=lambda p: p.write_bytes(b"")), ["checkpoint_final.pth", "unreadable checkpoint"]),
    ("score-checkpoint-truncated", BARE, _score(checkpoint=lambda p: (torch.save({"x": torch.ones(1000)}, p),
                                                                p.write_bytes(p.read_bytes()[:300]))),
     ["checkpoint_final.pth", "unreadable checkpoint"]),
    ("score-checkpoint-no-weights", BARE, _score(checkpoint=lambda p: torch.save(
        {"trainer_name": "T", "init_args": {"configuration": "3d_fullres"}}, p)),
     ["checkpoint_final.pth", "'network_weights' missing"]),
    ("score-checkpoint-not-a-dict", BARE, _score(checkpoint=lambda p: torch.save([1, 2], p)),
     ["checkpoint_final.pth", "not an nnU-Net checkpoint"]),
    # calibrate (issue 14)
    ("calibrate-apply-without-output", BARE, _calibrate(temperature=1.5, out=False), ["--apply needs -o"]),
    ("calibrate-apply-before-fitting", BARE, _calibrate(), ["fold_0/temperature.json", "no temperature fitted"]),
    ("calibrate-temperature-negative", BARE, _calibrate(temperature=-1.0), ["temperature.json", "must be > 0"]),
    ("calibrate-temperature-nan", BARE, _calibrate(temperature=float("nan")), ["temperature.json", "finite number"]),
    ("calibrate-apply-onto-itself", BARE, lambda ws: _calibrate(temperature=1.5)(ws)[:-1] + [str(ws / "pred")], ["pred: exists"]),
    ("calibrate-without-checkpoint", BARE, _calibrate(apply=False, out=False, checkpoint=False),
     ["checkpoint_final.pth", "checkpoint missing"]),
    ("score-checkpoint-no-configuration", BARE, _score(checkpoint=lambda p: torch.save(
        {"trainer_name": "T", "init_args": {}, "network_weights": {}}, p)),
     ["checkpoint_final.pth", "'init_args.configuration' missing"]),
    # --- files our commands wrote, read back truncated, corrupted or edited by hand
    ("fit-json-truncated", BARE, ood_score_fit(raw_json=json.dumps(GOOD_FIT)[:40]),
     ["spectral_signatures_last.json", "invalid JSON"]),
    ("fit-json-missing-tau", BARE, ood_score_fit(raw_json=json.dumps({k: v for k, v in GOOD_FIT.items() if k != "tau"})),
     ["spectral_signatures_last.json", "'tau' missing"]),
    ("fit-json-nan-C", BARE, ood_score_fit(meta={"C": float("nan")}), ["'C'", "finite number"]),
    ("fit-json-case-ids-not-list", BARE, ood_score_fit(meta={"case_ids": "abc"}), ["'case_ids'", "list of strings"]),
    ("fit-json-a-list", BARE, ood_score_fit(raw_json="[1, 2]"), ["spectral_signatures_last.json", "not a JSON object"]),
    ("fit-json-binary", BARE, ood_score_fit(raw_json=b"\xff\xfe\x00\x01"), ["spectral_signatures_last.json", "not text"]),
    ("fit-npz-corrupt", BARE, ood_score_fit(npz="garbage"), ["spectral_signatures_last.npz", "unreadable"]),
    ("fit-npz-wrong-array", BARE, ood_score_fit(npz="other"), ["spectral_signatures_last.npz", "unreadable"]),
    ("fit-npz-wrong-shape", BARE, ood_score_fit(meta={"n_channels": 5}), ["spectral_signatures_last.npz", "expected"]),
    ("knn-fit-k-zero", BARE, ood_score_knn(0), ["ood_fit_knn_bottleneck.json", "k must be a whole number"]),
    ("knn-fit-k-text", BARE, ood_score_knn("two"), ["ood_fit_knn_bottleneck.json", "k must be a whole number"]),
    ("knn-fit-k-too-large", BARE, ood_score_knn(3), ["ood_fit_knn_bottleneck.json", "at least 4"]),
    ("evaluate-report-truncated", BARE, ood_evaluate_report(raw=json.dumps(GOOD_REPORT)[:30]), ["ood_scores.json", "cannot read"]),
    ("evaluate-score-nan", BARE, ood_evaluate_report(edit=lambda r: r["cases"][0].update(spectral_score=float("nan"))),
     ["ood_scores.json", "'cases[0].spectral_score'", "finite number"]),
    ("evaluate-flag-not-bool", BARE, ood_evaluate_report(edit=lambda r: r["cases"][0].update(spectral_is_ood="no")),
     ["'cases[0].spectral_is_ood'", "true or false"]),
    ("evaluate-tau-missing", BARE, ood_evaluate_report(edit=lambda r: r["methods"]["spectral"].pop("tau")),
     ["'methods.spectral.tau' missing"]),
    ("evaluate-score-missing", BARE, ood_evaluate_report(edit=lambda r: r["cases"][0].pop("spectral_score")),
     ["'cases[0].spectral_score' missing"]),
    ("evaluate-subject-map-missing", BARE, lambda ws: ood_evaluate_report()(ws) + ["--subject_map", str(ws / "s.csv")],
     ["s.csv", "subject map not found"]),
    ("evaluate-subject-map-and-pattern", BARE, lambda ws: ood_evaluate_report()(ws) + ["--subject_map", str(ws / "s.csv"),
                                                                                      "--subject_pattern", "(x)"],
     ["--subject_pattern or --subject_map, not both"]),
    ("evaluate-cases-not-list", BARE, ood_evaluate_report(edit=lambda r: r.update(cases={"a": 1})), ["'cases'", "a list"]),
    ("collect-part-truncated", BARE, ood_collect_parts(raw='{"model": '), ["ood_scores.part_1_of_2.json", "cannot read"]),
    ("collect-part-score-inf", BARE, ood_collect_parts(edit=lambda r: r["cases"][0].update(spectral_score=float("inf"))),
     ["ood_scores.part_1_of_2.json", "finite number"]),
    ("collect-part-no-model", BARE, ood_collect_parts(edit=lambda r: r.pop("model")), ["ood_scores.part_1_of_2.json", "'model' missing"]),
    # --- numbers and choices, refused by the parser before any work
    *[_number(*row) for row in [
        ("nnunet_mt", ["demo-data", "-o", "{ws}/demo", "--seed", "-1"], "--seed", "outside"),
        ("nnunet_mt", ["demo-data", "-o", "{ws}/demo", "-d", "1000"], "-d", "outside [1, 999]"),
        ("nnunet_mt", ["demo-data", "-o", "{ws}/demo", "-d", "12.5"], "-d", "not an integer"),
        ("nnunet_mt", ["demo-data", "-o", "{ws}/demo", "--n_test", "0"], "--n_test", "outside"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "0"], "-o", "outside [1, 999]"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "600", "--alpha", "nan"], "--alpha", "not a finite number"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "600", "--alpha", "inf"], "--alpha", "not a finite number"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "600", "--alpha", "-0.5"], "--alpha", "outside [0, 1]"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "600", "--alpha", "half"], "--alpha", "not a number"),
        ("nnunet_mt", EVALUATE + ["--n_bins", "0"], "--n_bins", "outside"),
        ("nnunet_mt", EVALUATE + ["-np", "0"], "-np", "outside"),
        ("nnunet_mt", JVD + ["--seed", "-3"], "--seed", "outside"),
        ("nnunet_mt", JVD + ["--budget", "0"], "--budget", "outside"),
        ("nnunet_mt", JVD + ["--joint_budget", "0"], "--joint_budget", "outside"),
        ("nnunet_mt", JVD + ["--id", "1000"], "--id", "outside [1, 999]"),
        ("nnunet_mt", JVD + ["--id", "999"], "--id 999", "up to id 1001"),  # derived ids: the dedicated datasets' too
        ("nnunet_mt", JVD + ["--parts", "0"], "--parts", "outside"),
        ("nnunet_mt", JVD + ["-npp", "-1"], "-npp", "outside"),
        ("nnunet_mt", OOD_EXP + ["--mc_samples", "0"], "--mc_samples", "outside"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-C", "nan"], "-C", "not a finite number"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-C", "-1"], "-C", "outside [0, inf]"),
        ("nnunet_mt_ood", ["fit", *MODEL, "--mc_samples", "0"], "--mc_samples", "outside"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-step_size", "0"], "-step_size", "outside (0, 1]"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-step_size", "1.5"], "-step_size", "outside (0, 1]"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-num_parts", "0"], "-num_parts", "outside"),
        ("nnunet_mt_ood", SCORE + ["-C", "inf"], "-C", "not a finite number"),
        ("nnunet_mt_ood", SCORE + ["-step_size", "nan"], "-step_size", "not a finite number"),
        ("nnunet_mt_ood", SCORE + ["-part_id", "-1"], "-part_id", "outside"),
        ("nnunet_mt_ood", SCORE + ["-npp", "-2"], "-npp", "outside"),
        ("nnunet_mt_ood", SCORE + ["--window_order", "fast"], "--window_order", "invalid choice"),
        ("nnunet_mt_ood", ["fit", *MODEL, "--window_order", "rows"], "--window_order", "invalid choice"),
    ]],
    # --- nnU-Net's folder variables unset
    *[_unset(*row) for row in [
        ("nnunet_mt_ood", ["fit", *MODEL, "-tr", "nnUNetTrainerMultiTask"], "nnUNet_results"),
        ("nnunet_mt_ood", ["fit", *MODEL, "-tr", "nnUNetTrainerMultiTask"], "nnUNet_preprocessed"),
        ("nnunet_mt_ood", ["score", "-i", "{ws}/in", "-o", "{ws}/out", *MODEL, "-tr", "nnUNetTrainerMultiTask"],
         "nnUNet_results"),
        ("nnunet_mt", ["evaluate", "-ref", "{ws}/in", "-pred", "{ws}/in", "-d", "12"], "nnUNet_raw"),
        ("nnunet_mt", ["share-plans", "-s", "500", "-t", "12"], "nnUNet_raw"),
        ("nnunet_mt", ["share-plans", "-s", "500", "-t", "12"], "nnUNet_preprocessed"),
        ("nnunet_mt", ["experiment", "joint-vs-dedicated", "-d", "12", "13", "-o", "{ws}/exp"], "nnUNet_results"),
        ("nnunet_mt", ["merge", "-d", "12", "-o", "600"], "nnUNet_raw"),
    ]],
]

# the rows that go through the installed console scripts: every command's real entry point, exit code included
SUBPROCESS_ROWS = {"merge-dataset-json-invalid", "evaluate-prediction-missing", "demo-data-unknown-dataset",
                   "experiment-unknown-dataset", "ood-score-no-signatures"}  # one per command


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small valid raw folder (demo Dataset012: 5 training + 1 test case) to copy for each DEMO row."""
    from dataclasses import replace
    from nnunet_mt.demo_data import DEMO_DATASETS, write_dataset
    root = tmp_path_factory.mktemp("pristine")
    ds = next(d for d in DEMO_DATASETS if d.dataset_id == 12)
    write_dataset(replace(ds, n_train=5, n_test=1), str(root / "raw"))
    return root


def _files(ws):
    return {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_refused(row, pristine, tmp_path, monkeypatch, capsys):
    name, workspace, setup, needles = row
    ws = tmp_path
    if workspace == DEMO:
        shutil.copytree(pristine / "raw", ws / "raw")
    for sub in ("raw", "pre", "res", "in"):
        (ws / sub).mkdir(exist_ok=True)
    env = nnunet_env(ws)
    if workspace.startswith("no "):
        env.pop(workspace[3:])
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
        if var in env:
            monkeypatch.setenv(var, env[var])
    command = setup(ws)
    before = _files(ws)
    if name in SUBPROCESS_ROWS:
        result = run([os.path.join(BIN, command[0]), *command[1:]], env, check=False, process=True)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        from nnunet_mt.cli import main as nnunet_mt
        from nnunet_mt_ood.cli import main as nnunet_mt_ood
        code, out, err = run_main({"nnunet_mt": nnunet_mt, "nnunet_mt_ood": nnunet_mt_ood}[command[0]],
                                  command[1:], capsys)
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), err
    assert _files(ws) == before  # nothing written, nothing changed, the user's source data included


def test_every_subprocess_row_exists_and_every_command_runs_as_a_process():
    names = [r[0] for r in ROWS]
    assert len(names) == len(set(names)) and SUBPROCESS_ROWS <= set(names)
    assert {n.split("-")[0] for n in SUBPROCESS_ROWS} >= {"merge", "evaluate", "demo", "experiment", "ood"}
