"""Bad-input matrix: every CLI answers each bad input with one line naming the file and the problem, exit code 2,
no traceback, and no partial output. One parametrized case per row. Rows in SUBPROCESS_ROWS (one or more per
command, and the disk-full row) run the real console script in a subprocess; the others call the same main(argv)
in-process (the error path is the same code; a subprocess costs seconds of torch and nnU-Net imports per row)."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, nnunet_env, run, run_main

SOURCE = "Dataset012_CorticalPlateMR"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small valid raw folder (demo Dataset012: 5 training + 1 test case) to copy for each row."""
    from nnunet_mt.demo_data import DEMO_DATASETS, write_dataset
    from dataclasses import replace
    root = tmp_path_factory.mktemp("pristine")
    ds = next(d for d in DEMO_DATASETS if d.dataset_id == 12)
    write_dataset(replace(ds, n_train=5, n_test=1), str(root / "raw"))
    return root


@pytest.fixture
def ws(pristine, tmp_path):
    shutil.copytree(pristine / "raw", tmp_path / "raw")
    for d in ("pre", "res"):
        (tmp_path / d).mkdir()
    return tmp_path


def _src(ws, *parts):
    return ws / "raw" / SOURCE / os.path.join(*parts)


def _write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def _edit_json(ws, change):
    path = _src(ws, "dataset.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _replace_image(ws, case="corticalplatemr_000", **kwargs):
    path = _src(ws, "imagesTr", f"{case}_0000.nii.gz")
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    edit = kwargs.pop("edit", None)
    if edit:
        array = edit(array.astype(np.float32))
    _write(path, array, **kwargs)


def _sheared(path):
    import nibabel
    affine = np.eye(4)
    affine[0, 1] = 0.5
    image = nibabel.Nifti1Image(np.zeros((16, 16, 16), np.float32), affine)
    image.set_qform(None, code=0)
    image.set_sform(affine, code=1)
    nibabel.save(image, str(path))


def _nan(a):
    a[0, 0, 0] = np.nan
    return a


def _inf(a):
    a[1, 2, 3] = np.inf
    return a


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def _prediction_folder(ws, shape_change=False, drop=False, probabilities=True):
    """A prediction folder in nnU-Net's layout made from the reference labels (perfect predictions)."""
    ref, pred = ws / "ref", ws / "pred"
    ref.mkdir()
    pred.mkdir()
    for f in sorted(os.listdir(_src(ws, "labelsTr")))[:2]:
        shutil.copy(_src(ws, "labelsTr", f), ref / f)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(ref / f)))
        if shape_change:
            label = label[:-2]
        if not drop:
            _write(pred / f, label.astype(np.uint8))
            if probabilities:
                p = np.stack([1.0 - label, label]).astype(np.float32)
                np.savez_compressed(pred / f.replace(".nii.gz", ".npz"), probabilities=p)
        drop = False  # only the first case is dropped
    return ref, pred


def _scores(ws, name, model):
    folder = ws / name
    folder.mkdir()
    report = {"model": model, "spectral_layer": "last", "methods": {"spectral": {"tau": 0.1}},
              "cases": [{"case": "a", "spectral_score": 0.0, "spectral_is_ood": False}]}
    (folder / "ood_scores.json").write_text(json.dumps(report))
    return str(folder / "ood_scores.json")


MERGE = ["nnunet_mt", "merge", "-d", "12", "-o", "600"]
MERGED = "raw/Dataset600_MultiTask"


def _evaluate_setup(**kwargs):
    def setup(ws):
        ref, pred = _prediction_folder(ws, **kwargs)
        return ["nnunet_mt", "evaluate", "-ref", str(ref), "-pred", str(pred), "-prob", str(pred)]
    return setup


def _disk_full(ws):
    """A previous metrics.json exists; the new one is written through its partial file, which is /dev/full."""
    ref, pred = _prediction_folder(ws)
    (pred / "metrics.json").write_text("previous")
    os.symlink("/dev/full", pred / ".partial.metrics.json")
    return ["nnunet_mt", "evaluate", "-ref", str(ref), "-pred", str(pred), "-prob", str(pred)]


def _merge_after(change):
    def setup(ws):
        change(ws)
        return MERGE
    return setup


def _taken_output(ws):
    (ws / "raw/Dataset600_Other").mkdir()
    return MERGE


# (row id, setup(ws) -> command, words the error line must contain, path (relative to ws) that must not exist)
ROWS = [
    ("merge-dataset-json-invalid", _merge_after(lambda ws: _src(ws, "dataset.json").write_text("{not json")),
     ["dataset.json", "invalid JSON"], MERGED),
    ("merge-dataset-json-missing-key", _merge_after(lambda ws: _edit_json(ws, lambda d: d.pop("labels"))),
     ["dataset.json", "'labels' missing"], MERGED),
    ("merge-dataset-json-wrong-type", _merge_after(lambda ws: _edit_json(ws, lambda d: d.update(channel_names=["MR"]))),
     ["dataset.json", "'channel_names'", "not a dict"], MERGED),
    ("merge-dataset-json-absent", _merge_after(lambda ws: _src(ws, "dataset.json").unlink()),
     ["dataset.json", "missing dataset.json"], MERGED),
    ("merge-image-without-label", _merge_after(lambda ws: _src(ws, "labelsTr", "corticalplatemr_001.nii.gz").unlink()),
     ["corticalplatemr_001_0000.nii.gz", "image without label"], MERGED),
    ("merge-label-without-image",
     _merge_after(lambda ws: _src(ws, "imagesTr", "corticalplatemr_001_0000.nii.gz").unlink()),
     ["labelsTr/corticalplatemr_001.nii.gz", "label without image"], MERGED),
    ("merge-shape-mismatch", _merge_after(lambda ws: _replace_image(ws, edit=lambda a: a[:-1])),
     ["labelsTr/corticalplatemr_000.nii.gz", "label size"], MERGED),
    ("merge-spacing-mismatch", _merge_after(lambda ws: _replace_image(ws, spacing=(1.0, 1.0, 1.5))),
     ["labelsTr/corticalplatemr_000.nii.gz", "label spacing"], MERGED),
    ("merge-origin-mismatch", _merge_after(lambda ws: _replace_image(ws, origin=(0.0, 5.0, 0.0))),
     ["labelsTr/corticalplatemr_000.nii.gz", "label origin"], MERGED),
    ("merge-nan-voxels", _merge_after(lambda ws: _replace_image(ws, edit=_nan)),
     ["corticalplatemr_000_0000.nii.gz", "NaN or infinite"], MERGED),
    ("merge-inf-voxels", _merge_after(lambda ws: _replace_image(ws, edit=_inf)),
     ["corticalplatemr_000_0000.nii.gz", "NaN or infinite"], MERGED),
    ("merge-undeclared-label", _merge_after(lambda ws: _write(_src(ws, "labelsTr", "corticalplatemr_002.nii.gz"),
                                                                np.full((48, 48, 48), 7, np.uint8))),
     ["corticalplatemr_002.nii.gz", "[7]", "not declared"], MERGED),
    ("merge-2d-image", _merge_after(lambda ws: sitk.WriteImage(sitk.Image(16, 16, sitk.sitkFloat32),
                                                                 str(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz")))),
     ["corticalplatemr_000_0000.nii.gz", "2D image"], MERGED),
    ("merge-wrong-channel-count", _merge_after(lambda ws: shutil.copy(
        _src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz"), _src(ws, "imagesTr", "corticalplatemr_000_0001.nii.gz"))),
     ["imagesTr", "2 channel files", "declares 1"], MERGED),
    ("merge-truncated-file", _merge_after(lambda ws: _truncate(_src(ws, "imagesTr", "corticalplatemr_003_0000.nii.gz"))),
     ["corticalplatemr_003_0000.nii.gz", "unreadable"], MERGED),
    ("merge-non-orthonormal", _merge_after(lambda ws: (_sheared(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz")),
                                                       _sheared(_src(ws, "labelsTr", "corticalplatemr_000.nii.gz")))),
     ["corticalplatemr_000_0000.nii.gz", "non-orthonormal"], MERGED),
    ("merge-duplicate-case-id", _merge_after(lambda ws: (
        shutil.copy(_src(ws, "imagesTr", "corticalplatemr_000_0000.nii.gz"), _src(ws, "imagesTs", "corticalplatemr_000_0000.nii.gz")),
        shutil.copy(_src(ws, "labelsTr", "corticalplatemr_000.nii.gz"), _src(ws, "labelsTs", "corticalplatemr_000.nii.gz")))),
     [SOURCE, "corticalplatemr_000", "duplicate case ids"], MERGED),
    ("merge-output-exists", _taken_output, ["Dataset600_Other", "output dataset exists"], MERGED),
    ("evaluate-prediction-missing", _evaluate_setup(drop=True), ["corticalplatemr_000.nii.gz", "prediction missing"],
     "pred/metrics.json"),
    ("evaluate-shape-mismatch", _evaluate_setup(shape_change=True), ["corticalplatemr_000.nii.gz", "differs"],
     "pred/metrics.json"),
    ("evaluate-probabilities-missing", _evaluate_setup(probabilities=False), ["corticalplatemr_000.npz", "missing"],
     "pred/metrics.json"),
    ("evaluate-disk-full", _disk_full, ["pred/metrics.json", "No space left"], "pred/.partial.metrics.json"),
    ("demo-data-unknown-dataset", lambda ws: ["nnunet_mt", "demo-data", "-o", str(ws / "demo"), "-d", "99"],
     ["-d 99", "not a demo dataset"], "demo"),
    ("demo-data-too-few-cases", lambda ws: ["nnunet_mt", "demo-data", "-o", str(ws / "demo"), "--n_train", "3"],
     ["--n_train", "at least 5"], "demo"),
    ("demo-data-output-is-a-file", lambda ws: ((ws / "afile").write_text("x"), ["nnunet_mt", "demo-data", "-o",
                                                                                 str(ws / "afile")])[1],
     ["afile", "exists"], "afile/Dataset011_LiverCT"),
    ("experiment-unknown-dataset", lambda ws: ["nnunet_mt", "experiment", "joint-vs-dedicated", "-d", "12", "77",
                                               "-o", str(ws / "exp")], ["Dataset077_*", "no nnU-Net raw dataset"], "exp"),
    ("experiment-bad-chain", lambda ws: ["nnunet_mt", "experiment", "transfer", "-d", "12", "--chains", "12,99",
                                         "-o", str(ws / "exp")], ["--chains 12,99", "'99'"], "exp"),
    ("ood-fit-no-checkpoint", lambda ws: ["nnunet_mt_ood", "fit", "-d", "12", "-c", "3d_fullres", "-tr",
                                          "nnUNetTrainerMultiTask", "-f", "0", "-device", "cpu"],
     ["checkpoint_final.pth", "checkpoint missing"], "res/Dataset012_CorticalPlateMR"),
    ("ood-score-no-signatures", lambda ws: (
        os.makedirs(ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0"),
        (ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth").write_text(""),
        ["nnunet_mt_ood", "score", "-i", str(_src(ws, "imagesTs")), "-o", str(ws / "out"), "-d", "12", "-c",
         "3d_fullres", "-tr", "T", "-f", "0", "-device", "cpu"])[2],
     ["spectral_signatures_last.json", "not fitted"], "out"),
    ("ood-evaluate-other-model", lambda ws: ["nnunet_mt_ood", "evaluate", _scores(ws, "a", {"trainer": "A"}),
                                             _scores(ws, "b", {"trainer": "B"}), "--ood", "a", "-o", str(ws / "ev")],
     ["b/ood_scores.json", "another model"], "ev.json"),
    ("ood-evaluate-invalid-json", lambda ws: ((ws / "bad.json").write_text("[1,"), ["nnunet_mt_ood", "evaluate",
                                              str(ws / "bad.json"), "--ood", "x", "-o", str(ws / "ev")])[1],
     ["bad.json", "cannot read"], "ev.json"),
    ("ood-collect-no-parts", lambda ws: ["nnunet_mt_ood", "collect", str(_src(ws, "imagesTs"))],
     ["imagesTs", "no ood_scores.part"], "raw/" + SOURCE + "/imagesTs/ood_scores.json"),
]


# the rows that go through the installed console scripts: every command's real entry point, exit code included
SUBPROCESS_ROWS = {"merge-dataset-json-invalid", "evaluate-prediction-missing", "evaluate-disk-full",
                   "demo-data-unknown-dataset", "experiment-unknown-dataset", "ood-fit-no-checkpoint",
                   "ood-score-no-signatures", "ood-evaluate-invalid-json", "ood-collect-no-parts"}


def _in_process(cmd, ws, monkeypatch, capsys):
    """(exit code, stdout, stderr) of main(argv) of `cmd`'s package, with the row's nnU-Net folders."""
    from nnunet_mt.cli import main as nnunet_mt
    from nnunet_mt_ood.cli import main as nnunet_mt_ood
    for var, value in nnunet_env(ws).items():
        if var.startswith("nnUNet_"):
            monkeypatch.setenv(var, value)
    return run_main({"nnunet_mt": nnunet_mt, "nnunet_mt_ood": nnunet_mt_ood}[cmd[0]], list(cmd[1:]), capsys)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, ws, monkeypatch, capsys):
    name, setup, needles, absent = row
    cmd = setup(ws)
    sources_after_setup = {p: p.stat().st_mtime_ns for p in (ws / "raw").rglob("*") if p.is_file()}
    if name in SUBPROCESS_ROWS:
        result = run([os.path.join(BIN, cmd[0]), *cmd[1:]], nnunet_env(ws), check=False)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        code, out, err = _in_process(cmd, ws, monkeypatch, capsys)
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (ws / absent).exists(), f"partial output left: {absent}"
    # the user's source data is untouched by the failing command
    assert {p: p.stat().st_mtime_ns for p in (ws / "raw").rglob("*") if p.is_file()} == sources_after_setup


def test_every_subprocess_row_exists():
    assert SUBPROCESS_ROWS <= {r[0] for r in ROWS}
    assert {r[0].split("-")[0] for r in ROWS if r[0] in SUBPROCESS_ROWS} == {r[0].split("-")[0] for r in ROWS}


def test_disk_full_keeps_previous_output(ws):
    cmd = _disk_full(ws)
    result = run([os.path.join(BIN, cmd[0]), *cmd[1:]], nnunet_env(ws), check=False)
    assert result.returncode == 2
    assert (ws / "pred/metrics.json").read_text() == "previous"


def test_empty_label_maps_are_allowed(ws):
    """Decision (documentation/merge.md): a training case without foreground is kept, and counted in a note."""
    label = _src(ws, "labelsTr", "corticalplatemr_004.nii.gz")
    image = sitk.ReadImage(str(label))
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8))
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(label), useCompression=True)
    result = run([os.path.join(BIN, "nnunet_mt"), *MERGE[1:]], nnunet_env(ws))
    assert "note: 1 label maps have no foreground" in result.stdout
    assert (ws / MERGED / "labelsTr/D012_corticalplatemr_004.nii.gz").is_file()
