"""Shared folds for joint and dedicated models: known answers of the pure split functions."""
import pytest

from nnunet_mt.errors import InputError
from nnunet_mt.splits import restrict_splits, stratified_splits, untrainable_folds


def test_stratified_splits_give_every_source_a_validation_share_in_every_fold():
    cases = {"A": [f"A{i}" for i in range(5)], "B": [f"B{i:02d}" for i in range(12)]}
    splits = stratified_splits(cases, folds=5, seed=1)
    assert len(splits) == 5
    for split in splits:
        assert sum(c.startswith("A") for c in split["val"]) == 1  # 5 cases: one per fold
        assert sum(c.startswith("B") for c in split["val"]) in (2, 3)  # 12 cases: 3, 3, 2, 2, 2
        assert set(split["train"]).isdisjoint(split["val"])
        assert sorted(split["train"] + split["val"]) == sorted(cases["A"] + cases["B"])
    # every case is validated exactly once over the folds; the same seed gives the same folds
    assert sorted(c for s in splits for c in s["val"]) == sorted(cases["A"] + cases["B"])
    assert stratified_splits(cases, folds=5, seed=1) == splits
    assert stratified_splits(cases, folds=5, seed=2) != splits


def test_restrict_splits_keeps_exactly_the_fold_cases_of_the_source():
    splits = [{"train": ["A1", "B1", "A2", "B2"], "val": ["A3", "B3"]},
              {"train": ["A3", "B3", "A2", "B2"], "val": ["A1", "B1"]}]
    assert restrict_splits(splits, ["A1", "A2", "A3"]) == [{"train": ["A1", "A2"], "val": ["A3"]},
                                                          {"train": ["A3", "A2"], "val": ["A1"]}]
    with pytest.raises(InputError, match="lacks case A9"):
        restrict_splits(splits, ["A1", "A2", "A3", "A9"])
    with pytest.raises(InputError, match="fold 0 .* no validation case"):
        restrict_splits(splits, ["A1", "A2"])


def test_a_dataset_with_fewer_subjects_than_folds_is_shared_for_the_folds_it_can_train():
    """Two subjects (A1 and its mirror A1m, A2) in three folds: the fold that validates no case of it is kept
    without validation cases when only the others are required, and reported as untrainable."""
    splits = [{"train": ["A2", "B1", "B2"], "val": ["A1", "A1m", "B3"]},
              {"train": ["A1", "A1m", "B1", "B3"], "val": ["A2", "B2"]},
              {"train": ["A1", "A1m", "A2", "B2", "B3"], "val": ["B1"]}]
    cases = ["A1", "A1m", "A2"]
    with pytest.raises(InputError, match="fold 2 .* no validation case .*3 cases"):
        restrict_splits(splits, cases)
    restricted = restrict_splits(splits, cases, required_folds=[0, 1])
    assert restricted == [{"train": ["A2"], "val": ["A1", "A1m"]}, {"train": ["A1", "A1m"], "val": ["A2"]},
                          {"train": ["A1", "A1m", "A2"], "val": []}]
    assert untrainable_folds(restricted) == [2]
    assert untrainable_folds(restricted[:2]) == []
    with pytest.raises(InputError, match="fold 2 .* no validation case"):
        restrict_splits(splits, cases, required_folds=[2])
    with pytest.raises(InputError, match="fold 5: the joint split has 3 folds"):
        restrict_splits(splits, cases, required_folds=[0, 5])
