"""Training throughput and peak memory: nnUNetTrainerMultiTask vs nnU-Net's nnUNetTrainer on the same data.

    .venv/bin/python benchmarks/bench_training.py [--root demo_output] [--iterations 30] [--repeats 3]
                                                   [--json benchmarks/results/training.json]

Defaults to the merged demo dataset that `make demo` preprocesses into demo_output/. Each trainer runs in a
fresh process (as nnUNetv2_train does): initialize, build the data loaders (nnUNet_n_proc_DA=0, loading in
the training process), 3 warm-up iterations, then --iterations timed train_step calls; peak memory is the
process's maximum resident set size (os.wait4). The trainers alternate, best time and largest memory count.

- ours: nnUNetTrainerMultiTaskCPU (1/sqrt(n) sampling, the paper's augmentation and loss, 32^3, batch 2);
- ours, uniform sampling: the same with nnU-Net's uniform case sampling: the cost of our sampling;
- nnU-Net: nnUNetTrainer with the same patch, batch size and network (no deep supervision), with nnU-Net's
  own augmentation and loss: the recipe difference.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

WORKER = r"""
import json, os, sys, time
import torch
sys.path.insert(0, {bench_dir!r})
from batchgenerators.utilities.file_and_folder_operations import load_json
import bench_training
cls = bench_training.trainer_class({name!r})
folder = os.path.join(os.environ["nnUNet_preprocessed"], {dataset!r})
plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
plans["continue_training"] = False
device = torch.device({device!r})
trainer = cls(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")), device)
trainer.initialize()
trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
trainer.network.train()
trainer.lr_scheduler.step(0) if hasattr(trainer.lr_scheduler, "step") else None
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
for _ in range({warmup}):
    trainer.train_step(next(trainer.dataloader_train))
sync()
start = time.perf_counter()
for _ in range({iterations}):
    trainer.train_step(next(trainer.dataloader_train))
sync()
seconds = time.perf_counter() - start
gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None
print(json.dumps({{"seconds": seconds, "peak_gpu_mib": gpu, "patch_size": [int(v) for v in trainer.configuration_manager.patch_size],
                  "batch_size": int(trainer.configuration_manager.batch_size)}}), flush=True)
os._exit(0)  # data-augmentation workers (nnUNet_n_proc_DA > 0) would otherwise hold the process open
"""


def trainer_class(name: str):
    """The trainers compared; the two baselines are defined here, for the benchmark only."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_mt.trainer import nnUNetTrainerMultiTaskCPU
    if name == "ours":
        return nnUNetTrainerMultiTaskCPU
    if name == "nnUNetTrainer":
        return nnUNetTrainer
    if name.startswith("nnUNetTrainerMultiTask"):  # any of ours, by its nnU-Net name
        from nnunet_mt.trainer import trainer_variant
        return trainer_variant(name)

    if name == "ours_uniform":
        class Uniform(nnUNetTrainerMultiTaskCPU):
            def sampling_probabilities_for(self, case_ids):
                import numpy as np
                return np.full(len(case_ids), 1.0 / len(case_ids))  # every case equally likely
        return Uniform

    class PlainSameNetwork(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            plans["configurations"][configuration]["patch_size"] = list(nnUNetTrainerMultiTaskCPU.patch_size_voxels)
            plans["configurations"][configuration]["batch_size"] = nnUNetTrainerMultiTaskCPU.patch_batch_size
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.enable_deep_supervision = False

        build_network_architecture = nnUNetTrainerMultiTaskCPU.build_network_architecture

        def set_deep_supervision_enabled(self, enabled):
            pass
    return PlainSameNetwork


def measure_trainer(name, dataset, iterations, env, device="cpu", warmup=3):
    """`iterations` train_step calls of trainer `name` after `warmup` ones, in a fresh process: a dict with
    iterations_per_second, peak_rss_mib (os.wait4), peak_gpu_mib (torch.cuda.max_memory_allocated; None
    on the CPU), patch_size and batch_size."""
    code = WORKER.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), name=name, dataset=dataset,
                         iterations=iterations, warmup=warmup, device=device)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            err.seek(0)
            raise SystemExit(f"{name} failed:\n{err.read().decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["iterations_per_second"] = iterations / result.pop("seconds")
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def measure(name, args, env):
    result = measure_trainer(name, args.dataset, args.iterations, env)
    return result["iterations_per_second"], result["peak_rss_mib"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="demo_output", help="folder with nnUNet_raw/_preprocessed/_results")
    parser.add_argument("--dataset", default="Dataset500_MultiTask")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this JSON file (for check_regression.py)")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    env = dict(os.environ, nnUNet_raw=os.path.join(root, "nnUNet_raw"),
               nnUNet_preprocessed=os.path.join(root, "nnUNet_preprocessed"),
               nnUNet_results=os.path.join(root, "nnUNet_results"), nnUNet_n_proc_DA="0")
    if not os.path.isdir(os.path.join(env["nnUNet_preprocessed"], args.dataset)):
        raise SystemExit(f"{env['nnUNet_preprocessed']}/{args.dataset}: not found (run make demo first)")
    names = {"ours": "nnUNetTrainerMultiTaskCPU", "ours_uniform": "same, nnU-Net's uniform sampling",
             "nnunet": "nnUNetTrainer, same patch/batch/network"}
    best = {k: (0.0, 0.0) for k in names}
    for _ in range(args.repeats):
        for k in names:
            speed, rss = measure(k, args, env)
            best[k] = (max(best[k][0], speed), max(best[k][1], rss))
    print(f"{args.iterations} timed iterations after 3 warm-up, {args.repeats} alternating repeats; "
          f"fastest run, largest peak RSS; torch threads as configured")
    print("| trainer | iterations / s | peak RSS (MiB) |\n|---|---|---|")
    for k, label in names.items():
        print(f"| {label} | {best[k][0]:.2f} | {best[k][1]:.0f} |")
    # cost ratios ours / reference: time per iteration and peak memory (> 1: ours costs more)
    figures = {"training_time_vs_uniform_sampling": best["ours_uniform"][0] / best["ours"][0],
               "training_memory_vs_uniform_sampling": best["ours"][1] / best["ours_uniform"][1],
               "training_time_vs_nnunet": best["nnunet"][0] / best["ours"][0],
               "training_memory_vs_nnunet": best["ours"][1] / best["nnunet"][1]}
    print(f"| cost ratio ours / uniform sampling (time per iteration, memory) | "
          f"{figures['training_time_vs_uniform_sampling']:.3f} | {figures['training_memory_vs_uniform_sampling']:.3f} |")
    print(f"| cost ratio ours / nnU-Net | {figures['training_time_vs_nnunet']:.3f} | "
          f"{figures['training_memory_vs_nnunet']:.3f} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"ratios": figures, "iterations_per_second": {k: v[0] for k, v in best.items()},
                       "peak_rss_mib": {k: v[1] for k, v in best.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
