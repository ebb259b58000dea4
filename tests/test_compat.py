"""The declared nnU-Net range: one place (nnunet_mt/compat.py), the same as pyproject.toml, and a warning
outside it."""
import os
import re

from nnunet_mt.compat import TESTED_NNUNET, untested_nnunet


def test_range_matches_pyproject():
    text = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    low, high = re.search(r'"nnunetv2>=([\d.]+),<([\d.]+)"', text).groups()
    assert (low, high) == TESTED_NNUNET


def test_warning_outside_the_tested_range():
    assert untested_nnunet("2.8.1") is None and untested_nnunet("2.8.0") is None
    assert untested_nnunet("2.8.2rc1") is None
    for other in ("2.7.3", "2.9.0", "3.0", "2.9.0.dev0"):
        message = untested_nnunet(other)
        assert message is not None and f"nnunetv2 {other} is installed" in message and "\n" not in message


GLUE_PROBE = r"""
import json, sys
from nnunet_mt.errors import InputError
from nnunet_mt import nnunet_glue as g
folder = sys.argv[1]
out = {"name": g.dataset_name("500"), "folders": list(g.nnunet_folders()),
       "model": g.model_folder("500", "nnUNetTrainerX", "nnUNetPlans", "3d_fullres"),
       "reader": type(g.image_reader(".nii.gz", sys.argv[2])).__name__,
       "cases": g.preprocessed_case_ids(folder)}
data, seg = g.preprocessed_dataset(folder, out["cases"][:1]).load_case(out["cases"][0])[:2]
out["shapes"] = [list(data.shape), list(seg.shape)]
try:
    g.dataset_name("987")
except InputError as e:
    out["unknown"] = str(e)
print(json.dumps(out))
"""


def test_contract_nnunet_glue_against_installed_nnunet(preprocessed):
    """Every helper of nnunet_mt/nnunet_glue.py, called on a real merged and preprocessed dataset with the
    installed nnU-Net (fresh interpreter, so nnU-Net reads the test's nnUNet_* variables): the names and
    folders nnU-Net's own commands use, its reader for NIfTI, its preprocessed case list and arrays.
    (extract_fingerprint and move_plans run in tests/test_sharing.py through `nnunet_mt share-plans`.)"""
    import json
    import sys
    from conftest import run
    root, env = preprocessed
    folder = root / "pre" / "Dataset500_MultiTask" / "nnUNetPlans_3d_fullres"
    example = sorted((root / "raw" / "Dataset500_MultiTask" / "imagesTr").iterdir())[0]
    out = json.loads(run([sys.executable, "-c", GLUE_PROBE, str(folder), str(example)], env).stdout)
    assert out["name"] == "Dataset500_MultiTask"
    assert out["folders"] == [str(root / "raw"), str(root / "pre"), str(root / "res")]
    assert out["model"] == str(root / "res" / "Dataset500_MultiTask" / "nnUNetTrainerX__nnUNetPlans__3d_fullres")
    assert out["reader"] == "SimpleITKIO"
    training = json.load(open(root / "raw" / "Dataset500_MultiTask" / "dataset.json"))["numTraining"]
    assert len(out["cases"]) == training and out["cases"] == sorted(out["cases"])
    assert out["shapes"][0][0] == 1 and out["shapes"][1][0] == 1 and out["shapes"][0][1:] == out["shapes"][1][1:]
    assert out["unknown"].startswith("-d 987: ") and "\n" not in out["unknown"]


def test_contract_direct_trainer_lookup_finds_what_nnunets_search_finds(capsys):
    """The predictor calls its module's TRAINER_LOOKUP (by that global name) to find a checkpoint's trainer;
    inside direct_trainer_lookup() our recipes and nnUNetTrainer come without a search and are the very
    classes nnU-Net's search returns; any other name is still searched; the search is back afterwards."""
    from nnunetv2.inference import predict_from_raw_data as module
    from nnunet_mt import nnunet_glue as g
    search = getattr(module, g.TRAINER_LOOKUP)
    assert g.TRAINER_LOOKUP in module.nnUNetPredictor.initialize_from_trained_model_folder.__code__.co_names
    names = ["nnUNetTrainer", "nnUNetTrainerMultiTaskSmoke", "nnUNetTrainerMultiTaskCPU_dropout_3epochs"]
    with g.direct_trainer_lookup():
        direct = getattr(module, g.TRAINER_LOOKUP)
        assert direct is not search
        assert [c.__name__ for c in map(direct, names)] == names
        assert direct("nnUNetTrainerNoMirroring").__name__ == "nnUNetTrainerNoMirroring"  # searched
    assert getattr(module, g.TRAINER_LOOKUP) is search
    assert all(g.known_trainer_class(n) is search(n) for n in names)
    assert g.known_trainer_class("nnUNetTrainerMultiTask_finetune_finetune") is None
    assert g.known_trainer_class("nnUNetTrainerNoMirroring") is None
