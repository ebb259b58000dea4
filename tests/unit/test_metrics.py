import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import REPO
from nnunet_mt.metrics import assd, calibration_bins, dice, ece, hd95, mce, surface_distances

REALDATA = os.path.join(REPO, "..", "shared", "realdata")


def ball(shape, center, radius, spacing=(1, 1, 1)):
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, center, spacing)], indexing="ij")
    return sum(g ** 2 for g in grids) <= radius ** 2


def test_dice_known_answers():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0, 0, :2] = True
    b[0, 0, 1:4] = True
    assert dice(a, b) == pytest.approx(2 * 1 / 5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty: documented as 1
    assert dice(a, np.zeros_like(a)) == 0.0


def test_concentric_spheres_hausdorff_is_radius_difference():
    shape, c = (101, 101, 101), (50, 50, 50)
    inner, outer = ball(shape, c, 20), ball(shape, c, 40)
    # every surface voxel of one sphere is 20 voxels (+- discretisation) from the other
    assert hd95(inner, outer, (1, 1, 1)) == pytest.approx(20, abs=1.0)
    assert assd(inner, outer, (1, 1, 1)) == pytest.approx(20, abs=1.0)


def test_single_voxels_and_anisotropic_shift():
    a = np.zeros((5, 5, 5), bool)
    b = np.zeros((5, 5, 5), bool)
    a[2, 2, 1], b[2, 2, 3] = True, True  # 2 voxels apart on the last axis
    assert hd95(a, b, (1, 1, 1)) == 2.0 and assd(a, b, (1, 1, 1)) == 2.0
    assert hd95(a, b, (1, 1, 0.5)) == 1.0  # 2 voxels of 0.5 mm
    cube = np.zeros((10, 10, 10), bool)
    cube[2:6, 2:6, 2:6] = True
    shifted = np.roll(cube, 1, axis=0)
    # shift by one voxel along axis 0 with spacing (2, 1, 1): the faces that move are 2 mm away
    d_pred, d_ref = surface_distances(shifted, cube, (2, 1, 1))
    assert d_pred.max() == pytest.approx(2.0) and d_ref.max() == pytest.approx(2.0)
    assert hd95(shifted, cube, (2, 1, 1)) == pytest.approx(np.percentile(d_pred, 95))


def test_empty_masks():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    b[1, 1, 1] = True
    assert hd95(a, a, (1, 1, 1)) == 0.0 and assd(a, a, (1, 1, 1)) == 0.0
    assert hd95(a, b, (1, 1, 1)) == np.inf and assd(b, a, (1, 1, 1)) == np.inf


def test_non_binary_input_is_an_error():
    with pytest.raises(ValueError, match="binary"):
        dice(np.full((2, 2, 2), 2), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="binary"):
        hd95(np.full((2, 2, 2), 3), np.ones((2, 2, 2)), (1, 1, 1))


def _edt_reference(pred, ref, spacing):
    """MONAI's algorithm in float64: its edges, then scipy distance maps (independent of our k-d tree)."""
    from monai.metrics.utils import get_mask_edges
    from scipy import ndimage
    edges_pred, edges_ref = (np.asarray(e, bool) for e in get_mask_edges(pred, ref))
    d_pred = ndimage.distance_transform_edt(~edges_ref, sampling=spacing)[edges_pred]
    d_ref = ndimage.distance_transform_edt(~edges_pred, sampling=spacing)[edges_ref]
    return max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)), np.concatenate([d_pred, d_ref]).mean()


def _assert_matches_monai(pred, ref, spacing):
    hd_ref, sd_ref = _edt_reference(pred, ref, spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(hd_ref, abs=1e-6)
    assert assd(pred, ref, spacing) == pytest.approx(sd_ref, abs=1e-6)
    hd_m, sd_m = _monai(pred, ref, spacing)  # MONAI's public functions compute in float32
    assert hd95(pred, ref, spacing) == pytest.approx(hd_m, rel=1e-6)
    assert assd(pred, ref, spacing) == pytest.approx(sd_m, rel=1e-6)


def _monai(pred, ref, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    p = torch.from_numpy(pred[None, None].astype(np.float64))
    r = torch.from_numpy(ref[None, None].astype(np.float64))
    hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing)).item()
    sd = compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                          spacing=list(spacing)).item()
    return hd, sd


def test_agrees_with_monai_on_random_blobs():
    pytest.importorskip("monai")
    rng = np.random.default_rng(0)
    from scipy import ndimage
    for trial in range(6):
        shape = tuple(rng.integers(20, 40, 3))
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        pred = ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.05
        ref = ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.05
        _assert_matches_monai(pred, ref, spacing)


@pytest.mark.skipif(not os.path.isdir(REALDATA), reason="../shared/realdata not present (developer data only)")
def test_agrees_with_monai_on_real_masks():
    pytest.importorskip("monai")
    base = os.path.join(REALDATA, "brats2013_deepmedic", "pat0001", "OTMultiClass.nii.gz")
    img = sitk.ReadImage(base)
    labels = sitk.GetArrayFromImage(img).astype(int)
    spacing = img.GetSpacing()[::-1]
    whole, core = labels > 0, np.isin(labels, (1, 3, 4))
    _assert_matches_monai(whole, core, spacing)


def test_calibration_known_answer():
    prob = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95, 1.0])
    ref = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    roi = np.ones(8, bool)
    # bins: [0,.1): p .05, acc 0 -> gap .05 (share 1/8); [.1,.2): conf .15, acc .5 -> .35 (2/8);
    # [.9,1): conf .95, acc .75 -> .2 (4/8); p == 1: own bin, gap 0 (1/8)
    assert ece(prob, ref, 10, roi) == pytest.approx(0.05 / 8 + 0.35 * 2 / 8 + 0.2 * 4 / 8)
    assert mce(prob, ref, 10, roi) == pytest.approx(0.35)
    acc, conf, share = calibration_bins(prob, ref, 10, roi)
    assert share.sum() == pytest.approx(1.0) and len(acc) == 11


def test_calibration_agrees_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics")
    rng = np.random.default_rng(1)
    ref = ball((30, 30, 30), (15, 15, 15), 8)
    prob = np.clip(ref * 0.8 + rng.normal(0, 0.25, ref.shape), 0, 1)
    prob[0, 0, :3] = [0.0, 1.0, 0.5]  # edges of the bins
    roi = np.ones(ref.shape, bool)
    for n_bins in (10, 15):
        for norm, ours in (("l1", ece), ("max", mce)):
            metric = tm.classification.BinaryCalibrationError(n_bins=n_bins, norm=norm)
            expected = metric(torch.from_numpy(prob.ravel()), torch.from_numpy(ref.ravel().astype(int))).item()
            assert ours(prob, ref, n_bins, roi) == pytest.approx(expected, abs=1e-6)


def test_default_roi_is_box_around_structure():
    ref = np.zeros((40, 40, 40), bool)
    ref[18:22, 18:22, 18:22] = True
    prob = ref * 0.9 + 0.05
    whole = ece(prob, ref, 10, np.ones(ref.shape, bool))
    boxed = ece(prob, ref, 10)
    # box: (4 + 2 * 5)^3 voxels; every voxel has gap 0.05 either way, so ECE is 0.05 in both
    assert boxed == pytest.approx(0.05) and whole == pytest.approx(0.05)
    prob2 = prob.copy()
    prob2[0, 0, 0] = 0.4  # far from the structure, below 0.5: counted in the whole image only
    assert ece(prob2, ref, 10) == pytest.approx(boxed)
    assert mce(prob2, ref, 10, np.ones(ref.shape, bool)) == pytest.approx(0.4)


def test_reference_roi_ignores_the_prediction():
    from nnunet_mt.metrics import default_roi, reference_roi
    ref = np.zeros((40, 40, 40), bool)
    ref[18:22, 18:22, 18:22] = True
    prob = np.zeros(ref.shape)
    prob[0:2, 0:2, 0:2] = 0.9  # a false positive far away: enlarges the default box, not the reference box
    assert reference_roi(ref).sum() == 14 ** 3  # (4 + 2 * 5)^3
    assert default_roi(prob, ref).sum() == 27 ** 3  # corner (0) to 21 + 5
    assert reference_roi(ref).sum() == reference_roi(ref, 5).sum()
    assert reference_roi(np.zeros((4, 4, 4), bool)).all()  # empty reference: the whole image
    # ECE over the reference box counts the same voxels for every model: here the false positive is outside
    assert ece(prob, ref, 10, reference_roi(ref)) == pytest.approx(ref[reference_roi(ref)].mean())
