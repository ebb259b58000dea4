"""nnU-Net's file layout in one place: the folder and file names its commands write and read, and the one reader
of its folds. Every other module asks here; ``tests/contract/test_compat.py`` pins each name to nnU-Net's own code.

No nnU-Net import (the names are plain facts; nnU-Net's functions that compute paths are called through
``nnunet_mt.nnunet_glue``).

    $nnUNet_raw/DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}/CASE_0000<ending>, dataset.json
    $nnUNet_preprocessed/DatasetXXX_Name/{PLANS.json, splits_final.json, dataset_fingerprint.json,
                                          gt_segmentations/, <data identifier>/}
    $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/fold_F/{checkpoint_final.pth, validation/}
"""
import json
import os
from typing import List

from nnunet_mt.errors import InputError

DATASET_JSON = "dataset.json"  # in a raw dataset folder, the preprocessed folder and a model folder
MODEL_PLANS = "plans.json"  # a model folder's copy of its plans
SPLITS = ("Tr", "Ts")  # training and test cases of a raw dataset
SPLITS_FILE = "splits_final.json"
FINGERPRINT_FILE = "dataset_fingerprint.json"
GT_SEGMENTATIONS = "gt_segmentations"  # nnU-Net's copy of the training labels, in the preprocessed folder
FINAL_CHECKPOINT = "checkpoint_final.pth"
VALIDATION_FOLDER = "validation"  # in a fold folder: the final validation's predictions and summary.json
VALIDATION_SUMMARY = "summary.json"
FOLD_PREFIX = "fold_"
DEFAULT_PLANS = "nnUNetPlans"  # nnU-Net's default plans identifier (-p)


def images_folder(dataset_dir: str, split: str = "Tr") -> str:
    """imagesTr / imagesTs of a raw dataset folder."""
    return os.path.join(dataset_dir, f"images{split}")


def labels_folder(dataset_dir: str, split: str = "Tr") -> str:
    """labelsTr / labelsTs of a raw dataset folder."""
    return os.path.join(dataset_dir, f"labels{split}")


def raw_subfolders() -> List[str]:
    """The four folders of a raw dataset, in nnU-Net's order."""
    return [f"{kind}{split}" for split in SPLITS for kind in ("images", "labels")]


def image_file(case: str, channel: int, file_ending: str) -> str:
    """CASE_XXXX<ending>: one channel of a case."""
    return f"{case}_{channel:04d}{file_ending}"


def model_folder_name(trainer: str, plans: str, configuration: str) -> str:
    """TRAINER__PLANS__CONFIGURATION, a model's folder in its dataset's results folder."""
    return f"{trainer}__{plans}__{configuration}"


def data_folder_name(plans: str, configuration: str) -> str:
    """PLANS_CONFIGURATION, the preprocessed arrays' folder (nnU-Net's default data identifier)."""
    return f"{plans}_{configuration}"


def fold_folder(model_dir: str, fold) -> str:
    """A model folder's fold_F (fold 'all': fold_all)."""
    return os.path.join(model_dir, f"{FOLD_PREFIX}{fold}")


def fold_of(relative_path: str):
    """'0' for 'fold_0/...', None for a path outside the fold folders."""
    head = relative_path.replace(os.sep, "/").split("/")[0]
    return head[len(FOLD_PREFIX):] if head.startswith(FOLD_PREFIX) else None


def plans_file(preprocessed_dataset_dir: str, plans: str) -> str:
    return os.path.join(preprocessed_dataset_dir, f"{plans}.json")


def splits_file(preprocessed_dataset_dir: str) -> str:
    return os.path.join(preprocessed_dataset_dir, SPLITS_FILE)


def fold_cases(preprocessed_dataset_dir: str, fold, part: str) -> List[str]:
    """The case ids of one fold's 'train' or 'val' part in nnU-Net's splits_final.json, in its order;
    InputError (one line, naming the file) when the file or the fold is missing or malformed."""
    path = splits_file(preprocessed_dataset_dir)
    try:
        with open(path) as f:
            splits = json.load(f)
        return list(splits[int(fold)][part])
    except FileNotFoundError:
        raise InputError(f"{path}: no folds (nnUNetv2_train writes them; train the model first)")
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise InputError(f"{path}: no {part} cases for fold {fold} ({type(e).__name__}: {e})")
