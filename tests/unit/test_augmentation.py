"""The paper's augmentation (nnUNetTrainerMultiTask.paper_training_transforms): flips, 90-degree rotations in the
plane of the axes `rotation_axes` allows, additive Gaussian noise, and nothing else (no scaling, no elastic
deformation, no interpolation). Known answers on a 4 x 4 x 4 image whose voxel values are all distinct."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_mt.trainer import nnUNetTrainerMultiTask

DRAWS = 400


def _rotation_axes(spacing, patch):
    holder = SimpleNamespace(configuration_manager=SimpleNamespace(spacing=spacing, patch_size=patch))
    return nnUNetTrainerMultiTask.rotation_axes(holder)


def test_rotation_axes_are_those_with_equal_spacing_and_patch_size():
    assert _rotation_axes([1.0, 1.0, 1.0], [32, 32, 32]) == (0, 1, 2)
    assert _rotation_axes([3.0, 0.8, 0.8], [20, 32, 32]) == (1, 2)  # anisotropic MR: in-plane only
    assert _rotation_axes([1.0, 1.05, 1.0], [32, 32, 16]) == (0, 1)  # spacings within 10 %, patch differs on 2
    assert _rotation_axes([1.0, 2.0, 4.0], [32, 32, 32]) == ()


def _group(rotation_axes):
    """Every array transform the augmentation may apply: a rotation by k * 90 degrees in the plane of two
    rotation axes, then flips of any axes (numpy axes 0-2 = the image's spatial axes)."""
    planes = list(itertools.combinations(rotation_axes, 2)) if len(rotation_axes) >= 2 else []
    rotations = [lambda a: a] + [lambda a, k=k, p=p: np.rot90(a, k, axes=p) for p in planes for k in (1, 2, 3)]
    flips = [lambda a, s=s: np.flip(a, s) if s else a
             for n in range(4) for s in itertools.combinations((0, 1, 2), n)]
    return [lambda a, r=r, f=f: f(r(a)) for r in rotations for f in flips]


@pytest.mark.parametrize("rotation_axes, distinct", [((1, 2), 16), ((), 8)])
def test_flips_rotations_and_noise_only(rotation_axes, distinct):
    torch.manual_seed(0)
    np.random.seed(0)
    image = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    label = (image % 3 == 0).astype(np.int16)
    label[0, 0, 0] = -1  # nnU-Net's "outside the image" label: becomes background
    transform = nnUNetTrainerMultiTask.paper_training_transforms((0, 1, 2), rotation_axes)
    group = _group(rotation_axes)
    seen, noisy = set(), 0
    for _ in range(DRAWS):
        out = transform(image=torch.from_numpy(image[None].copy()), segmentation=torch.from_numpy(label[None].copy()))
        out_image, out_label = out["image"][0].numpy(), out["segmentation"][0].numpy()
        candidates = [t(image) for t in group]
        best = int(np.argmin([np.abs(out_image - c).max() for c in candidates]))
        residual = out_image - candidates[best]
        assert np.abs(residual).max() < 2.0  # noise of variance <= 0.1: std <= 0.32; values 1 apart
        np.testing.assert_array_equal(out_label, group[best](np.maximum(label, 0)))  # moved, never interpolated
        seen.add(candidates[best].tobytes())
        noisy += bool(np.any(residual != 0))
    assert len(seen) == distinct  # 8 flips x 2 orientations in-plane (rot90 x flips: 16 distinct), or flips only
    assert 0.4 < noisy / DRAWS < 0.6  # noise on half the patches
