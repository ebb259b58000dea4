"""Real sizes end to end, on the CPU: full-resolution CT and MR through every step, beside plain nnU-Net.

    PATH=$PWD/.venv/bin:$PATH python benchmarks/bench_realsize.py --work /tmp/realsize [--iterations 5]

Data (../shared/realdata, at native spacing, nothing resampled here): chest CTs with lung tumour
(lung_tumour_ct: 2 x 512 x 512 x 48-61 slices at 0.6 x 0.6 x 5 mm and 4 crops at 0.98 x 0.98 x 3 mm) as
Dataset951_LungCT, BraTS FLAIR with whole tumour (6 x 240 x 240 x 155 at 1 mm) as Dataset952_BrainMR; the
first 5 of each source train, the 6th is the test image. Steps, each a real command timed with its peak
memory (maximum resident set of the command and its children, from wait4):
1. `nnunet_mt merge -d 951 952 -o 950` (paper normalization) beside `--normalization nnunet -o 960`;
2. `nnUNetv2_plan_and_preprocess` on both (ours; plain nnU-Net's own normalization);
3. `nnUNetv2_train 950 3d_fullres 0 -tr nnUNetTrainerMultiTask_bench` (the paper's recipe: 96^3 patches,
   batch 2, one epoch of --iterations iterations) with its end-of-training spectral fit, beside
   `nnUNetv2_train 960 3d_fullres 0 -tr nnUNetTrainer_bench` (nnU-Net's plans and network, the same number
   of iterations); the final validations are skipped on both (they would take longer than the training);
4. `nnunet_mt_ood score` (spectral) beside `nnUNetv2_predict` on the two test images (no mirroring, on
   the same model);
5. `nnunet_mt evaluate` on the score's output.
Iterations/s are iterations over the epoch's wall time (one validation iteration included). Writes
WORK/realsize.json and prints a Markdown table (documentation/benchmarks.md). Exits 0 with a message when
../shared/realdata is absent.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_TRAINERS = '''
from nnunet_mt.trainer import nnUNetTrainerMultiTask
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
import os

ITERATIONS = int(os.environ.get("REALSIZE_ITERATIONS", "5"))


class nnUNetTrainerMultiTask_bench(nnUNetTrainerMultiTask):
    """The paper's recipe (96^3, batch 2), one epoch of REALSIZE_ITERATIONS iterations, no final validation."""
    iterations_per_epoch = ITERATIONS
    val_iterations_per_epoch = 1
    max_epochs = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass


class nnUNetTrainer_bench(nnUNetTrainer):
    """nnU-Net's default trainer, one epoch of REALSIZE_ITERATIONS iterations, no final validation."""
    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, ITERATIONS, 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass
'''


def convert(realdata: str, raw: str) -> None:
    """The two raw datasets at native spacing (labels cast to {0, 1} on the image's own grid)."""
    lung = os.path.join(realdata, "lung_tumour_ct")
    ct = [(f"pat{i}", os.path.join(lung, f"pat_{i}_ct.nii.gz"), os.path.join(lung, f"pat_{i}_gtv.nii.gz"))
          for i in range(1, 5)]
    ct += [(f"lung{i}", os.path.join(lung, f"lung{i}_image.nrrd"), os.path.join(lung, f"lung{i}_label.nrrd"))
           for i in (1, 2)]
    # the last case of each source is its test image: lung2 (512 x 512 x 61) for CT, pat0006 for MR
    brats = os.path.join(realdata, "brats2013_deepmedic")
    mr = [(p, os.path.join(brats, p, "Flair_subtrMeanDivStd.nii.gz"), os.path.join(brats, p, "OTMultiClass.nii.gz"))
          for p in sorted(d for d in os.listdir(brats) if d.startswith("pat"))]
    for dataset_id, name, modality, cases in ((951, "LungCT", "CT", ct), (952, "BrainMR", "MR", mr)):
        folder = os.path.join(raw, f"Dataset{dataset_id}_{name}")
        if os.path.isfile(os.path.join(folder, "dataset.json")):
            continue
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for k, (case, image_path, label_path) in enumerate(cases):
            split = "Tr" if k < len(cases) - 1 else "Ts"
            image = sitk.ReadImage(image_path)
            label = sitk.ReadImage(label_path)
            binary = sitk.GetImageFromArray((sitk.GetArrayFromImage(label) > 0).astype(np.uint8))
            binary.CopyInformation(image)
            sitk.WriteImage(image, os.path.join(folder, f"images{split}", f"{case}_0000.nii.gz"), useCompression=True)
            sitk.WriteImage(binary, os.path.join(folder, f"labels{split}", f"{case}.nii.gz"), useCompression=True)
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({"channel_names": {"0": modality}, "labels": {"background": 0, "tumour": 1},
                       "numTraining": len(cases) - 1, "file_ending": ".nii.gz", "name": name}, f, indent=1)


def timed(label: str, cmd: list, env: dict, log_dir: str, records: list) -> dict:
    """Runs cmd; records wall seconds and the peak resident memory (MiB) of it and its children."""
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(cmd)}", flush=True)
    log = os.path.join(log_dir, re.sub(r"[^A-Za-z0-9]+", "_", label) + ".log")
    start = time.time()
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    entry = {"label": label, "command": " ".join(cmd), "seconds": time.time() - start,
             "peak_rss_mib": usage.ru_maxrss / 1024, "exit_code": os.waitstatus_to_exitcode(status), "log": log}
    records.append(entry)
    print(f"    {entry['seconds']:.1f} s, peak {entry['peak_rss_mib']:.0f} MiB, exit {entry['exit_code']}", flush=True)
    if entry["exit_code"] != 0:
        with open(log) as f:
            print(f.read()[-3000:])
        raise SystemExit(f"{label} failed (log: {log})")
    return entry


def training_rate(results: str, dataset: str, trainer: str, iterations: int) -> dict:
    """Iterations per second of the one epoch, from nnU-Net's checkpoint (its logged epoch timestamps), and the
    patch and batch size from the results folder's plans."""
    import torch
    folder = os.path.join(results, dataset, f"{trainer}__nnUNetPlans__3d_fullres")
    checkpoint = torch.load(os.path.join(folder, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    log = checkpoint["logging"]
    epoch = log["epoch_end_timestamps"][0] - log["epoch_start_timestamps"][0]
    with open(os.path.join(folder, "plans.json")) as f:
        configuration = json.load(f)["configurations"]["3d_fullres"]
    return {"epoch_seconds": epoch, "iterations_per_second": iterations / epoch,
            "patch_size": configuration["patch_size"], "batch_size": configuration["batch_size"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="scratch folder (nnU-Net's three folders go here)")
    parser.add_argument("--realdata", default=os.path.join(HERE, "..", "..", "shared", "realdata"))
    parser.add_argument("--iterations", type=int, default=5, help="training iterations of each trainer")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.realdata):
        print(f"{args.realdata}: not found; nothing to measure")
        return 0
    work = os.path.abspath(args.work)
    raw, pre, res = (os.path.join(work, n) for n in ("raw", "preprocessed", "results"))
    trainers, logs = os.path.join(work, "trainers"), os.path.join(work, "logs")
    for folder in (raw, pre, res, trainers, logs):
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(trainers, "realsize_trainers.py"), "w") as f:
        f.write(BENCH_TRAINERS)
    env = dict(os.environ, nnUNet_raw=raw, nnUNet_preprocessed=pre, nnUNet_results=res,
               nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"), REALSIZE_ITERATIONS=str(args.iterations),
               nnUNet_extTrainer=os.pathsep.join(p for p in (os.environ.get("nnUNet_extTrainer"), trainers) if p))
    train_env = dict(env, nnUNet_n_proc_DA="0")
    env.pop("nnUNet_n_proc_DA", None)
    convert(args.realdata, raw)
    records = []
    shutil.rmtree(os.path.join(raw, "Dataset950_MultiTask"), ignore_errors=True)
    shutil.rmtree(os.path.join(raw, "Dataset960_MultiTask"), ignore_errors=True)
    timed("merge (paper normalization)", ["nnunet_mt", "merge", "-d", "951", "952", "-o", "950", "-n", "MultiTask"],
          env, logs, records)
    timed("merge (nnU-Net normalization)", ["nnunet_mt", "merge", "-d", "951", "952", "-o", "960", "-n",
                                            "MultiTask", "--normalization", "nnunet"], env, logs, records)
    for dataset, label in (("950", "ours"), ("960", "nnU-Net")):
        timed(f"plan and preprocess ({label})", ["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres",
                                                 "-np", "1", "--clean"], env, logs, records)
    timed("train ours (nnUNetTrainerMultiTask_bench, with the spectral fit)",
          ["nnUNetv2_train", "950", "3d_fullres", "0", "-tr", "nnUNetTrainerMultiTask_bench", "-device", "cpu"],
          train_env, logs, records)
    timed("train nnU-Net (nnUNetTrainer_bench)",
          ["nnUNetv2_train", "960", "3d_fullres", "0", "-tr", "nnUNetTrainer_bench", "-device", "cpu"],
          train_env, logs, records)
    rates = {"ours": training_rate(res, "Dataset950_MultiTask", "nnUNetTrainerMultiTask_bench", args.iterations),
             "nnU-Net": training_rate(res, "Dataset960_MultiTask", "nnUNetTrainer_bench", args.iterations)}
    with open(records[-2]["log"]) as f:
        fit_line = next((line.strip() for line in f if "Spectral OOD fit took" in line), None)
    fit_seconds = float(re.search(r"took ([0-9.]+) s", fit_line).group(1)) if fit_line else None
    timed("fit (nnunet_mt_ood fit, alone, for its memory)",
          ["nnunet_mt_ood", "fit", "-d", "950", "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMultiTask_bench",
           "-device", "cpu"], env, logs, records)
    test_images = os.path.join(work, "test_images")
    shutil.rmtree(test_images, ignore_errors=True)
    shutil.copytree(os.path.join(raw, "Dataset950_MultiTask", "imagesTs"), test_images)
    common = ["-i", test_images, "-d", "950", "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMultiTask_bench",
              "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta", "--save_probabilities"]
    timed("predict (nnUNetv2_predict)", ["nnUNetv2_predict", *common, "-o", os.path.join(work, "predict")],
          env, logs, records)
    timed("score (nnunet_mt_ood score, spectral)", ["nnunet_mt_ood", "score", *common, "-o",
                                                     os.path.join(work, "score")], env, logs, records)
    timed("evaluate (nnunet_mt evaluate)", ["nnunet_mt", "evaluate", "-ref",
                                            os.path.join(raw, "Dataset950_MultiTask", "labelsTs"), "-pred",
                                            os.path.join(work, "score"), "-prob", os.path.join(work, "score")],
          env, logs, records)
    sizes = {}
    for name in sorted(os.listdir(test_images)):
        image = sitk.ReadImage(os.path.join(test_images, name))
        sizes[name] = {"size_xyz": list(image.GetSize()), "spacing_xyz": [round(s, 3) for s in image.GetSpacing()]}
    summary = {"records": records, "training": rates, "fit_after_training_seconds": fit_seconds,
               "test_images": sizes, "iterations": args.iterations}
    with open(os.path.join(work, "realsize.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    rows = ["| step | ours: s / peak MiB | plain nnU-Net: s / peak MiB | ratio time / memory |", "|---|---|---|---|"]

    def cell(r):
        return f"{r['seconds']:.0f} / {r['peak_rss_mib']:.0f}" if r else "-"

    def ratio(a, b):
        return f"{a['seconds'] / b['seconds']:.2f} / {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}" if a and b else "-"
    records = summary["records"]
    pairs = [("merge", records[0], records[1]), ("plan and preprocess", records[2], records[3]),
             ("train (incl. start-up; ours incl. the spectral fit)", records[4], records[5]),
             ("spectral fit alone (no plain counterpart)", records[6], None),
             ("score spectral vs nnUNetv2_predict (2 test images)", records[8], records[7]),
             ("evaluate (no plain counterpart)", records[9], None)]
    for name, ours, plain in pairs:
        rows.append(f"| {name} | {cell(ours)} | {cell(plain)} | {ratio(ours, plain)} |")
    t = summary["training"]
    rows += ["", "| training | patch | batch | iterations/s | voxels/s (x 10^6) |", "|---|---|---|---|---|"]
    for who, r in t.items():
        voxels = r["iterations_per_second"] * r["batch_size"] * float(np.prod(r["patch_size"])) / 1e6
        rows.append(f"| {who} | {r['patch_size']} | {r['batch_size']} | {r['iterations_per_second']:.3f} | {voxels:.2f} |")
    rows.append(f"\nend-of-training spectral fit: {summary['fit_after_training_seconds']} s")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
