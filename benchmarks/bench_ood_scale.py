"""The streamed Gram accumulator alone, at real image sizes: peak resident memory and time per window.

    .venv/bin/python benchmarks/bench_ood_scale.py [--json benchmarks/results/ood_scale.json]
    .venv/bin/python benchmarks/bench_ood_scale.py --module /tmp/features_before.py --only 1   # another version
    .venv/bin/python benchmarks/bench_ood_scale.py --order memory --only 1 2 3   # memory_saving_order's windows

Each row runs in a fresh process fed nnU-Net's own window grid (``compute_steps_for_sliding_window``, step
0.5, Gaussian weights) with random float32 features of C channels; reported: the process's peak resident
memory (``ru_maxrss``; it includes ~0.4 GB of imported torch), the accumulator's own share above the
process before the first window, nnU-Net's float32 logits buffer for the volume (2 classes) for scale, and
the seconds per window, begin() included (one thread, as on a 2-core machine with nnU-Net predicting beside
it). "gram": the spectral signature's F^T F (features upsampled to the patch grid when coarser); "pooled":
Mahalanobis' channel sums, per window, without upsampling.
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

ROWS = [  # (accumulator, channels, patch edge, feature grid edge, volume x, y, z)
    ("gram", 14, 96, 96, 150, 256, 256),    # spectral: our recipe's last layer (14 features, 96^3), CT-sized volume
    ("gram", 32, 128, 128, 150, 256, 256),  # spectral: nnU-Net's default 3d_fullres last decoder stage
    ("gram", 32, 128, 128, 300, 512, 512),  # spectral: a full-size CT
    ("gram", 320, 96, 3, 96, 160, 160),     # bottleneck (320 x 3^3) upsampled into a Gram matrix: the old Mahalanobis path
    ("pooled", 320, 96, 3, 96, 160, 160),   # Mahalanobis now: channel sums per window, no upsampling
    ("pooled", 320, 128, 4, 300, 512, 512),  # Mahalanobis now, full-size CT
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_row(kind: str, channels: int, patch: int, grid: int, shape, module_path: str = None,
            order: str = "nnunet") -> dict:
    import torch
    torch.set_num_threads(1)
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
    if module_path:
        spec = importlib.util.spec_from_file_location("features_under_test", module_path)
        features = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(features)
    else:
        import nnunet_mt_ood.features as features
    patch_size = (patch,) * 3
    gaussian = compute_gaussian(patch_size, sigma_scale=1. / 8, value_scaling_factor=10,
                                device=torch.device("cpu")).float()
    steps = compute_steps_for_sliding_window(shape, patch_size, 0.5)
    windows = [tuple(slice(s, s + p) for s, p in zip((a, b, c), patch_size))
               for a in steps[0] for b in steps[1] for c in steps[2]]
    if order == "memory":
        windows = [windows[i] for i in features.memory_saving_order(windows)]
    window_features = torch.randn((channels, *(grid,) * 3))
    before = _rss_mb()
    start = time.perf_counter()
    if kind == "gram":
        acc = features.GramAccumulator(patch_size, gaussian)
        try:
            acc.begin(shape, shape, windows)
        except TypeError:  # versions before the cell scheme took no window list
            acc.begin(shape, shape)
    else:
        acc = features.PooledAccumulator(patch_size, gaussian)
        acc.begin(shape, shape, windows)
    for w in windows:
        acc.add(window_features, w)
    if kind == "gram":
        assert acc.finish().shape == (channels, channels)
    seconds = time.perf_counter() - start
    assert acc.voxels == shape[0] * shape[1] * shape[2] and acc.channel_sums.shape == (channels,)
    return {"accumulator": kind, "feature_grid": grid, "channels": channels, "patch": patch, "shape": list(shape), "windows": len(windows),
            "seconds_per_window": seconds / len(windows), "peak_rss_mb": _rss_mb(),
            "accumulator_mb": _rss_mb() - before,
            "open_cells_peak_mb": getattr(acc, "peak_open_bytes", 0) / 2 ** 20,
            "logits_buffer_mb": 2 * shape[0] * shape[1] * shape[2] * 4 / 2 ** 20,
            "module": module_path or "nnunet_mt_ood.features", "order": order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", help="features.py of another version (default: the installed one)")
    parser.add_argument("--only", type=int, nargs="+", help="row numbers (1-based) to run")
    parser.add_argument("--json", help="write the rows here")
    from nnunet_mt_ood.options import WINDOW_ORDERS
    parser.add_argument("--order", choices=WINDOW_ORDERS, default="nnunet",
                        help="window order: nnU-Net's (first axis outermost) or memory_saving_order's")
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)  # internal: run one row in this process
    args = parser.parse_args()
    if args.row is not None:
        print(json.dumps(run_row(*ROWS[args.row][:4], ROWS[args.row][4:], args.module, args.order)))
        return
    results = []
    print("| accumulator | C x feature grid | patch | volume | windows | s / window | peak RSS (MB) | accumulator (MB) | "
          "open cells' peak (MB) | nnU-Net logits (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i in args.only and [n - 1 for n in args.only] or range(len(ROWS)):
        cmd = [sys.executable, __file__, "--row", str(i), "--order", args.order] + (
            ["--module", args.module] if args.module else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| row {i + 1} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"| {r['accumulator']} | {r['channels']} x {r['feature_grid']}^3 | {r['patch']}^3 | {'x'.join(map(str, r['shape']))} | {r['windows']} | "
              f"{r['seconds_per_window']:.3f} | {r['peak_rss_mb']:.0f} | {r['accumulator_mb']:.0f} | "
              f"{r['open_cells_peak_mb']:.0f} | {r['logits_buffer_mb']:.0f} |", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
