"""Voxel uncertainty maps a viewer can overlay: entropy of a probability map, written as an image with the
geometry of the segmentation nnU-Net wrote for the same case. numpy and SimpleITK only."""
import os

import numpy as np

from nnunet_mt.atomic import written_atomically
from nnunet_mt.errors import InputError
from nnunet_mt_ood.baselines import voxel_entropy


def write_entropy_map(probabilities: np.ndarray, segmentation_path: str, out_path: str) -> None:
    """Writes -sum_c p_c log p_c (nats, float32) of probabilities (classes, *image array) to out_path, with
    the size, spacing (mm), origin and direction of segmentation_path; via a temporary name, then renamed."""
    import SimpleITK as sitk
    like = sitk.ReadImage(segmentation_path)
    entropy = voxel_entropy(probabilities).astype(np.float32)
    if entropy.shape != sitk.GetArrayViewFromImage(like).shape:
        raise InputError(f"{segmentation_path}: segmentation of shape {sitk.GetArrayViewFromImage(like).shape}, "
                         f"probabilities of shape {probabilities.shape[1:]}: cannot place the map")
    image = sitk.GetImageFromArray(entropy)
    image.CopyInformation(like)
    folder, name = os.path.split(out_path)
    os.makedirs(folder, exist_ok=True)
    with written_atomically(out_path) as tmp:  # keeps the ending: SimpleITK picks the format by it
        sitk.WriteImage(image, tmp, True)
