"""The paths a GPU run takes, on the CPU: nnUNet_compile=t (torch.compile), nnU-Net's autocast (float16 on
CUDA; bfloat16 is the CPU's half type) and nnU-Net's out-of-memory fallback, on the session's demo model.

Compilation uses the ``aot_eager`` backend (the wrapper, graph breaks and hooks are the same as with
inductor, without its minutes of code generation on 2 cores); inductor itself runs in scripts/gpu_check.sh.
"""
import functools
import json
import os

import numpy as np
import pytest
import torch

from conftest import TRAINER, run_main

pytestmark = pytest.mark.slow


def _model_dir(root):
    return root / "res" / "Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres"


def _predictor(root, monkeypatch=None, compiled=False, mirroring=False):
    from nnunet_mt_ood.predictor import OODPredictor
    if compiled:
        monkeypatch.setenv("nnUNet_compile", "t")
        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    predictor = OODPredictor(tile_step_size=0.5, use_mirroring=mirroring, device=torch.device("cpu"),
                             allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(_model_dir(root)), (0,), "checkpoint_final.pth")
    if compiled:
        monkeypatch.setenv("nnUNet_compile", "f")
    return predictor


def _training_images(root, n):
    from nnunet_mt.nnunet_glue import preprocessed_dataset
    folder = str(root / "pre/Dataset500_MultiTask/nnUNetPlans_3d_fullres")
    cases = ["D011_liverct_000", "D012_corticalplatemr_000", "D013_prostatemr_000"][:n]
    dataset = preprocessed_dataset(folder, cases)
    return [torch.from_numpy(np.asarray(dataset.load_case(c)[0])).float() for c in cases]


def test_compiled_network_gives_the_same_signatures_and_logits(trained, monkeypatch):
    """nnUNet_compile=t: nnU-Net's predictor wraps the network in torch.compile's OptimizedModule, whose
    state-dict keys carry `_orig_mod.`. Loading weights (what `fit` does) goes to the original module, the
    feature hooks fire once per window inside the compiled run (outside its graphs), and signatures, pooled
    features and logits equal the uncompiled run's."""
    from torch._dynamo.eval_frame import OptimizedModule
    root, _ = trained
    eager, compiled = _predictor(root), _predictor(root, monkeypatch, compiled=True)
    assert isinstance(compiled.network, OptimizedModule) and not isinstance(eager.network, OptimizedModule)
    with pytest.raises(RuntimeError, match="_orig_mod"):  # what `fit` used to do
        compiled.network.load_state_dict(compiled.list_of_parameters[0])
    compiled.load_parameters(0)
    torch._dynamo.reset()
    for predictor in (eager, compiled):
        predictor.enable_ood("last", layers=["bottleneck"], softmax_scores=True)
    from torch._dynamo.utils import counters
    graphs = []
    for data in _training_images(root, 2):
        expected = eager.image_results(data)
        windows_before = {n: c.captured for n, c in compiled._captures.items()}
        logits_compiled = compiled.predict_sliding_window_return_logits(data)
        got = compiled.last_results(data, logits_compiled)
        windows = len(compiled._slicers)
        assert {n: c.captured - windows_before[n] for n, c in compiled._captures.items()} == \
            {"last": windows, "bottleneck": windows}
        np.testing.assert_allclose(got["signature_last"], expected["signature_last"], atol=1e-5)
        np.testing.assert_allclose(got["pooled_bottleneck"], expected["pooled_bottleneck"], rtol=1e-4, atol=1e-5)
        assert got["max_softmax_score"] == pytest.approx(expected["max_softmax_score"], abs=1e-4)
        logits_eager = eager.predict_sliding_window_return_logits(data)
        np.testing.assert_allclose(logits_compiled.float().numpy(), logits_eager.float().numpy(), atol=2e-2)
        assert (logits_compiled.argmax(0) == logits_eager.argmax(0)).float().mean() > 0.999
        graphs.append(counters["stats"]["unique_graphs"])
    # the network really ran compiled (split into graphs at the hooks), and the second image's 8 windows (the
    # same shapes) compiled nothing new: the hooks do not recompile it per window
    assert graphs[0] >= 3 and graphs[1] == graphs[0], graphs


def test_fit_command_with_compilation_on(trained, monkeypatch, capsys):
    """`nnunet_mt_ood fit` with nnUNet_compile=t (it stopped with 'Unexpected key(s) in state_dict'): a quarter
    of the training images (-num_parts 4 -part_id 0) gives the signatures of the uncompiled fit that ran
    after training, within float tolerance; that fit recorded its device and precision."""
    from nnunet_mt_ood.cli import main
    root, env = trained
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    fold = _model_dir(root) / "fold_0"
    meta = json.loads((fold / "spectral_signatures_last.json").read_text())
    assert meta["prediction"] == {"device": "cpu", "precision": "float32"}
    with np.load(fold / "spectral_signatures_last.npz") as f:
        expected = dict(zip(meta["case_ids"], f["signatures"]))
    monkeypatch.setenv("nnUNet_compile", "t")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    code, out, err = run_main(main, ["fit", "-d", "500", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
                                     "-device", "cpu", "-num_parts", "4", "-part_id", "0"], capsys)
    assert code == 0, err
    assert "Using torch.compile" in out
    with np.load(fold / "ood_fit_parts" / "part_0_of_4.npz") as part:
        cases, values = part["case_ids"].tolist(), part["values_spectral"]
    assert len(cases) >= 5
    np.testing.assert_allclose(values, np.stack([expected[c] for c in cases]), atol=1e-5)


AUTOCAST_ALL = os.environ.get("NNUNET_MT_AUTOCAST_ALL") == "1"


def test_autocast_keeps_every_decision_and_distances_within_5_percent_of_tau(trained):
    """Under autocast (nnU-Net's float16 on CUDA; bfloat16, the CPU's half type, here), features arrive in
    half precision and are accumulated in float32/float64: the spectral distance stays within 5 % of tau of
    the float32 run and the accept/flag decision is unchanged.

    Half-precision convolutions are about 60x slower than float32 on this CPU (15 s per 32^3 window), so the
    suite checks one window (the central 32^3 block) of every source's first test image;
    NNUNET_MT_AUTOCAST_ALL=1 checks every demo test image whole (14 images, 14 minutes; passed 2026-12-05)."""
    from nnunet_mt_ood.features import feature_module
    from nnunet_mt_ood.fit import load_detector
    root, _ = trained
    fold = _model_dir(root) / "fold_0"
    detector, meta = load_detector(str(fold), "spectral", "last")
    predictor = _predictor(root)
    predictor.enable_ood("last")
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    images = root / "raw/Dataset500_MultiTask/imagesTs"
    cases = sorted({p.name[:-len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz")})
    if not AUTOCAST_ALL:
        cases = [next(c for c in cases if c.startswith(prefix)) for prefix in ("D011", "D012", "D013")]
    dtypes = []
    module, _ = feature_module(predictor.network, "last")
    module.register_forward_hook(lambda m, i, o: dtypes.append(i[0].dtype))
    signatures = {"float32": [], "bfloat16": []}
    settings = {}
    for case in cases:
        data, _, _ = preprocessor.run_case([str(images / f"{case}_0000.nii.gz")], None, predictor.plans_manager,
                                           predictor.configuration_manager, predictor.dataset_json)
        data = torch.from_numpy(np.asarray(data)).float()
        if not AUTOCAST_ALL:  # one window: the central patch
            patch = predictor.configuration_manager.patch_size
            data = data[(slice(None), *(slice(max(n - p, 0) // 2, max(n - p, 0) // 2 + p) for n, p in zip(data.shape[1:], patch)))]
        signatures["float32"].append(predictor.image_signature(data))
        settings["float32"] = predictor.prediction_settings()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            signatures["bfloat16"].append(predictor.image_signature(data))
            settings["bfloat16"] = predictor.prediction_settings()
    assert settings == {"float32": {"device": "cpu", "precision": "float32"},
                        "bfloat16": {"device": "cpu", "precision": "bfloat16"}}
    assert torch.bfloat16 in dtypes and torch.float32 in dtypes  # the features did arrive in half precision
    full, half = (detector.score(np.stack(signatures[k])) for k in ("float32", "bfloat16"))
    tau = detector.threshold_
    assert np.abs(half - full).max() < 0.05 * tau, (np.abs(half - full).max() / tau)
    assert np.array_equal(full > tau, half > tau)
    assert np.abs(half - full).max() > 0  # half precision did change the features


def test_contract_out_of_memory_on_the_first_window_falls_back_with_the_same_outputs(trained):
    """nnU-Net's predictor retries a pass that raised (out of GPU memory) with its results on the CPU. With
    the very first window failing: the same logits, signature and pooled features as an uninterrupted pass,
    the accumulators on nnU-Net's results device, and MC dropout (nnU-Net's own pass, fallback included)
    gives the same mean probabilities for the same seed."""
    from nnunet_mt.network import add_dropout_after_convs, original_module
    root, _ = trained
    predictor = _predictor(root)
    add_dropout_after_convs(original_module(predictor.network), 0.1)
    predictor.enable_ood("last", layers=["bottleneck"], mc_dropout_samples=2)
    data = _training_images(root, 1)[0]
    logits = predictor.predict_sliding_window_return_logits(data)
    expected = predictor.last_results(data, logits)
    calls = []

    def fail_first(module, args):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    predictor.perform_everything_on_device = True  # the device path, whose failure nnU-Net retries
    handle = predictor.network.register_forward_pre_hook(fail_first)
    try:
        fallback_logits = predictor.predict_sliding_window_return_logits(data)
        got = predictor.last_results(data, fallback_logits)
    finally:
        handle.remove()
    windows = len(predictor._slicers)
    # 1 failed call, the pass again (fallback), then the 2 MC-dropout passes of last_results
    assert len(calls) == 1 + windows + 2 * windows
    assert torch.equal(fallback_logits, logits)
    np.testing.assert_allclose(got["signature_last"], expected["signature_last"], atol=1e-6)
    np.testing.assert_allclose(got["pooled_bottleneck"], expected["pooled_bottleneck"], atol=1e-6)
    assert all(a.device.type == "cpu" for a in (predictor._accumulators["last"].gram,
                                                predictor._accumulators["bottleneck"].inverse_weight))
    # MC dropout: the same seed, with and without its first window failing
    predictor.perform_everything_on_device = False
    torch.manual_seed(0)
    mean = predictor.mc_dropout_mean_probabilities(data, 2)
    calls.clear()
    predictor.perform_everything_on_device = True
    handle = predictor.network.register_forward_pre_hook(fail_first)
    try:
        torch.manual_seed(0)
        fallback_mean = predictor.mc_dropout_mean_probabilities(data, 2)
    finally:
        handle.remove()
    assert len(calls) == 1 + 2 * windows
    np.testing.assert_allclose(fallback_mean, mean, atol=1e-6)
    deterministic = torch.softmax(logits.float(), 0).numpy()
    assert np.abs(mean - deterministic).max() > 1e-3  # dropout was on in those passes
    assert not any(m.training for m in original_module(predictor.network).modules())  # and off again


def test_prediction_temperature_survives_compilation():
    """The opt-in temperature of plain nnUNetv2_predict (a forward hook on the network our trainer builds) still
    divides the logits when nnU-Net compiles that network (nnUNet_compile=t)."""
    from nnunet_mt.network import build_residual_unet
    from nnunet_mt.prediction_temperature import divide_logits
    torch.manual_seed(0)
    network = build_residual_unet(1, 3, (16, 16, 16)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        plain = network(x)
        divide_logits(network, 2.5)
        compiled = torch.compile(network, backend="aot_eager")
        torch.testing.assert_close(compiled(x), plain / 2.5, atol=1e-5, rtol=1e-5)


def test_mc_dropout_on_a_compiled_network(trained, monkeypatch):
    """MC dropout with nnUNet_compile=t: dropout is switched on inside nnU-Net's compiled passes (the pre-hook
    runs outside the graphs), the passes differ from the deterministic prediction and from each other, their
    mean is close to the uncompiled MC mean, and dropout is off again afterwards."""
    from nnunet_mt.network import add_dropout_after_convs, original_module
    root, _ = trained
    data = _training_images(root, 2)[1]  # the cortical plate case: one window (the liver case has 8)
    means = {}
    for compiled in (False, True):
        predictor = _predictor(root, monkeypatch, compiled=compiled)
        add_dropout_after_convs(original_module(predictor.network), 0.1)
        predictor.enable_ood("last", mc_dropout_samples=4)
        deterministic = torch.softmax(predictor.predict_sliding_window_return_logits(data).float(), 0).numpy()
        torch.manual_seed(0)
        first = predictor.mc_dropout_mean_probabilities(data, 1)
        means[compiled] = predictor.mc_dropout_mean_probabilities(data, 4)
        assert np.abs(first - deterministic).max() > 1e-3 and np.abs(first - means[compiled]).max() > 1e-4
        assert not any(m.training for m in original_module(predictor.network).modules())
    # two Monte-Carlo estimates of the same mean (4 passes each): close, not equal
    assert np.abs(means[True] - means[False]).mean() < 0.05
