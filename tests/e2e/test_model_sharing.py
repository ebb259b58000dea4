"""A plain nnU-Net model (nnU-Net's own nnUNetTrainer, tiny budget) without its training data: detectors fitted on
reference images, a temperature on a labelled reference set, then `nnunet_mt export` -> install into an empty
nnUNet_results (nnU-Net's own installer, and `nnunet_mt install`) -> score: the same OOD scores, segmentations
and calibrated probabilities as before the export. Damaged zips and zips of another model are refused."""
import json
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, PLAIN_MODEL, REPO, run

DS = "Dataset012_CorticalPlateMR"
MODEL = ["-d", "12", "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainer", "-device", "cpu"]
SCORE = ["--method", "spectral", "knn", "--save_probabilities", "--disable_tta"]


def _home(root, tmp_path, name):
    """Empty raw, preprocessed and results folders: (home, env additions)."""
    home = tmp_path / name
    for sub in ("raw", "pre", "res"):
        (home / sub).mkdir(parents=True)
    return home, {"nnUNet_raw": str(home / "raw"), "nnUNet_preprocessed": str(home / "pre"),
                  "nnUNet_results": str(home / "res")}


def _linked(folder, files):
    folder.mkdir()
    for f in files:
        os.link(f, folder / f.name)
    return folder


def _score(env, images, out):
    run([os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(images), "-o", str(out), *MODEL, *SCORE,
         "-npp", "0", "-nps", "0"], env)
    return json.loads((out / "ood_scores.json").read_text())


def _numbers(report):
    """Every case's row (scores, distances, decisions, nearest reference, temperature), each method's tau and
    the temperatures applied."""
    calibration = {k: v for k, v in report["calibration"].items() if k != "file"}
    return report["cases"], {m: report["methods"][m]["tau"] for m in report["methods"]}, calibration


CPU_FLAGS = {"fit": ["-device", "cpu", "--disable_tta"], "calibrate": ["-device", "cpu", "--disable_tta"],
             "score": ["-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], "install": []}


def walkthrough_commands():
    """The command lines of documentation/shared_models.md's walkthrough block, with the CPU flags added."""
    text = open(os.path.join(REPO, "documentation", "shared_models.md")).read()
    block = text.split("<!-- walkthrough")[1].split("```bash\n")[1].split("```")[0]
    lines = [line.split() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return [line + CPU_FLAGS[line[1]] for line in lines]


@pytest.fixture(scope="module")
def shared(plain_model, tmp_path_factory):
    """The plain model, exported by its author without anything of ours; then the walkthrough of
    documentation/shared_models.md run in an empty nnU-Net home: install, fit on 5 reference scans, calibrate
    on 2 labelled ones, score 4 new scans (2 in-distribution, 2 OOD); then that model exported again."""
    root, env = plain_model
    tmp = tmp_path_factory.mktemp("sharing")
    author, folders = _home(root, tmp, "author")
    shutil.copytree(root / "res" / DS / PLAIN_MODEL, author / "res" / DS / PLAIN_MODEL,
                    ignore=shutil.ignore_patterns("*.npz", "*.pkl", "ood_fit_*", "spectral_signatures_*",
                                                  "temperature.json"))  # nothing fitted by other tests
    work = tmp / "colleague"
    work.mkdir()
    plain_export = run([os.path.join(BIN, "nnunet_mt"), "export", "-d", "12", "-tr", "nnUNetTrainer", "-f", "0",
                        "-o", str(work / "model.zip")], dict(env, **folders), process=True)
    raw = root / "raw" / DS
    _linked(work / "reference_scans", sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[:5])
    tests = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))
    _linked(work / "labelled_scans", tests[:2])
    _linked(work / "labels", [raw / "labelsTs" / f.name.replace("_0000", "") for f in tests[:2]])
    new = _linked(work / "new_scans", tests[2:] + sorted((root / "raw/Dataset014_HippocampusMR/imagesTs").glob("*"))[:2])
    home, folders = _home(root, tmp, "colleague_nnunet")
    env = dict(env, **folders)
    outputs = {}
    for command in walkthrough_commands():
        result = subprocess.run([os.path.join(BIN, command[0]), *command[1:]], env=env, cwd=work,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, " ".join(command) + "\n" + result.stdout[-2000:] + result.stderr[-2000:]
        outputs[command[1]] = result.stdout
    before = json.loads((work / "scored" / "ood_scores.json").read_text())
    zipped = tmp / "model_with_ours.zip"
    export = run([os.path.join(BIN, "nnunet_mt"), "export", "-d", "12", "-c", "3d_fullres", "-tr", "nnUNetTrainer",
                  "-f", "0", "-o", str(zipped)], env)
    return dict(root=root, env=env, tmp=tmp, home=home, new=new, before=before, before_dir=work / "scored",
                zip=zipped, outputs=outputs, export=export, plain_export=plain_export)


def test_walkthrough_fits_and_calibrates_a_plain_nnunet_model_without_its_data(shared):
    assert "with 0 nnunet_mt file(s) (none: fit or calibrate the model first?)" in shared["plain_export"].stdout
    assert "0 nnunet_mt file(s) checked" in shared["outputs"]["install"]
    assert "no OOD fit or temperature came with it: fit on reference scans" in shared["outputs"]["install"]
    fold = shared["home"] / "res" / DS / PLAIN_MODEL / "fold_0"
    assert "spectral: 5 reference images, last layer, 32 values each" in shared["outputs"]["fit"]  # nnU-Net's 32
    spectral = json.loads((fold / "spectral_signatures_last.json").read_text())
    assert spectral["reference"]["n_images"] == 5 and spectral["model"]["trainer"] == "nnUNetTrainer"
    temperature = json.loads((fold / "temperature.json").read_text())
    assert len(temperature["cases"]) == 2 and temperature["temperature"] > 0
    assert "all: T = " in shared["outputs"]["calibrate"]
    report = shared["before"]
    assert len(report["cases"]) == 4 and report["calibration"]["temperature"] == pytest.approx(
        temperature["temperature"])


def test_export_then_nnunets_installer_gives_the_same_scores_and_segmentations(shared):
    with zipfile.ZipFile(shared["zip"]) as z:
        names = set(z.namelist())
    prefix = f"{DS}/{PLAIN_MODEL}"
    # nnU-Net's own export content, and ours beside it
    assert {f"{prefix}/fold_0/checkpoint_final.pth", f"{prefix}/plans.json", f"{prefix}/dataset.json",
            f"{prefix}/fold_0/validation/summary.json"} <= names
    ours = {f"{prefix}/fold_0/{n}" for n in ("spectral_signatures_last.json", "spectral_signatures_last.npz",
                                              "ood_fit_knn_bottleneck.json", "ood_fit_knn_bottleneck.npz",
                                              "temperature.json")}
    assert ours <= names and f"{prefix}/nnunet_mt_export.json" in names
    assert "with 5 nnunet_mt file(s)" in shared["export"].stdout
    home, folders = _home(shared["root"], shared["tmp"], "colleague")
    env = dict(shared["env"], **folders)
    run([os.path.join(BIN, "nnUNetv2_install_pretrained_model_from_zip"), str(shared["zip"])], env)
    after = _score(env, shared["new"], shared["tmp"] / "after")
    assert _numbers(after) == _numbers(shared["before"])
    for row in after["cases"]:
        case = row["case"]
        a, b = shared["tmp"] / "after", shared["before_dir"]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a / f"{case}.nii.gz"))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(b / f"{case}.nii.gz"))))
        np.testing.assert_array_equal(np.load(a / f"{case}.npz")["probabilities"],
                                      np.load(b / f"{case}.npz")["probabilities"])
    # our installer gives the same folder, file for file
    mine, folders = _home(shared["root"], shared["tmp"], "checked")
    r = run([os.path.join(BIN, "nnunet_mt"), "install", str(shared["zip"])], dict(shared["env"], **folders),
            process=True)
    assert "5 nnunet_mt file(s) checked against the export record" in r.stdout
    files = lambda base: {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    assert files(mine / "res") == files(home / "res")


def _rewritten(source, target, change):
    """A copy of a zip with change(name, bytes) -> (name, bytes) applied to every member."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(*change(name, src.read(name)))
    return target


def test_damaged_zips_and_zips_of_another_model_are_refused(shared, tmp_path):
    source = shared["zip"]
    other = "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"

    def renamed(name, data):  # the whole model moved to another trainer's folder, manifest included
        if name.endswith("nnunet_mt_export.json"):
            data = data.replace(b'"trainer": "nnUNetTrainer"', b'"trainer": "nnUNetTrainerNoMirroring"')
        return name.replace(PLAIN_MODEL, other), data

    def tampered(name, data):  # a fit edited after the export
        return name, (data.replace(b'"tau": ', b'"tau": 1') if name.endswith("spectral_signatures_last.json") else data)

    def swapped(name, data):  # another model's checkpoint in place of the exported one
        return name, (data + b"\0" if name.endswith("checkpoint_final.pth") else data)

    cases = [(_rewritten(source, tmp_path / "renamed.zip", renamed), "made for another model (trainer nnUNetTrainer, "
              "not nnUNetTrainerNoMirroring)"),
             (_rewritten(source, tmp_path / "tampered.zip", tampered), "spectral_signatures_last.json is not the "
              "exported file"),
             (_rewritten(source, tmp_path / "swapped.zip", swapped), "checkpoint_final.pth is not the exported file"),
             (tmp_path / "notes.zip", "not a zip file")]
    (tmp_path / "notes.zip").write_text("not a zip")
    home, folders = _home(shared["root"], tmp_path, "target")
    env = dict(shared["env"], **folders)
    for path, needle in cases:
        r = run([os.path.join(BIN, "nnunet_mt"), "install", str(path)], env, check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0] and str(path) in lines[0], r.stderr
        assert not any((home / "res").iterdir())  # nothing written
    # an installed model is not replaced by another one with the same name
    run([os.path.join(BIN, "nnunet_mt"), "install", str(source)], env)
    import hashlib
    with zipfile.ZipFile(source) as z:
        checkpoint = next(n for n in z.namelist() if n.endswith("checkpoint_final.pth"))
        old, new = (hashlib.sha256(z.read(checkpoint) + extra).hexdigest().encode() for extra in (b"", b"\0"))

    def retrained(name, data):  # a consistent zip of the same name whose checkpoint differs
        name, data = swapped(name, data)
        return name, (data.replace(old, new) if name.endswith("nnunet_mt_export.json") else data)
    installed = {p: p.stat().st_mtime_ns for p in (home / "res").rglob("*")}
    r = run([os.path.join(BIN, "nnunet_mt"), "install", str(_rewritten(source, tmp_path / "retrained.zip", retrained))],
            env, check=False)
    assert r.returncode == 2 and "holds another model's checkpoint" in r.stderr and "remove" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in (home / "res").rglob("*")} == installed


def test_export_refusals(shared, tmp_path):
    env = shared["env"]
    export = [os.path.join(BIN, "nnunet_mt"), "export", "-d", "12", "-c", "3d_fullres", "-tr", "nnUNetTrainer"]
    fold = shared["home"] / "res" / DS / PLAIN_MODEL / "fold_0"
    stray = fold / "ood_fit_msp.json"
    stray.write_text(json.dumps({"method": "msp", "model": {"trainer": "nnUNetTrainerMultiTask", "fold": "0"}}))
    try:
        for args, needle in ((["-f", "0", "-o", str(tmp_path / "a.zip")], "ood_fit_msp.json: made for another model "
                              "(trainer nnUNetTrainerMultiTask, not nnUNetTrainer)"),
                             (["-f", "0", "1", "-o", str(tmp_path / "a.zip")], "fold_1/checkpoint_final.pth: "
                              "checkpoint missing"),
                             (["-f", "0", "-o", str(shared["zip"])], "exists already"),
                             (["-f", "0", "-o", str(tmp_path / "a.tar")], "must end in .zip")):
            r = run(export + args, env, check=False)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
            assert not any(tmp_path.iterdir())  # no zip, no partial file
    finally:
        stray.unlink()


def test_every_registered_method_file_travels_with_the_export():
    """Each OOD method's fit files (the registry's stems, for any layer and fold ensemble) match the patterns
    export collects: a method added to the registry is exported without touching export.py."""
    import fnmatch
    from nnunet_mt.export import FOLD_PATTERNS, MODEL_PATTERNS
    from nnunet_mt_ood.methods import METHODS
    for spec in METHODS.values():
        patterns = MODEL_PATTERNS if spec.ensemble_of == "folds" else FOLD_PATTERNS
        for path in spec.paths("", "bottleneck", ["0", "1"]):
            assert any(fnmatch.fnmatch(path, p) for p in patterns), (spec.name, path)
    assert not any(fnmatch.fnmatch("checkpoint_final.pth", p) for p in FOLD_PATTERNS)
