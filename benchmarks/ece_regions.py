"""How much ECE/MCE move with the calibration region, on real predictions.

    .venv/bin/python benchmarks/ece_regions.py -ref LABELS_DIR -pred PRED_DIR [PRED_DIR ...]

PRED_DIR: an nnUNetv2_predict (or nnunet_mt_ood score) folder written with --save_probabilities. Runs
``nnunet_mt evaluate`` three times per folder (``--roi box``, ``reference``, ``image``) into a scratch folder
and prints, per model folder and region, the mean ECE and MCE over its cases, as a Markdown table.
"""
import argparse
import json
import os
import tempfile

import numpy as np

from nnunet_mt.evaluate import evaluate_folder

REGIONS = ("box", "reference", "image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-ref", required=True)
    parser.add_argument("-pred", nargs="+", required=True)
    args = parser.parse_args()
    print("| predictions | region | n | mean ECE | mean MCE |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for pred in args.pred:
            for roi in REGIONS:
                out = os.path.join(scratch, f"{len(os.listdir(scratch))}_{roi}.json")
                evaluate_folder(args.ref, pred, pred, None, out, 1, 10, roi, None, log=lambda *a, **k: None)
                cases = json.load(open(out))["per_case"]
                print(f"| {pred} | {roi} | {len(cases)} | {np.mean([c['ece'] for c in cases]):.4f} | "
                      f"{np.mean([c['mce'] for c in cases]):.4f} |")


if __name__ == "__main__":
    main()
