"""Odd inputs that are accepted (empty label maps, an image that is a relative symlink, figures beside the
predictions, NaN read as 0 by NIfTI), and outputs written whole or not at all (full disk, sets of files, npz
files, folders, images that do not read back). The refusals themselves are one table: test_refusals.py."""
import os

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, nnunet_env, nnunet_folders, run
from nnunet_mt.atomic import write_texts_atomic
from nnunet_mt.cli import main as nnunet_mt
from nnunet_mt.errors import InputError
from nnunet_mt.validate import check_written_image
from refusal_setups import LABEL, MERGE, _disk_full, _image, _merge, _src, evaluate_one_case

MERGED = "raw/Dataset600_MultiTask"


@pytest.fixture
def ws(tmp_path):
    """Demo Dataset012 (5 training + 1 test case) in raw/, empty pre/ and res/."""
    from dataclasses import replace
    from nnunet_mt.demo_data import DEMO_DATASETS, write_dataset
    ds = next(d for d in DEMO_DATASETS if d.dataset_id == 12)
    write_dataset(replace(ds, n_train=5, n_test=1), str(tmp_path / "raw"))
    for d in ("pre", "res"):
        (tmp_path / d).mkdir()
    return tmp_path


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
    command = evaluate_one_case()(tmp_path)
    (tmp_path / "pred/ood_histogram.png").write_bytes(b"\x89PNG not read")
    assert nnunet_mt(command[1:]) == 0, capsys.readouterr().err


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
