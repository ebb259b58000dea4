"""scripts/gpu_check.sh cannot rot: its CPU dry run (GPU_CHECK_DEVICE=cpu) runs here on the session's trained
smoke model, and its report fails on a failed check."""
import importlib.util
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, TRAINER

MODEL = f"{TRAINER}__nnUNetPlans__3d_fullres"


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(trained, tmp_path):
    root, env = trained
    work, out = tmp_path / "work", tmp_path / "out"
    # the session's preprocessed data and smoke model: the script skips the steps that made them
    for src, dst in (("raw", "raw"), ("pre", "preprocessed")):
        shutil.copytree(root / src / "Dataset500_MultiTask", work / dst / "Dataset500_MultiTask")
    shutil.copytree(root / "res" / "Dataset500_MultiTask" / MODEL, work / "results" / "Dataset500_MultiTask" / MODEL)
    checkpoint = work / "results" / "Dataset500_MultiTask" / MODEL / "fold_0" / "checkpoint_final.pth"
    trained_at = checkpoint.stat().st_mtime_ns
    run_env = dict(env, GPU_CHECK_DEVICE="cpu", GPU_CHECK_WORK=str(work), GPU_CHECK_OUT=str(out))
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh")], env=run_env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert checkpoint.stat().st_mtime_ns == trained_at  # the model found was used, not trained again

    report = json.loads((out / "gpu_check_cpu.json").read_text())
    assert report["failures"] == []
    steps = report["steps"]
    train = [s for s in steps if s["step"] == "train"]
    # the dry run: our CPU recipe alone, spectral alone (the GPU run adds nnUNetTrainer and mahalanobis)
    assert [s["label"] for s in train] == ["nnUNetTrainerMultiTaskCPU"]
    assert train[0]["patch_size"] == [32, 32, 32] and train[0]["batch_size"] == 2  # the CPU recipe
    assert all(s["iterations_per_second"] > 0 and s["peak_gpu_mib"] is None for s in train)
    runs = {s["label"]: s for s in steps if s["step"] == "run"}
    assert sorted(runs) == sorted(["nnUNetv2_predict, test images", "score spectral, test images",
                                   "nnUNetv2_predict, large volume", "score spectral, large volume",
                                   "score spectral on the CPU, 3 test images"])
    assert all(s["exit_code"] == 0 and s["seconds"] > 0 for s in runs.values())
    # on the CPU both sides of each comparison are the same computation: exact agreement
    signatures = next(s for s in steps if s["step"] == "signatures")
    assert len(signatures["max_abs_difference"]) == 2 and max(signatures["max_abs_difference"].values()) == 0.0
    assert all(signatures["decisions_agree"].values()) and max(signatures["difference_over_tau"].values()) == 0.0
    assert signatures["tau"] > 0
    pairs = [s for s in steps if s["step"] == "segmentations"]
    assert len(pairs) == 3 and all(set(s["voxel_agreement"].values()) == {1.0} for s in pairs)
    assert sorted(len(s["voxel_agreement"]) for s in pairs) == [1, 2, 2]  # the large volume; test images
    assert set(report["ratios"]) == {f"spectral_{k}_{scale}" for k in ("time", "peak_rss")
                                     for scale in ("test_images", "large_volume")}
    assert all(v > 0 for v in report["ratios"].values())
    assert "all checks passed" in (out / "gpu_check_cpu.md").read_text()
    # the "large" volume: the requested size at the model's spacing, predicted whole
    plans = json.loads((work / "results" / "Dataset500_MultiTask" / MODEL / "plans.json").read_text())
    seg = sitk.ReadImage(str(work / "predictions" / "large_predict" / "large.nii.gz"))
    assert sitk.GetArrayViewFromImage(seg).shape == (40, 64, 64)
    spacing_zyx = np.asarray(plans["configurations"]["3d_fullres"]["spacing"])[np.argsort(plans["transpose_forward"])]
    assert np.allclose(seg.GetSpacing()[::-1], spacing_zyx)


def test_gpu_check_report_fails_on_a_failed_check(tmp_path):
    gpu_check = _gpu_check_module()
    record = tmp_path / "record.jsonl"
    entries = [{"step": "signatures", "label": "signatures cuda vs cpu", "device": "cuda", "tau": 0.01,
                "max_abs_difference": {"a": 1e-3, "b": 2e-3}, "tolerance_over_tau": 0.05,
                "difference_over_tau": {"a": 0.01, "b": 0.08}, "decisions_agree": {"a": False, "b": True},
                "distance_over_tau": {"a": [1.001, 0.999], "b": [0.5, 0.58]}},
               {"step": "segmentations", "label": "predict vs spectral", "device": "cuda",
                "voxel_agreement": {"a": 1.0, "b": 0.9995}, "minimum": 0.999},
               {"step": "run", "label": "score spectral, large volume", "command": "nnunet_mt_ood score", "exit_code": 2,
                "seconds": 1.0, "peak_gpu_mib": None, "peak_rss_mib": 100.0}]
    record.write_text("\n".join(json.dumps(e) for e in entries))
    code = gpu_check.main(["report", "--record", str(record), "--json", str(tmp_path / "g.json"),
                           "--markdown", str(tmp_path / "g.md")])
    failures = json.loads((tmp_path / "g.json").read_text())["failures"]
    # a flipped decision, a distance difference beyond 5 % of tau, the failed command; 0.9995 passes
    assert code == 1 and len(failures) == 3
    assert "decision differs for a" in failures[0] and "0.080 tau > 0.05 tau" in failures[1]
    assert "exit code 2" in failures[2]
    assert "**FAILED**" in (tmp_path / "g.md").read_text()


def test_gpu_check_ratios_are_ours_over_nnunets():
    """Known answers: iterations/s and voxels/s of the two trainers, time and memory of score over predict."""
    gpu_check = _gpu_check_module()
    train = lambda label, its, patch, gpu: {"step": "train", "label": label, "iterations_per_second": its,
                                            "batch_size": 2, "patch_size": patch, "peak_gpu_mib": gpu,
                                            "peak_rss_mib": 1000.0}
    run = lambda label, seconds, gpu: {"step": "run", "label": label, "seconds": seconds, "peak_gpu_mib": gpu,
                                       "peak_rss_mib": 500.0}
    ratios = gpu_check.summarize([train("ours", 2.0, [96, 96, 96], 8000.0),
                                  train("nnUNetTrainer", 4.0, [64, 128, 128], 4000.0),
                                  run("nnUNetv2_predict, test images", 10.0, 100.0),
                                  run("score spectral, test images", 12.0, 150.0),
                                  run("score mahalanobis, test images", 15.0, None),
                                  run("nnUNetv2_predict, large volume", 20.0, 400.0)])
    assert ratios == pytest.approx({
        "training_iterations_per_second": 0.5, "training_voxels_per_second": 0.5 * 96 ** 3 / (64 * 128 * 128),
        "training_peak_gpu": 2.0, "training_peak_rss": 1.0,
        "spectral_time_test_images": 1.2, "spectral_peak_gpu_test_images": 1.5, "spectral_peak_rss_test_images": 1.0,
        "mahalanobis_time_test_images": 1.5, "mahalanobis_peak_rss_test_images": 1.0})  # no GPU figure: none


def test_gpu_check_judges_signatures_by_decision_and_distance_over_tau():
    """Known answers: training signatures e1, e2, e3 (tau from their leave-one-out distances); a case whose
    distance crosses tau between the sides disagrees, however small its component difference."""
    from nnunet_mt_ood.detector import SpectralOODDetector
    gpu_check = _gpu_check_module()
    train = np.eye(3)
    detector = SpectralOODDetector(c=0.0).fit(train)  # leave-one-out distances all sqrt(2): tau = sqrt(2)
    assert detector.threshold_ == pytest.approx(np.sqrt(2))
    u = np.array([1.0, 0.0, 0.0])
    distance = lambda t: np.sqrt((1 + t) ** 2 + 2 * t ** 2)  # from (-t, -t, -t) to the nearest e_i
    near = {"in": u, "edge": np.full(3, -0.30)}  # edge: distance 1.3675 < tau = 1.4142
    moved = {"in": u + [0.0, 0.01, 0.0], "edge": np.full(3, -0.36)}  # edge: 1.4522 > tau
    entry = gpu_check.signature_agreement(detector, moved, near)
    assert entry["decisions_agree"] == {"edge": False, "in": True}
    assert entry["difference_over_tau"]["edge"] == pytest.approx((distance(0.36) - distance(0.30)) / np.sqrt(2))
    assert entry["difference_over_tau"]["in"] == pytest.approx(0.01 / np.sqrt(2))
    assert entry["max_abs_difference"] == {"edge": pytest.approx(0.06), "in": pytest.approx(0.01)}


def test_gpu_check_volume_is_ct_like_at_the_plans_spacing(tmp_path):
    gpu_check = _gpu_check_module()
    like = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16))
    like.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(like, str(tmp_path / "like.nii.gz"))
    plans = {"transpose_forward": [2, 0, 1], "configurations": {"3d_fullres": {"spacing": [0.5, 3.0, 0.8]}}}
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    gpu_check.main(["volume", "-o", str(tmp_path / "v_0000.nii.gz"), "--shape", "10", "20", "30",
                    "--like", str(tmp_path / "like.nii.gz"), "--plans", str(tmp_path / "plans.json")])
    image = sitk.ReadImage(str(tmp_path / "v_0000.nii.gz"))
    array = sitk.GetArrayFromImage(image)
    # axis k of the transposed image is axis transpose_forward[k] of the original: z 3.0, y 0.8, x 0.5 mm
    assert array.shape == (10, 20, 30) and np.allclose(image.GetSpacing(), (0.5, 0.8, 3.0))
    assert image.GetOrigin() == (1.0, 2.0, 3.0)
    assert array[5, 10, 15] == 120 and array[0, 0, 0] == -1000 and array[5, 10, 2] == 40
