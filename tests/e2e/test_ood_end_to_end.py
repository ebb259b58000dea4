"""Spectral OOD on the end-to-end model: streaming equals brute force, fit after training, score CLI."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import BIN, CASES, TRAINER, assert_refused, nnunet_env, run

pytestmark = pytest.mark.slow


def _fold_dir(root):
    return root / "res" / "Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"


def _brute_force_signature(predictor, data, gaussian):
    """Assemble the whole feature map explicitly (windows weighted by nnU-Net's own Gaussian, un-mirrored), then
    numpy SVD."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunet_mt_ood.features import feature_module
    patch = predictor.configuration_manager.patch_size
    padded, revert = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
    windows = predictor._internal_get_sliding_window_slicers(padded.shape[1:])
    module, use_input = feature_module(predictor.network, "last")
    captured = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append((i[0] if use_input else o)[0]))
    features = weights = None
    with torch.no_grad():
        for sl in windows:
            captured.clear()
            predictor.network(padded[sl][None])
            f = captured[0].float()
            if features is None:
                features = torch.zeros((f.shape[0], *padded.shape[1:]))
                weights = torch.zeros(padded.shape[1:])
            features[(slice(None), *sl[1:])] += f * gaussian
            weights[sl[1:]] += gaussian
    handle.remove()
    full = (features / weights)[(slice(None), *revert[1:])].reshape(features.shape[0], -1).double().numpy()
    s = np.linalg.svd(full.T, compute_uv=False)
    return np.log(s) / np.linalg.norm(np.log(s)), len(windows)


def _predictor_and_case(root, mirroring=True, step=0.5):
    from nnunet_mt.nnunet_glue import preprocessed_dataset
    from nnunet_mt_ood.predictor import OODPredictor
    predictor = OODPredictor(tile_step_size=step, use_mirroring=mirroring, device=torch.device("cpu"),
                             allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(_fold_dir(root).parent), (0,), "checkpoint_final.pth")
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.enable_ood("last")
    folder = str(root / "pre/Dataset500_MultiTask/nnUNetPlans_3d_fullres")
    case = "D011_liverct_000"  # 48^3 with a 32^3 patch: 8 overlapping windows at step 0.5 and 0.75, 27 at 0.25
    data = torch.from_numpy(np.asarray(preprocessed_dataset(folder, [case]).load_case(case)[0])).float()
    return predictor, data


@pytest.mark.parametrize("mirroring,step,windows", [(True, 0.5, 8), (False, 0.5, 8), (False, 0.75, 8),
                                                    (False, 0.25, 27)])  # 0.25 unmirrored: 27 x 8 calls took 3 min
def test_contract_streamed_signature_equals_brute_force(trained, mirroring, step, windows, monkeypatch):
    """The signature streamed inside nnU-Net's sliding-window prediction equals the explicitly assembled
    feature map's, with test-time mirroring on and off and nnU-Net's -step_size 0.5, 0.75 (on a 48^3 image
    with a 32^3 patch the same 2 x 2 x 2 grid as 0.5) and 0.25 (3 x 3 x 3 windows). The window weights are
    the Gaussian nnU-Net's sliding window itself computed (recorded from its call, not copied constants)."""
    from nnunetv2.inference import predict_from_raw_data
    root, _ = trained
    predictor, data = _predictor_and_case(root, mirroring, step)
    nnunets, used = predict_from_raw_data.compute_gaussian, []

    def recording(*args, **kwargs):
        used.append(nnunets(*args, **kwargs))
        return used[-1]
    recording.cache_clear = nnunets.cache_clear
    monkeypatch.setattr(predict_from_raw_data, "compute_gaussian", recording)
    streamed = predictor.image_signature(data)
    assert len(used) == 1  # one Gaussian for the image, as nnU-Net blends every window with it
    expected, n_windows = _brute_force_signature(predictor, data, used[0].float().cpu())
    assert n_windows == windows
    np.testing.assert_allclose(streamed, expected, atol=1e-4)
    assert predictor._accumulators["last"].voxels == 48 ** 3


def test_memory_window_order_keeps_signature_and_logits(trained):
    """window_order="memory" on a 40 x 48 x 48 crop (patch 32^3: the first axis overlaps most, so it goes
    innermost): the windows come in another order, fewer cells are open at once, the signature is the same
    and the logits differ from nnU-Net's order only by the rounding of nnU-Net's float16 sum."""
    root, _ = trained
    predictor, data = _predictor_and_case(root, mirroring=False)
    data = data[:, :40]
    results = {}
    for order in ("nnunet", "memory"):
        predictor.enable_ood("last", window_order=order)
        logits = predictor.predict_sliding_window_return_logits(data)
        results[order] = (logits.float(), predictor.last_signature(), [s[1:] for s in predictor._slicers],
                          predictor._accumulators["last"].peak_open_bytes)
    (l_n, s_n, w_n, peak_n), (l_m, s_m, w_m, peak_m) = results["nnunet"], results["memory"]
    assert sorted(map(str, w_n)) == sorted(map(str, w_m)) and w_n != w_m
    assert [(w[1].start, w[2].start, w[0].start) for w in w_m] == sorted((w[1].start, w[2].start, w[0].start)
                                                                         for w in w_n)
    assert peak_m < peak_n
    np.testing.assert_allclose(s_m, s_n, atol=1e-6)
    # nnU-Net sums overlapping windows' logits in float16: another order rounds differently, no more
    np.testing.assert_allclose(l_m.numpy(), l_n.numpy(), rtol=0, atol=2e-2)
    assert np.abs(l_m.numpy() - l_n.numpy()).max() > 0  # (the half-precision sum does depend on the order)
    assert (l_m.argmax(0) != l_n.argmax(0)).float().mean() < 1e-3
    with pytest.raises(ValueError, match="window_order"):
        predictor.enable_ood("last", window_order="fast")


@pytest.mark.parametrize("mirroring,calls_per_window", [(True, 8), (False, 1)])
def test_contract_nnunet_window_and_call_order(trained, mirroring, calls_per_window):
    """What the feature hooks assume of nnU-Net's sliding window (nnunetv2 2.8): the windows are predicted in
    the order `_internal_get_sliding_window_slicers` returns them, one window per network call, each window
    in 1 + 7 mirrored calls (1 without mirroring), the un-mirrored call first."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    root, _ = trained
    predictor, data = _predictor_and_case(root, mirroring)
    inputs = []
    handle = predictor.network.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
    try:
        predictor.image_signature(data)
    finally:
        handle.remove()
    padded, _ = pad_nd_image(data, predictor.configuration_manager.patch_size, "constant", {"value": 0}, True, None)
    slicers = predictor._slicers
    assert len(inputs) == calls_per_window * len(slicers) and len(slicers) == 8
    for k, sl in enumerate(slicers):
        group = inputs[k * calls_per_window:(k + 1) * calls_per_window]
        window = padded[sl][None]
        assert all(x.shape == window.shape for x in group)
        assert torch.equal(group[0], window)  # un-mirrored first
        flips = [next((axes for axes in _flip_sets() if torch.equal(x, torch.flip(window, axes))), None)
                 for x in group[1:]]
        assert None not in flips and len(set(flips)) == calls_per_window - 1  # every mirror combination once


def _flip_sets():
    from itertools import combinations
    return [c for n in (1, 2, 3) for c in combinations((2, 3, 4), n)]


def test_contract_out_of_memory_fallback_restarts_the_signature(trained):
    """nnU-Net retries a window loop that raised RuntimeError (out of GPU memory) with its results on the CPU;
    the accumulators restart with it, so the signature equals an uninterrupted one. The CPU takes that path
    too when perform_everything_on_device is set (nnU-Net compares the device with the string 'cpu')."""
    root, _ = trained
    predictor, data = _predictor_and_case(root, mirroring=False)
    expected = predictor.image_signature(data)
    calls = []

    def fail_once(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
    predictor.perform_everything_on_device = True
    handle = predictor.network.register_forward_pre_hook(fail_once)
    try:
        streamed = predictor.image_signature(data)
    finally:
        handle.remove()
    assert len(calls) == 3 + 8  # 2 windows and the failing call, then all 8 again
    np.testing.assert_allclose(streamed, expected, atol=1e-6)
    assert predictor._accumulators["last"].voxels == 48 ** 3


def test_training_fits_signatures_next_to_checkpoint(trained):
    from nnunet_mt_ood import SpectralOODDetector
    fold = _fold_dir(trained[0])
    meta = json.load(open(fold / "spectral_signatures_last.json"))
    signatures = np.load(fold / "spectral_signatures_last.npz")["signatures"]
    split = json.load(open(trained[0] / "pre/Dataset500_MultiTask/splits_final.json"))[0]["train"]
    assert meta["case_ids"] == split and signatures.shape == (len(split), 4)  # the smoke network: 4 first-stage features
    assert meta["layer"] == "last" and meta["C"] == 2.5 and meta["model"]["trainer"] == TRAINER
    assert set(meta["sources"]) == {"Dataset011_LiverCT", "Dataset012_CorticalPlateMR", "Dataset013_ProstateMR"}
    np.testing.assert_allclose(np.linalg.norm(signatures, axis=1), 1.0)
    assert meta["tau"] == pytest.approx(SpectralOODDetector(2.5).fit(signatures).threshold_)
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))  # the fit ran as its own command
    assert f"Spectral OOD fit: spectral: {len(split)} training images, last layer, 4 values each; tau = " in log


def test_fit_command_bottleneck_layer(trained, tmp_path):
    """`fit --layer bottleneck` through the CLI, on one part of the training images (the whole fit is 51 images
    of ~2 s each; parts merge exactly: tests/e2e/test_scale_out.py)."""
    root, env = trained
    fold = _fold_dir(root)
    auto = np.load(fold / "spectral_signatures_last.npz")["signatures"]
    # (the last-layer refit from checkpoint_final.pth equals these to 1e-6: tests/e2e/test_scale_out.py, in parts)
    assert auto.shape == (51, 4)
    try:
        r = run([os.path.join(BIN, "nnunet_mt_ood"), "fit", "-d", "500", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                 "-device", "cpu", "--layer", "bottleneck", "-num_parts", "8", "-part_id", "0"], env, process=True)
        assert "part 0 of 8: 7 of 51 training images" in r.stdout
        with np.load(fold / "ood_fit_parts/part_0_of_8.npz") as part:
            signatures = part["values_spectral"]
        assert signatures.shape == (7, 4 * 8)  # 4 stages: 4 * 2**3 bottleneck channels
        np.testing.assert_allclose(np.linalg.norm(signatures, axis=1), 1.0, rtol=1e-9)  # L2-normalised
        assert json.loads((fold / "ood_fit_parts/part_0_of_8.json").read_text())["layer"] == "bottleneck"
        assert not (fold / "spectral_signatures_bottleneck.json").exists()  # a part alone fits nothing
    finally:
        for ending in (".npz", ".json"):
            (fold / f"ood_fit_parts/part_0_of_8{ending}").unlink(missing_ok=True)


def test_score_writes_nnunet_outputs_and_ood_report(predicted, tmp_path):
    root, nnunet_out = predicted
    env = nnunet_env(root)  # the same settings as nnUNetv2_predict's run (nnUNet_def_n_proc sets its threads, and
    # CPU convolutions round differently with another thread count)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in CASES:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    ood_case = "hippocampusmr_010"  # a held-out dataset
    os.link(root / "raw/Dataset014_HippocampusMR/imagesTs" / f"{ood_case}_0000.nii.gz",
            inputs / f"{ood_case}_0000.nii.gz")
    out = tmp_path / "out"
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(inputs), "-o", str(out), "-d", "500",
             "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-npp", "0", "-nps", "0", "-device", "cpu",
             "--save_probabilities", "--plot"], env, process=True)  # the console script, in its own interpreter
    report = json.load(open(out / "ood_scores.json"))
    rows = {row["case"]: row for row in report["cases"]}
    assert set(rows) == set(CASES) | {ood_case}
    for case in CASES:  # voxel for voxel what nnUNetv2_predict wrote
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(nnunet_out / f"{case}.nii.gz")))
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(np.load(out / f"{case}.npz")["probabilities"],
                                   np.load(nnunet_out / f"{case}.npz")["probabilities"])
    meta = json.load(open(_fold_dir(root) / "spectral_signatures_last.json"))
    tau = report["methods"]["spectral"]["tau"]
    assert tau == pytest.approx(meta["tau"])
    sources = sorted(set(meta["sources"]))
    for row in rows.values():
        assert row["spectral_is_ood"] == (row["spectral_score"] > tau)
        assert row["nearest_training_case"] in meta["case_ids"]
        # the distance to each source's nearest signature: the smallest is the score, from the nearest source
        distances = {s: row[f"distance_to_{s}"] for s in sources}
        assert min(distances.values()) == pytest.approx(row["spectral_score"])
        assert min(distances, key=distances.get) == row["nearest_source"]
        assert row["decision"] == ("flag" if row["spectral_is_ood"] else "accept")
    assert "flagged OOD" in r.stdout and (out / "ood_histogram.png").is_file() and (out / "ood_signatures.png").is_file()
    assert "decisions (spectral): {" in r.stdout and "nearest training source: {" in r.stdout
    csv_header = open(out / "ood_scores.csv").readline().strip()
    assert csv_header == ",".join(["case", "spectral_score", "spectral_is_ood", "nearest_training_case", "nearest_source"]
                                  + [f"distance_to_{s}" for s in sources] + ["decision"])


def _score_refused(env, args, *needles):
    assert_refused([os.path.join(BIN, "nnunet_mt_ood"), "score", *args], env, *needles)


def test_score_refusals(trained, tmp_path):
    root, env = trained
    base = ["-d", "500", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-npp", "0", "-nps", "0", "-device", "cpu"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    import nibabel
    affine = np.eye(4)
    affine[0, 1] = 0.5  # sheared: no orthonormal direction cosines
    sheared = nibabel.Nifti1Image(np.zeros((40, 40, 40), np.float32), affine)
    sheared.set_qform(None, code=0)
    sheared.set_sform(affine, code=1)
    nibabel.save(sheared, str(inputs / "skewed_0000.nii.gz"))
    _score_refused(env, ["-i", str(inputs), "-o", str(tmp_path / "o"), *base], "skewed_0000.nii.gz",
                   "orthonormal")
    os.remove(inputs / "skewed_0000.nii.gz")
    shutil.copyfile(root / "raw/Dataset500_MultiTask/imagesTs/D011_liverct_040_0000.nii.gz", inputs / "a_0000.nii.gz")
    shutil.copyfile(inputs / "a_0000.nii.gz", inputs / "a_0001.nii.gz")
    _score_refused(env, ["-i", str(inputs), "-o", str(tmp_path / "o"), *base], "2 channel files", "expects 1")
    _score_refused(env, ["-i", str(inputs), "-o", str(tmp_path / "o"), *base, "--layer", "bottleneck"],
                   "spectral_signatures_bottleneck.json", "nnunet_mt_ood fit")
    _score_refused(env, ["-i", str(inputs), "-o", str(tmp_path / "o"), *base, "--method", "mcdropout"],
                   "ood_fit_mcdropout.json", "--method mcdropout")
    assert not (tmp_path / "o").exists()
