"""The nnU-Net helpers we call outside the trainer, the predictor and the normalization class, in one
place (nnunetv2 2.8's public module layout: a move there is fixed here, and `tests/contract/test_compat.py`
calls each of them against the installed nnU-Net).

Imports are lazy: nnU-Net reads $nnUNet_raw / $nnUNet_preprocessed / $nnUNet_results when
``nnunetv2.paths`` is first imported, and our commands must start fast.
"""
from typing import Optional, Sequence, Tuple

from nnunet_mt.errors import InputError


def dataset_name(dataset: str) -> str:
    """nnU-Net's folder name (DatasetXXX_Name) of a dataset id or name; InputError when none is found."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise InputError(f"-d {dataset}: {str(e).strip().splitlines()[0]}")


def nnunet_folders() -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """($nnUNet_raw, $nnUNet_preprocessed, $nnUNet_results) as nnU-Net reads them (None when unset).

    nnunetv2 2.8 holds them as lazy path objects that are always truthy (read with ``.get()``); earlier
    releases held the strings read at import."""
    from nnunetv2 import paths
    values = (paths.nnUNet_raw, paths.nnUNet_preprocessed, paths.nnUNet_results)
    return tuple(v.get() if hasattr(v, "get") else v for v in values)


FOLDER_ROLES = {"nnUNet_raw": "raw datasets", "nnUNet_preprocessed": "preprocessed data and plans",
                "nnUNet_results": "trained models"}


def required_folder(variable: str) -> str:
    """The folder nnU-Net reads from $nnUNet_raw / $nnUNet_preprocessed / $nnUNet_results; InputError when unset."""
    value = dict(zip(FOLDER_ROLES, nnunet_folders()))[variable]
    if not value:
        raise InputError(f"${variable} is not set: nnU-Net's folder of {FOLDER_ROLES[variable]} "
                         f"(export {variable}=/path/to/it)")
    return value


def model_folder(dataset: str, trainer: str, plans: str, configuration: str) -> str:
    """nnU-Net's results folder of a model: $nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    required_folder("nnUNet_results")
    return get_output_folder(dataset_name(dataset), trainer, plans, configuration)


def image_reader(file_ending: str, example_file: str):
    """An instance of the reader/writer nnU-Net would pick for this file ending (e.g. SimpleITKIO)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    return determine_reader_writer_from_file_ending(file_ending, example_file, verbose=False)()


def preprocessed_dataset(folder: str, case_ids: Sequence[str]):
    """nnU-Net's dataset object over these cases of a preprocessed folder (any of its storage formats)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    return infer_dataset_class(folder)(folder, list(case_ids))


def preprocessed_case_ids(folder: str) -> list:
    """The case identifiers of a preprocessed folder, sorted."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    return sorted(infer_dataset_class(folder).get_identifiers(folder))


def data_identifier(plans_file: str, configuration: str) -> str:
    """The folder name of a configuration's preprocessed arrays, as nnU-Net's plans give it (inherited
    configurations included)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    try:
        return PlansManager(plans_file).get_configuration(configuration).data_identifier
    except (KeyError, RuntimeError) as e:
        raise InputError(f"{plans_file}: no configuration {configuration} ({e})")


def extract_fingerprint(dataset: str) -> None:
    """nnU-Net's dataset fingerprint (dataset_fingerprint.json in the preprocessed folder), as
    nnUNetv2_extract_fingerprint writes it; an existing one is kept."""
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    name = dataset_name(dataset)
    extract_fingerprint_dataset(int(name[len("Dataset"):len("Dataset") + 3]), num_processes=default_num_processes,
                                clean=False, verbose=False)


def move_plans(source: str, target: str, plans: str) -> None:
    """nnUNetv2_move_plans_between_datasets: the source's plans, renamed for the target, under the same name."""
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import \
        move_plans_between_datasets
    move_plans_between_datasets(dataset_name(source), dataset_name(target), plans, plans)


def predict_folder(model_dir: str, fold: str, checkpoint: str, images: str, output: str, device: str,
                   mirroring: bool) -> None:
    """nnU-Net's predictor over a folder of images in nnUNetv2_predict's input layout, in this process:
    segmentations and --save_probabilities files in `output`, as ``nnUNetv2_predict ... --save_probabilities
    -npp 0 -nps 0`` writes them (its per-case progress lines are not printed). InputError when nnU-Net fails."""
    import contextlib
    import io
    import os
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, allow_tqdm=False)
    os.makedirs(output, exist_ok=True)  # (nnU-Net's sequential path expects it)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            predictor.initialize_from_trained_model_folder(model_dir, (fold if fold == "all" else int(fold),),
                                                           checkpoint)
            predictor.predict_from_files_sequential(images, output, save_probabilities=True, overwrite=True)
    except Exception as e:  # nnU-Net's own checks are asserts and RuntimeErrors
        raise InputError(f"{images}: nnU-Net's predictor failed ({type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[-1]})")


def preprocess_images(predictor, files):
    """nnU-Net's preprocessing of one case's channel files for this predictor's model (the configuration's
    preprocessor, as nnUNetv2_predict runs it): float32 array (channels, z, y, x)."""
    import numpy as np
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case(list(files), None, predictor.plans_manager, predictor.configuration_manager,
                                       predictor.dataset_json)
    return np.asarray(data, dtype=np.float32)


def export_nnunet_zip(dataset: str, output: str, configuration: str, trainer: str, plans: str,
                      folds: Sequence[str], checkpoint: str) -> None:
    """nnUNetv2_export_model_to_zip of one configuration's folds (checkpoint, plans, dataset.json, fingerprint,
    debug.json, progress.png, validation summary), paths relative to $nnUNet_results."""
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    export_pretrained_model(dataset_name(dataset), output, configurations=(configuration,), trainer=trainer,
                            plans_identifier=plans, folds=tuple(folds), strict=True, save_checkpoints=(checkpoint,))

