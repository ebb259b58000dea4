"""The trainer under PyTorch DDP (nnUNetv2_train -num_gpus N), with the gloo backend on CPU processes.

What needs GPUs (a full multi-GPU training run) is described in documentation/scaling.md.
"""
import json
import os
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _init(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)


def _loss_worker(rank, init_file, out_dir):
    _init(rank, init_file)
    from nnunet_mt.trainer import nnUNetTrainerMultiTask
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, 8)
    target = (torch.rand(4, 1, 8, 8, 8) > 0.6).float()
    stand_in = types.SimpleNamespace(configuration_manager=types.SimpleNamespace(batch_dice=True), is_ddp=True)
    loss = nnUNetTrainerMultiTask._build_loss(stand_in)  # our trainer's loss, as it is built under DDP
    half = slice(2 * rank, 2 * rank + 2)  # each rank sees half of the global batch
    value = loss(logits[half], target[half]).item()
    with open(os.path.join(out_dir, f"loss_{rank}.json"), "w") as f:
        json.dump(value, f)
    dist.destroy_process_group()


def test_dice_loss_is_reduced_across_ranks(tmp_path):
    """Batch Dice over 2 ranks x 2 images equals the single-process batch Dice over the 4 images."""
    from nnunet_mt.trainer import nnUNetTrainerMultiTask
    mp.spawn(_loss_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
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
    _init(rank, init_file)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunet_mt.merge import case_sources
    from nnunet_mt.trainer import nnUNetTrainerMultiTaskCPU_2epochs
    folder = os.path.join(nnUNet_preprocessed, "Dataset500_MultiTask")
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = nnUNetTrainerMultiTaskCPU_2epochs(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")),
                                                torch.device("cpu"))
    trainer._set_batch_size_and_oversample()  # nnU-Net's split of the global batch over the ranks
    loader, _ = trainer.get_dataloaders()
    torch.manual_seed(rank)
    np.random.seed(100 + rank)  # nnU-Net's loaders draw with numpy; ranks draw independently
    keys = [k for _ in range(draws) for k in next(loader)["keys"]]
    result = {"rank": trainer.local_rank, "batch_size": trainer.batch_size, "is_ddp": trainer.is_ddp, "fits_ood": trainer.fits_ood_on_this_rank(),
              "sources": case_sources(trainer.dataset_json, keys),
              "probabilities": loader.data_loader.sampling_probabilities.tolist()}
    with open(os.path.join(out_dir, f"trainer_{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_sampling_per_rank_and_ood_fit_on_rank_zero(trained, tmp_path, monkeypatch):
    root, env = trained
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    draws = 150
    mp.spawn(_trainer_worker, args=(str(tmp_path / "init"), str(tmp_path), draws), nprocs=WORLD)
    results = [json.loads((tmp_path / f"trainer_{r}.json").read_text()) for r in range(WORLD)]
    assert [r["rank"] for r in results] == [0, 1] and all(r["is_ddp"] for r in results)
    assert [r["batch_size"] for r in results] == [1, 1]  # the recipe's batch of 2, one image per rank
    # OOD signatures are fitted by one process only
    assert [r["fits_ood"] for r in results] == [True, False]
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
