import json
import os

import numpy as np
import SimpleITK as sitk

from nnunet_mt.demo_data import DEMO_DATASETS, make_case, write_dataset


def test_same_seed_same_data_other_seed_other_data():
    ds = DEMO_DATASETS[1]
    a = make_case(ds, np.random.default_rng([0, ds.dataset_id]))
    b = make_case(ds, np.random.default_rng([0, ds.dataset_id]))
    c = make_case(ds, np.random.default_rng([1, ds.dataset_id]))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_intensity_ranges_by_modality():
    for ds in DEMO_DATASETS:
        image, label = make_case(ds, np.random.default_rng(3))
        assert image.shape == label.shape == ds.shape_zyx
        assert set(np.unique(label)) == set(ds.labels.values())
        if ds.modality == "CT":
            assert image.min() < -900  # air
            assert -50 < np.median(image[label > 0]) < 150  # soft-tissue organ in HU
        else:
            assert image.min() >= 0


def test_written_dataset_is_nnunet_raw_layout(tmp_path):
    ds = DEMO_DATASETS[2]  # anisotropic prostate
    folder = write_dataset(ds, str(tmp_path), seed=0)
    meta = json.load(open(os.path.join(folder, "dataset.json")))
    assert meta["numTraining"] == ds.n_train == len(os.listdir(os.path.join(folder, "labelsTr")))
    assert meta["channel_names"] == {"0": "MR"}
    img = sitk.ReadImage(os.path.join(folder, "imagesTr", "prostatemr_000_0000.nii.gz"))
    np.testing.assert_allclose(img.GetSpacing(), (0.8, 0.8, 3.0), rtol=1e-6)  # x, y, z
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no partial folder left
