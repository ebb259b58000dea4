"""`nnunet_mt calibrate` on the session's trained smoke model, then `nnunet_mt_ood score --save_probabilities`
with and without the fitted temperature: real commands, real files."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, CASES, TRAINER, run
from nnunet_mt.temperature import scale_probabilities

MODEL = f"{TRAINER}__nnUNetPlans__3d_fullres"
pytestmark = pytest.mark.slow
SOURCES = {"Dataset011_LiverCT", "Dataset012_CorticalPlateMR", "Dataset013_ProstateMR"}


@pytest.fixture(scope="module")
def calibrated(trained, tmp_path_factory):
    """A copy of the trained model (the session's model stays uncalibrated), calibrated per source."""
    root, env = trained
    results = tmp_path_factory.mktemp("calibrated_results")
    shutil.copytree(root / "res/Dataset500_MultiTask" / MODEL, results / "Dataset500_MultiTask" / MODEL)
    env = dict(env, nnUNet_results=str(results))
    r = run([os.path.join(BIN, "nnunet_mt"), "calibrate", "-d", "500", "-f", "0", "-tr", TRAINER, "-device", "cpu",
             "--disable_tta", "--per_source", "--objective", "nll"], env, process=True)  # Guo et al.'s fit: T != 1
    fold = results / "Dataset500_MultiTask" / MODEL / "fold_0"
    return root, env, fold, json.loads((fold / "temperature.json").read_text()), r.stdout


def test_calibrate_fits_on_the_validation_fold(calibrated):
    root, _, _, fit, stdout = calibrated
    splits = json.loads((root / "pre/Dataset500_MultiTask/splits_final.json").read_text())
    assert fit["cases"] == sorted(splits[0]["val"]) and fit["region"] == "reference bounding box + 5 voxels"
    # the smoke model was trained without --npz: nnU-Net's predictor ran on the validation images
    assert fit["probabilities_from"] == \
        "nnU-Net's predictor (as nnUNetv2_predict --save_probabilities) on the validation images"
    assert set(fit["per_source"]) == set(fit["sources"]) <= SOURCES and len(fit["per_source"]) >= 2
    for group in fit["fit"].values():
        assert 0.05 <= group["temperature"] <= 20 and group["voxels"] > 0
        assert group["after"]["nll"] <= group["before"]["nll"]  # never worse on the fitting voxels
    assert fit["temperature"] == fit["fit"]["all"]["temperature"]
    assert f"all: T = {fit['temperature']:.3f}" in stdout


def test_score_writes_calibrated_probabilities_and_the_same_segmentation(calibrated, tmp_path):
    root, env, fold, fit, _ = calibrated
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in CASES[:2]:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    score = [os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(inputs), "-d", "500", "-c", "3d_fullres",
             "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta",
             "--save_probabilities"]
    run(score + ["-o", str(tmp_path / "calibrated")], env)
    run(score + ["-o", str(tmp_path / "raw"), "--no_calibration"], env)
    report = json.loads((tmp_path / "calibrated/ood_scores.json").read_text())
    assert report["calibration"]["temperature"] == fit["temperature"]
    assert "calibration" not in json.loads((tmp_path / "raw/ood_scores.json").read_text())
    for row in report["cases"]:
        case = row["case"]
        expected_t = (fit["per_source"][row["nearest_source"]] if not row["spectral_is_ood"] else fit["temperature"])
        assert row["temperature"] == expected_t
        raw = np.load(tmp_path / "raw" / f"{case}.npz")["probabilities"]
        calibrated_p = np.load(tmp_path / "calibrated" / f"{case}.npz")["probabilities"]
        assert np.allclose(calibrated_p, scale_probabilities(raw, expected_t), atol=1e-6)
        assert expected_t == 1.0 or not np.allclose(calibrated_p, raw, atol=1e-4)
        segs = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"{case}.nii.gz"))) for d in ("raw", "calibrated")]
        assert np.array_equal(*segs)  # temperature scaling keeps the argmax: the same segmentation
        assert np.mean((calibrated_p.argmax(0) > 0) == (segs[0] > 0)) > 0.999


def test_apply_calibrates_a_copy_of_an_nnunet_prediction_folder(calibrated, predicted, tmp_path):
    """calibrate --apply: nnUNetv2_predict's own output folder, copied with the global T; the original stays."""
    _, env, _, fit, _ = calibrated
    _, prediction = predicted
    before = {f: (prediction / f).read_bytes() for f in os.listdir(prediction)}
    apply = [os.path.join(BIN, "nnunet_mt"), "calibrate", "-d", "500", "-f", "0", "-tr", TRAINER,
             "--apply", str(prediction), "-o", str(tmp_path / "applied")]
    run(apply, env)
    assert {f: (prediction / f).read_bytes() for f in os.listdir(prediction)} == before
    assert sorted(os.listdir(tmp_path / "applied")) == sorted(before)
    for case in CASES:
        raw = np.load(prediction / f"{case}.npz")["probabilities"]
        applied = np.load(tmp_path / "applied" / f"{case}.npz")["probabilities"]
        assert np.allclose(applied, scale_probabilities(raw, fit["temperature"]), atol=1e-6)
        assert (tmp_path / "applied" / f"{case}.nii.gz").read_bytes() == before[f"{case}.nii.gz"]
    again = run(apply, env, check=False)  # the copy exists: refused, nothing touched
    assert again.returncode == 2 and "exists" in again.stderr.strip().splitlines()[-1]


def test_plain_nnunetv2_predict_opt_in_temperature(calibrated, predicted, tmp_path):
    """$nnUNet_mt_temperature=<fold>/temperature.json: plain nnUNetv2_predict (mirroring on, as the session's
    prediction) saves temperature-scaled probabilities and the same segmentation up to exact ties; unset, it is
    the session's own prediction. A bad value and our own commands are refused with one line (exit 2)."""
    root, env, fold, fit, _ = calibrated
    _, uncalibrated = predicted
    predict = [os.path.join(BIN, "nnUNetv2_predict"), "-i", str(root / "pred_inputs"), "-d", "500", "-c", "3d_fullres",
               "-f", "0", "-tr", TRAINER, "-npp", "0", "-nps", "0", "-device", "cpu", "--save_probabilities"]
    r = run(predict + ["-o", str(tmp_path / "t")], dict(env, nnUNet_mt_temperature=str(fold / "temperature.json")))
    t = fit["temperature"]
    assert f"nnunet_mt: logits divided by T = {t:.4g}" in r.stdout and t != 1.0
    for case in CASES:
        segs = [sitk.GetArrayFromImage(sitk.ReadImage(str(d / f"{case}.nii.gz"))) for d in (tmp_path / "t", uncalibrated)]
        raw = np.load(uncalibrated / f"{case}.npz")["probabilities"]
        scaled = np.load(tmp_path / "t" / f"{case}.npz")["probabilities"]
        # nnU-Net blends the windows' logits in float16: dividing them by T before the blend rounds differently,
        # so only exact ties (p = 0.5 to float16 precision) may change label
        flipped = segs[0] != segs[1]
        assert flipped.mean() < 1e-3 and np.all(np.abs(raw.max(0)[flipped] - 0.5) < 1e-3)
        # probabilities: softmax(logits / T) against softmax(log p / T) of the saved uncalibrated p; off by more
        # than rounding only within 3 voxels of the image's faces, where nnU-Net's float16 blending weights are
        # tiny (most at the corners, where three axes' small Gaussian weights multiply: 0.007 at 3 voxels from a
        # corner of the CT case with the smoke network, under 5e-4 from 4 voxels inwards)
        difference = np.abs(scaled - scale_probabilities(raw, t)).max(0)
        assert np.median(difference) < 1e-4 and difference[4:-4, 4:-4, 4:-4].max() < 1e-3
        assert not np.allclose(scaled, raw, atol=1e-3)

    bad = run(predict + ["-o", str(tmp_path / "bad")], dict(env, nnUNet_mt_temperature="-1"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == ("nnunet_mt: error: nnUNet_mt_temperature=-1: the temperature must "
                                                   "be a finite number > 0 (got -1.0)")
    refused = run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(root / "pred_inputs"), "-o",
                   str(tmp_path / "s"), "-d", "500", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-device", "cpu"],
                  dict(env, nnUNet_mt_temperature="1.5"), check=False)
    assert refused.returncode == 2 and "it is for plain nnUNetv2_predict only" in refused.stderr
    assert not (tmp_path / "s").exists()
