"""Synthetic nnU-Net raw datasets that differ the way the paper's datasets do.

Every dataset is deterministic per seed. Shapes are defined in mm on each dataset's own voxel grid,
so anisotropic spacings give anatomically consistent objects. Intensities:
- CT-like: Hounsfield units, air -1000, fat about -100, soft tissue 0-100 HU, organ 50-120 HU.
- MR-like: arbitrary positive scale per case (x 200-900), smooth multiplicative bias field, Rician-ish
  noise, background near 0.

Datasets 11-13 are meant for training (in-distribution); 14 and 15 stay out of training and serve as
out-of-distribution inputs (see documentation/demo_data.md).
"""
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_mt import layout
from nnunet_mt.atomic import written_atomically


@dataclass(frozen=True)
class DemoDataset:
    dataset_id: int
    name: str
    modality: str  # "CT" or "MR"
    shape_zyx: Tuple[int, int, int]  # voxels
    spacing_zyx: Tuple[float, float, float]  # mm
    n_train: int
    n_test: int
    labels: Dict[str, int]
    role: str  # "train" or "ood"
    description: str
    varied_contrast: bool = False  # organ intensity drawn per case on either side of the tissue's (see make_case)

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


DEMO_DATASETS: List[DemoDataset] = [
    DemoDataset(11, "LiverCT", "CT", (48, 48, 48), (2.0, 2.0, 2.0), 40, 6, {"background": 0, "liver": 1},
                "train", "CT, large smooth organ (liver-like), 40 cases"),
    DemoDataset(12, "CorticalPlateMR", "MR", (48, 48, 48), (1.0, 1.0, 1.0), 8, 4,
                {"background": 0, "cortical_plate": 1},
                "train", "T2-like MR, thin folded shell (fetal cortical plate-like), 8 cases"),
    DemoDataset(13, "ProstateMR", "MR", (20, 48, 48), (3.0, 0.8, 0.8), 16, 4,
                {"background": 0, "peripheral_zone": 1, "transition_zone": 2},
                "train", "T2-like MR, anisotropic 3.0 x 0.8 x 0.8 mm, small ellipsoid with two zones, 16 cases"),
    DemoDataset(14, "HippocampusMR", "MR", (40, 40, 40), (1.0, 1.0, 1.0), 10, 4, {"background": 0, "hippocampus": 1},
                "ood", "T1-like MR, small curved tube (hippocampus-like), held out as OOD"),
    DemoDataset(15, "PancreasCT", "CT", (40, 48, 48), (2.5, 1.5, 1.5), 10, 4, {"background": 0, "pancreas": 1},
                "ood", "contrast CT, elongated thin organ (pancreas-like), held out as OOD"),
]


def _grid_mm(shape_zyx, spacing_zyx):
    """Coordinates in mm, centred on the volume: three arrays of shape shape_zyx."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape_zyx, spacing_zyx)]
    return np.meshgrid(*axes, indexing="ij")


def _smooth_field(rng, shape_zyx, n_waves=3, strength=1.0):
    """Low-frequency random field in [-strength, strength]-ish, shape shape_zyx."""
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape_zyx], indexing="ij")
    field = np.zeros(shape_zyx)
    for _ in range(n_waves):
        k = rng.uniform(0.5, 1.5, 3) * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(k[0] * grids[0] + k[1] * grids[1] + k[2] * grids[2] + phase)
    return strength * field / n_waves


def _liver(rng, z, y, x, extent):
    c = rng.uniform(-0.08, 0.08, 3) * extent
    r = rng.uniform(0.26, 0.34, 3) * extent
    zz, yy, xx = (z - c[0]) / r[0], (y - c[1]) / r[1], (x - c[2]) / r[2]
    ang = np.arctan2(yy, xx)
    bump = 1 + 0.12 * np.sin(2 * ang + rng.uniform(0, 6.3)) * np.cos(zz)
    return {1: zz ** 2 + yy ** 2 + xx ** 2 < bump ** 2}


def _cortical_plate(rng, z, y, x, extent):
    rad = np.sqrt(z ** 2 + y ** 2 + x ** 2) + 1e-6
    theta, phi = np.arccos(np.clip(z / rad, -1, 1)), np.arctan2(y, x)
    k = rng.integers(4, 7)
    base = rng.uniform(0.30, 0.36) * extent
    surface = base * (1 + 0.08 * np.sin(k * theta) * np.sin(k * phi + rng.uniform(0, 6.3)))
    thickness = rng.uniform(1.6, 2.4)
    return {1: np.abs(rad - surface) < thickness}


def _prostate(rng, z, y, x, extent):
    c = rng.uniform(-0.05, 0.05, 3) * extent
    r = np.array([rng.uniform(9, 12), rng.uniform(8, 11), rng.uniform(10, 13)])  # mm
    d2 = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
    gland = d2 < 1
    transition = d2 < 0.45
    return {1: gland & ~transition, 2: transition}


def _hippocampus(rng, z, y, x, extent):
    radius_arc = rng.uniform(0.22, 0.28) * extent
    tube = rng.uniform(2.5, 3.5)
    # points on a half circle in the y-x plane, slightly tilted in z
    t = np.linspace(0.15 * np.pi, 0.95 * np.pi, 40)
    tilt = rng.uniform(-0.2, 0.2)
    pts = np.stack([tilt * radius_arc * np.cos(t), radius_arc * np.sin(t) - radius_arc / 2, radius_arc * np.cos(t)], 1)
    d = np.full(z.shape, np.inf)
    for p in pts:
        d = np.minimum(d, (z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2)
    return {1: d < tube ** 2}


def _pancreas(rng, z, y, x, extent):
    length = rng.uniform(0.30, 0.38) * extent
    bend = rng.uniform(0.1, 0.25)
    yc = bend * (x / length) ** 2 * length
    thick = rng.uniform(3.5, 5.0) * (1 - 0.4 * (x / length))
    return {1: (np.abs(x) < length) & ((y - yc) ** 2 + z ** 2 < thick ** 2)}


SHAPES: Dict[str, Callable] = {"LiverCT": _liver, "CorticalPlateMR": _cortical_plate, "ProstateMR": _prostate,
                               "HippocampusMR": _hippocampus, "PancreasCT": _pancreas}


def make_case(ds: DemoDataset, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic case: (image float32, label uint8), both of shape ds.shape_zyx.

    ds.varied_contrast: the organ is darker than the surrounding tissue in some cases and brighter in others
    (drawn per case), a variation that nnU-Net's intensity augmentation (gamma, contrast, brightness) does not
    produce, so a few training cases cannot cover it (the harness's positive control, experiments.md)."""
    z, y, x = _grid_mm(ds.shape_zyx, ds.spacing_zyx)
    extent = float(min(n * s for n, s in zip(ds.shape_zyx, ds.spacing_zyx)))
    parts = SHAPES[ds.name](rng, z, y, x, extent)
    label = np.zeros(ds.shape_zyx, dtype=np.uint8)
    for value, mask in parts.items():
        label[mask] = value
    body_r = rng.uniform(0.44, 0.5) * extent
    body = (y / body_r) ** 2 + (x / body_r) ** 2 + (z / (1.2 * body_r)) ** 2 < 1
    texture = _smooth_field(rng, ds.shape_zyx, n_waves=4)
    if ds.modality == "CT":
        img = np.full(ds.shape_zyx, -1000.0)
        img[body] = 30 + 25 * texture[body]
        fat = body & (_smooth_field(rng, ds.shape_zyx, 5) > 0.45)
        img[fat] = -100
        if ds.varied_contrast:  # darker or brighter than the 30 +- 25 HU soft tissue, per case
            organ_hu = rng.uniform(-45, 0) if rng.random() < 0.5 else rng.uniform(80, 150)
        else:
            organ_hu = rng.uniform(55, 75) if ds.name == "LiverCT" else rng.uniform(95, 120)
        for value in parts:
            img[label == value] = organ_hu + 8 * (value - 1)
        img += rng.normal(0, 12, ds.shape_zyx)
    else:
        img = np.zeros(ds.shape_zyx)
        tissue = 0.45 + 0.15 * texture
        img[body] = tissue[body]
        organ_level = {"CorticalPlateMR": 0.15, "ProstateMR": 0.8, "HippocampusMR": 0.95}[ds.name]
        if ds.varied_contrast:  # darker or brighter than the 0.45 +- 0.15 tissue, per case
            organ_level = rng.uniform(0.05, 0.25) if rng.random() < 0.5 else rng.uniform(0.65, 0.95)
        for value in parts:
            img[label == value] = organ_level - 0.25 * (value - 1)
        bias = np.exp(_smooth_field(rng, ds.shape_zyx, n_waves=2, strength=0.35))
        img = img * bias * rng.uniform(200, 900)
        noise_sd = 0.03 * img.max()
        img = np.sqrt((img + rng.normal(0, noise_sd, img.shape)) ** 2 + rng.normal(0, noise_sd, img.shape) ** 2)
    return img.astype(np.float32), label


def _write(array: np.ndarray, spacing_zyx, path: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(image, path, useCompression=True)


def write_dataset(ds: DemoDataset, raw_dir: str, seed: int = 0) -> str:
    """Writes ds as an nnU-Net raw dataset under raw_dir (replacing an older copy); returns its folder."""
    rng = np.random.default_rng([seed, ds.dataset_id])
    final = os.path.join(raw_dir, ds.folder_name)
    with written_atomically(final) as out:
        _write_dataset_into(ds, out, rng, seed)
        shutil.rmtree(final, ignore_errors=True)
    return final


def _write_dataset_into(ds: DemoDataset, out: str, rng: np.random.Generator, seed: int) -> None:
    for sub in layout.raw_subfolders():
        os.makedirs(os.path.join(out, sub))
    for i in range(ds.n_train + ds.n_test):
        split = "Tr" if i < ds.n_train else "Ts"
        case = f"{ds.name.lower()}_{i:03d}"
        image, label = make_case(ds, rng)
        image_path = os.path.join(layout.images_folder(out, split), layout.image_file(case, 0, ".nii.gz"))
        _write(image, ds.spacing_zyx, image_path)
        _write(label, ds.spacing_zyx, os.path.join(layout.labels_folder(out, split), f"{case}.nii.gz"))
    dataset_json = {
        "channel_names": {"0": ds.modality},
        "labels": ds.labels,
        "numTraining": ds.n_train,
        "file_ending": ".nii.gz",
        "name": ds.name,
        "description": f"nnunet-mt synthetic demo data (seed {seed}): {ds.description}"
                       + (", organ contrast varied per case" if ds.varied_contrast else ""),
        "nnunet_mt_demo_role": ds.role,
    }
    with open(os.path.join(out, layout.DATASET_JSON), "w") as f:
        json.dump(dataset_json, f, indent=2)
