"""HD95 + ASSD: nnunet_mt.metrics vs MONAI on the same masks, side by side.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 3]

Masks: two overlapping, shifted, noisy-surfaced balls per size; anisotropic spacing. MONAI is called
as its users call it (compute_hausdorff_distance + compute_average_surface_distance, float64 input);
ours as `nnunet_mt evaluate` does (one hd95_and_assd call). Prints a Markdown table with the ratio and
the largest difference of the values (mm).
"""
import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from nnunet_mt.metrics import hd95_and_assd


def masks(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), 0).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.normal(size=(n,) * 3).astype(np.float32), n / 32) * n * 0.4
    r = 0.3 * n
    a = np.sqrt(((grid - n / 2) ** 2).sum(0)) + noise < r
    b = np.sqrt(((grid - n / 2 - np.array([2, -1, 1])[:, None, None, None] * n / 64) ** 2).sum(0)) < r
    return a, b


def monai_hd95_assd(a, b, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    p = torch.from_numpy(a[None, None].astype(np.float64))
    r = torch.from_numpy(b[None, None].astype(np.float64))
    hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing)).item()
    sd = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=list(spacing)).item()
    return hd, sd


def best_time(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--json", help="also write the time ratios ours / MONAI to this JSON file")
    args = parser.parse_args()
    ratios = {}
    spacing = (2.5, 0.8, 0.8)
    print(f"torch threads: {torch.get_num_threads()}; best of {args.repeats}; spacing {spacing} mm")
    print("| volume | surface voxels (a + b) | ours (s) | MONAI (s) | MONAI / ours | max value difference (mm) |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        a, b = masks(n)
        surface = int((a & ~ndimage.binary_erosion(a)).sum() + (b & ~ndimage.binary_erosion(b)).sum())
        t_ours, ours = best_time(lambda: hd95_and_assd(a, b, spacing), args.repeats)
        t_monai, theirs = best_time(lambda: monai_hd95_assd(a, b, spacing), args.repeats)
        diff = max(abs(x - y) for x, y in zip(ours, theirs))
        print(f"| {n}^3 | {surface} | {t_ours:.3f} | {t_monai:.3f} | {t_monai / t_ours:.1f}x | {diff:.1e} |")
        ratios[f"surface_distance_time_vs_monai_{n}"] = t_ours / t_monai
    if args.json:
        import json
        import os
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
