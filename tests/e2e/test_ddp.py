"""The trainer under PyTorch DDP (nnUNetv2_train -num_gpus N), with the gloo backend on CPU processes.

What needs GPUs (a full multi-GPU training run) is described in documentation/scaling.md.

Teardown (issue 19): importing ``torch._dynamo`` (nnU-Net's trainer module does) while a process group
exists leaves a reference to the group behind, so ``destroy_process_group`` no longer joins gloo's worker
threads. One of them then releases the last collective's tensors while Python finalizes, cannot take the
GIL, and aborts the process ("terminate called without an active exception"), in about 1 run of 5.
Workers therefore import everything at module level (before ``init_process_group``, as nnU-Net's own
``run_ddp`` does), check that teardown joined gloo's threads, and run under a hard timeout.
"""
import gc
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


def _ddp_trainer(rank, world):
    """Our smoke trainer as nnU-Net's run_ddp builds it on rank `rank` of `world` (plans and dataset of the
    preprocessed demo dataset), moved back to the CPU: nnU-Net sets cuda:<rank> under DDP."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed  # reads the nnUNet_* variables set by the test
    folder = os.path.join(nnUNet_preprocessed, "Dataset500_MultiTask")
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = nnUNetTrainerMultiTaskSmoke(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")),
                                          torch.device("cpu"))
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    return trainer


def _draws_and_fit_split(trainer, draws) -> dict:
    """What rank `trainer.local_rank` draws in two epochs (`draws` batches), and the fit commands it runs."""
    from nnunet_mt.merge import case_sources
    trainer._set_batch_size_and_oversample()  # nnU-Net's split of the global batch over the ranks
    loader, _ = trainer.get_dataloaders()
    keys = []
    for epoch in range(2):  # the trainer's own per-epoch seeding, as in training: nothing reseeded here
        trainer.current_epoch = epoch
        trainer.on_epoch_start()
        keys += [k for _ in range(draws // 2) for k in next(loader)["keys"]]
    # the end-of-training fit, split across the ranks through real barriers; the commands are recorded here (that
    # parts + --collect equal one fit is tests/e2e/test_scale_out.py::test_fit_in_two_parts_equals_one_fit)
    ran = []
    trainer.fit_ood_after_training = True  # recorded, not run
    trainer.run_ood_fit_step = lambda command: (ran.append(command), (None, "spectral: 51 training images"))[1]
    trainer.fit_ood_isolated()
    result = {"rank": trainer.local_rank, "batch_size": trainer.batch_size, "is_ddp": trainer.is_ddp,
              "global_batch": trainer.configuration_manager.batch_size,
              "fits_ood": trainer.fits_ood_on_this_rank(), "fit_commands": ran, "keys": keys,
              "sources": case_sources(trainer.dataset_json, keys),
              "probabilities": loader.data_loader.sampling_probabilities.tolist()}
    trainer.current_epoch = 0
    return result


def _trainer_worker(rank, init_file, out_dir, draws, world):
    threads = init_group(rank, init_file, world)
    result = _draws_and_fit_split(_ddp_trainer(rank, world), draws)
    with open(os.path.join(out_dir, f"trainer_{rank}.json"), "w") as f:
        json.dump(result, f)
    teardown_group(threads)


def _with_splits(preprocessed, monkeypatch):
    root, env = preprocessed
    folder = root / "pre/Dataset500_MultiTask"
    if not (folder / "splits_final.json").exists():  # made here, not by several ranks writing it at once
        from nnunetv2.utilities.crossval_split import generate_crossval_split
        identifiers = sorted(p.name[:-len(".b2nd")] for p in (folder / "nnUNetPlans_3d_fullres").glob("*.b2nd")
                             if not p.name.endswith("_seg.b2nd"))
        (folder / "splits_final.json").write_text(json.dumps(generate_crossval_split(identifiers, 12345, 5)))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # draws in-process: only the trainer's seeds tell ranks apart
    return root


@pytest.mark.slow
def test_sampling_per_rank_and_ood_fit_split_across_ranks(preprocessed, tmp_path, monkeypatch):
    """Under -num_gpus 2 (2 gloo ranks here): see _check_ranks (4 ranks: the training test below)."""
    root = _with_splits(preprocessed, monkeypatch)
    world = 2
    run_ranks(_trainer_worker, (str(tmp_path / "init"), str(tmp_path), 160 // world, world), timeout_s=240,
              nprocs=world)
    _check_ranks(root, [json.loads((tmp_path / f"trainer_{r}.json").read_text()) for r in range(world)])


def _check_ranks(root, results):
    """Under -num_gpus N: 2 patches per rank (global batch 2N, so N = 4 passes nnU-Net's batch >= ranks
    check), each rank draws its own cases (the epoch seed includes the rank), the union of the draws follows
    the 1/sqrt(n) shares (320 keys in all), and the OOD fit is split across the ranks."""
    world = len(results)
    assert [r["rank"] for r in results] == list(range(world)) and all(r["is_ddp"] for r in results)
    assert [r["batch_size"] for r in results] == [2] * world  # the paper's batch of 2, on every GPU
    assert [r["global_batch"] for r in results] == [2 * world] * world
    # every rank draws its own cases and patches: no two ranks' sequences agree
    for a in range(world):
        for b in range(a + 1, world):
            same = np.mean([x == y for x, y in zip(results[a]["keys"], results[b]["keys"])])
            assert same < 0.5, (a, b, same)
    # the OOD fit is split: each rank fits its part of the training images, rank 0 then collects and writes
    assert [r["fits_ood"] for r in results] == [True] + [False] * (world - 1)
    command = ["nnunet_mt_ood", "fit", "-d", "Dataset500_MultiTask", "-c", "3d_fullres", "-f", "0", "-tr",
               "nnUNetTrainerMultiTaskSmoke", "-p", "nnUNetPlans", "-device", "cpu"]
    part = ["-num_parts", str(world)]
    assert results[0]["fit_commands"] == [command + part + ["-part_id", "0"], command + part + ["--collect"]]
    for r in range(1, world):
        assert results[r]["fit_commands"] == [command + part + ["-part_id", str(r)]]
    # every rank samples with the same 1/sqrt(n) weights, so the union of all ranks' draws has the shares
    assert all(r["probabilities"] == results[0]["probabilities"] for r in results)
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


def _training_worker(rank, init_file, out_dir, world):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
    from torch.nn.parallel import DistributedDataParallel
    threads = init_group(rank, init_file, world)
    # nnU-Net wraps the network as DDP(network, device_ids=[rank]), which a CPU module cannot take
    nnunet_trainer_module.DDP = lambda module, device_ids=None: DistributedDataParallel(module)
    trainer = _ddp_trainer(rank, world)
    with open(os.path.join(out_dir, f"trainer_{rank}.json"), "w") as f:
        json.dump(_draws_and_fit_split(trainer, 160 // world), f)
    trainer = _ddp_trainer(rank, world)  # a fresh one for training (the draws left theirs at epoch 2)
    trainer.initialize()  # nnU-Net's (the DDP wrapper broadcasts rank 0's weights)
    initial = torch.cat([p.detach().flatten() for p in trainer.network.module.parameters()]).clone()
    trainer.run_training()  # our loop, 2 epochs of 5 iterations
    weights = torch.cat([p.detach().flatten() for p in trainer.network.module.parameters()])
    result = {"rank": rank, "epochs": trainer.current_epoch, "batch_size": trainer.batch_size,
              "changed": float((weights - initial).abs().max()),
              "train_losses": [float(v) for v in trainer.logger.get_value("train_losses", step=None)],
              "weights_sum": float(weights.double().sum()), "weights_head": weights[:50].tolist()}
    with open(os.path.join(out_dir, f"trained_{rank}.json"), "w") as f:
        json.dump(result, f)
    del trainer, initial, weights  # the DDP wrapper holds the process group
    gc.collect()
    teardown_group(threads)


@pytest.mark.slow
def test_four_rank_training_runs_and_keeps_ranks_in_step(preprocessed, tmp_path, monkeypatch):
    """nnUNetv2_train -num_gpus 4, with gloo ranks on the CPU: the checks of _check_ranks for 4 ranks, then
    a training: nnU-Net's DDP set-up takes the recipe's batch (2 per rank, global 8), all ranks train the 2
    epochs, losses are finite and the ranks end with the same weights (DDP averaged their gradients), which
    differ from the initial ones (before the frozen unused heads, DDP stopped at the second iteration)."""
    from nnunet_mt.environment import FIT_AFTER_TRAINING_ENV
    root = _with_splits(preprocessed, monkeypatch)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))  # not the session model's folder
    monkeypatch.setenv(FIT_AFTER_TRAINING_ENV, "0")  # the fit's commands are the test above
    world = 4
    run_ranks(_training_worker, (str(tmp_path / "init"), str(tmp_path), world), timeout_s=400, nprocs=world)
    _check_ranks(root, [json.loads((tmp_path / f"trainer_{r}.json").read_text()) for r in range(world)])
    results = [json.loads((tmp_path / f"trained_{r}.json").read_text()) for r in range(world)]
    assert [r["epochs"] for r in results] == [2] * world and [r["batch_size"] for r in results] == [2] * world
    assert all(len(r["train_losses"]) == 2 and np.all(np.isfinite(r["train_losses"])) for r in results)
    assert all(r["weights_head"] == results[0]["weights_head"] for r in results)
    assert all(abs(r["weights_sum"] - results[0]["weights_sum"]) < 1e-6 for r in results)
    assert all(r["changed"] > 1e-6 for r in results)
    fold = tmp_path / "results/Dataset500_MultiTask/nnUNetTrainerMultiTaskSmoke__nnUNetPlans__3d_fullres/fold_0"
    assert (fold / "checkpoint_final.pth").is_file()  # written once, by rank 0
    assert json.loads((fold / "convergence.json").read_text())["epochs"] == 2


def test_each_rank_fits_its_part_on_its_own_gpu():
    from nnunet_mt.trainer import visible_device
    assert visible_device(1, None) == "1" and visible_device(0, "") == "0"
    assert visible_device(1, "2,3") == "3" and visible_device(0, " 5, 7") == "5"
    assert visible_device(2, "4") == "2"  # fewer listed than ranks: the index as nnU-Net uses it


def test_epoch_seeds_differ_per_rank_and_keep_single_process_runs():
    """Rank 0 keeps the seeds of a single-process run (earlier results repeat); every (rank, epoch) of 8 ranks
    x 1000 epochs has its own seed; the network initialization (step -1) is the same on every rank."""
    from nnunet_mt.trainer import epoch_seed
    assert [epoch_seed(3, e) for e in (-1, 0, 7)] == [3 * 1_000_003, 3 * 1_000_003 + 1, 3 * 1_000_003 + 8]
    seeds = {epoch_seed(0, e, r) for r in range(8) for e in range(1000)}
    assert len(seeds) == 8000
    stand_in = types.SimpleNamespace(seed=0, local_rank=3)
    for step in (-1, 4):
        nnUNetTrainerMultiTask.seed_everything(stand_in, step)
        drawn = np.random.rand()
        np.random.seed(epoch_seed(0, step, 0 if step < 0 else 3))
        assert drawn == np.random.rand()
    nnUNetTrainerMultiTask.seed_everything(stand_in, -1)
    a = np.random.rand()
    nnUNetTrainerMultiTask.seed_everything(types.SimpleNamespace(seed=0, local_rank=0), -1)
    assert a == np.random.rand()
