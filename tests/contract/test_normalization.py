"""The paper's normalization: known answers, nnU-Net finding it by name in a fresh interpreter (contract),
and merge refusing sources whose images contradict the CT/MR rule."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from conftest import BIN, assert_merge_refused, copy_dataset, run
from nnunet_mt.intensity import CT_BELOW_HU, looks_like_ct, normalize_ct, normalize_mr, paper_normalize


def test_ct_known_answers():
    hu = np.array([-3024, -1000, -200, 0, 40, 1000, 3071], dtype=np.int16)
    np.testing.assert_allclose(normalize_ct(hu), [0, 0, 0.4, 0.5, 0.52, 1, 1], atol=1e-7)
    assert normalize_ct(hu).dtype == np.float32
    np.testing.assert_allclose(paper_normalize(hu), normalize_ct(hu))


def test_mr_known_answers():
    mr = np.array([0.0, 2.0, 4.0, 6.0])  # sd = sqrt(5)
    np.testing.assert_allclose(normalize_mr(mr), mr / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(paper_normalize(mr), mr / np.sqrt(5), rtol=1e-6)
    z = np.array([-3.5, -1.0, 0.0, 2.0])  # a z-scored MR (BraTS-style) stays MR: divided, not shifted
    np.testing.assert_allclose(paper_normalize(z), z / z.std(), rtol=1e-6)
    assert np.all(normalize_mr(np.zeros(5)) == 0)  # constant image: no division by zero


def test_rule_threshold():
    assert CT_BELOW_HU == -200
    assert looks_like_ct(-1000) and looks_like_ct(-200.5) and not looks_like_ct(-200) and not looks_like_ct(0)


def _python(code):
    env = dict(os.environ)
    env.pop("NNUNET_MT_NO_AUTO_TRAINER_PATH", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_contract_nnunet_finds_the_scheme_by_name_in_a_fresh_interpreter():
    """What nnunetv2 2.8.1 does: the planner maps the channel name with get_normalization_scheme, the
    preprocessor finds the class named in the plans with recursive_find_python_class in its own folder."""
    code = (
        "import nnunetv2, os\n"
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
        "c = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], 'preprocessing', 'normalization'),\n"
        "    'PaperCTorMRNormalization', 'nnunetv2.preprocessing.normalization')\n"
        "from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme\n"
        "import numpy as np\n"
        "print(c.__module__, get_normalization_scheme('nnunet_mt_ct_or_mr') is c, get_normalization_scheme('CT').__name__,\n"
        "      c(use_mask_for_norm=False, intensityproperties={}).run(np.array([-1000., 0., 1000.])).tolist())\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["nnunet_mt.normalization", "True", "CTNormalization", "[0.0,", "0.5,", "1.0]"]
    off = dict(os.environ, NNUNET_MT_NO_AUTO_TRAINER_PATH="1")
    r = subprocess.run([sys.executable, "-c", code], env=off, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0  # switched off: nnU-Net no longer finds it


def test_merge_refuses_images_that_contradict_the_rule(demo_raw):
    root, env = demo_raw
    # a CT source whose test image has no air (e.g. a soft-tissue crop, or not in HU)
    broken = copy_dataset(root, "Dataset011_LiverCT", 710)
    path = broken / "imagesTs" / "liverct_041_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    shifted = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) + 1024.0)  # stored without the intercept
    shifted.CopyInformation(image)
    os.remove(path)
    sitk.WriteImage(shifted, str(path))
    assert_merge_refused(env, root, ["-d", "12", "710", "-o", "611"], "liverct_041_0000.nii.gz", "declared 'CT'",
             "--normalization nnunet")
    # the same merge is accepted with nnU-Net's normalization
    run([os.path.join(BIN, "nnunet_mt"), "merge", "-d", "12", "710", "-o", "611", "--normalization", "nnunet"], env)
    shutil.rmtree(root / "raw" / "Dataset611_MultiTask")
    shutil.rmtree(broken)
    # a CT source declared as MR
    broken = copy_dataset(root, "Dataset011_LiverCT", 711)
    meta = json.loads((broken / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1"}
    (broken / "dataset.json").write_text(json.dumps(meta))
    assert_merge_refused(env, root, ["-d", "711", "-o", "611"], "liverct_000_0000.nii.gz", "declared 'T1', not CT")
    shutil.rmtree(broken)


def test_paper_merge_records_the_scheme(demo_raw):
    root, env = demo_raw
    run([os.path.join(BIN, "nnunet_mt"), "merge", "-d", "11", "12", "-o", "612"], env)
    meta = json.loads((root / "raw/Dataset612_MultiTask/dataset.json").read_text())
    assert meta["channel_names"] == {"0": "nnunet_mt_ct_or_mr"}
    assert meta["nnunet_mt"]["normalization"] == "paper"
    shutil.rmtree(root / "raw/Dataset612_MultiTask")
