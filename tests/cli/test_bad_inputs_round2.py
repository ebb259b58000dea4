"""Bad inputs, second round (issue 17, classes 1, 3, 4, 5): geometry and probability content in evaluate,
stray file endings, output inside input, duplicate parts, broken checkpoints, output sets written whole.
Each row is refused with one line naming the file, exit code 2, nothing written. In-process, through main(argv)."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import assert_refused_in_process, nnunet_folders
from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.cli import main as nnunet_mt
from nnunet_mt.errors import InputError
from nnunet_mt.validate import check_written_image
from nnunet_mt_ood.cli import main as nnunet_mt_ood
from written_files import FOLD, _collect, _fit_files, _report

LABEL = np.zeros((8, 10, 12), np.uint8)
LABEL[2:6, 3:7, 4:9] = 1


def _image(path, array, origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def _evaluate(pred_geometry=None, probabilities=None, stray=None):
    """A reference and a perfect prediction of one case (with probabilities), then one thing broken."""
    def setup(ws):
        _image(ws / "ref/case.nii.gz", LABEL)
        _image(ws / "pred/case.nii.gz", LABEL, **(pred_geometry or {}))
        p = np.stack([1.0 - LABEL, LABEL]).astype(np.float32)
        np.savez_compressed(ws / "pred/case.npz", probabilities=probabilities(p) if probabilities else p)
        if stray:
            _image(ws / stray, LABEL)
        return nnunet_mt, ["evaluate", "-ref", str(ws / "ref"), "-pred", str(ws / "pred"), "-prob", str(ws / "pred")]
    return setup


def _nan(p):
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
        return nnunet_mt, ["merge", "-d", "21", "-o", "600"]
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
        return nnunet_mt_ood, argv
    return setup


def _collect_same_part(ws):
    argv = _collect()(ws)
    _report(ws / "parts", name="ood_scores.part_00_of_2.json")  # also part 0 of 2
    return nnunet_mt_ood, argv


def _collect_contradicting_part(ws):
    argv = _collect(edit=lambda r: r.update(part={"part_id": 0, "num_parts": 2}))(ws)
    return nnunet_mt_ood, argv


def _collect_degenerate(name=None, empty=False):
    """Score parts that are no split: a part named 0 of 0 or 2 of 2, or a part file with no case."""
    def setup(ws):
        (ws / "parts").mkdir()
        if name:
            _report(ws / "parts", name=name)
        else:
            _report(ws / "parts", name="ood_scores.part_0_of_2.json")
            _report(ws / "parts", name="ood_scores.part_1_of_2.json", edit=lambda r: r.update(cases=[]))
        return nnunet_mt_ood, ["collect", str(ws / "parts")]
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
        return nnunet_mt, argv + (["-o", str(ws / "calibrated")] if out else [])
    return setup


ROWS = [
    # class 3: geometry and content
    ("evaluate-origin-shifted", _evaluate(pred_geometry={"origin": (0.0, 0.0, 5.0)}), ["pred/case.nii.gz", "origin", "shifted"]),
    ("evaluate-direction-flipped", _evaluate(pred_geometry={"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}),
     ["pred/case.nii.gz", "direction"]),
    ("evaluate-probabilities-nan", _evaluate(probabilities=_nan), ["pred/case.npz", "NaN or infinite"]),
    ("evaluate-logits", _evaluate(probabilities=lambda p: 8 * p - 4), ["pred/case.npz", "not probabilities in [0, 1]"]),
    ("evaluate-probabilities-no-sum", _evaluate(probabilities=lambda p: p * 0.5), ["pred/case.npz", "do not sum to 1"]),
    # class 4: refuse or name, never skip
    ("evaluate-stray-ending-reference", _evaluate(stray="ref/other.nii"), ["ref/other.nii", "file ending"]),
    ("evaluate-stray-ending-prediction", _evaluate(stray="pred/other.mha"), ["pred/other.mha", "file ending"]),
    ("merge-stray-image-ending", _merge("imagesTr/c_0000.nii"), ["imagesTr/c_0000.nii", "file ending"]),
    ("merge-stray-label-ending", _merge("labelsTr/a.mha"), ["labelsTr/a.mha", "file ending"]),
    ("score-output-is-input", _score(output="in"), ["in: output folder is the input folder"]),
    ("score-output-inside-input", _score(output="in/predictions"), ["in/predictions", "inside the input folder"]),
    ("score-stray-ending", _score(stray=True), ["in/y_0000.nii", "file ending"]),
    ("collect-same-part-twice", _collect_same_part, ["ood_scores.part_0_of_2.json", "ood_scores.part_00_of_2.json",
                                                     "same part"]),
    ("collect-part-field-contradicts-name", _collect_contradicting_part,
     ["ood_scores.part_1_of_2.json", "contradicts the file name"]),
    ("collect-zero-parts", _collect_degenerate("ood_scores.part_0_of_0.json"),
     ["ood_scores.part_0_of_0.json", "not a part of a split"]),
    ("collect-part-beyond-the-split", _collect_degenerate("ood_scores.part_2_of_2.json"),
     ["ood_scores.part_2_of_2.json", "not a part of a split"]),
    ("collect-part-without-cases", _collect_degenerate(), ["ood_scores.part_1_of_2.json", "holds no cases"]),
    # class 1: checkpoints read back
    ("score-checkpoint-empty", _score(checkpoint=lambda p: p.write_bytes(b"")), ["checkpoint_final.pth", "unreadable checkpoint"]),
    ("score-checkpoint-truncated", _score(checkpoint=lambda p: (torch.save({"x": torch.ones(1000)}, p),
                                                                p.write_bytes(p.read_bytes()[:300]))),
     ["checkpoint_final.pth", "unreadable checkpoint"]),
    ("score-checkpoint-no-weights", _score(checkpoint=lambda p: torch.save(
        {"trainer_name": "T", "init_args": {"configuration": "3d_fullres"}}, p)),
     ["checkpoint_final.pth", "'network_weights' missing"]),
    ("score-checkpoint-not-a-dict", _score(checkpoint=lambda p: torch.save([1, 2], p)),
     ["checkpoint_final.pth", "not an nnU-Net checkpoint"]),
    # calibrate (issue 14)
    ("calibrate-apply-without-output", _calibrate(temperature=1.5, out=False), ["--apply needs -o"]),
    ("calibrate-apply-before-fitting", _calibrate(), ["fold_0/temperature.json", "no temperature fitted"]),
    ("calibrate-temperature-negative", _calibrate(temperature=-1.0), ["temperature.json", "must be > 0"]),
    ("calibrate-temperature-nan", _calibrate(temperature=float("nan")), ["temperature.json", "finite number"]),
    ("calibrate-apply-onto-itself", lambda ws: (lambda m, a: (m, a[:-1] + [str(ws / "pred")]))(
        *_calibrate(temperature=1.5)(ws)), ["pred: exists"]),
    ("calibrate-without-checkpoint", _calibrate(apply=False, out=False, checkpoint=False),
     ["checkpoint_final.pth", "checkpoint missing"]),
    ("score-checkpoint-no-configuration", _score(checkpoint=lambda p: torch.save(
        {"trainer_name": "T", "init_args": {}, "network_weights": {}}, p)),
     ["checkpoint_final.pth", "'init_args.configuration' missing"]),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_round2(row, tmp_path, monkeypatch, capsys):
    _, setup, needles = row
    nnunet_folders(tmp_path, monkeypatch)
    (tmp_path / "in").mkdir(exist_ok=True)
    main, argv = setup(tmp_path)
    assert_refused_in_process(main, argv, needles, tmp_path, capsys)


def test_label_maps_with_nan_voxels_are_refused(tmp_path):
    """NaN > 0 is False: a NaN voxel of a label map would silently count as background. SimpleITK's NIfTI reader
    already reads NaN as 0; formats that keep it (.mha, .nrrd) are refused by name."""
    from nnunet_mt.evaluate import read_on_one_grid
    reference = LABEL.astype(np.float32)
    reference[0, 0, :3] = np.nan
    _image(tmp_path / "ref.mha", reference)
    _image(tmp_path / "pred.mha", LABEL)
    with pytest.raises(InputError, match=r"ref\.mha: 3 NaN or infinite voxels in a label map"):
        read_on_one_grid(str(tmp_path / "ref.mha"), str(tmp_path / "pred.mha"), ".mha")
    with pytest.raises(InputError, match=r"ref\.mha: 3 NaN or infinite voxels in a label map"):
        read_on_one_grid(str(tmp_path / "pred.mha"), str(tmp_path / "ref.mha"), ".mha")


def test_relative_symlink_image_is_merged_as_its_target(tmp_path, monkeypatch, capsys):
    """A source image that is a relative symlink lands in the merged dataset as the file itself, not as a
    link that would dangle there."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    os.makedirs(tmp_path / "raw")
    _merge("labelsTs/unused.nii.gz")(tmp_path)
    os.remove(tmp_path / "raw/Dataset021_Src/labelsTs/unused.nii.gz")
    images = tmp_path / "raw/Dataset021_Src/imagesTr"
    os.rename(images / "b_0000.nii.gz", tmp_path / "raw/Dataset021_Src/b_elsewhere.nii.gz")
    os.symlink("../b_elsewhere.nii.gz", images / "b_0000.nii.gz")
    assert nnunet_mt(["merge", "-d", "21", "-o", "600"]) == 0, capsys.readouterr().err
    merged = [p for p in (tmp_path / "raw/Dataset600_MultiTask/imagesTr").iterdir() if "_b_" in p.name or
              p.name.endswith("b_0000.nii.gz")]
    assert len(merged) == 1 and not merged[0].is_symlink()
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(merged[0]))), (LABEL * 100 + 50))


def test_a_written_image_that_does_not_read_back_is_an_error_and_removed(tmp_path):
    path = tmp_path / "seg.nii.gz"
    path.write_bytes(b"")  # what SimpleITK leaves on a full disk
    with pytest.raises(InputError, match="seg.nii.gz: the image written does not read back"):
        check_written_image(str(path), (12, 10, 8))
    assert not path.exists()
    _image(path, LABEL)
    check_written_image(str(path), (12, 10, 8))  # (x, y, z) of the (z, y, x) array: fine
    with pytest.raises(InputError, match=r"expected size \(8, 10, 12\)"):
        check_written_image(str(path), (8, 10, 12))


def test_output_sets_are_written_whole_or_not_at_all(tmp_path):
    """The .csv of a set fails (full disk): the .json beside it keeps its previous content, no partial files."""
    (tmp_path / "s.json").write_text("old json")
    (tmp_path / "s.csv").write_text("old csv")
    os.symlink("/dev/full", tmp_path / ".partial.s.csv")
    with pytest.raises(OSError):
        write_texts_atomic({str(tmp_path / "s.json"): "new json", str(tmp_path / "s.csv"): "new csv"})
    assert (tmp_path / "s.json").read_text() == "old json" and (tmp_path / "s.csv").read_text() == "old csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.json"]
    write_texts_atomic({str(tmp_path / "s.json"): "new json", str(tmp_path / "s.csv"): "new csv"})
    assert (tmp_path / "s.json").read_text() == "new json" and (tmp_path / "s.csv").read_text() == "new csv"


def test_figures_beside_predictions_are_not_stray_images(tmp_path, monkeypatch, capsys):
    """score --plot writes PNG figures into the prediction folder; only volumes of another format are stray."""
    nnunet_folders(tmp_path, monkeypatch)
    main, argv = _evaluate()(tmp_path)
    (tmp_path / "pred/ood_histogram.png").write_bytes(b"\x89PNG not read")
    assert main(argv) == 0, capsys.readouterr().err


def test_npz_files_are_written_whole_or_not_at_all(tmp_path):
    """save_npz_atomic (fit files, fit parts, calibrated probabilities): a full disk keeps the previous file."""
    import numpy as np
    from nnunet_mt.atomic import save_npz_atomic
    path = tmp_path / "fit.npz"
    save_npz_atomic(str(path), features=np.arange(3.0))
    os.symlink("/dev/full", tmp_path / ".partial.fit.npz")
    with pytest.raises(OSError):
        save_npz_atomic(str(path), compressed=True, features=np.zeros((64, 64)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.npz"]
    with np.load(path) as npz:
        assert npz["features"].tolist() == [0.0, 1.0, 2.0]
    save_npz_atomic(str(path), compressed=True, features=np.ones(2))
    with np.load(path) as npz:
        assert npz["features"].tolist() == [1.0, 1.0]


def test_one_temporary_name_for_files_and_folders(tmp_path):
    """written_atomically: the partial name is '.partial.' + the name, beside it; a failing block leaves neither
    the partial nor a changed target; a folder is renamed whole, a stale partial folder removed first."""
    from nnunet_mt.atomic import partial_path, written_atomically
    assert partial_path(str(tmp_path / "a" / "m.nii.gz")) == str(tmp_path / "a" / ".partial.m.nii.gz")
    assert partial_path(str(tmp_path / "Dataset500_X") + "/") == str(tmp_path / ".partial.Dataset500_X")
    (tmp_path / "t.json").write_text("old")
    (tmp_path / ".partial.t.json").write_text("stale, from a killed run")
    with pytest.raises(RuntimeError):
        with written_atomically(str(tmp_path / "t.json")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk gone")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"] and (tmp_path / "t.json").read_text() == "old"
    os.makedirs(tmp_path / ".partial.D" / "stale")
    with written_atomically(str(tmp_path / "D")) as tmp:
        assert not os.path.exists(tmp)
        os.makedirs(os.path.join(tmp, "imagesTr"))
        assert not (tmp_path / "D").exists()
    assert os.listdir(tmp_path / "D") == ["imagesTr"] and not (tmp_path / ".partial.D").exists()
