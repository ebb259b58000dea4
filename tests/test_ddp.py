"""The trainer under PyTorch DDP (nnUNetv2_train -num_gpus N), with the gloo backend on CPU processes.

What needs GPUs (a full multi-GPU training run) is described in documentation/scaling.md.

Teardown (issue 19): importing ``torch._dynamo`` (nnU-Net's trainer module does) while a process group
exists leaves a reference to the group behind, so ``destroy_process_group`` no longer joins gloo's worker
threads. One of them then releases the last collective's tensors while Python finalizes, cannot take the
GIL, and aborts the process ("terminate called without an active exception"), in about 1 run of 5.
Workers therefore import everything at module level (before ``init_process_group``, as nnU-Net's own
``run_ddp`` does), check that teardown joined gloo's threads, and run under a hard timeout.
"""
import json
import os
import types

import numpy as np
import pytest
import torch

from ddp_harness import WORLD, init_group, run_ranks, teardown_group
from nnunet_mt.trainer import nnUNetTrainerMultiTask, nnUNetTrainerMultiTaskSmoke


def _loss_worker(rank, init_file, out_dir):
    threads = init_group(rank, init_file)
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, 8)
    target = (torch.rand(4, 1, 8, 8, 8) > 0.6).float()
    stand_in = types.SimpleNamespace(configuration_manager=types.SimpleNamespace(batch_dice=True), is_ddp=True)
    loss = nnUNetTrainerMultiTask._build_loss(stand_in)  # our trainer's loss, as it is built under DDP
    half = slice(2 * rank, 2 * rank + 2)  # each rank sees half of the global batch
    value = loss(logits[half], target[half]).item()
    with open(os.path.join(out_dir, f"loss_{rank}.json"), "w") as f:
        json.dump(value, f)
    teardown_group(threads)


def test_dice_loss_is_reduced_across_ranks(tmp_path):
    """Batch Dice over 2 ranks x 2 images equals the single-process batch Dice over the 4 images."""
    run_ranks(_loss_worker, (str(tmp_path / "init"), str(tmp_path)), timeout_s=120)
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, 8)
    target = (torch.rand(4, 1, 8, 8, 8) > 0.6).float()
    single = types.SimpleNamespace(configuration_manager=types.SimpleNamespace(batch_dice=True), is_ddp=False)
    expected = nnUNetTrainerMultiTask._build_loss(single)(logits, target).item()
    values = [json.loads((tmp_path / f"loss_{r}.json").read_text()) for r in range(WORLD)]
    assert values == pytest.approx([expected] * WORLD, abs=1e-6)
    # without the reduction each rank would see only its own half
    halves = [nnUNetTrainerMultiTask._build_loss(single)(logits[s], target[s]).item() for s in (slice(0, 2), slice(2, 4))]
    assert max(abs(h - expected) for h in halves) > 1e-3


def _trainer_worker(rank, init_file, out_dir, draws):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed  # reads the nnUNet_* variables set by the test
    from nnunet_mt.merge import case_sources
    threads = init_group(rank, init_file)
    folder = os.path.join(nnUNet_preprocessed, "Dataset500_MultiTask")
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = nnUNetTrainerMultiTaskSmoke(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")),
                                                torch.device("cpu"))
    trainer._set_batch_size_and_oversample()  # nnU-Net's split of the global batch over the ranks
    loader, _ = trainer.get_dataloaders()
    torch.manual_seed(rank)
    np.random.seed(100 + rank)  # nnU-Net's loaders draw with numpy; ranks draw independently
    keys = [k for _ in range(draws) for k in next(loader)["keys"]]
    # the end-of-training fit, split across the ranks through real barriers; the commands are recorded here (that
    # parts + --collect equal one fit is tests/test_scale_out.py::test_fit_in_two_parts_equals_one_fit)
    ran = []
    trainer.run_ood_fit_step = lambda command: (ran.append(command), (None, "spectral: 51 training images"))[1]
    trainer.fit_ood_isolated()
    result = {"rank": trainer.local_rank, "batch_size": trainer.batch_size, "is_ddp": trainer.is_ddp,
              "fits_ood": trainer.fits_ood_on_this_rank(), "fit_commands": ran,
              "sources": case_sources(trainer.dataset_json, keys),
              "probabilities": loader.data_loader.sampling_probabilities.tolist()}
    with open(os.path.join(out_dir, f"trainer_{rank}.json"), "w") as f:
        json.dump(result, f)
    teardown_group(threads)


@pytest.mark.slow
def test_sampling_per_rank_and_ood_fit_split_across_ranks(preprocessed, tmp_path, monkeypatch):
    root, env = preprocessed
    folder = root / "pre/Dataset500_MultiTask"
    if not (folder / "splits_final.json").exists():  # made here, not by two ranks writing it at once
        from nnunetv2.utilities.crossval_split import generate_crossval_split
        identifiers = sorted(p.name[:-len(".b2nd")] for p in (folder / "nnUNetPlans_3d_fullres").glob("*.b2nd")
                             if not p.name.endswith("_seg.b2nd"))
        (folder / "splits_final.json").write_text(json.dumps(generate_crossval_split(identifiers, 12345, 5)))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    draws = 150
    run_ranks(_trainer_worker, (str(tmp_path / "init"), str(tmp_path), draws), timeout_s=300)
    results = [json.loads((tmp_path / f"trainer_{r}.json").read_text()) for r in range(WORLD)]
    assert [r["rank"] for r in results] == [0, 1] and all(r["is_ddp"] for r in results)
    assert [r["batch_size"] for r in results] == [1, 1]  # the recipe's batch of 2, one image per rank
    # the OOD fit is split: each rank fits its part of the training images, rank 0 then collects and writes
    assert [r["fits_ood"] for r in results] == [True, False]
    command = ["nnunet_mt_ood", "fit", "-d", "Dataset500_MultiTask", "-c", "3d_fullres", "-f", "0", "-tr",
               "nnUNetTrainerMultiTaskSmoke", "-p", "nnUNetPlans", "-device", "cuda"]  # nnU-Net's DDP sets cuda:<rank>
    assert results[0]["fit_commands"] == [command + ["-num_parts", "2", "-part_id", "0"],
                                          command + ["-num_parts", "2", "--collect"]]
    assert results[1]["fit_commands"] == [command + ["-num_parts", "2", "-part_id", "1"]]
    # every rank samples with the same 1/sqrt(n) weights, so the union of all ranks' draws has the shares
    assert results[0]["probabilities"] == results[1]["probabilities"]
    from nnunet_mt.sampling import case_sampling_probabilities
    from nnunet_mt.merge import case_sources
    dataset_json = json.loads((root / "pre/Dataset500_MultiTask/dataset.json").read_text())
    split = json.loads((root / "pre/Dataset500_MultiTask/splits_final.json").read_text())[0]["train"]
    sources = case_sources(dataset_json, split)
    p = case_sampling_probabilities(sources, 0.5)
    drawn = [s for r in results for s in r["sources"]]
    n = len(drawn)
    for source in set(sources):
        expected = sum(pi for pi, s in zip(p, sources) if s == source)
        observed = drawn.count(source) / n
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (source, observed, expected)


def test_each_rank_fits_its_part_on_its_own_gpu():
    from nnunet_mt.trainer import visible_device
    assert visible_device(1, None) == "1" and visible_device(0, "") == "0"
    assert visible_device(1, "2,3") == "3" and visible_device(0, " 5, 7") == "5"
    assert visible_device(2, "4") == "2"  # fewer listed than ranks: the index as nnU-Net uses it
