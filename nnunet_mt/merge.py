"""Merge several nnU-Net raw datasets into one multi-task dataset (Karimi & Gholipour, sec. III-C).

Every source's structure of interest becomes foreground label 1. Case ids get the prefix
``D<source id>_`` so they cannot collide. Images are hard-linked (copied where the file system cannot
link); labels are rewritten. The merged dataset.json records every case's source under the key
``nnunet_mt`` so training, evaluation and OOD reports can group by source. Nothing is written to the
source datasets; the merged dataset appears only when complete (built in a hidden folder, then renamed).
"""
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_mt import layout
from nnunet_mt.atomic import written_atomically
from nnunet_mt.errors import InputError
from nnunet_mt.intensity import CT_BELOW_HU, PAPER_CHANNEL_NAME, looks_like_ct
from nnunet_mt.validate import check_case, refuse_stray_images, write_image_checked

PROVENANCE_KEY = "nnunet_mt"
NORMALIZATIONS = ("paper", "nnunet")


@dataclass
class SourceSpec:
    """One ``-d`` argument: a dataset id or folder name, optionally with ``:label,label`` foreground."""
    dataset: str
    foreground: Optional[Tuple[int, ...]] = None

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        name, _, labels = text.partition(":")
        if not labels:
            return cls(name)
        try:
            return cls(name, tuple(int(v) for v in labels.split(",") if v != ""))
        except ValueError:
            raise InputError(f"-d {text}: foreground labels must be integers, e.g. -d 13:1,2")


@dataclass
class Source:
    spec: SourceSpec
    folder: str
    dataset_json: dict
    foreground: Tuple[int, ...] = ()
    train: Dict[str, dict] = field(default_factory=dict)  # case id -> {"images": [...], "label": path}
    test: Dict[str, dict] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.basename(self.folder)

    @property
    def dataset_id(self) -> int:
        return int(self.name[len("Dataset"):len("Dataset") + 3])

    @property
    def prefix(self) -> str:
        return f"D{self.dataset_id:03d}_"

    @property
    def foreground_names(self) -> Tuple[str, ...]:
        """dataset.json's names of the foreground labels, in the order of `foreground`."""
        names = {int(v): k for k, v in self.dataset_json["labels"].items()}
        return tuple(names[v] for v in self.foreground)


def source_case_id(merged_id: str) -> str:
    """The id a merged case has in its source dataset: 'D011_case' -> 'case' (Source.prefix removed); an id
    without that prefix is returned as it is."""
    return re.sub(r"^D\d{3}_", "", merged_id)


def resolve_folder(dataset: str, raw_dir: str) -> str:
    candidates, pattern = [], dataset
    if dataset.isdigit():
        pattern = f"Dataset{int(dataset):03d}_*"
        candidates = [d for d in sorted(os.listdir(raw_dir)) if d.startswith(pattern[:-1])]
    elif os.path.isdir(os.path.join(raw_dir, dataset)):
        candidates = [dataset]
    if len(candidates) != 1:
        what = "no" if not candidates else "more than one"
        raise InputError(f"{os.path.join(raw_dir, pattern)}: {what} nnU-Net raw dataset matches '{dataset}'")
    return os.path.join(raw_dir, candidates[0])


def load_dataset_json(folder: str) -> dict:
    path = os.path.join(folder, layout.DATASET_JSON)
    if not os.path.isfile(path):
        raise InputError(f"{path}: missing dataset.json")
    try:
        with open(path) as f:
            dataset_json = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: invalid JSON ({e})")
    if not isinstance(dataset_json, dict):
        raise InputError(f"{path}: expected a JSON object")
    for key, kind in (("channel_names", dict), ("labels", dict), ("file_ending", str)):
        if not isinstance(dataset_json.get(key), kind):
            raise InputError(f"{path}: key '{key}' missing or not a {kind.__name__}")
    return dataset_json


def _list_cases(folder: str, split: str, file_ending: str, n_channels: int) -> Dict[str, dict]:
    """Cases of the training (split='Tr') or test (split='Ts') images and labels: id -> images, label."""
    image_dir = layout.images_folder(folder, split)
    if not os.path.isdir(image_dir):
        if split == "Tr":
            raise InputError(f"{image_dir}: missing training image folder")
        return {}
    by_case: Dict[str, List[str]] = {}
    for stray_check in (image_dir, layout.labels_folder(folder, split)):
        if os.path.isdir(stray_check):
            refuse_stray_images(stray_check, file_ending)
    for fname in sorted(os.listdir(image_dir)):
        if not fname.endswith(file_ending):
            continue
        stem = fname[:-len(file_ending)]
        case, _, channel = stem.rpartition("_")
        if not (len(channel) == 4 and channel.isdigit() and case):
            raise InputError(f"{os.path.join(image_dir, fname)}: image name must end in _XXXX{file_ending}")
        by_case.setdefault(case, []).append(os.path.join(image_dir, fname))
    cases = {}
    for case, images in by_case.items():
        if len(images) != n_channels:
            raise InputError(f"{image_dir}: case '{case}' has {len(images)} channel files, dataset.json "
                             f"declares {n_channels}")
        label = os.path.join(layout.labels_folder(folder, split), case + file_ending)
        if not os.path.isfile(label):
            if split == "Ts":
                return {}  # test images without labels cannot be evaluated: leave the test split out
            raise InputError(f"{images[0]}: image without label (expected {label})")
        cases[case] = {"images": images, "label": label, "minima": check_case(images, label)}
    label_dir = layout.labels_folder(folder, split)
    if os.path.isdir(label_dir):
        for fname in sorted(os.listdir(label_dir)):
            if fname.endswith(file_ending) and fname[:-len(file_ending)] not in cases:
                raise InputError(f"{os.path.join(label_dir, fname)}: label without image (no "
                                 f"{fname[:-len(file_ending)]}_0000{file_ending} in {image_dir})")
    if split == "Tr" and not cases:
        raise InputError(f"{image_dir}: no training images ending in {file_ending}")
    return cases


def load_source(spec: SourceSpec, raw_dir: str) -> Source:
    folder = resolve_folder(spec.dataset, raw_dir)
    dataset_json = load_dataset_json(folder)
    path = os.path.join(folder, layout.DATASET_JSON)
    labels = dataset_json["labels"]
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise InputError(f"{path}: region-based labels are not supported by merge")
    try:
        foreground_declared = sorted(int(v) for k, v in labels.items() if k != "ignore" and int(v) != 0)
    except (TypeError, ValueError):
        raise InputError(f"{path}: label values must be integers")
    if spec.foreground is None:
        if len(foreground_declared) != 1:
            raise InputError(f"{path}: {len(foreground_declared)} foreground labels {foreground_declared}; say which "
                             f"make the foreground, e.g. -d {spec.dataset}:{','.join(map(str, foreground_declared))}")
        foreground = tuple(foreground_declared)
    else:
        unknown = sorted(set(spec.foreground) - set(foreground_declared))
        if unknown or not spec.foreground:
            raise InputError(f"{path}: foreground labels {unknown or '(none)'} are not foreground labels of this "
                             f"dataset ({foreground_declared})")
        foreground = tuple(sorted(spec.foreground))
    n_channels = len(dataset_json["channel_names"])
    source = Source(spec, folder, dataset_json, foreground)
    source.train = _list_cases(folder, "Tr", dataset_json["file_ending"], n_channels)
    source.test = _list_cases(folder, "Ts", dataset_json["file_ending"], n_channels)
    both = sorted(set(source.train) & set(source.test))
    if both:
        raise InputError(f"{folder}: case id '{both[0]}' is both a training and a test case (duplicate case ids)")
    return source


def check_paper_normalization_rule(source: Source) -> None:
    """Every image of the source takes the paper normalization's CT branch exactly when its channel is
    declared "CT" (see nnunet_mt.intensity); the first image that contradicts it is refused."""
    names = source.dataset_json["channel_names"]
    for split_cases in (source.train, source.test):
        for files in split_cases.values():
            for channel, (image, minimum) in enumerate(zip(sorted(files["images"]), files["minima"] or [])):
                name = str(names.get(str(channel), ""))
                declared_ct = name.strip().casefold() == "ct"
                if declared_ct and not looks_like_ct(minimum):
                    raise InputError(
                        f"{image}: channel {channel} is declared 'CT' but its minimum intensity {minimum:g} is not "
                        f"below {CT_BELOW_HU:g} HU (no air), so the paper normalization would treat it as MR; "
                        f"use raw HU images that include air, or merge with --normalization nnunet")
                if not declared_ct and looks_like_ct(minimum):
                    raise InputError(
                        f"{image}: channel {channel} is declared '{name}', not CT, but its minimum intensity "
                        f"{minimum:g} is below {CT_BELOW_HU:g} as in CT, so the paper normalization would treat "
                        f"it as CT; name the channel 'CT' if it is, or merge with --normalization nnunet")


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-links (else copies) the file `src` names: a symlink is resolved first, so a relative one cannot
    dangle in the merged dataset."""
    try:
        os.link(os.path.realpath(src), dst)
        return "linked"
    except OSError:
        shutil.copyfile(src, dst)
        return "copied"


def _binary_label(src: str, dst: str, declared: Sequence[int], foreground: Sequence[int]) -> bool:
    """Writes dst = (label in foreground) as uint8 with src's geometry; checks values against declared.
    Returns whether the label has any foreground."""
    try:
        image = sitk.ReadImage(src)
    except RuntimeError as e:
        raise InputError(f"{src}: unreadable label file ({str(e).strip().splitlines()[-1]})")
    array = sitk.GetArrayViewFromImage(image)
    values = np.unique(array)
    undeclared = sorted(set(values.tolist()) - set(declared))
    if undeclared:
        raise InputError(f"{src}: label values {undeclared[:5]} are not declared in dataset.json")
    binary = np.isin(array, foreground).astype(np.uint8)
    out = sitk.GetImageFromArray(binary)
    out.CopyInformation(image)
    write_image_checked(out, dst)
    return bool(binary.any())


def merge_datasets(specs: Sequence[SourceSpec], output_id: int, output_name: str = "MultiTask",
                   raw_dir: Optional[str] = None, alpha: float = 0.5, overwrite: bool = False,
                   normalization: str = "paper", subjects=None, log=print) -> str:
    """Creates ``Dataset{output_id:03d}_{output_name}`` in raw_dir (default $nnUNet_raw); returns its path.

    normalization: "paper" (CT [-1000, 1000] HU -> [0, 1], MR / std, decided per image; every image is
    checked against the rule first) or "nnunet" (nnU-Net's scheme per channel name; z-score where the
    sources' channel names differ). subjects: a nnunet_mt.subjects.SubjectRule (default: one subject per case)."""
    if normalization not in NORMALIZATIONS:
        raise InputError(f"--normalization {normalization}: choose from {' '.join(NORMALIZATIONS)}")
    raw_dir = raw_dir or os.environ.get("nnUNet_raw")
    if not raw_dir or not os.path.isdir(raw_dir):
        raise InputError(f"{raw_dir or '$nnUNet_raw'}: nnU-Net raw folder not found (set nnUNet_raw)")
    if len(specs) == 0:
        raise InputError("merge needs at least one source dataset (-d)")
    sources = [load_source(s, raw_dir) for s in specs]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"{raw_dir}: a source dataset is listed twice ({names})")
    n_channels = {s.name: len(s.dataset_json["channel_names"]) for s in sources}
    if len(set(n_channels.values())) != 1:
        raise InputError(f"{raw_dir}: sources have different numbers of channels {n_channels}")
    if not 1 <= output_id <= 999:
        raise InputError(f"-o {output_id}: dataset id must be between 1 and 999")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", output_name or ""):
        raise InputError(f"-n {output_name!r}: the dataset name must be one folder name of letters, digits, '_', '-' "
                         f"and '.' (nnU-Net makes Dataset{output_id:03d}_<name> of it)")
    if normalization == "paper":
        for source in sources:
            check_paper_normalization_rule(source)

    out_name = f"Dataset{output_id:03d}_{output_name}"
    final = os.path.join(raw_dir, out_name)
    clashing = [d for d in os.listdir(raw_dir) if d.startswith(f"Dataset{output_id:03d}_")]
    if clashing and not overwrite:
        raise InputError(f"{os.path.join(raw_dir, clashing[0])}: output dataset exists (use --overwrite)")
    if any(os.path.join(raw_dir, c) in [s.folder for s in sources] for c in clashing):
        raise InputError(f"{final}: output dataset would replace one of its sources")

    file_ending = sources[0].dataset_json["file_ending"]
    if any(s.dataset_json["file_ending"] != file_ending for s in sources):
        file_ending = ".nii.gz"  # images of other formats are converted, not linked
    cases: Dict[str, dict] = {}
    how, empty = set(), []
    with written_atomically(final) as tmp:
        for sub in layout.raw_subfolders():
            os.makedirs(os.path.join(tmp, sub))
        for source in sources:
            declared = [int(v) for v in source.dataset_json["labels"].values()]
            for split, split_cases in (("Tr", source.train), ("Ts", source.test)):
                for case, files in split_cases.items():
                    new_id = source.prefix + case
                    for channel, image in enumerate(sorted(files["images"])):
                        dst = os.path.join(layout.images_folder(tmp, split),
                                           layout.image_file(new_id, channel, file_ending))
                        if image.endswith(file_ending):
                            how.add(_link_or_copy(image, dst))
                        else:
                            write_image_checked(sitk.ReadImage(image), dst)
                            how.add("converted")
                    label = os.path.join(layout.labels_folder(tmp, split), new_id + file_ending)
                    if not _binary_label(files["label"], label, declared, source.foreground):
                        empty.append(files["label"])
                    cases[new_id] = {"source": source.name, "original_id": case,
                                     "split": "train" if split == "Tr" else "test",
                                     "subject": subjects.subject(source.name, new_id, case) if subjects else new_id}
            log(f"  {source.name}: {len(source.train)} training and {len(source.test)} test cases, "
                f"foreground labels {list(source.foreground)} -> 1")
        channel_names = _merged_channel_names(sources, normalization)
        dataset_json = {
            "channel_names": channel_names,
            "labels": {"background": 0, "foreground": 1},
            "numTraining": sum(len(s.train) for s in sources),
            "file_ending": file_ending,
            "name": output_name,
            "description": "nnunet-mt multi-task merge of " + ", ".join(names),
            PROVENANCE_KEY: {
                "alpha": alpha,
                "labels": "binary",
                "normalization": normalization,
                "subjects": subjects.describe() if subjects else "one subject per case",
                "sources": {s.name: {"dataset_id": s.dataset_id, "folder": s.folder,
                                     "channel_names": s.dataset_json["channel_names"],
                                     "foreground_labels": list(s.foreground),
                                     "num_training": len(s.train), "num_test": len(s.test)} for s in sources},
                "cases": cases,
            },
        }
        with open(os.path.join(tmp, layout.DATASET_JSON), "w") as f:
            json.dump(dataset_json, f, indent=2)
        for c in clashing:
            shutil.rmtree(os.path.join(raw_dir, c))
    n_subjects = len({c["subject"] for c in cases.values()})
    if n_subjects < len(cases):
        log(f"{len(cases)} cases of {n_subjects} subjects ({subjects.describe()}): every split keeps a subject's "
            f"cases together")
    by_split = {k: {c["subject"] for c in cases.values() if c["split"] == k} for k in ("train", "test")}
    if by_split["train"] & by_split["test"]:
        both = sorted(by_split["train"] & by_split["test"])
        log(f"note: {len(both)} subjects have training and test cases (e.g. {both[0]}): their test results are not "
            f"independent of training")
    if empty:  # allowed: nnU-Net trains on background-only cases too (see documentation/merge.md)
        log(f"note: {len(empty)} label maps have no foreground, e.g. {empty[0]}")
    log(f"Wrote {final}: {dataset_json['numTraining']} training cases from {len(sources)} datasets "
        f"(images {' / '.join(sorted(how))}), channel normalization {channel_names}")
    return final


def _merged_channel_names(sources: Sequence[Source], normalization: str) -> Dict[str, str]:
    """"paper": every channel named for the paper's scheme (nnunet_mt.normalization). "nnunet": the
    sources' channel names where they agree (e.g. all CT); per-image z-score where they differ, since
    nnU-Net normalizes each channel with one scheme for all cases and a channel that mixes CT and MR cannot
    use CT's global HU statistics (see documentation/merge.md).
    """
    if normalization == "paper":
        return {channel: PAPER_CHANNEL_NAME for channel in sources[0].dataset_json["channel_names"]}
    merged = {}
    for channel in sources[0].dataset_json["channel_names"]:
        names = {str(s.dataset_json["channel_names"].get(channel, "")).strip() for s in sources}
        merged[channel] = names.pop() if len(names) == 1 else "zscore"
    return merged


def case_sources(dataset_json: dict, case_ids: Sequence[str]) -> List[str]:
    """Source dataset of each case id; cases of a dataset that was not merged belong to the dataset itself."""
    recorded = dataset_json.get(PROVENANCE_KEY, {}).get("cases", {})
    own_name = dataset_json.get("name", "dataset")
    return [recorded.get(c, {}).get("source", own_name) for c in case_ids]
