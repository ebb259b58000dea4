"""The paper's schedule inside the real trainer: LR plateau and convergence stop act at CPU budgets, the
epoch cap sits on top of the rule, and a run killed mid-training and resumed with --c repeats the
uninterrupted run (same stop, same LR history, same losses)."""
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from conftest import BIN, run

pytestmark = pytest.mark.slow
RESUMABLE = "nnUNetTrainerMultiTaskSmoke_6epochs"  # 5 iterations/epoch, window 2 epochs, cap 6


def _trainer(root, name, monkeypatch):
    from nnunet_mt.trainer import trainer_variant
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res_glue")):
        monkeypatch.setenv(var, str(root / sub))
    folder = root / "pre/Dataset500_MultiTask"
    plans = dict(json.loads((folder / "nnUNetPlans.json").read_text()), continue_training=False)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return trainer_variant(name)(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_cpu_recipes_have_a_window_inside_their_budget(preprocessed, monkeypatch):
    cpu = _trainer(preprocessed[0], "nnUNetTrainerMultiTaskCPU", monkeypatch)
    assert cpu.epochs_per_window * cpu.num_iterations_per_epoch == 200 and cpu.epochs_per_window == 5
    # 25 epochs hold 5 windows: enough for LR drops and for the two-evaluation stop (needs >= 3 windows)
    assert cpu.num_epochs // cpu.epochs_per_window >= 3
    paper = _trainer(preprocessed[0], "nnUNetTrainerMultiTask", monkeypatch)
    assert paper.epochs_per_window * paper.num_iterations_per_epoch == 2000
    assert _trainer(preprocessed[0], "nnUNetTrainerMultiTaskCPU_seed3", monkeypatch).seed == 3


def test_lr_drops_only_after_a_window_without_decrease_and_training_stops(preprocessed, monkeypatch):
    trainer = _trainer(preprocessed[0], "nnUNetTrainerMultiTaskSmoke_20epochs", monkeypatch)
    trainer.initialize()
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    window = trainer.epochs_per_window
    assert window == 2
    # per-epoch training losses, windows of 2: 1.0 | 0.8 (decrease) | 0.85 (no) | 0.7 (decrease) | 0.75 (no)
    train = [1.0, 1.0, 0.8, 0.8, 0.85, 0.85, 0.7, 0.7, 0.75, 0.75]
    val = [-0.1, -0.1, -0.3, -0.3, -0.2, -0.2, -0.25, -0.25, -0.25, -0.25]  # best at window 2, then 2 worse
    lrs = []
    for epoch, (t, v) in enumerate(zip(train, val)):
        trainer.lr_scheduler.step(epoch)  # what nnU-Net calls at every epoch start
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        assert trainer.converged() == (epoch >= 8), epoch  # windows 1..4 complete: stop after the 4th
        trainer.logger.log("train_losses", t, epoch)
        trainer.logger.log("val_losses", v, epoch)
    assert trainer.converged()
    expected = [1e-4] * 6 + [0.9e-4] * 2 + [0.9e-4] * 2  # first drop at epoch 6 (after window 3)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    trainer.lr_scheduler.step(10)  # after window 5 (0.75 >= 0.7): second drop
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.9 ** 2)


def test_a_failing_ood_fit_never_costs_the_training(preprocessed, monkeypatch):
    """The fit runs as `nnunet_mt_ood fit` in its own process; here it really fails (this trainer never
    trained, so there is no checkpoint_final.pth): the failure is logged with its cause and the command
    that redoes it, and nothing is raised, so nnU-Net's final validation still runs."""
    trainer = _trainer(preprocessed[0], "nnUNetTrainerMultiTaskSmoke", monkeypatch)
    trainer.fit_ood_isolated()
    log = open(trainer.log_file).read()
    assert "Spectral OOD fit failed (exit code 2: nnunet_mt_ood fit: error: " in log
    assert "checkpoint_final.pth: checkpoint missing" in log
    assert ("Redo the fit with: nnunet_mt_ood fit -d Dataset500_MultiTask -c 3d_fullres -f 0 "
            "-tr nnUNetTrainerMultiTaskSmoke -p nnUNetPlans -device cpu") in log


def test_training_refuses_a_prediction_temperature(preprocessed, monkeypatch, capsys):
    """$nnUNet_mt_temperature (for plain nnUNetv2_predict) must never scale the logits of a training run."""
    monkeypatch.setenv("nnUNet_mt_temperature", "1.5")
    with pytest.raises(SystemExit) as stop:
        _trainer(preprocessed[0], "nnUNetTrainerMultiTaskSmoke", monkeypatch)
    assert stop.value.code == 2 and "unset it for training" in capsys.readouterr().err


RESUME_DATASET = "Dataset012_CorticalPlateMR"  # single-source: a short final validation and OOD fit


def _final_log(results, name):
    fold = results / RESUME_DATASET / f"{name}__nnUNetPlans__3d_fullres" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    return ckpt["logging"], json.loads((fold / "convergence.json").read_text())


def test_killed_and_resumed_training_repeats_the_uninterrupted_run(plain_model):
    root, env = plain_model  # the cortical-plate demo dataset, preprocessed by the session's plain stage
    train = [os.path.join(BIN, "nnUNetv2_train"), "12", "3d_fullres", "0", "-tr", RESUMABLE, "-device", "cpu"]
    # neither run validates at the end (nnUNet_mt_final_validation=0: the session model's training does, and the
    # schedule is decided before it); the resumed run also skips the end-of-training OOD fit
    # (nnUNet_mt_fit_after_training=0): the same model, sooner
    straight = dict(env, nnUNet_n_proc_DA="0", nnUNet_results=str(root / "res_straight"),
                    nnUNet_mt_final_validation="0")
    resumed = dict(env, nnUNet_n_proc_DA="0", nnUNet_results=str(root / "res_resumed"),
                   nnUNet_mt_fit_after_training="0", nnUNet_mt_final_validation="0")
    run(train, straight)

    fold = root / "res_resumed" / RESUME_DATASET / f"{RESUMABLE}__nnUNetPlans__3d_fullres" / "fold_0"
    proc = subprocess.Popen(train, env=resumed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    epoch_3 = re.compile(r": Epoch 3\s*$", re.MULTILINE)  # mid-window (windows of 2); epoch 2's checkpoint is written
    while proc.poll() is None and time.time() - start < 600:
        logs = list(fold.glob("training_log_*.txt")) if fold.is_dir() else []
        if logs and epoch_3.search(logs[0].read_text()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup
    proc.wait()
    assert not (fold / "checkpoint_final.pth").exists()
    run(train + ["--c"], resumed)

    a, summary_a = _final_log(root / "res_straight", RESUMABLE)
    b, summary_b = _final_log(root / "res_resumed", RESUMABLE)
    assert summary_a == summary_b  # same epoch of stop, same LR drops and final LR, same verdict
    log = next((root / "res_straight" / RESUME_DATASET / f"{RESUMABLE}__nnUNetPlans__3d_fullres/fold_0")
               .glob("training_log_*.txt")).read_text()
    assert re.search(r"Spectral OOD fit took [\d.]+ s \([\d.]+ % of the \d+ s spent in training epochs\)", log)
    resumed_logs = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Spectral OOD fit skipped (nnUNet_mt_fit_after_training=0); fit later with: nnunet_mt_ood fit" \
        in resumed_logs
    assert not any(fold.glob("spectral_signatures_*")) and not (fold / "validation").exists()
    assert "Final validation skipped (nnUNet_mt_final_validation=0)" in resumed_logs
    assert any((root / "res_straight").rglob("spectral_signatures_last.npz"))
    assert a["lrs"] == b["lrs"]
    np.testing.assert_allclose(a["train_losses"], b["train_losses"], rtol=1e-5)
    np.testing.assert_allclose(a["val_losses"], b["val_losses"], rtol=1e-5)
    assert summary_a["epochs"] == len(a["lrs"]) and summary_a["cap_epochs"] == 6
    assert summary_a["window_iterations"] == 10
    # the verdict, the cap and the LR history follow the paper's rules applied to the logged losses
    from nnunet_mt.schedule import has_converged, plateau_learning_rate
    assert summary_a["converged"] == has_converged(a["val_losses"], 2)
    assert summary_a["converged"] or summary_a["epochs"] == 6
    np.testing.assert_allclose(a["lrs"], [plateau_learning_rate(a["train_losses"][:e], 1e-4, 2)
                                          for e in range(len(a["lrs"]))], rtol=1e-12)
