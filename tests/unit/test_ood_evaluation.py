import numpy as np
import pytest

from nnunet_mt_ood.evaluation import detection_counts, roc_auc, roc_curve


def test_counts_by_hand():
    flagged = [True, True, False, False, True, False]
    is_ood = [True, False, False, True, True, False]
    c = detection_counts(flagged, is_ood)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 2, 1)
    assert c["accuracy"] == pytest.approx(4 / 6) and c["sensitivity"] == pytest.approx(2 / 3)
    assert c["specificity"] == pytest.approx(2 / 3)


def test_auc_with_ties_by_hand_and_against_sklearn():
    scores = [0.1, 0.4, 0.4, 0.8, 0.4, 0.9]
    is_ood = [False, False, True, True, False, True]
    # pairs (ood, id): 0.4 vs {0.1: 1, 0.4: .5, 0.4: .5}; 0.8 vs all: 3; 0.9 vs all: 3 -> 8 / 9
    assert roc_auc(scores, is_ood) == pytest.approx(8 / 9)
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, 30).astype(float)  # many ties
        y = rng.random(30) < 0.4
        if y.any() and not y.all():
            assert roc_auc(s, y) == pytest.approx(sklearn.roc_auc_score(y, s))


def test_auc_extremes_and_curve():
    assert roc_auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert roc_auc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert np.isnan(roc_auc([1, 2], [True, True]))
    fpr, tpr = roc_curve([1, 2, 3, 4], [False, False, True, True])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(1.0)


def test_ood_table_intervals_resample_subjects(tmp_path):
    """nnunet_mt_ood evaluate with --subject_pattern: mirrors ('...m') are one subject with their original; the
    AUC interval comes from resampling subjects (hand-checkable: with one ID subject that is ranked below both
    OOD subjects the AUC is 1 in every resample that holds both classes)."""
    import json
    from nnunet_mt_ood.report import case_subject, evaluate_scores
    assert case_subject("brain1m", r"(brain\d)") == "brain1" and case_subject("x", r"(brain\d)") == "x"
    assert case_subject("brain12", None) == "brain12"
    cases = [("liver1", 0.1), ("liver1m", 0.2), ("brain1", 0.8), ("brain1m", 0.9), ("brain2", 0.7)]
    report = {"model": {"trainer": "t"}, "spectral_layer": "last", "methods": {"spectral": {"tau": 0.5}},
              "cases": [{"case": c, "spectral_score": s, "spectral_is_ood": s > 0.5} for c, s in cases]}
    (tmp_path / "ood_scores.json").write_text(json.dumps(report))
    summary = evaluate_scores([str(tmp_path / "ood_scores.json")], ["brain*"], output=str(tmp_path / "table"),
                              subject_pattern=r"(liver\d|brain\d)", log=lambda *a: None)
    result = summary["methods"]["spectral"]
    assert result["auc"] == 1.0 and result["n_subjects"] == 3 and result["auc_interval"] == [1.0, 1.0]
    md = (tmp_path / "table.md").read_text()
    assert "2 in-distribution images of 1 subjects, 3 OOD images of 2 subjects" in md
    assert "| spectral | 1.00 | 1.00 | 1.00 | 1.00 | [1.00, 1.00] |" in md
    # the same subjects from a map file as merge reads it: the same table
    (tmp_path / "subjects.csv").write_text("case,subject\nliver1,L\nliver1m,L\nbrain1,B1\nbrain1m,B1\n")
    assert case_subject("D011_liver1m", None, {"liver1m": "L"}) == "L" and case_subject("brain2", None, {}) == "brain2"
    by_map = evaluate_scores([str(tmp_path / "ood_scores.json")], ["brain*"], output=str(tmp_path / "by_map"),
                             subject_map=str(tmp_path / "subjects.csv"), log=lambda *a: None)
    assert by_map["methods"]["spectral"]["n_subjects"] == 3 and by_map["methods"]["spectral"]["auc_interval"] == [1.0, 1.0]
    assert "2 in-distribution images of 1 subjects, 3 OOD images of 2 subjects" in (tmp_path / "by_map.md").read_text()
    from nnunet_mt.errors import InputError
    with pytest.raises(InputError, match="not both"):
        evaluate_scores([str(tmp_path / "ood_scores.json")], ["brain*"], subject_pattern="(x)",
                        subject_map=str(tmp_path / "subjects.csv"))


def test_roc_auc_pair_count_and_rank_formula_agree_exactly_with_ties(monkeypatch):
    """The pair count (small sets, the bootstrap's many calls) and the rank formula (large sets) give the same
    Mann-Whitney AUC to the last bit, ties counting one half."""
    import numpy as np
    from nnunet_mt_ood import evaluation
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 4, n).astype(float), rng.random(n) < 0.4) for n in (2, 5, 9, 40) for _ in range(25)]
    cases = [(s, y) for s, y in cases if y.any() and not y.all()]
    by_pairs = [evaluation.roc_auc(s, y) for s, y in cases]
    monkeypatch.setattr(evaluation, "PAIRWISE_AUC_MAX_PAIRS", 0)
    assert [evaluation.roc_auc(s, y) for s, y in cases] == by_pairs
    assert evaluation.roc_auc([0.1, 0.5, 0.5, 0.9], [False, False, True, True]) == 0.875  # pairs: (1 + 0.5 + 1 + 1) / 4
