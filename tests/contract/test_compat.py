"""The declared nnU-Net range: one place (nnunet_mt/compat.py), the same as pyproject.toml, and a warning
outside it."""
import os
import re

from nnunet_mt.compat import TESTED_NNUNET, untested_nnunet


def test_range_matches_pyproject():
    from conftest import REPO
    text = open(os.path.join(REPO, "pyproject.toml")).read()
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
    (extract_fingerprint and move_plans run in tests/unit/test_sharing.py through `nnunet_mt share-plans`.)"""
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


def test_contract_trainer_lookup_takes_our_recipes_directly_and_finds_what_nnunets_search_finds():
    """The startup hook (nnunet_mt/_startup.py) wraps nnU-Net's trainer lookup where nnUNetv2_train, nnUNetv2_predict
    and our commands import it: our recipe names come from nnunet_mt.trainer without nnU-Net's search, and are the
    very classes that search returns; other names (nnU-Net's own trainers, misspelt ones) are searched as before."""
    import pytest
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2.run import run_training
    from nnunetv2.utilities import find_objects
    from nnunet_mt._startup import TRAINER_LOOKUP
    lookup = getattr(find_objects, TRAINER_LOOKUP)
    search = lookup.nnunet_search
    assert getattr(predict_from_raw_data, TRAINER_LOOKUP) is lookup and getattr(run_training, TRAINER_LOOKUP) is lookup
    assert TRAINER_LOOKUP in predict_from_raw_data.nnUNetPredictor.initialize_from_trained_model_folder.__code__.co_names
    for name in ("nnUNetTrainerMultiTaskSmoke", "nnUNetTrainerMultiTaskCPU_dropout_3epochs",
                 "nnUNetTrainerMultiTaskDropoutCPU_2epochs"):  # a recipe, a variant by name, an old name
        assert lookup(name) is search(name) and lookup(name).__name__ == name
    assert lookup("nnUNetTrainerNoMirroring").__name__ == "nnUNetTrainerNoMirroring"  # nnU-Net's, searched
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
        lookup("nnUNetTrainerMultiTask_finetune_finetune")  # nnU-Net's own error


def test_contract_layout_names_are_nnunets(preprocessed):
    """Each name of nnunet_mt/layout.py against nnU-Net's own code: its path functions where it has one (model
    and fold folders, the training images and labels of a real raw dataset, the data identifier of real plans),
    else the source of the function that writes or reads the file."""
    import inspect
    import json
    from nnunetv2.experiment_planning import plan_and_preprocess_api
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier, get_output_folder
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    from nnunet_mt import layout
    root, _ = preprocessed
    assert convert_trainer_plans_config_to_identifier("T", "P", "C") == layout.model_folder_name("T", "P", "C")
    assert "f'fold_{fold}'" in inspect.getsource(get_output_folder)
    assert layout.fold_folder("m", 0) == os.path.join("m", "fold_0") and layout.fold_of("fold_all/x") == "all"
    raw = root / "raw" / "Dataset500_MultiTask"
    cases = get_filenames_of_train_images_and_targets(str(raw))
    case, files = sorted(cases.items())[0]
    assert files["images"] == [os.path.join(layout.images_folder(str(raw)), layout.image_file(case, 0, ".nii.gz"))]
    assert files["label"] == os.path.join(layout.labels_folder(str(raw)), case + ".nii.gz")
    assert layout.raw_subfolders() == ["imagesTr", "labelsTr", "imagesTs", "labelsTs"]  # nnU-Net's dataset format
    plans = json.loads((root / "pre/Dataset500_MultiTask/nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == layout.data_folder_name("nnUNetPlans",
                                                                                                "3d_fullres")
    assert (root / "pre/Dataset500_MultiTask" / layout.GT_SEGMENTATIONS).is_dir()
    assert f"'{layout.GT_SEGMENTATIONS}'" in inspect.getsource(plan_and_preprocess_api)
    assert f"'{layout.FINGERPRINT_FILE}'" in inspect.getsource(fingerprint_extractor)
    assert (root / "pre/Dataset500_MultiTask" / layout.FINGERPRINT_FILE).is_file()
    assert f'"{layout.SPLITS_FILE}"' in inspect.getsource(nnUNetTrainer.do_split)
    assert f'"{layout.FINAL_CHECKPOINT}"' in inspect.getsource(nnUNetTrainer.on_train_end)
    validation = inspect.getsource(nnUNetTrainer.perform_actual_validation)
    assert f"'{layout.VALIDATION_FOLDER}'" in validation and f"'{layout.VALIDATION_SUMMARY}'" in validation
    from nnunetv2.inference import predict_from_raw_data
    assert f"'-p', type=str, required=False, default='{layout.DEFAULT_PLANS}'" in inspect.getsource(
        predict_from_raw_data.predict_entry_point)  # nnU-Net's default plans identifier
    start = inspect.getsource(nnUNetTrainer.on_train_start)  # the model folder's copies
    assert f"'{layout.DATASET_JSON}'" in start and f"'{layout.MODEL_PLANS}'" in start
