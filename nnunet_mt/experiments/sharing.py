"""Same plans and same cases for every model of a comparison (issue 12).

A dedicated model's dataset gets the joint dataset's nnU-Net plans (target spacing, patch, normalization)
through nnU-Net's own ``move_plans_between_datasets``, and per fold exactly the joint fold's training and
validation cases of its source (``splits_final.json``, which nnU-Net's trainer reads instead of drawing
its own split). Merged datasets share case ids (``D<source id>_<case>``), so the filter is exact.

The joint folds are stratified by source (each source's cases split into 5 folds on their own), unlike
nnU-Net's default split of all cases at once, which can leave a small source without a validation case
in some fold; a joint split that already exists (e.g. from an earlier training) is kept.
"""
import json
import os
import shutil
from typing import Dict, List, Sequence

import numpy as np

from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY, load_dataset_json

NNUNET_SPLIT_SEED, NNUNET_FOLDS = 12345, 5  # what nnUNetTrainer.do_split uses (nnunetv2 2.8.1)


def stratified_splits(cases_by_source: Dict[str, Sequence[str]], folds: int = NNUNET_FOLDS,
                      seed: int = NNUNET_SPLIT_SEED) -> List[Dict[str, List[str]]]:
    """nnU-Net-style folds ({"train", "val"} per fold) in which each source's cases are split into `folds`
    near-equal validation parts on their own (sorted ids, shuffled with `seed`)."""
    splits = [{"train": [], "val": []} for _ in range(folds)]
    for source in sorted(cases_by_source):
        ids = sorted(cases_by_source[source])
        order = np.random.RandomState(seed).permutation(len(ids))
        parts = np.array_split(order, folds)
        for fold in range(folds):
            val = {ids[i] for i in parts[fold]}
            splits[fold]["val"] += sorted(val)
            splits[fold]["train"] += [c for c in ids if c not in val]
    return splits


def restrict_splits(splits: Sequence[Dict[str, List[str]]], cases: Sequence[str]) -> List[Dict[str, List[str]]]:
    """The folds of ``splits`` with only ``cases`` kept, in their order; every case must appear in each fold."""
    wanted = set(cases)
    out = []
    for fold, split in enumerate(splits):
        kept = {k: [c for c in split[k] if c in wanted] for k in ("train", "val")}
        missing = wanted - set(kept["train"]) - set(kept["val"])
        if missing:
            raise InputError(f"fold {fold} of the joint split lacks case {sorted(missing)[0]}")
        if not kept["train"] or not kept["val"]:
            raise InputError(f"fold {fold} of the joint split has no {'training' if not kept['train'] else 'validation'}"
                             f" case of this dataset ({len(wanted)} cases): too few cases to share the joint folds")
        out.append(kept)
    return out


def training_cases_by_source(raw_folder: str) -> Dict[str, List[str]]:
    """Training case ids of a merged dataset per source dataset, from its provenance, sorted."""
    cases = load_dataset_json(raw_folder).get(PROVENANCE_KEY, {}).get("cases", {})
    if not cases:
        raise InputError(f"{os.path.join(raw_folder, 'dataset.json')}: not a dataset made by nnunet_mt merge")
    by_source: Dict[str, List[str]] = {}
    for case, info in sorted(cases.items()):
        if info.get("split") == "train":
            by_source.setdefault(info.get("source", "?"), []).append(case)
    return by_source


def share_plans_and_splits(source: str, targets: Sequence[str], plans: str = "nnUNetPlans", log=print) -> None:
    """source, targets: dataset ids or names. Writes each target's plans (the source's) and splits_final.json
    (the source's folds restricted to the target's cases), and the target's own dataset fingerprint with
    nnU-Net's extractor if it has none (nnUNetv2_train copies it); writes the source's folds first
    (stratified by source dataset) if it has none yet."""
    from nnunet_mt.nnunet_glue import dataset_name, extract_fingerprint, move_plans, required_folder
    nnUNet_raw, nnUNet_preprocessed = required_folder("nnUNet_raw"), required_folder("nnUNet_preprocessed")
    source_name = dataset_name(source)
    splits_file = os.path.join(nnUNet_preprocessed, source_name, "splits_final.json")
    if not os.path.isfile(os.path.join(nnUNet_preprocessed, source_name, plans + ".json")):
        raise InputError(f"{os.path.join(nnUNet_preprocessed, source_name, plans + '.json')}: missing; run "
                         f"nnUNetv2_plan_and_preprocess for the source dataset first")
    if os.path.isfile(splits_file):
        with open(splits_file) as f:
            splits = json.load(f)
    else:
        splits = stratified_splits(training_cases_by_source(os.path.join(nnUNet_raw, source_name)))
        write_text_atomic(splits_file, json.dumps(splits, indent=1))
    for target in targets:
        target_name = dataset_name(target)
        folder = os.path.join(nnUNet_preprocessed, target_name)
        try:
            cases = [c for cs in training_cases_by_source(os.path.join(nnUNet_raw, target_name)).values() for c in cs]
            restricted = restrict_splits(splits, cases)
        except InputError as e:
            raise InputError(f"{splits_file}: {e} ({target_name})")
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(os.path.join(folder, "dataset_fingerprint.json")):
            extract_fingerprint(target_name)
        # nnUNetv2_preprocess reads dataset.json from here (nnUNetv2_plan_and_preprocess would have copied it)
        shutil.copyfile(os.path.join(nnUNet_raw, target_name, "dataset.json"), os.path.join(folder, "dataset.json"))
        move_plans(source_name, target_name, plans)
        write_text_atomic(os.path.join(folder, "splits_final.json"), json.dumps(restricted, indent=1))
        log(f"{target_name}: plans '{plans}' of {source_name}, {len(restricted)} folds restricted to its "
            f"{len(restricted[0]['train']) + len(restricted[0]['val'])} cases")
