"""OOD baselines end to end: a short dropout model, every method fitted and scored, then evaluated."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import BIN, PLAIN_MODEL, run

pytestmark = pytest.mark.slow
TRAINER = "nnUNetTrainerMultiTaskSmoke_dropout"
METHODS = ["spectral", "spectral_centred", "spectral_multilayer", "mahalanobis", "knn", "ihf", "msp", "entropy",
           "mcdropout"]


@pytest.fixture(scope="module")
def dropout_model(plain_model):
    """The cortical-plate demo dataset alone (a 'dedicated' model) with dropout, through nnU-Net's commands
    (preprocessed by nnUNetv2_plan_and_preprocess for the session's plain nnU-Net model)."""
    root, env = plain_model
    run([os.path.join(BIN, "nnUNetv2_train"), "12", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0", nnUNet_mt_final_validation="0"))  # its validation is not used here
    common = ["-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-device", "cpu", "--disable_tta",
              "--mc_samples", "2"]
    run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", *METHODS, "--knn_k", "2"], env)
    return root, env, common


def test_every_method_scores_and_evaluates(dropout_model, tmp_path):
    root, env, common = dropout_model
    fold = root / "res" / "Dataset012_CorticalPlateMR" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"
    mc = json.load(open(fold / "ood_fit_mcdropout.json"))
    assert mc["mc_samples"] == 2 and len(mc["train_scores"]) == 6 and mc["tau"] > 0
    maha = np.load(fold / "ood_fit_mahalanobis_bottleneck.npz")["features"]
    assert maha.shape == (6, 4 * 8)  # the smoke network: 4 * 2**3 bottleneck channels
    knn = np.load(fold / "ood_fit_knn_bottleneck.npz")["features"]
    assert np.array_equal(knn, maha)  # the same pooled bottleneck features, computed once
    from nnunet_mt_ood.baselines import KNNDetector
    knn_fit = json.load(open(fold / "ood_fit_knn_bottleneck.json"))
    assert knn_fit["k"] == 2 and knn_fit["tau"] == pytest.approx(KNNDetector(k=2).fit(knn).threshold_)
    # the spectral variants on the same training images: the multi-layer signature starts with the paper's
    # (last layer) divided by sqrt(2); the centred one has mean 0 and length 1
    paper = np.load(fold / "spectral_signatures_last.npz")["signatures"]
    multilayer = np.load(fold / "ood_fit_spectral_multilayer.npz")["signatures"]
    np.testing.assert_allclose(multilayer[:, :paper.shape[1]] * np.sqrt(2), paper, atol=1e-10)
    assert multilayer.shape == (6, paper.shape[1] + 4 * 8)  # + the bottleneck's 32 channels
    centred = np.load(fold / "ood_fit_spectral_centred_last.npz")["signatures"]
    np.testing.assert_allclose(centred.sum(1), 0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1, atol=1e-10)
    # ihf: each training image's fine histogram (one channel) recomputed from its preprocessed array
    from nnunet_mt.nnunet_glue import preprocessed_dataset
    from nnunet_mt_ood.histogram import IntensityHistogramDetector, fine_intensity_histogram
    ihf_fit = json.load(open(fold / "ood_fit_ihf.json"))
    histograms = np.load(fold / "ood_fit_ihf.npz")["features"]
    folder = str(root / "pre/Dataset012_CorticalPlateMR/nnUNetPlans_3d_fullres")
    dataset = preprocessed_dataset(folder, ihf_fit["case_ids"])
    expected = [fine_intensity_histogram(np.asarray(dataset.load_case(c)[0], np.float32)) for c in ihf_fit["case_ids"]]
    np.testing.assert_allclose(histograms, np.stack(expected), atol=1e-12)
    assert ihf_fit["bins"] == 100 and ihf_fit["tau"] == pytest.approx(
        IntensityHistogramDetector(bins=100).fit(histograms, ihf_fit["subjects"]).threshold_)
    reports = []
    for name, ds in (("id", "Dataset012_CorticalPlateMR"), ("ood", "Dataset014_HippocampusMR")):
        out = tmp_path / name
        maps = ["--save_probabilities", "--save_maps"] if name == "id" else []
        run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(root / "raw" / ds / "imagesTs"), "-o", str(out),
             *common, "--method", *METHODS, "-npp", "0", "-nps", "0", *maps], env)
        reports.append(out / "ood_scores.json")
        report = json.load(open(out / "ood_scores.json"))
        assert set(report["methods"]) == set(METHODS) and len(report["cases"]) == 4
        for row in report["cases"]:
            for m in METHODS:
                assert row[f"{m}_is_ood"] == (row[f"{m}_score"] > report["methods"][m]["tau"])
            assert 0 <= row["msp_score"] <= 0.5 and 0 <= row["entropy_score"] <= np.log(2) + 1e-9
    _check_maps(root / "raw/Dataset012_CorticalPlateMR/imagesTs", tmp_path / "id")
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "evaluate", *map(str, reports), "--ood", "hippocampus*",
             "-o", str(tmp_path / "eval")], env)
    summary = json.load(open(tmp_path / "eval.json"))
    assert summary["n_in_distribution"] == 4 and summary["n_ood"] == 4
    from nnunet_mt_ood.evaluation import roc_auc
    for m in METHODS:
        result = summary["methods"][m]
        assert result["tp"] + result["fn"] == 4 and result["tn"] + result["fp"] == 4
        scores = result["scores_id"] + result["scores_ood"]
        assert result["auc"] == pytest.approx(roc_auc(scores, [False] * 4 + [True] * 4))
    assert "| method | accuracy | sensitivity | specificity | AUC | AUC 95 % interval |" in r.stdout
    assert (tmp_path / "eval.png").is_file() and (tmp_path / "eval.md").is_file()


def _check_maps(images, out):
    """--save_maps: per case an entropy map of the probabilities written and one of the MC-dropout mean, each
    with the input image's size, spacing, origin and direction; no scratch files left."""
    import SimpleITK as sitk
    from nnunet_mt_ood.baselines import voxel_entropy
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert sorted(p.name for p in (out / "maps").iterdir()) == sorted(
        f"{c}_{kind}.nii.gz" for c in cases for kind in ("entropy", "mcdropout_entropy"))
    for case in cases:
        image = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
        for kind in ("entropy", "mcdropout_entropy"):
            m = sitk.ReadImage(str(out / "maps" / f"{case}_{kind}.nii.gz"))
            assert m.GetSize() == image.GetSize() and np.allclose(m.GetSpacing(), image.GetSpacing())
            assert np.allclose(m.GetOrigin(), image.GetOrigin()) and np.allclose(m.GetDirection(), image.GetDirection())
            values = sitk.GetArrayFromImage(m)
            assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= np.log(2) + 1e-6
        with np.load(out / f"{case}.npz") as npz:  # nnU-Net's probabilities, in the image's array layout
            expected = voxel_entropy(npz["probabilities"])
        np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "maps" / f"{case}_entropy.nii.gz"))),
                                   expected, atol=1e-6)
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / "maps" / f"{case}_mcdropout_entropy.nii.gz"))).max() > 0


def test_evaluate_refuses_scores_of_another_model(dropout_model, tmp_path):
    root, env, _ = dropout_model
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"model": {"trainer": "X"}, "spectral_layer": "last", "methods": {}, "cases": []}))
    b.write_text(json.dumps({"model": {"trainer": "Y"}, "spectral_layer": "last", "methods": {}, "cases": []}))
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "evaluate", str(a), str(b), "--ood", "x*"], env, check=False,
            process=True)
    assert r.returncode == 2 and "b.json" in r.stderr and "another model" in r.stderr and "Traceback" not in r.stderr


def test_methods_work_for_nnunets_own_trainer(dropout_model, tmp_path):
    """The session's plain nnU-Net model: nnU-Net's own nnUNetTrainer (its PlainConvUNet with deep supervision),
    trained by nnU-Net's training loop for a tiny budget."""
    root, env, _ = dropout_model
    common = ["-d", "12", "-c", "3d_fullres", "-tr", "nnUNetTrainer", "-f", "0", "-device", "cpu", "--disable_tta"]
    methods = ["spectral", "mahalanobis", "knn", "msp", "entropy"]
    results = tmp_path / "res" / "Dataset012_CorticalPlateMR"
    shutil.copytree(root / "res/Dataset012_CorticalPlateMR" / PLAIN_MODEL, results / PLAIN_MODEL)
    env = dict(env, nnUNet_results=str(tmp_path / "res"))
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", *methods], env)
    assert "spectral: 6 training images, last layer, 32 values each" in r.stdout  # nnU-Net's 32 features
    out = tmp_path / "out"
    run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(root / "raw/Dataset014_HippocampusMR/imagesTs"),
         "-o", str(out), *common, "--method", *methods, "-npp", "0", "-nps", "0"], env)
    report = json.load(open(out / "ood_scores.json"))
    assert set(report["methods"]) == set(methods) and len(report["cases"]) == 4
    refused = run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", "mcdropout"], env, check=False)
    assert refused.returncode == 2 and "needs a network with dropout" in refused.stderr


def test_save_maps_needs_the_probabilities(dropout_model, tmp_path):
    root, env, common = dropout_model
    out = tmp_path / "out"
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(root / "raw/Dataset012_CorticalPlateMR/imagesTs"),
             "-o", str(out), *common, "--method", "spectral", "-npp", "0", "-nps", "0", "--save_maps"], env, check=False)
    assert r.returncode == 2 and "--save_maps needs --save_probabilities" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_seed_ensemble_of_really_trained_seeds(dropout_model, tmp_path):
    """--method seed_ensemble --seeds 1: the model and the same recipe trained on the same fold with seed 1
    (nnUNetv2_train ... -tr <trainer>_seed1). Its probabilities are nnU-Net's multi-model mean of logits, i.e. the
    normalised geometric mean of the two models' own probabilities (nnUNetv2_predict of each); its score is
    1 - Dice between the two models' segmentations; the fit sits in the fold folder of -tr."""
    root, env, _ = dropout_model
    seed_trainer = f"{TRAINER}_seed1"
    run([os.path.join(BIN, "nnUNetv2_train"), "12", "3d_fullres", "0", "-tr", seed_trainer, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0", nnUNet_mt_final_validation="0", nnUNet_mt_fit_after_training="0"))
    common = ["-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "--seeds", "1", "-device", "cpu",
              "--disable_tta"]
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", "seed_ensemble"], env)
    fold = root / "res/Dataset012_CorticalPlateMR" / f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0"
    fit = json.load(open(fold / "ood_fit_ensemble_seeds_1.json"))
    splits = json.load(open(root / "pre/Dataset012_CorticalPlateMR/splits_final.json"))
    assert fit["case_ids"] == sorted(splits[0]["train"]) and fit["model"]["seed_trainers"] == [seed_trainer]
    assert fit["model"]["seeds"] == [1] and len(fit["train_scores"]) == len(fit["case_ids"])
    assert f"seed_ensemble: {len(fit['case_ids'])} training images" in r.stdout

    images, ours = root / "raw/Dataset012_CorticalPlateMR/imagesTs", tmp_path / "ours"
    run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(images), "-o", str(ours), *common,
         "--method", "seed_ensemble", "-npp", "0", "-nps", "0", "--save_probabilities", "--no_calibration"], env)
    members = {}
    for trainer in (TRAINER, seed_trainer):
        members[trainer] = tmp_path / trainer
        run([os.path.join(BIN, "nnUNetv2_predict"), "-i", str(images), "-o", str(members[trainer]), "-d", "12",
             "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps",
             "0", "--save_probabilities"], env)
    import SimpleITK as sitk
    from nnunet_mt_ood.baselines import mean_pairwise_dice
    report = json.load(open(ours / "ood_scores.json"))
    assert set(report["methods"]) == {"seed_ensemble"} and len(report["cases"]) == 4
    for row in report["cases"]:
        case = row["case"]
        p1, p2 = (np.load(members[t] / f"{case}.npz")["probabilities"].astype(np.float64) for t in members)
        geometric = np.sqrt(p1 * p2)  # 0 outside nnU-Net's crop, where it writes no probability
        total = geometric.sum(0)
        np.testing.assert_allclose(np.load(ours / f"{case}.npz")["probabilities"],
                                   geometric / np.where(total > 0, total, 1), atol=2e-3)
        segmentations = [sitk.GetArrayFromImage(sitk.ReadImage(str(members[t] / f"{case}.nii.gz"))) for t in members]
        assert row["seed_ensemble_score"] == pytest.approx(1 - mean_pairwise_dice(segmentations, [1]), abs=1e-6)
        assert row["seed_ensemble_is_ood"] == (row["seed_ensemble_score"] > report["methods"]["seed_ensemble"]["tau"])
    assert max(row["seed_ensemble_score"] for row in report["cases"]) > 0  # two seeds, two different models

    for argv, needle in (([*common, "--method", "spectral"], "for --method seed_ensemble alone"),
                         ([*common[:8], *common[10:], "--method", "seed_ensemble"], "needs the other members' seeds"),
                         ([*common[:9], "0", *common[10:], "--method", "seed_ensemble"], "other than -tr's own (0)"),
                         ([*common[:9], "7", *common[10:], "--method", "seed_ensemble"],
                          f"checkpoint missing (train with nnUNetv2_train ... -tr {TRAINER}_seed7 first)")):
        refused = run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(images), "-o", str(tmp_path / "x"),
                       *argv], env, check=False)  # before any network runs
        assert refused.returncode == 2 and needle in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "x").exists()


def test_ensemble_of_two_folds_scores_disagreement_and_writes_nnunets_ensemble(dropout_model, tmp_path, capsys):
    """--method ensemble with -f 0 1: fold 1 is fold 0's checkpoint with noise added to its weights (training a
    second fold is too slow for CI). The segmentation and probabilities written are those of
    `nnUNetv2_predict -f 0 1`; the score is 1 - Dice between the folds; the fit sits in the model folder."""
    import shutil
    import SimpleITK as sitk
    import torch
    root, env, _ = dropout_model
    model = f"{TRAINER}__nnUNetPlans__3d_fullres"
    results = tmp_path / "res" / "Dataset012_CorticalPlateMR"
    source = root / "res" / "Dataset012_CorticalPlateMR" / model
    shutil.copytree(source, results / model, ignore=shutil.ignore_patterns("validation", "*.npz", "ood_fit*"))
    shutil.copytree(results / model / "fold_0", results / model / "fold_1")
    checkpoint = torch.load(results / model / "fold_1/checkpoint_final.pth", map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for name, weights in checkpoint["network_weights"].items():
        if weights.is_floating_point() and weights.ndim > 1:  # convolution kernels: 30 % noise
            weights += 0.3 * weights.std() * torch.randn(weights.shape, generator=generator)
    torch.save(checkpoint, results / model / "fold_1/checkpoint_final.pth")
    env = dict(env, nnUNet_results=str(tmp_path / "res"))
    common = ["-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "1", "-device", "cpu", "--disable_tta"]
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", "ensemble"], env)
    fit = json.load(open(results / model / "ood_fit_ensemble_folds_0_1.json"))
    splits = json.load(open(root / "pre/Dataset012_CorticalPlateMR/splits_final.json"))
    assert fit["case_ids"] == [c for c in splits[0]["train"] if c in splits[1]["train"]]  # trained on by both
    assert fit["model"]["folds"] == ["0", "1"] and len(fit["train_scores"]) == len(fit["case_ids"]) >= 3
    assert f"ensemble: {len(fit['case_ids'])} training images" in r.stdout

    images = tmp_path / "images"  # two of the test images
    images.mkdir()
    for image in sorted((root / "raw/Dataset012_CorticalPlateMR/imagesTs").iterdir())[:2]:
        os.link(image, images / image.name)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(images), "-o", str(ours), *common,
         "--method", "ensemble", "-npp", "0", "-nps", "0", "--save_probabilities", "--save_maps"], env)
    run([os.path.join(BIN, "nnUNetv2_predict"), "-i", str(images), "-o", str(theirs), "-d", "12", "-c", "3d_fullres",
         "-tr", TRAINER, "-f", "0", "1", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0",
         "--save_probabilities"], env)
    report = json.load(open(ours / "ood_scores.json"))
    assert set(report["methods"]) == {"ensemble"} and len(report["cases"]) == 2
    for row in report["cases"]:
        case = row["case"]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ours / f"{case}.nii.gz"))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(theirs / f"{case}.nii.gz"))))
        np.testing.assert_array_equal(np.load(ours / f"{case}.npz")["probabilities"],
                                      np.load(theirs / f"{case}.npz")["probabilities"])
        assert 0 <= row["ensemble_score"] <= 1 and 0 <= row["ensemble_disagreement"] <= 1
        assert (row["ensemble_score"] > 0) == (row["ensemble_disagreement"] > 0)
        assert row["ensemble_is_ood"] == (row["ensemble_score"] > report["methods"]["ensemble"]["tau"])
    assert max(row["ensemble_score"] for row in report["cases"]) > 0  # the noisy fold disagrees somewhere
    assert sorted(p.name for p in (ours / "maps").iterdir()) == sorted(
        f"{row['case']}_entropy.nii.gz" for row in report["cases"])  # of the ensemble's probabilities

    from nnunet_mt_ood.cli import main  # refusals come before any model is read
    capsys.readouterr()
    assert main(["score", "-i", str(images), "-o", str(tmp_path / "x"), *common, "--method", "spectral"]) == 2
    assert "spectral belong(s) to one model: give one fold" in capsys.readouterr().err
    assert main(["fit", *common[:8], *common[9:], "--method", "ensemble"]) == 2  # -f 0
    assert "--method ensemble needs two or more folds" in capsys.readouterr().err
    assert main(["fit", *common, "--method", "ensemble", "msp"]) == 2
    assert not (tmp_path / "x").exists()
