"""Checks of raw image files before nnU-Net reads them; each failure is one InputError naming the file."""
import os
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_mt.errors import InputError

SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# file endings nnU-Net's readers take, by family: a volume in another format of the dataset's own family is a
# mistake to name; a figure (.png) beside NIfTI predictions is not
ENDING_FAMILIES = (SITK_ENDINGS + (".nhdr", ".gipl", ".gipl.gz"), (".png", ".bmp", ".tif", ".tiff"))


def refuse_stray_images(folder: str, file_ending: str) -> None:
    """Raises InputError naming the first image file in `folder` whose ending is of the same family as
    `file_ending` (3D medical formats, or 2D raster formats) but not `file_ending` itself: it would otherwise
    be skipped without a word."""
    family = next((f for f in ENDING_FAMILIES if file_ending.endswith(f)), ())
    for name in sorted(os.listdir(folder)):
        if name.endswith(family) and not name.endswith(file_ending) and not name.startswith("."):
            raise InputError(f"{os.path.join(folder, name)}: file ending differs from dataset.json's "
                             f"'{file_ending}' (convert or remove it; it would be skipped)")


def refuse_output_inside_input(input_dir: str, output_dir: str) -> None:
    """Raises InputError when the output folder is the input folder or inside it: predictions written there
    would be read as new input cases by the next run."""
    inp, out = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if out == inp or out.startswith(inp.rstrip(os.sep) + os.sep):
        raise InputError(f"{output_dir}: output folder is {'the input folder' if out == inp else 'inside the input folder'} "
                         f"{input_dir} (the next run would read the predictions as input cases)")


def image_header(path: str) -> sitk.ImageFileReader:
    """The file's header (size, spacing, origin, direction); refuses unreadable, non-3D and sheared images."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        if "orthonormal" in str(e):  # ITK refuses sheared headers while reading them
            raise InputError(f"{path}: non-orthonormal direction cosines in the header")
        raise InputError(f"{path}: unreadable image ({str(e).strip().splitlines()[-1]})")
    if reader.GetDimension() != 3:
        raise InputError(f"{path}: {reader.GetDimension()}D image, nnU-Net's 3d configurations need 3D")
    d = np.asarray(reader.GetDirection()).reshape(3, 3)
    if not np.allclose(d @ d.T, np.eye(3), atol=1e-4):
        raise InputError(f"{path}: non-orthonormal direction cosines in the header")
    return reader


def check_finite(path: str) -> float:
    """Refuses images with NaN or infinite voxels, and files whose voxel data cannot be read in full;
    returns the image's minimum intensity (merge uses it to check the CT/MR normalization rule).

    NIfTI voxels are read with nibabel: SimpleITK's reader silently turns NaN into 0, nnU-Net's nibabel
    reader keeps them.
    """
    try:
        if path.endswith((".nii", ".nii.gz")):
            import nibabel
            array = np.asanyarray(nibabel.load(path).dataobj)
        else:
            image = sitk.ReadImage(path)
            array = sitk.GetArrayFromImage(image)
    except Exception as e:  # truncated or corrupt voxel data: nibabel and zlib raise various types
        raise InputError(f"{path}: unreadable image data ({type(e).__name__}: {str(e).strip()[:120]})")
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"{path}: {bad} NaN or infinite voxels")
    if array.size == 0:
        raise InputError(f"{path}: image has no voxels (a dimension of size 0)")
    return float(np.min(array))


def check_case(images: Sequence[str], label: str = None) -> Optional[List[float]]:
    """Every channel and the label are readable 3D images on the same grid (size, spacing, origin, direction).
    Returns each channel's minimum intensity (None for formats left to nnU-Net's own readers)."""
    if not all(p.endswith(SITK_ENDINGS) for p in list(images) + ([label] if label else [])):
        return None  # other formats (e.g. .png, .tif) are read by nnU-Net's own readers
    first = image_header(images[0])
    for path in list(images[1:]) + ([label] if label else []):
        other = image_header(path)
        what = "label" if path == label else "channel"
        for name, a, b, tol in (("size", first.GetSize(), other.GetSize(), 0),
                                ("spacing", first.GetSpacing(), other.GetSpacing(), 1e-4),
                                ("origin", first.GetOrigin(), other.GetOrigin(), 1e-3),
                                ("direction", first.GetDirection(), other.GetDirection(), 1e-4)):
            if not np.allclose(a, b, atol=tol, rtol=0):
                raise InputError(f"{path}: {what} {name} {tuple(np.round(b, 4))} differs from the image's "
                                 f"{tuple(np.round(a, 4))} ({images[0]})")
    return [check_finite(path) for path in images]


def check_written_image(path: str, size_xyz: Sequence[int]) -> None:
    """Raises InputError (and removes the file) unless the image just written at `path` reads back with this
    size (x, y, z voxels): SimpleITK returns normally from a write that ran out of disk and leaves a 0-byte
    or truncated file."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        ok, found = tuple(reader.GetSize()) == tuple(size_xyz), f"size {reader.GetSize()}"
    except RuntimeError as e:
        ok, found = False, str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
    if not ok:
        try:
            os.remove(path)
        except OSError:
            pass
        raise InputError(f"{path}: the image written does not read back ({found}, expected size "
                         f"{tuple(size_xyz)}; disk full?)")


def write_image_checked(image: sitk.Image, path: str) -> None:
    """sitk.WriteImage (compressed), then check_written_image."""
    sitk.WriteImage(image, path, useCompression=True)
    check_written_image(path, image.GetSize())
