"""`nnunet_mt_ood score` vs `nnUNetv2_predict` on the same model and cases: wall time and peak memory.

    .venv/bin/python benchmarks/bench_ood_overhead.py [--root demo_output] [--repeats 3] [--device cpu] [--json F]
    .venv/bin/python benchmarks/bench_ood_overhead.py --method spectral mahalanobis knn msp entropy mcdropout
    .venv/bin/python benchmarks/bench_ood_overhead.py --temperature T_OR_JSON ...   # the opt-in calibrated predict

--method: one `score --method M` per method (default: spectral alone), each against the same predict runs.

With --temperature the second command is `nnUNetv2_predict` itself with $nnUNet_mt_temperature set (logits
divided by T inside the network; documentation/calibration.md), both with --save_probabilities.

Defaults to the model and test images that `make demo` leaves in demo_output/. The two commands run
alternately as separate processes (-npp 0 -nps 0, so each is one process); peak memory is the
process's maximum resident set size (os.wait4). Prints a Markdown table with the ratios.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def measure(cmd, env):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024  # s, MiB


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="demo_output", help="folder with nnUNet_raw/_preprocessed/_results")
    parser.add_argument("--images", help="input folder (default: the merged demo dataset's imagesTs)")
    parser.add_argument("-d", default="500")
    parser.add_argument("-tr", default="nnUNetTrainerMultiTaskCPU_dropout_12epochs")  # the demo's model
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("-f", default="0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--disable_tta", action="store_true", help="every command without mirroring")
    parser.add_argument("--json", help="also write the ratios to this JSON file (for check_regression.py)")
    parser.add_argument("--method", nargs="+", default=["spectral"], help="score one method at a time "
                        "(mcdropout needs a _dropout model and runs --mc_samples passes)")
    parser.add_argument("--mc_samples", default="3", help="passes of mcdropout (default 3, as make demo)")
    parser.add_argument("--temperature", metavar="T_OR_JSON", help="compare nnUNetv2_predict with "
                        "nnUNet_mt_temperature=T_OR_JSON against it without, instead of score against predict")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    env = dict(os.environ, nnUNet_raw=f"{root}/nnUNet_raw", nnUNet_preprocessed=f"{root}/nnUNet_preprocessed",
               nnUNet_results=f"{root}/nnUNet_results", nnUNet_def_n_proc="1")
    images = args.images or f"{root}/nnUNet_raw/Dataset500_MultiTask/imagesTs"
    common = ["-i", images, "-d", args.d, "-c", args.c, "-tr", args.tr, "-f", args.f, "-npp", "0", "-nps", "0",
              "-device", args.device] + (["--disable_tta"] if args.disable_tta else [])
    out = tempfile.mkdtemp()
    base = "nnUNetv2_predict"
    if args.temperature:
        common.append("--save_probabilities")
        others = {"nnUNetv2_predict with nnUNet_mt_temperature": (
            [f"{BIN}/nnUNetv2_predict", *common], dict(env, nnUNet_mt_temperature=args.temperature))}
    else:
        others = {f"nnunet_mt_ood score --method {m}": (
            [f"{BIN}/nnunet_mt_ood", "score", *common, "--method", m, "--mc_samples", args.mc_samples], env)
            for m in args.method}
    runs = {base: [], **{name: [] for name in others}}
    try:
        for r in range(args.repeats):
            runs[base].append(measure([f"{BIN}/nnUNetv2_predict", *common, "-o", f"{out}/a{r}"], env))
            for i, (name, (cmd, cmd_env)) in enumerate(others.items()):
                runs[name].append(measure([*cmd, "-o", f"{out}/b{r}_{i}"], cmd_env))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n_cases = len([f for f in os.listdir(images) if f.endswith(".nii.gz")])
    print(f"{n_cases} images from {images}; {args.repeats} alternating repeats; best wall time, largest peak RSS")
    print("| command | wall time (s) | peak RSS (MiB) | wall / predict | memory / predict |\n|---|---|---|---|---|")
    best = {k: (min(t for t, _ in v), max(m for _, m in v)) for k, v in runs.items()}
    t0, m0 = best[base]
    for k, (t, m) in best.items():
        print(f"| {k} | {t:.1f} | {m:.0f} | {t / t0:.3f} | {m / m0:.3f} |")
    spread = "; ".join(f"{k}: " + ", ".join(f"{t:.1f}" for t, _ in v) for k, v in runs.items())
    print(f"(every run's wall time, s: {spread})")
    if args.json:
        ratios = {}
        for name in others:  # keys check_regression.py reads: temperature_* / score_* (spectral), score_<method>_*
            method = name.rsplit(" ", 1)[-1]
            key = "temperature" if args.temperature else "score" if method == "spectral" else f"score_{method}"
            ratios[f"{key}_time_vs_predict"] = best[name][0] / t0
            ratios[f"{key}_memory_vs_predict"] = best[name][1] / m0
        write_json(args.json, ratios)


def write_json(path, ratios):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
