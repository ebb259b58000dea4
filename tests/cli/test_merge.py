import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, assert_merge_refused as _assert_refused, copy_dataset as _broken_copy, run


def _tree_digest(folder):
    h = hashlib.sha256()
    for base, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(base, f), "rb").read())
    return h.hexdigest()


def _merge(env, *args, check=True):
    return run([os.path.join(BIN, "nnunet_mt"), "merge", *args], env, check=check)


@pytest.fixture(scope="module")
def merged(demo_raw):
    root, env = demo_raw
    before = {d: _tree_digest(root / "raw" / d) for d in ("Dataset011_LiverCT", "Dataset013_ProstateMR")}
    _merge(env, "-d", "11", "Dataset013_ProstateMR:1,2", "-o", "601", "-n", "Pair", "--alpha", "0.5",
           "--normalization", "nnunet")
    return root, env, before


def test_merge_layout_provenance_and_binary_labels(merged):
    root, env, before = merged
    out = root / "raw" / "Dataset601_Pair"
    meta = json.load(open(out / "dataset.json"))
    assert meta["labels"] == {"background": 0, "foreground": 1}
    assert meta["numTraining"] == 40 + 16
    assert meta["channel_names"] == {"0": "zscore"}  # --normalization nnunet: CT + MR in one channel
    assert meta["nnunet_mt"]["normalization"] == "nnunet"
    cases = meta["nnunet_mt"]["cases"]
    assert cases["D013_prostatemr_003"] == {"source": "Dataset013_ProstateMR", "original_id": "prostatemr_003",
                                            "split": "train", "subject": "D013_prostatemr_003"}
    assert meta["nnunet_mt"]["subjects"] == "one subject per case"
    assert sum(c["split"] == "test" for c in cases.values()) == 6 + 4
    assert len(os.listdir(out / "imagesTr")) == 56 and len(os.listdir(out / "labelsTs")) == 10
    # prostate: zones 1 and 2 both become foreground 1, geometry kept
    src = sitk.ReadImage(str(root / "raw/Dataset013_ProstateMR/labelsTr/prostatemr_003.nii.gz"))
    dst = sitk.ReadImage(str(out / "labelsTr/D013_prostatemr_003.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(dst), sitk.GetArrayFromImage(src) > 0)
    assert dst.GetSpacing() == src.GetSpacing() and dst.GetOrigin() == src.GetOrigin()
    # images are hard links to the unchanged sources
    a = os.stat(root / "raw/Dataset011_LiverCT/imagesTr/liverct_000_0000.nii.gz")
    b = os.stat(out / "imagesTr/D011_liverct_000_0000.nii.gz")
    assert a.st_ino == b.st_ino
    for d, digest in before.items():
        assert _tree_digest(root / "raw" / d) == digest


def test_refusals(merged):
    root, env, _ = merged
    _assert_refused(env, root, ["-d", "99", "-o", "602"], "Dataset099", "no nnU-Net raw dataset")
    _assert_refused(env, root, ["-d", "13", "-o", "602"], "ProstateMR/dataset.json", "-d 13:1,2")
    _assert_refused(env, root, ["-d", "13:5", "-o", "602"], "foreground labels [5]")
    _assert_refused(env, root, ["-d", "11", "-o", "601", "-n", "Pair"], "Dataset601_Pair", "--overwrite")
    for name in ("a/b", "..", "two words", ""):  # not one folder name: nothing written outside $nnUNet_raw
        _assert_refused(env, root, ["-d", "11", "-o", "603", "-n", name], f"-n {name!r}", "one folder name")

    broken = _broken_copy(root, "Dataset012_CorticalPlateMR", 700)
    os.remove(broken / "dataset.json")
    _assert_refused(env, root, ["-d", "700", "-o", "602"], "Dataset700_Broken/dataset.json", "missing")
    (broken / "dataset.json").write_text("{not json")
    _assert_refused(env, root, ["-d", "700", "-o", "602"], "Dataset700_Broken/dataset.json", "invalid JSON")
    shutil.rmtree(broken)

    broken = _broken_copy(root, "Dataset012_CorticalPlateMR", 701)
    os.remove(broken / "labelsTr" / "corticalplatemr_002.nii.gz")
    _assert_refused(env, root, ["-d", "11", "701", "-o", "602"], "corticalplatemr_002_0000.nii.gz",
                    "image without label")
    shutil.rmtree(broken)

    broken = _broken_copy(root, "Dataset012_CorticalPlateMR", 702)
    label = broken / "labelsTr" / "corticalplatemr_001.nii.gz"
    img = sitk.ReadImage(str(label))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = 7
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    os.remove(label)  # break the hard link first: never touch the source dataset's file
    sitk.WriteImage(out, str(label))
    _assert_refused(env, root, ["-d", "702", "-o", "602"], "corticalplatemr_001.nii.gz", "[7]", "not declared")
    shutil.rmtree(broken)

    broken = _broken_copy(root, "Dataset012_CorticalPlateMR", 703)
    meta = json.load(open(broken / "dataset.json"))
    meta["channel_names"] = {"0": "T2", "1": "T1"}
    json.dump(meta, open(broken / "dataset.json", "w"))
    for split in ("imagesTr", "imagesTs"):
        for f in os.listdir(broken / split):
            shutil.copyfile(broken / split / f, broken / split / f.replace("_0000", "_0001"))
    _assert_refused(env, root, ["-d", "11", "703", "-o", "602"], "different numbers of channels")
    shutil.rmtree(broken)


def test_overwrite_replaces(merged):
    root, env, _ = merged
    _merge(env, "-d", "11", "-o", "601", "-n", "Pair", "--overwrite", "--normalization", "nnunet")
    meta = json.load(open(root / "raw" / "Dataset601_Pair" / "dataset.json"))
    assert meta["numTraining"] == 40 and meta["channel_names"] == {"0": "CT"}  # CT only: nnU-Net's CT scheme
