"""Workspaces for the refusal table (tests/cli/test_refusals.py): each setup(ws) breaks one thing in a fresh
workspace and returns the command line to run, [command, *argv]. A "demo" workspace holds demo Dataset012 in
raw/ (5 training cases, 1 test case); a "bare" one empty raw/, pre/, res/ and in/. Also the files our commands
write, made by hand (a fit in a fold folder, score reports, score parts), good ones and ones edited to be bad."""
import json
import os
import shutil

import numpy as np
import SimpleITK as sitk

SOURCE = "Dataset012_CorticalPlateMR"
MERGE = ["nnunet_mt", "merge", "-d", "12", "-o", "600"]
LABEL = np.zeros((8, 10, 12), np.uint8)
LABEL[2:6, 3:7, 4:9] = 1


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


FOLD = "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0"
GOOD_FIT = {"method": "spectral", "layer": "last", "C": 2.5, "tau": 0.1, "n_channels": 2,
            "case_ids": ["a", "b", "c"], "sources": ["S", "S", "S"], "train_scores": [0.1, 0.2, 0.3],
            "model": {"trainer": "T"}, "tta": None}
GOOD_REPORT = {"model": {"trainer": "T"}, "spectral_layer": "last", "methods": {"spectral": {"tau": 0.1}},
               "cases": [{"case": "a", "spectral_score": 0.05, "spectral_is_ood": False}]}


def _fit_files(ws, meta=None, npz=None, raw_json=None):
    fold = ws / FOLD
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_text("")  # the fit files are read before the checkpoint
    (ws / "raw/Dataset012_CorticalPlateMR").mkdir(parents=True)
    path = fold / "spectral_signatures_last.json"
    if isinstance(raw_json, bytes):
        path.write_bytes(raw_json)
    else:
        path.write_text(raw_json if raw_json is not None else json.dumps(dict(GOOD_FIT, **(meta or {}))))
    if npz == "garbage":
        (fold / "spectral_signatures_last.npz").write_bytes(b"PK\x03\x04 not a zip")
    else:
        np.savez(fold / "spectral_signatures_last.npz", **{npz or "signatures": np.ones((3, 2)) * [[1], [2], [3]]})
    return ["score", "-i", str(ws / "in"), "-o", str(ws / "out"), "-d", "12", "-c", "3d_fullres", "-tr", "T",
            "-f", "0", "-device", "cpu"]


def _knn_fit(ws, k):
    """A knn fit whose recorded k was edited by hand."""
    argv = _fit_files(ws)
    meta = dict(GOOD_FIT, method="knn", layer="bottleneck", k=k)
    (ws / FOLD / "ood_fit_knn_bottleneck.json").write_text(json.dumps(meta))
    np.savez(ws / FOLD / "ood_fit_knn_bottleneck.npz", features=np.ones((3, 2)) * [[1], [2], [3]])
    return argv + ["--method", "knn"]


def _report(ws, edit=None, raw=None, name="ood_scores.json"):
    report = json.loads(json.dumps(GOOD_REPORT))
    if edit:
        edit(report)
    (ws / name).write_text(raw if raw is not None else json.dumps(report))
    return ws / name


def ood_evaluate_report(**kwargs):
    return lambda ws: ["nnunet_mt_ood", "evaluate", str(_report(ws, **kwargs)), "--ood", "x*", "-o", str(ws / "ev")]


def ood_collect_parts(**kwargs):
    def setup(ws):
        (ws / "parts").mkdir()
        _report(ws / "parts", name="ood_scores.part_0_of_2.json")
        _report(ws / "parts", name="ood_scores.part_1_of_2.json", **kwargs)
        return ["nnunet_mt_ood", "collect", str(ws / "parts")]
    return setup


def ood_score_fit(**kwargs):
    return lambda ws: ["nnunet_mt_ood", *_fit_files(ws, **kwargs)]


def ood_score_knn(k):
    return lambda ws: ["nnunet_mt_ood", *_knn_fit(ws, k)]


def _image(path, array, origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def evaluate_one_case(pred_geometry=None, probabilities=None, stray=None):
    """A reference and a perfect prediction of one case (with probabilities), then one thing broken."""
    def setup(ws):
        _image(ws / "ref/case.nii.gz", LABEL)
        _image(ws / "pred/case.nii.gz", LABEL, **(pred_geometry or {}))
        p = np.stack([1.0 - LABEL, LABEL]).astype(np.float32)
        np.savez_compressed(ws / "pred/case.npz", probabilities=probabilities(p) if probabilities else p)
        if stray:
            _image(ws / stray, LABEL)
        return ["nnunet_mt", "evaluate", "-ref", str(ws / "ref"), "-pred", str(ws / "pred"), "-prob", str(ws / "pred")]
    return setup


def _nan_probabilities(p):
    p[:, 0, 0, 0] = np.nan
    return p


def _merge(stray):
    """demo-like source Dataset021 (2 CT-free MR cases) with a file of another ending beside them."""
    def setup(ws):
        src = ws / "raw/Dataset021_Src"
        for case in ("a", "b"):
            _image(src / f"imagesTr/{case}_0000.nii.gz", (LABEL * 100 + 50).astype(np.int16))
            _image(src / f"labelsTr/{case}.nii.gz", LABEL)
        (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1},
                                                      "numTraining": 2, "file_ending": ".nii.gz"}))
        _image(src / stray, LABEL)
        return ["nnunet_mt", "merge", "-d", "21", "-o", "600"]
    return setup


def _score(output=None, stray=False, checkpoint=None):
    """Valid fit files and one input image; the output folder, an input file or the checkpoint broken."""
    def setup(ws):
        argv = _fit_files(ws)
        _image(ws / "in/x_0000.nii.gz", LABEL.astype(np.float32))
        (ws / "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/dataset.json").write_text(json.dumps(
            {"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}))
        if stray:
            _image(ws / "in/y_0000.nii", LABEL.astype(np.float32))
        if checkpoint is not None:
            path = ws / FOLD / "checkpoint_final.pth"
            checkpoint(path)
        if output:
            argv[argv.index("-o") + 1] = str(ws / output)
        return ["nnunet_mt_ood", *argv]
    return setup


def _collect_same_part(ws):
    command = ood_collect_parts()(ws)
    _report(ws / "parts", name="ood_scores.part_00_of_2.json")  # also part 0 of 2
    return command


def _collect_contradicting_part(ws):
    return ood_collect_parts(edit=lambda r: r.update(part={"part_id": 0, "num_parts": 2}))(ws)


def _collect_degenerate(name=None, empty=False):
    """Score parts that are no split: a part named 0 of 0 or 2 of 2, or a part file with no case."""
    def setup(ws):
        (ws / "parts").mkdir()
        if name:
            _report(ws / "parts", name=name)
        else:
            _report(ws / "parts", name="ood_scores.part_0_of_2.json")
            _report(ws / "parts", name="ood_scores.part_1_of_2.json", edit=lambda r: r.update(cases=[]))
        return ["nnunet_mt_ood", "collect", str(ws / "parts")]
    return setup


def _calibrate(temperature=None, apply=True, out=True, checkpoint=True):
    """A model folder (fold 0) and an nnUNetv2_predict-like folder with one .npz; calibrate or --apply on it."""
    def setup(ws):
        _fit_files(ws)
        fold = ws / FOLD
        if not checkpoint:
            (fold / "checkpoint_final.pth").unlink()
        if temperature is not None:
            (fold / "temperature.json").write_text(json.dumps({"temperature": temperature, "region": "r", "cases": []}))
        (ws / "pred").mkdir()
        np.savez(ws / "pred/x.npz", probabilities=np.full((2, 2, 2, 2), 0.5, np.float32))
        argv = ["calibrate", "-d", "12", "-f", "0", "-tr", "T", "-device", "cpu"]
        argv += ["--apply", str(ws / "pred")] if apply else []
        return ["nnunet_mt", *argv] + (["-o", str(ws / "calibrated")] if out else [])
    return setup
