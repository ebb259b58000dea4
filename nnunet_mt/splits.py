"""Cross-validation folds we write (nnU-Net's folds file, ``nnunet_mt.layout.SPLITS_FILE``: one {"train", "val"}
per fold):
stratified by source dataset and grouped by subject, so no subject is on both sides of a fold."""
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY

NNUNET_SPLIT_SEED, NNUNET_FOLDS = 12345, 5  # what nnUNetTrainer.do_split uses (nnunetv2 2.8.1)


def stratified_splits(cases_by_source: Dict[str, Sequence[str]], folds: int = NNUNET_FOLDS,
                      seed: int = NNUNET_SPLIT_SEED, subject_of: Optional[Dict[str, str]] = None
                      ) -> List[Dict[str, List[str]]]:
    """nnU-Net-style folds ({"train", "val"} per fold) in which each source's subjects are split into `folds`
    near-equal validation parts on their own (sorted subject ids, shuffled with `seed`); every case follows
    its subject, so no subject is on both sides. subject_of: {case: subject}; default one subject per case
    (then the folds are those of earlier releases). A subject with cases in several sources is placed with
    the first source (in sorted order) that holds it."""
    subject_of = subject_of or {}
    fold_of: Dict[str, int] = {}
    for source in sorted(cases_by_source):
        subjects = sorted({subject_of.get(c, c) for c in cases_by_source[source]} - set(fold_of))
        order = np.random.RandomState(seed).permutation(len(subjects))
        for fold, part in enumerate(np.array_split(order, folds)):
            fold_of.update({subjects[i]: fold for i in part})
    splits = [{"train": [], "val": []} for _ in range(folds)]
    for source in sorted(cases_by_source):
        ids = sorted(cases_by_source[source])
        for fold in range(folds):
            splits[fold]["val"] += [c for c in ids if fold_of[subject_of.get(c, c)] == fold]
            splits[fold]["train"] += [c for c in ids if fold_of[subject_of.get(c, c)] != fold]
    return splits


def restrict_splits(splits: Sequence[Dict[str, List[str]]], cases: Sequence[str],
                    required_folds: Optional[Sequence[int]] = None) -> List[Dict[str, List[str]]]:
    """The folds of ``splits`` with only ``cases`` kept, in their order; every case must appear in each fold.
    Each fold of ``required_folds`` (default: all) must keep a training and a validation case; another fold may
    keep no validation case (a dataset with fewer subjects than folds), and cannot be trained."""
    wanted = set(cases)
    required = range(len(splits)) if required_folds is None else required_folds
    beyond = [f for f in required if not 0 <= f < len(splits)]
    if beyond:
        raise InputError(f"fold {beyond[0]}: the joint split has {len(splits)} folds (0-{len(splits) - 1})")
    out = []
    for fold, split in enumerate(splits):
        kept = {k: [c for c in split[k] if c in wanted] for k in ("train", "val")}
        missing = wanted - set(kept["train"]) - set(kept["val"])
        if missing:
            raise InputError(f"fold {fold} of the joint split lacks case {sorted(missing)[0]}")
        if fold in required and (not kept["train"] or not kept["val"]):
            raise InputError(f"fold {fold} of the joint split has no {'training' if not kept['train'] else 'validation'}"
                             f" case of this dataset ({len(wanted)} cases): too few cases to share the joint folds")
        out.append(kept)
    return out


def untrainable_folds(splits: Sequence[Dict[str, List[str]]]) -> List[int]:
    """Folds with no training or no validation case (nnUNetv2_train cannot train them)."""
    return [fold for fold, split in enumerate(splits) if not split["train"] or not split["val"]]


def merged_dataset_splits(dataset_json: dict, folds: int = NNUNET_FOLDS, seed: int = NNUNET_SPLIT_SEED
                          ) -> List[Dict[str, List[str]]]:
    """The folds of a dataset made by nnunet_mt merge: its training cases stratified by source, grouped by the
    subjects its dataset.json records."""
    from nnunet_mt.subjects import subject_of
    return stratified_splits(training_cases_by_source(dataset_json), folds, seed, subject_of(dataset_json))


def training_cases_by_source(dataset_json: dict) -> Dict[str, List[str]]:
    """Training case ids of a merged dataset per source dataset, from its provenance, sorted."""
    by_source: Dict[str, List[str]] = {}
    for case, info in sorted(dataset_json.get(PROVENANCE_KEY, {}).get("cases", {}).items()):
        if info.get("split") == "train":
            by_source.setdefault(info.get("source", "?"), []).append(case)
    return by_source


def leaking_subjects(train: Sequence[str], val: Sequence[str], subject_of: Dict[str, str]) -> List[str]:
    """Subjects with cases on both sides of a split (sorted); empty for a clean split."""
    return sorted({subject_of.get(c, c) for c in train} & {subject_of.get(c, c) for c in val})


def refuse_leaking_splits(path: str, splits: Sequence[dict], dataset_json: dict) -> None:
    """InputError naming the first fold of `splits` (read from path) that puts a subject on both sides."""
    from nnunet_mt.subjects import subject_of
    subjects = subject_of(dataset_json)
    for fold, split in enumerate(splits):
        both = leaking_subjects(split.get("train", []), split.get("val", []), subjects)
        if both:
            raise InputError(f"{path}: fold {fold} has subject {both[0]} in training and validation; delete the file "
                             f"to let nnunet_mt write folds grouped by subject")
