"""Measurements and checks behind scripts/gpu_check.sh (see its header); one subcommand per step.

    python benchmarks/gpu_check.py train   --record R --device cuda --dataset D --trainers A B --iterations N
    python benchmarks/gpu_check.py run     --record R --label L -- nnUNetv2_predict ARGS...
    python benchmarks/gpu_check.py volume  -o FILE --shape Z Y X --like IMAGE --plans PLANS
    python benchmarks/gpu_check.py compare --record R --model DIR --images DIR --device cuda \
                                           --segmentations A B [--segmentations C D ...]
    python benchmarks/gpu_check.py report  --record R --json OUT.json --markdown OUT.md

Each step appends one JSON line to the record R; `report` turns the record into gpu.json and a Markdown
table and exits 1 when a check failed. Peak GPU memory is torch.cuda.max_memory_allocated (MiB) of the
process that ran the step: `run` calls the console script's entry point in this process (with -npp 0 -nps 0
nnU-Net predicts in-process too), so the figure is the command's own.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# GPU (float16 autocast) vs CPU (float32) signatures are judged by what a user acts on: the accept/flag
# decision against the fitted tau must agree on every image, and each image's distance to the nearest training
# signature may move by at most this fraction of tau (a fixed per-component tolerance could pass while
# decisions flip: tau is about 0.01 on our models)
DISTANCE_TOLERANCE = {"cuda": 0.05, "cpu": 1e-6}  # max |d_device - d_cpu| / tau
VOXEL_AGREEMENT = {"cuda": 0.999, "cpu": 1.0}  # smallest fraction of equal labels per case


def _append(record: str, entry: dict) -> None:
    with open(record, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _peak_gpu_mib():
    import torch
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_initialized() else None


def cmd_train(args) -> None:
    """Training iterations/s and peak memory of each trainer, in fresh processes (bench_training's worker)."""
    sys.path.insert(0, HERE)
    from bench_training import measure_trainer
    for name in args.trainers:
        result = measure_trainer(name, args.dataset, args.iterations, dict(os.environ), args.device, args.warmup)
        print(f"{name}: {result['iterations_per_second']:.2f} it/s, patch {result['patch_size']}, "
              f"batch {result['batch_size']}, peak GPU {result['peak_gpu_mib']} MiB", flush=True)
        _append(args.record, {"step": "train", "label": name, "device": args.device, "iterations": args.iterations,
                              "warmup": args.warmup, **result})


def cmd_run(args) -> None:
    """One console script (nnUNetv2_predict, nnunet_mt_ood ...) in this process: wall time, peak memory. The
    time includes the command's imports: nnUNetv2_predict imports torch and nnU-Net when its module loads,
    nnunet_mt_ood inside main, so timing main alone would charge them to ours only."""
    from importlib.metadata import entry_points
    name, argv = args.command[0], args.command[1:]
    found = [e for e in entry_points(group="console_scripts") if e.name == name]
    if not found:
        raise SystemExit(f"{name}: no such console script in this environment")
    start = time.perf_counter()
    main = found[0].load()
    sys.argv = [name] + argv
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    seconds = time.perf_counter() - start
    code = 0 if code is None else code
    _append(args.record, {"step": "run", "label": args.label, "command": " ".join([name] + argv),
                          "exit_code": code, "seconds": seconds, "peak_gpu_mib": _peak_gpu_mib(),
                          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    print(f"{args.label}: {seconds:.1f} s, exit code {code}", flush=True)
    if code != 0:
        raise SystemExit(code)


def cmd_volume(args) -> None:
    """A CT-sized synthetic image (air at -1000 HU, a soft-tissue body, a denser organ) at the spacing of the
    plans' 3d_fullres configuration (nnU-Net then resamples nothing), origin and direction of --like."""
    import SimpleITK as sitk
    with open(args.plans) as f:
        plans = json.load(f)
    spacing = np.asarray(plans["configurations"]["3d_fullres"]["spacing"], float)  # transposed axis order
    spacing_zyx = spacing[np.argsort(plans["transpose_forward"])]  # the image's own (z, y, x) order
    like = sitk.ReadImage(args.like)
    z, y, x = np.ogrid[:args.shape[0], :args.shape[1], :args.shape[2]]
    r2 = sum(((c - (n - 1) / 2) / (n / 2)) ** 2 for c, n in zip((z, y, x), args.shape))
    image = np.full(args.shape, -1000, np.int16)
    image[r2 < 0.8] = 40  # body
    image[r2 < 0.15] = 120  # organ
    out = sitk.GetImageFromArray(image)
    out.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    out.SetOrigin(like.GetOrigin())
    out.SetDirection(like.GetDirection())
    os.makedirs(os.path.dirname(os.path.abspath(args.o)), exist_ok=True)
    sitk.WriteImage(out, args.o)
    print(f"wrote {args.o}: {list(args.shape)} voxels (z, y, x), spacing {spacing_zyx.tolist()} mm (z, y, x)")


def _signatures(model: str, images: str, device: str, layer: str = "last") -> dict:
    """Spectral signatures of every image in `images` (one pass, no mirroring: as the fit computes them)."""
    import tempfile
    import torch
    from nnunet_mt_ood.predictor import OODPredictor
    dev = torch.device(device)
    predictor = OODPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                             perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                             allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
    predictor.enable_ood(layer=layer)
    cases = sorted({f[:-len("_0000.nii.gz")] for f in os.listdir(images) if f.endswith("_0000.nii.gz")})
    with tempfile.TemporaryDirectory() as out:
        predictor.predict_from_files_sequential([[os.path.join(images, f"{c}_0000.nii.gz")] for c in cases],
                                                [os.path.join(out, c) for c in cases], False, True)
    return {c: predictor.results[c][f"signature_{layer}"] for c in cases}


def signature_agreement(detector, on_device: dict, on_cpu: dict) -> dict:
    """Per case: the spectral distance on each side relative to the fitted tau, their difference, whether the
    decisions agree, and the largest component difference (for information)."""
    cases = sorted(on_cpu)
    device, cpu = (detector.score(np.stack([side[c] for c in cases])) for side in (on_device, on_cpu))
    tau = float(detector.threshold_)
    return {"tau": tau, "distance_over_tau": {c: [float(d / tau), float(e / tau)] for c, d, e in zip(cases, device, cpu)},
            "difference_over_tau": {c: float(abs(d - e) / tau) for c, d, e in zip(cases, device, cpu)},
            "decisions_agree": {c: bool((d > tau) == (e > tau)) for c, d, e in zip(cases, device, cpu)},
            "max_abs_difference": {c: float(np.max(np.abs(on_device[c] - on_cpu[c]))) for c in cases}}


def cmd_compare(args) -> None:
    """Signatures on --device vs the CPU (judged against the fitted tau); each pair of segmentation folders
    voxel for voxel."""
    import SimpleITK as sitk
    from nnunet_mt_ood.fit import load_detector
    on_device, on_cpu = _signatures(args.model, args.images, args.device), _signatures(args.model, args.images, "cpu")
    detector, _ = load_detector(os.path.join(args.model, "fold_0"), "spectral", "last")
    entry = signature_agreement(detector, on_device, on_cpu)
    _append(args.record, {"step": "signatures", "label": f"signatures {args.device} vs cpu", "device": args.device,
                          "tolerance_over_tau": DISTANCE_TOLERANCE[args.device], **entry})
    print(f"signatures {args.device} vs cpu: decisions agree on {sum(entry['decisions_agree'].values())} of "
          f"{len(on_cpu)}; largest distance difference {max(entry['difference_over_tau'].values()):.3f} tau")
    for first, second in args.segmentations:
        agreement = {}
        for name in sorted(f for f in os.listdir(first) if f.endswith(".nii.gz")):
            a = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(first, name)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(second, name)))
            agreement[name[:-len(".nii.gz")]] = float(np.mean(a == b)) if a.shape == b.shape else 0.0
        if not agreement:
            raise SystemExit(f"{first}: no segmentation to compare")
        label = f"{os.path.basename(first)} vs {os.path.basename(second)}"
        _append(args.record, {"step": "segmentations", "label": label, "device": args.device,
                              "voxel_agreement": agreement, "minimum": VOXEL_AGREEMENT[args.device]})
        print(f"segmentations {label}: smallest agreement {min(agreement.values()):.6f}")


def _failures(entries) -> list:
    failed = []
    for e in entries:
        if e["step"] == "run" and e["exit_code"] != 0:
            failed.append(f"{e['label']}: exit code {e['exit_code']}")
        if e["step"] == "signatures":
            flipped = [c for c, same in e["decisions_agree"].items() if not same]
            if flipped:
                failed.append(f"{e['label']}: the decision differs for {', '.join(flipped)}")
            if max(e["difference_over_tau"].values()) > e["tolerance_over_tau"]:
                failed.append(f"{e['label']}: distance difference {max(e['difference_over_tau'].values()):.3f} tau "
                              f"> {e['tolerance_over_tau']} tau")
        if e["step"] == "segmentations" and min(e["voxel_agreement"].values()) < e["minimum"]:
            failed.append(f"{e['label']}: voxel agreement {min(e['voxel_agreement'].values()):.6f} < {e['minimum']}")
        if e["step"] == "file" and not e["exists"]:
            failed.append(f"{e['label']}: {e['path']} missing")
    return failed


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _mib(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def summarize(entries: list) -> dict:
    """The ratios ours / nnU-Net from the record's steps (labels fixed by gpu_check.sh); None-free."""
    by = {e["label"]: e for e in entries if e["step"] in ("train", "run")}
    train = [e for e in entries if e["step"] == "train"]
    ratios = {}
    if len(train) == 2:
        ours, theirs = train
        voxels = [e["iterations_per_second"] * e["batch_size"] * float(np.prod(e["patch_size"])) for e in train]
        ratios["training_iterations_per_second"] = _ratio(ours["iterations_per_second"], theirs["iterations_per_second"])
        ratios["training_voxels_per_second"] = _ratio(*voxels)
        ratios["training_peak_gpu"] = _ratio(ours["peak_gpu_mib"], theirs["peak_gpu_mib"])
        ratios["training_peak_rss"] = _ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])
    for scale in ("test images", "large volume"):
        predict = by.get(f"nnUNetv2_predict, {scale}")
        for method in ("spectral", "mahalanobis"):
            score = by.get(f"score {method}, {scale}")
            if predict and score:
                key = f"{method}_{{}}_{scale.replace(' ', '_')}"
                ratios[key.format("time")] = _ratio(score["seconds"], predict["seconds"])
                ratios[key.format("peak_gpu")] = _ratio(score["peak_gpu_mib"], predict["peak_gpu_mib"])
                ratios[key.format("peak_rss")] = _ratio(score["peak_rss_mib"], predict["peak_rss_mib"])
    return {k: v for k, v in ratios.items() if v is not None}


def markdown(entries: list, ratios: dict, failures: list, device_name: str) -> str:
    lines = [f"**GPU check on {device_name}** (scripts/gpu_check.sh)", "",
             "| step | what | time | peak GPU (MiB) | peak RSS (MiB) |", "|---|---|---|---|---|"]
    for e in entries:
        if e["step"] == "train":
            lines.append(f"| training | {e['label']}, patch {e['patch_size']}, batch {e['batch_size']} | "
                         f"{e['iterations_per_second']:.2f} it/s ({e['iterations']} after {e['warmup']} warm-up) | "
                         f"{_mib(e['peak_gpu_mib'])} | {_mib(e['peak_rss_mib'])} |")
        elif e["step"] == "run":
            lines.append(f"| prediction | {e['label']} | {e['seconds']:.1f} s | {_mib(e['peak_gpu_mib'])} | "
                         f"{_mib(e['peak_rss_mib'])} |")
    lines += ["", "| ratio ours / nnU-Net | value |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.3f} |" for k, v in ratios.items()]
    lines += ["", "| check | result |", "|---|---|"]
    for e in entries:
        if e["step"] == "signatures":
            lines.append(f"| {e['label']} | decisions agree on {sum(e['decisions_agree'].values())} of "
                         f"{len(e['decisions_agree'])}; largest distance difference "
                         f"{max(e['difference_over_tau'].values()):.4f} tau (at most {e['tolerance_over_tau']}); "
                         f"largest component difference {max(e['max_abs_difference'].values()):.2e} |")
        elif e["step"] == "segmentations":
            lines.append(f"| {e['label']} | smallest voxel agreement {min(e['voxel_agreement'].values()):.6f} "
                         f"(at least {e['minimum']}) |")
        elif e["step"] == "file":
            lines.append(f"| {e['label']} | {'present' if e['exists'] else 'MISSING'} |")
    lines += ["", "**all checks passed**" if not failures else "**FAILED**: " + "; ".join(failures)]
    return "\n".join(lines) + "\n"


def cmd_file(args) -> None:
    _append(args.record, {"step": "file", "label": args.label, "path": args.path, "exists": os.path.exists(args.path)})


def cmd_report(args) -> int:
    import torch
    with open(args.record) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    ratios, failures = summarize(entries), _failures(entries)
    table = markdown(entries, ratios, failures, device_name)
    for path, text in ((args.json, json.dumps({"device": device_name, "torch": torch.__version__, "ratios": ratios,
                                                 "failures": failures, "steps": entries}, indent=1)),
                       (args.markdown, table)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(table)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("train")
    p.add_argument("--record", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dataset", required=True)
    p.add_argument("--trainers", nargs="+", required=True, help="ours, then (for the ratios) nnU-Net's")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p = sub.add_parser("run")
    p.add_argument("--record", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("volume")
    p.add_argument("-o", required=True)
    p.add_argument("--shape", type=int, nargs=3, required=True, help="z y x voxels")
    p.add_argument("--like", required=True, help="image whose origin and direction to copy")
    p.add_argument("--plans", required=True, help="the model's plans.json (its 3d_fullres spacing is used)")
    p = sub.add_parser("compare")
    p.add_argument("--record", required=True)
    p.add_argument("--model", required=True, help="the model's results folder (<trainer>__<plans>__<config>)")
    p.add_argument("--images", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--segmentations", nargs=2, action="append", default=[], metavar=("A", "B"))
    p = sub.add_parser("file")
    p.add_argument("--record", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("path")
    p = sub.add_parser("report")
    p.add_argument("--record", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--markdown", required=True)
    args = parser.parse_args(argv)
    if args.step == "run" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    steps = {"train": cmd_train, "run": cmd_run, "volume": cmd_volume, "compare": cmd_compare, "file": cmd_file,
             "report": cmd_report}
    return steps[args.step](args) or 0


if __name__ == "__main__":
    sys.exit(main())
