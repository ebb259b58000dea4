"""Converts ../shared/realdata (small real CT and MR volumes) into nnU-Net raw datasets for the experiments.

    python benchmarks/realdata/convert.py [--realdata ../shared/realdata] [-o $nnUNet_raw] [--spacing 4]

Writes (all resampled to an isotropic CPU-sized spacing, 4 mm by default; images linear, labels nearest):
- Dataset901_BrainTumourMR: BraTS 2013 FLAIR (6 subjects), whole tumour (label > 0); subjects 1-4 train,
  5-6 test; each subject also left-right mirrored (12 cases, 6 real subjects).
- Dataset902_LiverCT: TotalSegmentator abdominal CT, liver (label 5). Training cases are overlapping crops
  of one patient; test cases the other patient (the DICOM series) and its mirror.
- Dataset903_LiverMR: TotalSegmentator abdominal MR, liver (label 5); crops of one patient (train and test).
- Dataset904_BrainTumourMR2 (OOD): pyradiomics brain MR with tumour label, 2 subjects and mirrors, test only.
- Dataset905_BreastMR (OOD): pyradiomics breast MR with lesion label, 1 subject and its mirror, test only.
- Dataset906_LungTumourCT: chest CT with lung tumour (GTV), 6 patients: 4 train (3 Radiomics Digital
  Phantom + 1 pyradiomics), 2 test (1 + 1); each also mirrored (8 / 4 cases).

Crops and mirrors are not new subjects; the results say so. Nothing is written into the realdata folder.
Exits 0 with a message when the realdata folder is absent.
"""
import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk


def resample(image: sitk.Image, spacing: float, is_label: bool, reference: sitk.Image = None) -> sitk.Image:
    """image on an isotropic grid of `spacing` mm covering the reference's extent (default: image's own)."""
    reference = reference or image
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(reference.GetSize(), reference.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing((spacing,) * 3)
    grid.SetOrigin(reference.GetOrigin())
    grid.SetDirection(reference.GetDirection())
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pixel = sitk.sitkUInt8 if is_label else sitk.sitkFloat32
    return sitk.Resample(sitk.Cast(image, pixel) if is_label else sitk.Cast(image, sitk.sitkFloat32), grid,
                         sitk.Transform(), interpolator, 0, pixel)


def to_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)  # z, y, x


def from_array(array: np.ndarray, spacing: float) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing((spacing,) * 3)
    return image


def crops(image: np.ndarray, label: np.ndarray, size_zyx: Tuple[int, int, int], n: int, seed: int) -> List[tuple]:
    """n crops of size_zyx (clipped to the image) whose centres lie in the labelled object; reproducible."""
    rng = np.random.default_rng(seed)
    size = [min(s, d) for s, d in zip(size_zyx, image.shape)]
    inside = np.argwhere(label > 0)
    out = []
    for _ in range(n):
        centre = inside[rng.integers(len(inside))]
        start = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, image.shape)]
        sl = tuple(slice(a, a + s) for a, s in zip(start, size))
        out.append((image[sl], label[sl]))
    return out


def write_dataset(raw: str, dataset_id: int, name: str, modality: str, train: Dict[str, tuple],
                  test: Dict[str, tuple], spacing: float, description: str) -> str:
    """cases: id -> (image zyx, label zyx); written as an nnU-Net raw dataset (replaced if present)."""
    folder = os.path.join(raw, f"Dataset{dataset_id:03d}_{name}")
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for split, cases in (("Tr", train), ("Ts", test)):
        os.makedirs(os.path.join(tmp, f"images{split}"))
        os.makedirs(os.path.join(tmp, f"labels{split}"))
        for case, (image, label) in cases.items():
            sitk.WriteImage(from_array(image.astype(np.float32), spacing),
                            os.path.join(tmp, f"images{split}", f"{case}_0000.nii.gz"), useCompression=True)
            sitk.WriteImage(from_array((label > 0).astype(np.uint8), spacing),
                            os.path.join(tmp, f"labels{split}", f"{case}.nii.gz"), useCompression=True)
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": modality}, "labels": {"background": 0, "target": 1},
                   "numTraining": len(train), "file_ending": ".nii.gz", "name": name,
                   "description": description}, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    print(f"{folder}: {len(train)} training, {len(test)} test cases")
    return folder


def with_mirror(cases: Dict[str, tuple]) -> Dict[str, tuple]:
    """Adds each case mirrored left-right (x axis) as '<id>m'."""
    out = dict(cases)
    for case, (image, label) in cases.items():
        out[case + "m"] = (image[:, :, ::-1], label[:, :, ::-1])
    return out


def read_pair(image_path: str, label_path: str, spacing: float, label_values=None) -> tuple:
    image = sitk.ReadImage(image_path) if os.path.isfile(image_path) else _read_dicom(image_path)
    label = sitk.ReadImage(label_path)
    if label_values is not None:
        label = _select(label, label_values)
    # the label is resampled onto the image's grid in physical space (handles flipped directions)
    image_r = resample(image, spacing, False)
    label_r = resample(label, spacing, True, reference=image)
    return to_array(image_r), to_array(label_r)


def _select(label: sitk.Image, values) -> sitk.Image:
    out = sitk.GetImageFromArray(np.isin(to_array(label), values).astype(np.uint8))
    out.CopyInformation(label)
    return out


def _read_dicom(folder: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return reader.Execute()


def convert(realdata: str, raw: str, spacing: float) -> None:
    brats = os.path.join(realdata, "brats2013_deepmedic")
    subjects = sorted(d for d in os.listdir(brats) if d.startswith("pat"))
    cases = {f"brats_{s}": read_pair(os.path.join(brats, s, "Flair_subtrMeanDivStd.nii.gz"),
                                     os.path.join(brats, s, "OTMultiClass.nii.gz"), spacing, [1, 2, 3, 4])
             for s in subjects}
    names = sorted(cases)
    write_dataset(raw, 901, "BrainTumourMR", "MR", with_mirror({k: cases[k] for k in names[:4]}),
                  with_mirror({k: cases[k] for k in names[4:]}), spacing,
                  "BraTS 2013 FLAIR (DeepMedic example data, CC BY-NC-SA 3.0), whole tumour; mirrors added")

    ts = os.path.join(realdata, "totalsegmentator_examples")
    image, label = read_pair(os.path.join(ts, "example_ct.nii.gz"),
                             os.path.join(ts, "example_seg_fast_force_split.nii.gz"), spacing, [5])
    box = tuple(int(round(v * 3.0 / spacing)) for v in (48, 64, 64))
    train = {f"ctA_crop{i}": c for i, c in enumerate(crops(image, label, box, 8, seed=902))}
    test = with_mirror({"ctB": read_pair(os.path.join(ts, "example_ct_dicom"),
                                         os.path.join(ts, "example_seg_dicom.nii.gz"), spacing, [5])})
    write_dataset(raw, 902, "LiverCT", "CT", train, test, spacing, "TotalSegmentator example CT (Apache-2.0), liver; "
                  "training: crops of patient A; test: patient B (DICOM series) and its mirror")

    image, label = read_pair(os.path.join(ts, "example_mr_sm.nii.gz"), os.path.join(ts, "example_seg_mr.nii.gz"),
                             spacing, [5])
    box = tuple(int(round(v * 3.0 / spacing)) for v in (20, 64, 64))
    both = crops(image, label, box, 10, seed=903)
    write_dataset(raw, 903, "LiverMR", "MR", {f"mr_crop{i}": c for i, c in enumerate(both[:8])},
                  {f"mr_crop{i}": c for i, c in enumerate(both[8:], 8)}, spacing,
                  "TotalSegmentator example MR (Apache-2.0), liver; crops of one patient (train and test)")

    lung = os.path.join(realdata, "lung_tumour_ct")
    patients = {f"lung_pat{i}": (os.path.join(lung, f"pat_{i}_ct.nii.gz"), os.path.join(lung, f"pat_{i}_gtv.nii.gz"))
                for i in (1, 2, 3, 4)}
    patients.update({f"lung_rad{i}": (os.path.join(lung, f"lung{i}_image.nrrd"), os.path.join(lung, f"lung{i}_label.nrrd"))
                     for i in (1, 2)})
    cases = {k: read_pair(image, label, spacing, [1]) for k, (image, label) in patients.items()}
    write_dataset(raw, 906, "LungTumourCT", "CT",
                  with_mirror({k: cases[k] for k in ("lung_pat1", "lung_pat2", "lung_pat3", "lung_rad1")}),
                  with_mirror({k: cases[k] for k in ("lung_pat4", "lung_rad2")}), spacing,
                  "Lung tumour GTV on chest CT: 4 patients of the Radiomics Digital Phantom (CC BY-NC 3.0) and 2 "
                  "of the pyradiomics test data (BSD-3-Clause); 3 + 1 patients train, 1 + 1 test; mirrors added")

    pr = os.path.join(realdata, "pyradiomics")
    brains = with_mirror({f"brain{i}": read_pair(os.path.join(pr, f"brain{i}_image.nrrd"),
                                                 os.path.join(pr, f"brain{i}_label.nrrd"), spacing, [1])
                          for i in (1, 2)})
    write_dataset(raw, 904, "BrainTumourMR2", "MR", {}, brains, spacing,
                  "pyradiomics brain MR test data (BSD-3-Clause), tumour; OOD for the experiments")
    breast = with_mirror({"breast1": read_pair(os.path.join(pr, "breast1_image.nrrd"),
                                               os.path.join(pr, "breast1_label.nrrd"), spacing, [1])})
    write_dataset(raw, 905, "BreastMR", "MR", {}, breast, spacing,
                  "pyradiomics breast MR test data (BSD-3-Clause), lesion; OOD for the experiments")


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", default=os.path.join(here, "..", "..", "..", "shared", "realdata"))
    parser.add_argument("-o", default=os.environ.get("nnUNet_raw"), help="nnUNet_raw folder (default $nnUNet_raw)")
    parser.add_argument("--spacing", type=float, default=4.0, help="isotropic target spacing in mm (default 4)")
    args = parser.parse_args()
    if not os.path.isdir(args.realdata):
        print(f"{args.realdata}: real data not found; nothing to convert (it exists only on the project's machines)")
        return 0
    if not args.o:
        print("convert.py: error: pass -o RAW_DIR or set nnUNet_raw", file=sys.stderr)
        return 2
    os.makedirs(args.o, exist_ok=True)
    convert(os.path.abspath(args.realdata), args.o, args.spacing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
