"""Harmless copies of in-distribution images, which no OOD detector should flag: each image cropped by 10 % of
every axis on each side, padded by 8 voxels of its minimum on each side, and its intensities scaled by 1.2
(geometry kept: SimpleITK moves the origin with a crop or a pad). Case CASE becomes CASE_crop, CASE_pad and
CASE_scale (nnUNetv2_predict's input layout, one channel).

    python benchmarks/shifted_images.py -i IMAGES_TS -o OUT_FOLDER
"""
import argparse
import os

import numpy as np
import SimpleITK as sitk

CHANNEL = "_0000.nii.gz"


def shifted(image: sitk.Image) -> dict:
    size = np.array(image.GetSize())
    margin = (size // 10).tolist()
    low = float(sitk.GetArrayViewFromImage(image).min())
    return {"crop": sitk.Crop(image, margin, margin),
            "pad": sitk.ConstantPad(image, [8, 8, 8], [8, 8, 8], low),
            "scale": sitk.Cast(image, sitk.sitkFloat32) * 1.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", required=True, help="folder of CASE_0000.nii.gz images")
    parser.add_argument("-o", required=True, help="new folder for the copies")
    args = parser.parse_args()
    os.makedirs(args.o, exist_ok=True)
    cases = sorted(f[:-len(CHANNEL)] for f in os.listdir(args.i) if f.endswith(CHANNEL))
    for case in cases:
        for kind, image in shifted(sitk.ReadImage(os.path.join(args.i, case + CHANNEL))).items():
            sitk.WriteImage(image, os.path.join(args.o, f"{case}_{kind}{CHANNEL}"), useCompression=True)
    print(f"wrote {3 * len(cases)} images ({len(cases)} cases x crop, pad, scale) into {args.o}")


if __name__ == "__main__":
    main()
