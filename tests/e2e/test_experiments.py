"""``nnunet_mt experiment``: the paper's three protocols end to end at a tiny budget, through nnU-Net's CLI."""
import json
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import BIN, nnunet_env, run

pytestmark = pytest.mark.slow
TRAINER = "nnUNetTrainerMultiTaskSmoke"  # 2 epochs of 5 iterations
FAST = ["-tr", TRAINER, "-device", "cpu", "-npp", "0", "-nps", "0", "-np", "1", "--disable_tta"]


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    env = dict(nnunet_env(root), nnUNet_n_proc_DA="0")
    run([os.path.join(BIN, "nnunet_mt"), "demo-data", "-d", "12", "13", "14", "--n_train", "5", "--n_test", "2"], env)
    return root, env


def experiment(env, *args, check=True):
    return run([os.path.join(BIN, "nnunet_mt"), "experiment", *args], env, check=check, timeout=1800)


def _dice(ref, pred):
    return 2 * np.sum(ref & pred) / (np.sum(ref) + np.sum(pred))


@pytest.fixture(scope="module")
def joint_vs_dedicated(small_raw):
    root, env = small_raw
    out = root / "exp_jvd"
    result = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(out), *FAST)
    return root, env, out, result


def _check_copy_equals_nnunet_preprocess(pre, name, env, other):
    """nnUNetv2_preprocess of dataset `name` with its (shared) plans, in another preprocessed folder, gives
    the arrays, segmentations, properties and reference segmentations that share-plans -c copied."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    (other / name).mkdir(parents=True)
    for f in ("nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json"):
        (other / name / f).write_bytes((pre / name / f).read_bytes())
    run([os.path.join(BIN, "nnUNetv2_preprocess"), "-d", name[7:10], "-plans_name", "nnUNetPlans", "-c",
         "3d_fullres", "-np", "1"], {k: v for k, v in dict(env, nnUNet_preprocessed=str(other)).items()
                                     if k != "nnUNet_n_proc_DA"})
    copied, written = (str(p / name / "nnUNetPlans_3d_fullres") for p in (pre, other))
    cases = sorted(infer_dataset_class(written).get_identifiers(written))
    assert cases == sorted(infer_dataset_class(copied).get_identifiers(copied)) and len(cases) == 5
    for case in cases:
        a, b = (infer_dataset_class(f)(f, [case]).load_case(case) for f in (copied, written))
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))  # image
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))  # segmentation
        assert sorted(a[3]) == sorted(b[3])  # properties, incl. the foreground locations sampled in training
        for key in a[3]:
            np.testing.assert_equal(a[3][key], b[3][key])
    labels_copied, labels_written = (p / name / "gt_segmentations" for p in (pre, other))
    assert sorted(os.listdir(labels_copied)) == sorted(os.listdir(labels_written))
    for f in os.listdir(labels_written):
        assert (labels_copied / f).read_bytes() == (labels_written / f).read_bytes()


def test_joint_vs_dedicated_table_matches_files(joint_vs_dedicated):
    root, env, out, result = joint_vs_dedicated
    table = json.loads((out / "table_II.json").read_text())
    assert [(r["method"], r["data"]) for r in table] == [
        ("dedicated", "CorticalPlateMR"), ("dedicated", "ProstateMR"), ("joint", "CorticalPlateMR"),
        ("joint", "ProstateMR")]
    for name in ("table_II.md", "table_II.csv", "table_II.png"):
        assert (out / name).stat().st_size > 0
    # where each model stopped, from its convergence.json: the 2-epoch cap, before the rule could act
    for row in table:
        assert row["training"]["trainer"] == TRAINER and row["training"]["epochs"] == 2
        assert row["training"]["converged"] is False and row["training"]["window_iterations"] == 10
    # no spectral fit at the end of an experiment's training (no table here uses one); the log says how to fit
    fold = root / "res/Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0"
    assert not any(fold.glob("spectral_signatures_*"))
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "Spectral OOD fit skipped (nnUNet_mt_fit_after_training=0); fit later with: nnunet_mt_ood fit -d " \
           "Dataset500_MultiTask" in log
    # nor a final validation (the tables use the test cases); nnUNetv2_train --val runs it later, as the log says
    redo = f"nnUNetv2_train Dataset500_MultiTask 3d_fullres 0 -tr {TRAINER} -p nnUNetPlans --val"
    assert f"Final validation skipped (nnUNet_mt_final_validation=0); run it later with: {redo}" in log
    assert not (fold / "validation").exists()
    run([os.path.join(BIN, redo.split()[0]), *redo.split()[1:], "-device", "cpu"],
        dict(env, nnUNet_mt_final_validation="0"))  # --val validates whatever the variable says
    assert json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0
    md = (out / "table_II.md").read_text()
    assert "| 2 ep., cap |" in md and "paper normalization, no test-time mirroring" in md
    assert "ECE/MCE/NLL/Brier counted over: reference bounding box + 5 voxels (same voxels for every model)" in md
    merged = json.loads((root / "raw/Dataset500_MultiTask/dataset.json").read_text())
    assert merged["nnunet_mt"]["normalization"] == "paper"  # the experiment's default
    # same plans and same cases: each dedicated dataset has the joint plans (but its own name) and the joint
    # folds restricted to its source; its preprocessed arrays, copied from the joint dataset by share-plans -c,
    # are what a real nnUNetv2_preprocess with those plans writes (data, segmentation, properties)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    pre = root / "pre"
    _check_copy_equals_nnunet_preprocess(pre, "Dataset502_ProstateMR", env, root / "pre_by_nnunet")
    joint_plans = json.loads((pre / "Dataset500_MultiTask/nnUNetPlans.json").read_text())
    joint_splits = json.loads((pre / "Dataset500_MultiTask/splits_final.json").read_text())
    for name, prefix in (("Dataset501_CorticalPlateMR", "D012_"), ("Dataset502_ProstateMR", "D013_")):
        plans = json.loads((pre / name / "nnUNetPlans.json").read_text())
        assert plans["dataset_name"] == name
        assert plans["configurations"]["3d_fullres"] == joint_plans["configurations"]["3d_fullres"]
        splits = json.loads((pre / name / "splits_final.json").read_text())
        assert splits == [{k: [c for c in f[k] if c.startswith(prefix)] for k in ("train", "val")}
                          for f in joint_splits]
        assert all(f["val"] for f in splits)  # stratified joint folds: every source validates in every fold
        folder = pre / name / "nnUNetPlans_3d_fullres"
        assert sorted(infer_dataset_class(str(folder)).get_identifiers(str(folder))) == \
            sorted(splits[0]["train"] + splits[0]["val"])
        log = next((root / "res" / name / f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0").glob("training_log_*.txt"))
        assert "Using splits from existing split file" in log.read_text()
    # three real models in nnU-Net's results layout: the joint one saw both sources, each dedicated one only its own
    joint = json.loads((root / "res/Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres" /
                        "dataset.json").read_text())
    assert sorted(joint["nnunet_mt"]["sources"]) == ["Dataset012_CorticalPlateMR", "Dataset013_ProstateMR"]
    dedicated = json.loads((root / "raw/Dataset502_ProstateMR/dataset.json").read_text())
    assert list(dedicated["nnunet_mt"]["sources"]) == ["Dataset013_ProstateMR"]
    # independent check of one cell: Dice recomputed with numpy from the written segmentations and labels
    for row in table:
        pred_dir = out / "predictions" / row["method"] / row["data"]
        ref_dir = root / "raw" / ("Dataset501_CorticalPlateMR" if row["data"] == "CorticalPlateMR" else
                                  "Dataset502_ProstateMR") / "labelsTs"
        dices = [_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(ref_dir / f))) > 0,
                       sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f))) > 0)
                 for f in sorted(os.listdir(ref_dir))]
        assert row["n_cases"] == 2
        assert row["dice"]["mean"] == pytest.approx(np.mean(dices), abs=1e-9)
        assert row["dice"]["std"] == pytest.approx(np.std(dices), abs=1e-9)
        row["dices"] = dices
    # paired differences joint - dedicated over subjects (here one case each: 2 subjects per dataset), with the
    # mean recomputed from the numpy Dice values above
    paired = json.loads((out / "table_II_paired.json").read_text())
    assert [(p["method"], p["reference"], p["data"]) for p in paired] == [
        ("joint", "dedicated", "CorticalPlateMR"), ("joint", "dedicated", "ProstateMR")]
    by_key = {(r["method"], r["data"]): r["dices"] for r in table}
    for p in paired:
        differences = np.subtract(by_key[("joint", p["data"])], by_key[("dedicated", p["data"])])
        assert p["dice"]["difference"] == pytest.approx(differences.mean(), abs=1e-9)
        assert p["dice"]["n_subjects"] == 2 and len(p["dice"]["interval"]) == 2
        assert p["dice"]["interval"][0] <= p["dice"]["difference"] <= p["dice"]["interval"][1]
    assert "**Paired differences** (method minus dedicated" in md
    # iterations on each test dataset's source: the joint model's 10 iterations split by the sampling shares
    # (4 training cases per source in fold 0: equal shares), each dedicated model's 10 its own
    assert "| 2 ep., cap | 5 |" in md and "| 2 ep., cap | 10 |" in md


def test_rerun_is_idempotent(joint_vs_dedicated):
    root, env, out, _ = joint_vs_dedicated
    checkpoint = root / "res/Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth"
    before = checkpoint.stat().st_mtime_ns, (out / "table_II.csv").read_text()
    result = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(out), *FAST)
    assert "17 steps, 17 done already" in result.stdout
    assert "$ " not in result.stdout  # no command ran
    assert (checkpoint.stat().st_mtime_ns, (out / "table_II.csv").read_text()) == before
    jobs = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(out), *FAST, "--print_jobs")
    assert jobs.stdout.splitlines() == ["# write the tables", "nnunet_mt experiment joint-vs-dedicated -d 12 13:1,2 "
                                        f"-o {out} " + " ".join(FAST) + " --tables_only"]
    # planned afresh on fold 1: each dedicated dataset must be trainable on that fold only (a source with fewer
    # subjects than folds cannot validate in every fold)
    fresh = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(root / "exp_fresh_fold"), *FAST,
                       "--id", "540", "-f", "1", "--print_jobs").stdout
    shares = [line for line in fresh.splitlines() if "nnunet_mt share-plans " in line]
    assert len(shares) == 2 and all(" -s 540 " in line and line.endswith(" -c 3d_fullres -f 1") for line in shares)
    # --joint_budget caps the joint model alone: only it trains again (a variant of its own), the dedicated
    # models are reused; the folder of the first run holds the other joint model's predictions and is refused
    refused = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(out), *FAST, "--joint_budget",
                         "4", "--print_jobs", check=False)
    assert refused.returncode == 2 and f"{out}/predictions/joint/CorticalPlateMR: made by " in refused.stderr
    joint_cap = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "-o", str(root / "exp_joint_cap"), *FAST,
                           "--joint_budget", "4", "--print_jobs").stdout
    trainings = [line for line in joint_cap.splitlines() if "nnUNetv2_train " in line]
    assert len(trainings) == 1 and f" 500 3d_fullres 0 -tr {TRAINER}_4epochs " in trainings[0] + " "


def test_external_test_set(joint_vs_dedicated):
    """--external_test 12=17: Dataset017's test cases (new subjects of Dataset012's generator) as a further test
    set of the target's dedicated model and of the joint model; the trained models are reused, and the rows'
    Dice is that of the prediction files against Dataset017's own labels."""
    root, env, _, _ = joint_vs_dedicated
    run([os.path.join(BIN, "nnunet_mt"), "demo-data", "-d", "12", "--as_id", "17", "--n_train", "5", "--n_test", "3"],
        env)
    out = root / "exp_external"
    result = experiment(env, "joint-vs-dedicated", "-d", "12", "13:1,2", "--targets", "12", "--external_test", "12=17",
                        "-o", str(out), *FAST)
    assert "nnUNetv2_train" not in result.stdout  # the models of the first run
    table = {(r["method"], r["data"]): r for r in json.loads((out / "table_II.json").read_text())}
    assert sorted(table) == [(m, d) for m in ("dedicated", "joint") for d in ("CorticalPlateMR",
                                                                                "CorticalPlateMR@Dataset017")]
    owners = json.loads((out / "output_models.json").read_text())
    labels = root / "raw/Dataset017_CorticalPlateMR/labelsTs"
    for method, model in (("dedicated", "Dataset501_CorticalPlateMR"), ("joint", "Dataset500_MultiTask")):
        row = table[(method, "CorticalPlateMR@Dataset017")]
        assert row["n_cases"] == 3 and row["source"] == "CorticalPlateMR"
        assert owners[f"predictions/{method}/CorticalPlateMR@Dataset017"].startswith(str(root / "res" / model))
        per_case = json.loads(open(row["metrics_file"]).read())["per_case"]
        for case in per_case:  # D017_corticalplatemr_005 ... against the source's own label file
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / (case["case"][5:] + ".nii.gz")))) == 1
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "predictions" / method /
                                                             "CorticalPlateMR@Dataset017" / (case["case"] + ".nii.gz"))))
            assert case["dice"] == pytest.approx(_dice(ref, pred == 1), abs=1e-6)
    md = (out / "table_II.md").read_text()
    # iterations on the external rows are those on the target's source (4 training cases of 8 in fold 0: half)
    assert "| CorticalPlateMR@Dataset017 | 3 |" in md and md.count("| 2 ep., cap | 5 |") == 2


def test_transfer_job_list_run_by_hand(joint_vs_dedicated):
    """The printed job list, run by bash, finishes the experiment: the in-process run then has nothing left."""
    root, env, _, _ = joint_vs_dedicated
    out = root / "exp_jvd"  # shared with table II: the dedicated and joint predictions are reused
    args = ["transfer", "-d", "12", "13:1,2", "--chains", "12,13", "-o", str(out), *FAST]
    jobs = experiment(env, *args, "--print_jobs").stdout
    commands = [line for line in jobs.splitlines() if not line.startswith("#")]
    # joint and dedicated models and their predictions are reused: only the fine-tuning step trains and predicts
    assert sum("nnUNetv2_predict " in c for c in commands) == 1
    trainings = [c for c in commands if "nnUNetv2_train " in c]
    assert len(trainings) == 1 and all("-pretrained_weights" in c and c.startswith(
        "nnUNet_mt_final_validation=0 nnUNet_mt_fit_after_training=0 nnUNet_results=") for c in trainings)
    by_bash = subprocess.run(["bash", "-e", "-c", jobs], env=env, capture_output=True, text=True, timeout=1800)
    assert by_bash.returncode == 0, by_bash.stderr[-3000:]
    assert by_bash.stdout.count("Loading pretrained weights") == 1
    by_hand = (out / "table_III.csv").read_text()
    rerun = experiment(env, *args)
    assert "$ " not in rerun.stdout
    assert (out / "table_III.csv").read_text() == by_hand
    table = json.loads((out / "table_III.json").read_text())
    assert [(r["method"], r["data"]) for r in table] == [
        ("CorticalPlateMR", "CorticalPlateMR"), ("CorticalPlateMR -> ProstateMR", "ProstateMR"),
        ("joint", "CorticalPlateMR"), ("joint", "ProstateMR")]
    # the fine-tuned model lives in the experiment folder, started from the dedicated weights at half the rate
    fold = out / "models/CorticalPlateMR-ProstateMR/Dataset502_ProstateMR" / \
        f"{TRAINER}_finetune__nnUNetPlans__3d_fullres/fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)


def test_ood_experiment(joint_vs_dedicated):
    """spectral and entropy on the joint model of table II (reused: no training), held-out Dataset014 as OOD."""
    root, env, _, _ = joint_vs_dedicated
    out = root / "exp_ood"
    args = ["ood", "--train", "12", "13:1,2", "--ood", "14", "-o", str(out), *FAST]
    result = experiment(env, *args, "--method", "spectral", "entropy")
    assert "nnUNetv2_train" not in result.stdout  # the joint model exists already
    # trained without the end-of-training fit (table II's run): the experiment fits spectral as a step of its own
    assert "fit spectral on the training images of Dataset500_MultiTask" in result.stdout
    evaluation = json.loads((out / "table_IV.json").read_text())
    assert set(evaluation["methods"]) == {"spectral", "entropy"}
    assert evaluation["n_in_distribution"] == 4 and evaluation["n_ood"] == 2
    assert (out / "table_IV.png").stat().st_size > 0 and (out / "scores/in_distribution/ood_histogram.png").is_file()
    # the counts agree with the per-case flags of the scores files
    cases = [c for name in ("in_distribution", "Dataset014_HippocampusMR")
             for c in json.loads((out / "scores" / name / "ood_scores.json").read_text())["cases"]]
    assert evaluation["methods"]["spectral"]["tp"] == sum(c["spectral_is_ood"] for c in cases
                                                          if c["case"].startswith("hippocampus"))
    assert evaluation["methods"]["spectral"]["fp"] == sum(c["spectral_is_ood"] for c in cases
                                                          if c["case"].startswith("D01"))
    # failure detection: every scored folder has labels, so the Dice of each case's segmentation (foreground)
    failure = evaluation["failure"]
    labels = {"in_distribution": root / "raw/Dataset500_MultiTask/labelsTs",
              "Dataset014_HippocampusMR": root / "raw/Dataset014_HippocampusMR/labelsTs"}
    by_hand = [_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(labels[name] / f"{c['case']}.nii.gz"))) > 0,
                     sitk.GetArrayFromImage(sitk.ReadImage(str(out / "scores" / name / f"{c['case']}.nii.gz"))) > 0)
               for name in labels for c in json.loads((out / "scores" / name / "ood_scores.json").read_text())["cases"]]
    assert failure["n_cases"] == 6 and np.allclose(failure["dice"], by_hand)
    assert "Failure detection over 6 cases" in (out / "table_IV.md").read_text()
    # in a fresh folder, before the merge has written the joint dataset's labelsTs, failure detection is still planned
    # (and with subjects declared, the seed ensemble's evaluation resamples them too, as the single model's does)
    fresh = experiment(env, "ood", "--train", "12", "13:1,2", "--ood", "14", "-o", str(root / "exp_ood_fresh"), *FAST,
                       "--id", "530", "--method", "spectral", "--ensemble_seeds", "1",
                       "--subject_pattern", "^(.*)_00[0-9]$", "--print_jobs").stdout
    assert any("nnunet_mt merge " in line and " -o 530 " in line for line in fresh.splitlines())
    evaluations = [line for line in fresh.splitlines() if "nnunet_mt_ood evaluate" in line]
    assert len(evaluations) == 2  # the model's table IV and the seed ensemble's
    for evaluate in evaluations:
        assert f"-ref {root}/raw/Dataset530_MultiTask/labelsTs {root}/raw/Dataset014_HippocampusMR/labelsTs" in evaluate
        assert "--subject_pattern '^(.*)_00[0-9]$'" in evaluate
    # the folder's scores and table are spectral's and entropy's of this model: another method set is refused
    # (the mcdropout of the default scores with the _dropout variant), not answered with these scores as done
    refused = experiment(env, *args, "--print_jobs", check=False)
    assert refused.returncode == 2 and f"{out}/scores/Dataset014_HippocampusMR: made by {root}/res/Dataset500_MultiTask/" \
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0 --method spectral entropy, not by this run's " in refused.stderr
    owners = json.loads((out / "output_models.json").read_text())
    assert sorted(owners) == ["scores/Dataset014_HippocampusMR", "scores/in_distribution", "table_IV"]
    assert owners["table_IV"].endswith("--method spectral entropy --ood Dataset014_HippocampusMR")
    out = root / "exp_ood_jobs"
    args = ["ood", "--train", "12", "13:1,2", "--ood", "14", "-o", str(out), *FAST]
    # with mcdropout (the default) the experiment trains the _dropout variant and fits it: the job list
    jobs = experiment(env, *args, "--print_jobs").stdout
    assert f"nnUNetv2_train 500 3d_fullres 0 -tr {TRAINER}_dropout -device cpu --c" in jobs
    assert f"-tr {TRAINER}_dropout" in jobs and "--method mcdropout" in jobs
    # --ensemble_folds: the other fold trained, the ensemble fitted, scored on the same images, evaluated
    jobs = experiment(env, *args, "--method", "spectral", "--ensemble_folds", "1", "--print_jobs").stdout
    assert f"nnUNetv2_train 500 3d_fullres 1 -tr {TRAINER} -device cpu --c" in jobs
    assert f"nnunet_mt_ood fit -d Dataset500_MultiTask -c 3d_fullres -tr {TRAINER} -p nnUNetPlans -f 0 1 " in jobs
    assert jobs.count("--method ensemble") == 3  # fit, and the in-distribution and OOD folders scored
    assert str(out / "table_IV_ensemble") in jobs and str(out / "scores_ensemble/Dataset014_HippocampusMR") in jobs
    # --ensemble_seeds: the experiment's fold trained with seeds 1 and 2, the seed ensemble fitted, scored, evaluated
    jobs = experiment(env, *args, "--method", "spectral", "--ensemble_seeds", "1", "2", "--print_jobs").stdout
    for seed in (1, 2):
        assert f"nnUNetv2_train 500 3d_fullres 0 -tr {TRAINER}_seed{seed} -device cpu --c" in jobs
    assert (f"nnunet_mt_ood fit -d Dataset500_MultiTask -c 3d_fullres -tr {TRAINER} -p nnUNetPlans -f 0 --seeds 1 2 "
            f"-device cpu --disable_tta --method seed_ensemble") in jobs
    assert jobs.count("--method seed_ensemble") == 3  # fit, and the in-distribution and OOD folders scored
    assert str(out / "table_IV_seed_ensemble") in jobs and \
        str(out / "scores_seed_ensemble/Dataset014_HippocampusMR") in jobs
    refused = experiment(env, *args, "--ensemble_seeds", "0", "--print_jobs", check=False)
    assert refused.returncode == 2 and "other than -tr's own (0)" in refused.stderr.strip().splitlines()[-1]


def test_taken_dataset_id_is_refused(joint_vs_dedicated):
    root, env, _, _ = joint_vs_dedicated
    result = experiment(env, "joint-vs-dedicated", "-d", "12", "14", "-o", str(root / "exp_bad"), *FAST, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Dataset500_MultiTask" in errors[0] and "--id" in errors[0]
    assert not (root / "exp_bad").exists()
