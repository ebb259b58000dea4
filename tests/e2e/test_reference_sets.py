"""A model without its training data (issue 31): `nnunet_mt_ood fit -i IMAGES` fits the detectors on a folder of
reference images, `nnunet_mt calibrate -i IMAGES -ref LABELS` (or `-prob`) the temperature on a labelled
reference set, with no raw or preprocessed data of the model present. Known answers: the training images' own
files give the signatures the training-image fit computed from nnU-Net's preprocessed arrays; T equals the
temperature fitted here, independently, on nnUNetv2_predict's probabilities of the same images."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import BIN, TRAINER, run
from nnunet_mt_ood.detector import SpectralOODDetector

MODEL = f"{TRAINER}__nnUNetPlans__3d_fullres"
FIT = ["fit", "-d", "500", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-device", "cpu"]


@pytest.fixture(scope="module")
def model_only(trained, tmp_path_factory):
    """The session model alone: a copy of its results folder, and empty raw and preprocessed folders."""
    root, env = trained
    home = tmp_path_factory.mktemp("downloaded")
    shutil.copytree(root / "res" / "Dataset500_MultiTask" / MODEL, home / "res" / "Dataset500_MultiTask" / MODEL)
    for empty in ("raw", "pre"):
        (home / empty).mkdir()
    env = dict(env, nnUNet_raw=str(home / "raw"), nnUNet_preprocessed=str(home / "pre"), nnUNet_results=str(home / "res"))
    return root, home, env


def _reference_folder(root, folder, cases):
    folder.mkdir()
    for case in cases:
        os.link(root / "raw/Dataset500_MultiTask/imagesTr" / f"{case}_0000.nii.gz", folder / f"{case}_0000.nii.gz")
    return folder


def test_fit_on_reference_images_equals_the_training_fit_on_the_same_images(model_only, tmp_path):
    root, home, env = model_only
    fold = home / "res/Dataset500_MultiTask" / MODEL / "fold_0"
    trained_meta = json.loads((fold / "spectral_signatures_last.json").read_text())
    trained_signatures = np.load(fold / "spectral_signatures_last.npz")["signatures"]
    # two training images of each source
    cases = sorted(c for prefix in ("D011", "D012", "D013")
                   for c in [c for c in trained_meta["case_ids"] if c.startswith(prefix)][:2])
    images = _reference_folder(root, tmp_path / "my_scans", cases)
    r = run([os.path.join(BIN, "nnunet_mt_ood"), *FIT, "-i", str(images), "--method", "spectral", "knn"], env)
    assert "spectral: 6 reference images, last layer, 4 values each; tau = " in r.stdout
    meta = json.loads((fold / "spectral_signatures_last.json").read_text())
    signatures = np.load(fold / "spectral_signatures_last.npz")["signatures"]
    expected = trained_signatures[[trained_meta["case_ids"].index(c) for c in cases]]
    np.testing.assert_allclose(signatures, expected, atol=1e-5)  # raw files -> nnU-Net's preprocessing -> same
    assert meta["case_ids"] == cases and meta["sources"] == ["reference:my_scans"] * 6
    assert meta["reference"] == {"from": "images", "folder": str(images), "n_images": 6}
    assert meta["tau"] == pytest.approx(SpectralOODDetector(2.5).fit(signatures, groups=cases).threshold_)
    knn = json.loads((fold / "ood_fit_knn_bottleneck.json").read_text())
    assert knn["reference"]["n_images"] == 6 and knn["case_ids"] == cases
    # the model then scores new images with the reference fit, with no training data anywhere
    test_in = tmp_path / "new_scans"
    test_in.mkdir()
    os.link(root / "raw/Dataset500_MultiTask/imagesTs/D012_corticalplatemr_008_0000.nii.gz",
            test_in / "D012_corticalplatemr_008_0000.nii.gz")
    r = run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(test_in), "-o", str(tmp_path / "out"), "-d", "500",
             "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "0", "-nps", "0",
             "--disable_tta"], env)
    report = json.loads((tmp_path / "out/ood_scores.json").read_text())
    assert report["cases"][0]["nearest_source"] == "reference:my_scans"
    assert report["methods"]["spectral"]["tau"] == pytest.approx(meta["tau"])


@pytest.mark.parametrize("what,needle", [("empty", "no images ending in .nii.gz"),
                                         ("two", "2 reference images; tau needs at least 3"),
                                         ("channels", "has 2 channel files, the model expects 1")])
def test_bad_reference_folders_are_refused(model_only, tmp_path, what, needle):
    root, home, env = model_only
    folder = tmp_path / "ref"
    folder.mkdir()
    if what == "two":
        folder.rmdir()
        _reference_folder(root, folder, ["D011_liverct_000", "D011_liverct_001"])
    if what == "channels":
        folder.rmdir()
        _reference_folder(root, folder, ["D011_liverct_000", "D011_liverct_001", "D011_liverct_002"])
        os.link(folder / "D011_liverct_000_0000.nii.gz", folder / "D011_liverct_000_0001.nii.gz")
    fold = home / "res/Dataset500_MultiTask" / MODEL / "fold_0"
    before = {p.name: p.stat().st_mtime_ns for p in fold.iterdir()}
    r = run([os.path.join(BIN, "nnunet_mt_ood"), *FIT, "-i", str(folder)], env, check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0] and str(folder) in lines[0], r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in fold.iterdir()} == before  # nothing written


def test_calibrate_on_a_labelled_reference_set(model_only, tmp_path):
    from nnunet_mt.metrics import reference_roi
    from nnunet_mt.temperature import fit_temperature
    import SimpleITK as sitk
    root, home, env = model_only
    cases = ["D011_liverct_040", "D012_corticalplatemr_008", "D013_prostatemr_016"]
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for case in cases:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", images / f"{case}_0000.nii.gz")
        os.link(root / "raw/Dataset500_MultiTask/labelsTs" / f"{case}.nii.gz", labels / f"{case}.nii.gz")
    fold = home / "res/Dataset500_MultiTask" / MODEL / "fold_0"
    common = ["calibrate", "-d", "500", "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-ref", str(labels)]
    r = run([os.path.join(BIN, "nnunet_mt"), *common, "-i", str(images), "--objective", "nll"], env)
    from_images = json.loads((fold / "temperature.json").read_text())
    assert from_images["cases"] == cases and from_images["reference"]["labels"] == str(labels)
    assert "all: T = " in r.stdout and "ECE" in r.stdout
    # the same images predicted here with nnUNetv2_predict, then -prob: the same T; and T refitted independently
    pred = tmp_path / "pred"
    run([os.path.join(BIN, "nnUNetv2_predict"), "-i", str(images), "-o", str(pred), "-d", "500", "-c", "3d_fullres",
         "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta",
         "--save_probabilities"], env)
    run([os.path.join(BIN, "nnunet_mt"), *common, "-prob", str(pred), "--objective", "nll"], env)
    from_probabilities = json.loads((fold / "temperature.json").read_text())
    assert from_probabilities["temperature"] == pytest.approx(from_images["temperature"], rel=1e-6)
    p, y = [], []
    for case in cases:
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz"))).astype(np.int64)
        probabilities = np.load(pred / f"{case}.npz")["probabilities"].astype(np.float64)
        mask = reference_roi(reference > 0)
        p.append(probabilities[:, mask])
        y.append(reference[mask])
    expected, _, _ = fit_temperature(np.concatenate(p, axis=1), np.concatenate(y))
    assert from_images["temperature"] == pytest.approx(expected, rel=1e-4)
    # the default: a fit is kept only if it lowers the ECE of held-out subjects (here each case its own subject
    # and source), else T = 1; the same choice recomputed here from the same voxels
    from nnunet_mt.temperature import choose_temperature
    r = run([os.path.join(BIN, "nnunet_mt"), *common, "-prob", str(pred)], env)
    chosen = json.loads((fold / "temperature.json").read_text())
    independent = choose_temperature(p, y, cases, chosen["sources"])
    assert chosen["objective"] == "held_out" and chosen["subjects"] == cases
    assert chosen["temperature"] == pytest.approx(independent["temperature"], rel=1e-6)
    assert chosen["fit"]["all"]["selection"]["held_out_ece"] == pytest.approx(independent["held_out_ece"])
    assert independent["reason"] in r.stdout and f"all: T = {chosen['temperature']:.3f}" in r.stdout
    # refusals: labels without images or probabilities, or both; a label with no probabilities
    for extra, needle in (([], "give the reference images (-i) or their saved probabilities (-prob)"),
                          (["-i", str(images), "-prob", str(pred)], "one of the two")):
        bad = run([os.path.join(BIN, "nnunet_mt"), *common, *extra], env, check=False)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    os.link(labels / f"{cases[0]}.nii.gz", labels / "D011_unknown.nii.gz")
    bad = run([os.path.join(BIN, "nnunet_mt"), *common, "-prob", str(pred)], env, check=False)
    assert bad.returncode == 2 and "D011_unknown.npz: no probabilities for reference label" in bad.stderr
