"""Fails loudly when a measured cost ratio is more than 10% worse than the recorded one.

    .venv/bin/python benchmarks/check_regression.py benchmarks/results/*.json [--recorded benchmarks/recorded.json]
                                                    [--tolerance 0.10]

Every ratio is "ours / reference" (time or memory), so lower is better. The result files are written by
the benchmark scripts' --json option; benchmarks/recorded.json holds the figures of documentation/benchmarks.md.
Exit code 1 and one line per regression when any ratio exceeds recorded * (1 + tolerance).
"""
import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON files written with --json by the benchmark scripts")
    parser.add_argument("--recorded", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorded.json"))
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    with open(args.recorded) as f:
        recorded = json.load(f)["ratios"]
    measured = {}
    for path in args.results:
        with open(path) as f:
            measured.update(json.load(f)["ratios"])
    failures, checked = [], 0
    for name, value in sorted(measured.items()):
        if name not in recorded:
            print(f"  {name}: {value:.3f} (no recorded figure)")
            continue
        limit = recorded[name] * (1 + args.tolerance)
        checked += 1
        status = "ok" if value <= limit else "REGRESSION"
        print(f"  {name}: {value:.3f} (recorded {recorded[name]:.3f}, limit {limit:.3f}) {status}")
        if value > limit:
            failures.append(f"{name}: {value:.3f} is more than {args.tolerance:.0%} worse than the recorded "
                            f"{recorded[name]:.3f}")
    for line in failures:
        print(f"check_regression: REGRESSION {line}", file=sys.stderr)
    print(f"{checked} ratios checked, {len(failures)} regressions")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
