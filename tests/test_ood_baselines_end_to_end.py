"""OOD baselines end to end: a short dropout model, every method fitted and scored, then evaluated."""
import json
import os

import numpy as np
import pytest

from conftest import BIN, run

pytestmark = pytest.mark.slow
TRAINER = "nnUNetTrainerMultiTaskDropoutCPU_2epochs"
METHODS = ["spectral", "mahalanobis", "msp", "entropy", "mcdropout"]


@pytest.fixture(scope="module")
def dropout_model(demo_raw):
    """The cortical-plate demo dataset alone (a 'dedicated' model) with dropout, through nnU-Net's commands."""
    root, env = demo_raw
    run([os.path.join(BIN, "nnUNetv2_plan_and_preprocess"), "-d", "12", "-c", "3d_fullres", "-np", "1"], env)
    run([os.path.join(BIN, "nnUNetv2_train"), "12", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0"))
    common = ["-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-device", "cpu", "--disable_tta",
              "--mc_samples", "2"]
    run([os.path.join(BIN, "nnunet_mt_ood"), "fit", *common, "--method", *METHODS], env)
    return root, env, common


def test_every_method_scores_and_evaluates(dropout_model, tmp_path):
    root, env, common = dropout_model
    fold = root / "res" / "Dataset012_CorticalPlateMR" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"
    mc = json.load(open(fold / "ood_fit_mcdropout.json"))
    assert mc["mc_samples"] == 2 and len(mc["train_scores"]) == 6 and mc["tau"] > 0
    maha = np.load(fold / "ood_fit_mahalanobis_bottleneck.npz")["features"]
    assert maha.shape == (6, 14 * 8)
    reports = []
    for name, ds in (("id", "Dataset012_CorticalPlateMR"), ("ood", "Dataset014_HippocampusMR")):
        out = tmp_path / name
        run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(root / "raw" / ds / "imagesTs"), "-o", str(out),
             *common, "--method", *METHODS, "-npp", "0", "-nps", "0"], env)
        reports.append(out / "ood_scores.json")
        report = json.load(open(out / "ood_scores.json"))
        assert set(report["methods"]) == set(METHODS) and len(report["cases"]) == 4
        for row in report["cases"]:
            for m in METHODS:
                assert row[f"{m}_is_ood"] == (row[f"{m}_score"] > report["methods"][m]["tau"])
            assert 0 <= row["msp_score"] <= 0.5 and 0 <= row["entropy_score"] <= np.log(2) + 1e-9
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
    assert "| method | accuracy | sensitivity | specificity | AUC |" in r.stdout
    assert (tmp_path / "eval.png").is_file() and (tmp_path / "eval.md").is_file()


def test_evaluate_refuses_scores_of_another_model(dropout_model, tmp_path):
    root, env, _ = dropout_model
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"model": {"trainer": "X"}, "methods": {}, "cases": []}))
    b.write_text(json.dumps({"model": {"trainer": "Y"}, "methods": {}, "cases": []}))
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "evaluate", str(a), str(b), "--ood", "x*"], env, check=False)
    assert r.returncode == 2 and "b.json" in r.stderr and "another model" in r.stderr and "Traceback" not in r.stderr
