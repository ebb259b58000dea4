"""`nnunet_mt_ood score` per OOD method against `nnUNetv2_predict`, on images of growing size (issue 18).

    .venv/bin/python benchmarks/bench_ood_sizes.py [--work /tmp/ood_sizes] [--sizes 64 128] [--repeats 3] [--json F]

Builds its own model first (skipped when --work already holds it): the demo's cortical-plate MR dataset
(Dataset012), planned and preprocessed by nnU-Net, trained for 2 epochs with the CPU recipe and dropout
(`nnUNetTrainerMultiTaskSmoke_dropout`: what a prediction costs does not depend on how well the model is
trained), every method fitted on its training images. Then, per size, one cube of that many voxels per
side at the model's spacing (`gpu_check.py volume`): `nnUNetv2_predict`, and `nnunet_mt_ood score` with each
method alone, every command a separate process (-npp 0 -nps 0 --disable_tta -device cpu). Reported: wall
time and peak resident memory (os.wait4) and their ratios to `nnUNetv2_predict` on the same image; with
--repeats N, the commands run N times in turn (predict, then each method) and the table gives the median
wall time, its range, and the largest peak memory. mcdropout, (1 + passes) predictions by design, runs only
up to --mcdropout_up_to voxels per side (default 64), so that the default run takes under 15 minutes on 2 cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from bench_ood_overhead import measure as _run  # (wall s, peak RSS MiB) of one command as its own process

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = "nnUNetTrainerMultiTaskSmoke_dropout"
METHODS = ["spectral", "mahalanobis", "knn", "msp", "entropy", "mcdropout"]
MC_SAMPLES = 5  # the demo's


def _model(work, env):
    """Demo Dataset012, preprocessed, trained and fitted in work/ (each step skipped when done)."""
    model = os.path.join(work, "results", "Dataset012_CorticalPlateMR", f"{TRAINER}__nnUNetPlans__3d_fullres")
    if os.path.isfile(os.path.join(model, "fold_0", "ood_fit_mcdropout.json")):
        return model
    subprocess.run([f"{BIN}/nnunet_mt", "demo-data", "-d", "12"], env=env, check=True)
    subprocess.run([f"{BIN}/nnUNetv2_plan_and_preprocess", "-d", "12", "-c", "3d_fullres", "-np", "1"], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([f"{BIN}/nnUNetv2_train", "12", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
                   env=dict(env, nnUNet_n_proc_DA="0"), check=True, stdout=subprocess.DEVNULL)
    subprocess.run([f"{BIN}/nnunet_mt_ood", "fit", "-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                    "-device", "cpu", "--disable_tta", "--mc_samples", str(MC_SAMPLES), "--method", *METHODS],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/ood_sizes", help="scratch folder (reused)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="cube edges in voxels")
    parser.add_argument("--mcdropout_up_to", type=int, default=64,
                        help="largest cube edge at which mcdropout is run (default 64)")
    parser.add_argument("--method", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--repeats", type=int, default=1, help="runs of every command, in turn (default 1)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    env = dict(os.environ, nnUNet_raw=f"{work}/raw", nnUNet_preprocessed=f"{work}/preprocessed",
               nnUNet_results=f"{work}/results", nnUNet_def_n_proc="1")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[var], exist_ok=True)
    model = _model(work, env)
    like = os.path.join(env["nnUNet_raw"], "Dataset012_CorticalPlateMR", "imagesTs")
    like = os.path.join(like, sorted(os.listdir(like))[0])
    common = ["-d", "12", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-npp", "0", "-nps", "0", "-device", "cpu",
              "--disable_tta"]
    rows = []
    print("| volume (voxels) | command | wall (s) | peak RSS (MiB) | wall / predict | memory / predict |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        images = os.path.join(work, f"volume_{size}")
        if not os.path.isdir(images):
            subprocess.run([sys.executable, os.path.join(HERE, "gpu_check.py"), "volume", "-o",
                            os.path.join(images, "cube_0000.nii.gz"), "--shape", str(size), str(size), str(size),
                            "--like", like, "--plans", os.path.join(model, "plans.json")], check=True)
        out = os.path.join(work, "out", str(size))
        commands = [("nnUNetv2_predict", [f"{BIN}/nnUNetv2_predict", "-i", images, "-o", f"{out}/predict", *common])]
        commands += [(f"score {method}", [f"{BIN}/nnunet_mt_ood", "score", "-i", images, "-o", f"{out}/{method}",
                                          *common, "--method", method, "--mc_samples", str(MC_SAMPLES)])
                     for method in args.method if method != "mcdropout" or size <= args.mcdropout_up_to]
        walls, peaks = {name: [] for name, _ in commands}, {name: [] for name, _ in commands}
        for _ in range(args.repeats):
            for name, argv in commands:
                t, m = _run(argv, env)
                walls[name].append(t)
                peaks[name].append(m)
        t0, m0 = statistics.median(walls["nnUNetv2_predict"]), max(peaks["nnUNetv2_predict"])
        for name, _ in commands:
            t, m = statistics.median(walls[name]), max(peaks[name])
            rows.append({"size": size, "command": name, "wall_s": t, "wall_s_runs": walls[name], "peak_rss_mib": m,
                         "wall_ratio": t / t0, "memory_ratio": m / m0})
            spread = f" ({min(walls[name]):.1f}-{max(walls[name]):.1f})" if args.repeats > 1 else ""
            print(f"| {size}^3 | {name} | {t:.1f}{spread} | {m:.0f} | {t / t0:.2f} | {m / m0:.2f} |", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"trainer": TRAINER, "mc_samples": MC_SAMPLES, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
