"""``nnunet_mt share-plans -c``: a dedicated dataset receives the joint dataset's preprocessed arrays of its
cases, byte for byte, and a copy that cannot be complete is refused before anything is written.
(That the copies are what nnUNetv2_preprocess writes is checked in tests/e2e/test_experiments.py.)"""
import os
from pathlib import Path

from conftest import BIN, assert_refused, run

NNUNET_MT = os.path.join(BIN, "nnunet_mt")


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_share_plans_copies_the_joint_arrays_of_the_targets_cases(preprocessed):
    root, env = preprocessed
    pre = root / "pre"
    joint = pre / "Dataset500_MultiTask"
    run([NNUNET_MT, "merge", "-d", "13:1,2", "-o", "503", "-n", "Prostate"], env)
    joint_before = _files(joint)
    r = run([NNUNET_MT, "share-plans", "-s", "500", "-t", "503", "-c", "3d_fullres"], env)
    target = pre / "Dataset503_Prostate"
    prostate = sorted(f.name[:-len("_0000.nii.gz")] for f in (root / "raw/Dataset503_Prostate/imagesTr").iterdir())
    assert len(prostate) == 16
    for sub, per_case in (("nnUNetPlans_3d_fullres", (".b2nd", "_seg.b2nd", ".pkl")),
                          ("gt_segmentations", (".nii.gz",))):
        names = sorted(os.listdir(target / sub))
        assert names == sorted(c + e for c in prostate for e in per_case)  # the target's cases, nothing else
        for name in names:
            assert (target / sub / name).read_bytes() == (joint / sub / name).read_bytes()
    assert "Dataset503_Prostate: nnUNetPlans_3d_fullres of Dataset500_MultiTask copied (48 files)" in r.stdout
    assert "Dataset503_Prostate: gt_segmentations of Dataset500_MultiTask copied (16 files)" in r.stdout
    assert not any(n.startswith(".partial.") for n in os.listdir(target))
    # the source's arrays, plans and fingerprint are only read (its folds are written when it has none yet)
    joint_after = _files(joint)
    for files in (joint_before, joint_after):
        files.pop(Path("splits_final.json"), None)
    assert joint_after == joint_before
    # a second run replaces the copies (nothing of the first is left over, nothing half-written)
    (target / "nnUNetPlans_3d_fullres" / "stale.pkl").write_bytes(b"x")
    run([NNUNET_MT, "share-plans", "-s", "500", "-t", "503", "-c", "3d_fullres"], env)
    assert "stale.pkl" not in os.listdir(target / "nnUNetPlans_3d_fullres")


def test_share_plans_refuses_a_copy_it_cannot_complete_before_writing(preprocessed):
    root, env = preprocessed
    run([NNUNET_MT, "merge", "-d", "13:1,2", "-o", "504", "-n", "Prostate"], env)
    before = _files(root / "pre")
    # the joint plans hold a 2d configuration, never preprocessed: no array of any case to copy
    assert_refused([NNUNET_MT, "share-plans", "-s", "500", "-t", "504", "-c", "3d_fullres", "2d"], env,
                   "Dataset500_MultiTask/nnUNetPlans_2d: no preprocessed 2d array of case D013_prostatemr_000",
                   "preprocess the source dataset first")
    assert_refused([NNUNET_MT, "share-plans", "-s", "500", "-t", "504", "-c", "3d_lowres"], env,
                   "nnUNetPlans.json: no configuration 3d_lowres")
    assert _files(root / "pre") == before  # no plans, folds, fingerprint or arrays for 504, no joint folds rewritten
