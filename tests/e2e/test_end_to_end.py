"""demo-data -> merge -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train -> nnUNetv2_predict, for real."""
import json
from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import CASES, TRAINER

pytestmark = pytest.mark.slow


def _model_dir(root):
    return root / "res" / "Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres"


def _trainer(root, fold, monkeypatch):
    """An in-process trainer on the trained model's plans (nnU-Net reads its folders from the environment)."""
    from nnunet_mt import trainer as trainers
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        monkeypatch.setenv(var, str(root / sub))
    model = _model_dir(root)
    plans = dict(json.load(open(model / "plans.json")), continue_training=False)  # as nnUNetv2_train sets it
    dataset_json = json.load(open(model / "dataset.json"))
    return getattr(trainers, TRAINER)(plans, "3d_fullres", fold, dataset_json, torch.device("cpu"))


def test_predictions_have_input_geometry_and_binary_labels(predicted):
    root, out = predicted
    for case in CASES:
        image = sitk.ReadImage(str(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz"))
        seg = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert seg.GetSize() == image.GetSize()
        np.testing.assert_allclose(seg.GetSpacing(), image.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}


def test_checkpoint_holds_the_paper_recipe(trained):
    root, _ = trained
    model = _model_dir(root)
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == TRAINER
    assert ckpt["network_weights"]["encoder.stem.convs.0.conv.weight"].shape[0] == 4  # the smoke width
    group = ckpt["optimizer_state"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4) and "betas" in group and "momentum" not in group  # Adam, 1e-4
    assert ckpt["current_epoch"] == 2
    plans = json.load(open(model / "plans.json"))
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [32, 32, 32]  # what prediction rebuilds
    log = open(next((model / "fold_0").glob("training_log_*.txt"))).read()
    assert "Sampling shares per source dataset" in log


def test_trainer_uses_dice_loss_only(trained, monkeypatch):
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    trainer = _trainer(trained[0], fold=0, monkeypatch=monkeypatch)
    trainer.initialize()
    assert type(trainer.loss) is MemoryEfficientSoftDiceLoss and trainer.loss.do_bg is False
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    logits = torch.full((1, 2, 8, 8, 8), -20.0)
    logits[:, 1] = 20.0  # predicts foreground everywhere
    target = torch.ones((1, 1, 8, 8, 8))
    assert trainer.loss(logits, target).item() == pytest.approx(-1.0, abs=1e-4)  # negative Dice


def test_paper_normalization_is_the_same_at_training_and_prediction_time(predicted):
    """The merge's default (--normalization paper) is applied by nnU-Net's own preprocessing: the arrays
    nnUNetv2_plan_and_preprocess wrote (in its worker processes) equal what the predictor computes from the
    raw file, in-process (-npp 0) and in a spawned worker (-npp > 0), and have the paper's values."""
    from nnunetv2.inference.data_iterators import preprocessing_iterator_fromfiles
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    root, _ = predicted
    predictor = nnUNetPredictor(device=torch.device("cpu"))
    predictor.initialize_from_trained_model_folder(str(_model_dir(root)), (0,), "checkpoint_final.pth")
    assert predictor.configuration_manager.normalization_schemes == ["PaperCTorMRNormalization"]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    folder = str(root / "pre/Dataset500_MultiTask/nnUNetPlans_3d_fullres")
    cases = ("D011_liverct_000", "D012_corticalplatemr_000", "D013_prostatemr_000")  # CT, MR, anisotropic MR
    images = [str(root / "raw/Dataset500_MultiTask/imagesTr" / f"{case}_0000.nii.gz") for case in cases]
    in_worker = [item["data"].numpy() for item in preprocessing_iterator_fromfiles(
        [[i] for i in images], None, None, predictor.plans_manager, predictor.dataset_json,
        predictor.configuration_manager, num_processes=1)]
    for case, image, worker_data in zip(cases, images, in_worker):
        train_data = np.asarray(infer_dataset_class(folder)(folder, [case]).load_case(case)[0])
        in_process, _, _ = preprocessor.run_case([image], None, predictor.plans_manager,
                                                 predictor.configuration_manager, predictor.dataset_json)
        np.testing.assert_allclose(train_data, in_process, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(train_data, worker_data, rtol=1e-5, atol=1e-5)
        raw = sitk.GetArrayFromImage(sitk.ReadImage(image)).astype(np.float64)
        if case.startswith("D011"):  # CT, on the plans' 2 mm grid already: (clip(HU, -1000, 1000) + 1000) / 2000
            assert in_process.shape[1:] == raw.shape
            np.testing.assert_allclose(in_process[0], (np.clip(raw, -1000, 1000) + 1000) / 2000, atol=1e-6)
        else:  # MR, resampled to 2 mm: divided by its sd, not shifted (a z-score would have mean 0)
            assert abs(float(in_process.std()) - 1) < 0.2 and float(in_process.mean()) > 0.2


def test_real_loader_draws_with_sqrt_weights(trained, monkeypatch):
    from nnunet_mt.merge import case_sources
    from nnunet_mt.sampling import case_sampling_probabilities, source_shares
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")  # worker processes, as in real training
    trainer = _trainer(trained[0], fold=1, monkeypatch=monkeypatch)
    trainer.initialize()
    train_loader, val_loader = trainer.get_dataloaders()
    try:
        tr_keys, _ = trainer.do_split()
        sources = case_sources(trainer.dataset_json, tr_keys)
        expected = source_shares(sources, case_sampling_probabilities(sources))
        drawn = Counter()
        for _ in range(300):
            drawn.update(case_sources(trainer.dataset_json, next(train_loader)["keys"]))
        n = sum(drawn.values())
        for source, share in expected.items():
            # 600 draws: binomial sd <= 0.021; 4 sd tolerance
            assert drawn[source] / n == pytest.approx(share, abs=0.085), (drawn, expected)
        uniform = Counter(sources)
        assert expected["Dataset011_LiverCT"] < uniform["Dataset011_LiverCT"] / len(sources) - 0.1
    finally:
        for loader in (train_loader, val_loader):
            loader._finish()
