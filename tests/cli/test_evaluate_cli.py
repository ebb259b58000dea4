"""`nnunet_mt evaluate` on a real nnUNetv2_predict output folder (from the end-to-end fixture)."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, CASES, assert_refused, run
from nnunet_mt.metrics import assd, default_roi, hd95

pytestmark = pytest.mark.slow


def _labels_dir(root, tmp_path, cases):
    ref = tmp_path / "ref"
    ref.mkdir()
    for case in cases:
        os.link(root / "raw/Dataset500_MultiTask/labelsTs" / f"{case}.nii.gz", ref / f"{case}.nii.gz")
    return ref


def _evaluate(env, *args, check=True, process=False):
    return run([os.path.join(BIN, "nnunet_mt"), "evaluate", *args], env, check=check, process=process)


def test_evaluate_real_prediction_folder(predicted, tmp_path):
    root, out = predicted
    env = dict(os.environ, nnUNet_raw=str(root / "raw"))
    ref = _labels_dir(root, tmp_path, CASES)
    r = _evaluate(env, "-ref", str(ref), "-pred", str(out), "-prob", str(out), "-o", str(tmp_path / "m.json"),
                  "--plots", str(tmp_path / "plots"), "-np", "2", process=True)
    report = json.load(open(tmp_path / "m.json"))
    assert set(report["per_source"]) == {"Dataset011_LiverCT", "Dataset012_CorticalPlateMR",
                                         "Dataset013_ProstateMR", "all"}  # grouped by recorded source
    assert "| Dataset011_LiverCT | 1 |" in r.stdout and "HD95 (mm)" in r.stdout
    for row in report["per_case"]:
        ref_img = sitk.ReadImage(str(ref / f"{row['case']}.nii.gz"))
        r_arr = sitk.GetArrayFromImage(ref_img) > 0
        p_arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{row['case']}.nii.gz"))) > 0
        spacing = ref_img.GetSpacing()[::-1]
        expected_dice = 2 * (r_arr & p_arr).sum() / (r_arr.sum() + p_arr.sum())
        assert row["dice"] == pytest.approx(expected_dice)
        assert row["hd95"] == pytest.approx(hd95(p_arr, r_arr, spacing))
        assert row["assd"] == pytest.approx(assd(p_arr, r_arr, spacing))
        assert 0 <= row["ece"] <= row["mce"] <= 1
        # NLL and Brier over the default region (box of reference | prediction, + 5 voxels), by hand
        p = np.load(out / f"{row['case']}.npz")["probabilities"].astype(np.float64)
        box = default_roi(1 - p[0], r_arr)
        labels = r_arr[box].astype(int)
        p_true = np.where(labels == 1, p[1][box], p[0][box])
        assert row["nll"] == pytest.approx(-np.mean(np.log(np.maximum(p_true, 1e-7))), rel=1e-6)
        assert row["brier"] == pytest.approx(np.mean(2 * (1 - p_true) ** 2), rel=1e-3)  # two classes summing to 1
    csv_lines = open(tmp_path / "m.csv").read().splitlines()
    assert csv_lines[0] == "case,source,dice,hd95,assd,ece,mce,nll,brier" and len(csv_lines) == 1 + len(CASES)
    assert sorted(os.listdir(tmp_path / "plots")) == sorted(f"reliability_{s}.png" for s in report["per_source"])


def _assert_refused(env, args, *needles):
    assert_refused([os.path.join(BIN, "nnunet_mt"), "evaluate", *args], env, *needles)


def test_evaluate_refusals(predicted, tmp_path):
    root, out = predicted
    env = dict(os.environ, nnUNet_raw=str(root / "raw"))
    ref = _labels_dir(root, tmp_path, CASES[:1] + ["D011_liverct_041"])
    _assert_refused(env, ["-ref", str(ref), "-pred", str(out), "-o", str(tmp_path / "x.json")],
                    "D011_liverct_041.nii.gz", "prediction missing")
    os.remove(ref / "D011_liverct_041.nii.gz")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    case = CASES[0]
    img = sitk.ReadImage(str(bad / f"{case}.nii.gz"))
    small = sitk.GetImageFromArray(sitk.GetArrayFromImage(img)[:-1])
    small.SetSpacing(img.GetSpacing())
    sitk.WriteImage(small, str(bad / f"{case}.nii.gz"))
    _assert_refused(env, ["-ref", str(ref), "-pred", str(bad), "-o", str(tmp_path / "x.json")], case, "shape")
    shutil.copyfile(out / f"{case}.nii.gz", bad / f"{case}.nii.gz")
    probs = np.load(out / f"{case}.npz")["probabilities"]
    np.savez_compressed(bad / f"{case}.npz", probabilities=probs[:, :-1])
    _assert_refused(env, ["-ref", str(ref), "-pred", str(bad), "-prob", str(bad), "-o", str(tmp_path / "x.json")],
                    f"{case}.npz", "do not match")
    assert not (tmp_path / "x.json").exists()  # nothing half-written
