"""Subjects (several cases of one patient): merge records them, every split we write keeps a subject on one
side, tau leaves a whole subject out, and the trainer's per-source convergence reads each source's loss."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import BIN, run
from nnunet_mt.errors import InputError
from nnunet_mt.splits import leaking_subjects, merged_dataset_splits, refuse_leaking_splits, stratified_splits
from nnunet_mt.subjects import SubjectRule, case_subjects, read_subject_map, shares_subjects
from nnunet_mt_ood.baselines import KNNDetector
from nnunet_mt_ood.detector import SpectralOODDetector


def test_pattern_groups_a_mirror_with_its_subject():
    rule = SubjectRule(r"(pat\d+)")
    assert rule.subject("Dataset020_Brats", "D020_brats_pat0004m", "brats_pat0004m") == "Dataset020_Brats/pat0004"
    assert rule.subject("Dataset020_Brats", "D020_brats_pat0004", "brats_pat0004") == "Dataset020_Brats/pat0004"
    assert rule.subject("Dataset020_Brats", "D020_other", "other") == "D020_other"  # no match: its own subject
    assert SubjectRule(r"pat\d\d").subject("S", "D_x_pat0412", "x_pat0412") == "S/pat04"  # no group: whole match
    assert SubjectRule().subject("S", "D001_a", "a") == "D001_a"


def test_subject_maps_json_and_csv(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"a": "p1", "D011_b": "p1"}))
    rule = SubjectRule(mapping_file=str(tmp_path / "m.json"))
    assert rule.subject("S", "D011_a", "a") == "p1" and rule.subject("S", "D011_b", "b") == "p1"
    assert rule.subject("S", "D011_c", "c") == "D011_c"
    (tmp_path / "m.csv").write_text("case,subject\na,p1\nb,p2\n")
    assert read_subject_map(str(tmp_path / "m.csv")) == {"a": "p1", "b": "p2"}
    (tmp_path / "m.tsv").write_text("a\tp1\n")
    assert read_subject_map(str(tmp_path / "m.tsv")) == {"a": "p1"}


@pytest.mark.parametrize("name,content,needle", [
    ("missing.json", None, "subject map not found"),
    ("bad.json", "{", "invalid JSON"),
    ("list.json", "[1, 2]", "expected a JSON object"),
    ("three.csv", "a,b,c\n", "line 1: expected two columns"),
    ("empty.csv", "case,subject\n", "lists no case"),
])
def test_bad_subject_maps_are_refused_in_one_line(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as e:
        read_subject_map(str(path))
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="not a regular expression"):
        SubjectRule("(unclosed")
    with pytest.raises(InputError, match="not both"):
        SubjectRule("x", str(path))


def _folds_are_clean(splits, cases, subject_of):
    for split in splits:
        assert not leaking_subjects(split["train"], split["val"], subject_of)
        assert sorted(split["train"] + split["val"]) == sorted(cases)
    assert sorted(c for split in splits for c in split["val"]) == sorted(cases)  # each case validates once


def test_default_splits_are_those_of_earlier_releases():
    # the release before subjects: ids sorted, permuted with the seed, cut into 5 parts (a frozen answer)
    cases = {"A": [f"a{i:02d}" for i in range(12)], "B": [f"b{i}" for i in range(5)]}
    old = []
    for fold in range(5):
        val = []
        for source in ("A", "B"):
            ids = sorted(cases[source])
            part = np.array_split(np.random.RandomState(12345).permutation(len(ids)), 5)[fold]
            val += sorted(ids[i] for i in part)
        old.append(sorted(val))
    new = stratified_splits(cases)
    assert [sorted(s["val"]) for s in new] == old
    assert stratified_splits(cases, subject_of={c: c for cs in cases.values() for c in cs}) == new


def test_grouped_splits_keep_every_subject_on_one_side():
    # 3 subjects of 4 scans and 6 single scans in A; in B a subject shared with A (one patient in two datasets)
    cases = {"A": [f"a{i:02d}" for i in range(18)], "B": ["b0", "b1", "b2", "b3", "b4", "b5"]}
    subject_of = {f"a{i:02d}": f"p{i // 4}" for i in range(12)}
    subject_of["b0"] = "p0"
    splits = stratified_splits(cases, subject_of=subject_of)
    _folds_are_clean(splits, cases["A"] + cases["B"], subject_of)
    fold_of_p0 = [f for f, s in enumerate(splits) if "a00" in s["val"]][0]
    assert "b0" in splits[fold_of_p0]["val"]  # follows its subject into A's fold
    assert all(len([c for c in s["val"] if c.startswith("a")]) >= 1 for s in splits)  # stratified by source


def test_merged_dataset_splits_and_the_leak_refusal():
    cases = {f"D011_liver_{i:02d}": {"source": "L", "split": "train", "subject": f"L/p{i // 2}"} for i in range(10)}
    cases["D011_liver_99"] = {"source": "L", "split": "test", "subject": "L/p0"}
    dataset_json = {"nnunet_mt": {"cases": cases}}
    assert shares_subjects(dataset_json)
    assert case_subjects(dataset_json, ["D011_liver_03", "unknown"]) == ["L/p1", "unknown"]
    splits = merged_dataset_splits(dataset_json)
    assert all("D011_liver_99" not in s["train"] + s["val"] for s in splits)  # test cases are not in folds
    _folds_are_clean(splits, [c for c in cases if c != "D011_liver_99"],
                     {c: v["subject"] for c, v in cases.items()})
    leaky = [{"train": ["D011_liver_00"], "val": ["D011_liver_01"]}]  # both of subject L/p0
    with pytest.raises(InputError, match="fold 0 has subject L/p0 in training and validation"):
        refuse_leaking_splits("splits_final.json", leaky, dataset_json)


def test_tau_leaves_a_whole_subject_out():
    # a and its mirror a' (one subject) sit 0.01 apart; b, c, d are 1 away from everything
    x = np.array([[0.0, 0.0], [0.01, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    by_case = SpectralOODDetector().fit(x)
    by_subject = SpectralOODDetector().fit(x, groups=["p", "p", "b", "c", "d"])
    assert by_case.train_scores_[:2] == pytest.approx([0.01, 0.01])
    # hand-computed: a -> b or c (1), a' -> b (0.99), b -> a' (0.99), c -> a (1), d -> b or c (1)
    expected = np.array([1.0, 0.99, 0.99, 1.0, 1.0])
    assert by_subject.train_scores_ == pytest.approx(expected)
    assert by_subject.threshold_ == pytest.approx(expected.mean() + 2.5 * expected.std())
    knn = KNNDetector().fit(x + [3.0, 3.0], groups=["p", "p", "b", "c", "d"])  # unit vectors: compare with spectral
    expected = SpectralOODDetector().fit(knn.train_, groups=["p", "p", "b", "c", "d"]).train_scores_
    assert knn.train_scores_ == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        SpectralOODDetector().fit(x, groups=["p"] * 5)


def test_merge_records_subjects_from_a_pattern(demo_raw):
    root, env = demo_raw
    # demo ids liverct_000..045: the pattern makes a subject of the cases with the same last digit, so the
    # test cases 040-045 share subjects with training cases
    r = run([os.path.join(BIN, "nnunet_mt"), "merge", "-d", "11", "-o", "611", "-n", "Subj",
             "--subject_pattern", r"liverct_\d\d(\d)"], env)
    meta = json.loads((root / "raw/Dataset611_Subj/dataset.json").read_text())
    cases = meta["nnunet_mt"]["cases"]
    assert cases["D011_liverct_013"]["subject"] == "Dataset011_LiverCT/3"
    assert meta["nnunet_mt"]["subjects"] == "pattern 'liverct_\\\\d\\\\d(\\\\d)'"
    assert "46 cases of 10 subjects" in r.stdout
    assert "note: 6 subjects have training and test cases (e.g. Dataset011_LiverCT/0)" in r.stdout
    splits = merged_dataset_splits(meta)
    _folds_are_clean(splits, [c for c, v in cases.items() if v["split"] == "train"],
                     {c: v["subject"] for c, v in cases.items()})


def _nnunet_env(root, results, monkeypatch):
    """nnU-Net's folders for a trainer built in this process: the session's data, results (logs) in `results`."""
    monkeypatch.setenv("nnUNet_raw", str(root / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "pre"))
    monkeypatch.setenv("nnUNet_results", str(results))


def _smoke_trainer(root, name="nnUNetTrainerMultiTaskSmoke_persource", subjects=None):
    """Our trainer as nnUNetv2_train builds it on the preprocessed demo dataset, on the CPU; subjects: a
    function case id -> subject written into its dataset.json."""
    from nnunet_mt.trainer import trainer_variant
    folder = root / "pre" / "Dataset500_MultiTask"
    plans = dict(json.loads((folder / "nnUNetPlans.json").read_text()), continue_training=False)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    if subjects:
        for case, info in dataset_json["nnunet_mt"]["cases"].items():
            info["subject"] = subjects(case)
    trainer = trainer_variant(name)(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    return trainer


def test_trainer_writes_folds_grouped_by_subject(preprocessed, tmp_path, monkeypatch):
    """nnU-Net's do_split on a merged dataset whose subjects hold several cases: our grouped folds are written
    first (splits_final.json in the dataset's preprocessed folder) and nnU-Net trains on them."""
    root, _ = preprocessed
    _nnunet_env(root, tmp_path, monkeypatch)
    trainer = _smoke_trainer(root, subjects=lambda case: case[:-1])  # ten consecutive cases per subject
    trainer.preprocessed_dataset_folder_base = str(tmp_path)  # nnU-Net's attribute: where splits_final.json goes
    train_keys, val_keys = trainer.do_split()
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    assert splits == merged_dataset_splits(trainer.dataset_json)
    assert (sorted(train_keys), sorted(val_keys)) == (sorted(splits[0]["train"]), sorted(splits[0]["val"]))
    assert not leaking_subjects(train_keys, val_keys, {c: c[:-1] for c in train_keys + val_keys})
    # without subjects of several cases the trainer leaves the split to nnU-Net, as before
    plain = _smoke_trainer(root)
    plain.preprocessed_dataset_folder_base = str(tmp_path / "plain")
    os.makedirs(plain.preprocessed_dataset_folder_base)
    plain.do_split()
    by_nnunet = json.loads((tmp_path / "plain" / "splits_final.json").read_text())
    assert by_nnunet != splits and leaking_subjects(by_nnunet[0]["train"], by_nnunet[0]["val"],
                                                    {c: c[:-1] for c in train_keys + val_keys})


def test_per_source_validation_losses_and_the_stop(preprocessed, tmp_path, monkeypatch):
    """With _persource, nnU-Net's validation step also yields each patch's Dice loss and source (from the
    same forward pass), the epoch end logs each source's mean, and converged() reads those histories."""
    from nnunet_mt.trainer import SOURCE_LOSSES_KEY, per_patch_dice_loss
    root, _ = preprocessed
    _nnunet_env(root, tmp_path, monkeypatch)
    trainer = _smoke_trainer(root)
    trainer.initialize()
    torch.manual_seed(0)
    data = torch.randn(3, 1, 32, 32, 32)
    target = (torch.rand(3, 1, 32, 32, 32) > 0.7).long()
    keys = ["D011_liverct_000", "D013_prostatemr_000", "D011_liverct_001"]
    outputs = []
    for _ in range(2):
        trainer.network.eval()
        outputs.append(trainer.validation_step({"data": data.clone(), "target": target.clone(), "keys": keys}))
    with torch.no_grad():
        logits = trainer.network(data)
    expected = [float(per_patch_dice_loss(logits[i:i + 1], target[i:i + 1])) for i in range(3)]
    assert [s for s, _ in outputs[0][SOURCE_LOSSES_KEY]] == ["Dataset011_LiverCT", "Dataset013_ProstateMR",
                                                              "Dataset011_LiverCT"]
    assert [v for _, v in outputs[0][SOURCE_LOSSES_KEY]] == pytest.approx(expected, abs=1e-5)
    trainer.current_epoch = 0
    trainer.on_validation_epoch_end(outputs)
    logged = trainer.logger.get_value(SOURCE_LOSSES_KEY, step=0)
    assert logged == pytest.approx({"Dataset011_LiverCT": (expected[0] + expected[2]) / 2,
                                    "Dataset013_ProstateMR": expected[1]}, abs=1e-5)
    assert trainer.logger.get_value("val_losses", step=0) == pytest.approx(outputs[0]["loss"], abs=1e-6)
    # the stop: windows of 2 epochs; liver stops improving, prostate keeps falling, then stops
    history = [{"L": 3, "P": 3}] * 2 + [{"L": 2, "P": 2}] * 2 + [{"L": 2.5, "P": 1}] * 2 + [{"L": 2.2, "P": 0.5}] * 2
    trainer.logger.local_logger.my_fantastic_logging[SOURCE_LOSSES_KEY] = history
    assert not trainer.converged()
    trainer.logger.local_logger.my_fantastic_logging[SOURCE_LOSSES_KEY] = history + [{"L": 2.3, "P": 0.6}] * 4
    assert trainer.converged()
