"""Risk-coverage and AURC: hand-computed known answers (nnunet_mt_ood/evaluation.py)."""
import numpy as np
import pytest

from nnunet_mt_ood.evaluation import aurc, optimal_aurc, risk_coverage, roc_auc


def test_risk_coverage_by_hand():
    scores = [0.9, 0.1, 0.5, 0.3]  # keep order: case 1 (0.1), 3 (0.3), 2 (0.5), 0 (0.9)
    risks = [0.8, 0.0, 0.4, 0.2]
    coverage, risk = risk_coverage(scores, risks)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0.0, 0.1, 0.2, 0.35])  # 0/1, 0.2/2, 0.6/3, 1.4/4
    assert aurc(scores, risks) == pytest.approx((0.0 + 0.1 + 0.2 + 0.35) / 4)
    assert aurc(scores, risks) == pytest.approx(optimal_aurc(risks))  # this order is the best one


def test_worst_and_random_orders():
    risks = np.array([0.0, 0.2, 0.4, 0.8])
    worst = aurc(-risks, risks)  # most risky kept first
    assert worst == pytest.approx((0.8 + 1.2 / 2 + 1.4 / 3 + 1.4 / 4) / 4)
    assert optimal_aurc(risks) < risks.mean() < worst
    rng = np.random.default_rng(0)
    random_orders = [aurc(rng.random(4), risks) for _ in range(4000)]
    assert np.mean(random_orders) == pytest.approx(risks.mean(), abs=0.01)  # random: about the mean risk


def test_failure_auroc_is_the_roc_auc_of_failed_cases():
    dice = np.array([0.9, 0.2, 0.8, 0.4, 0.1])
    scores = np.array([0.1, 0.7, 0.3, 0.5, 0.2])
    failed = dice < 0.5
    # failed cases scored 0.7, 0.5, 0.2; kept ones 0.1, 0.3: 5 of the 6 pairs are ordered right
    assert roc_auc(scores, failed) == pytest.approx(5 / 6)


def _folder(root, name, cases):
    """An ood_scores.json folder (spectral scores given) with each case's segmentation, and a reference
    folder; case -> (score, foreground voxels of the segmentation, of the reference) sets its Dice."""
    import json
    import SimpleITK as sitk
    out, ref = root / name, root / f"{name}_labels"
    out.mkdir()
    ref.mkdir()
    rows = []
    for case, (score, seg_voxels, ref_voxels) in cases.items():
        for folder, n in ((out, seg_voxels), (ref, ref_voxels)):
            a = np.zeros(64, np.uint8)
            a[:n] = 1
            sitk.WriteImage(sitk.GetImageFromArray(a.reshape(4, 4, 4)), str(folder / f"{case}.nii.gz"))
        rows.append({"case": case, "spectral_score": score, "spectral_is_ood": score > 0.5})
    (out / "ood_scores.json").write_text(json.dumps({"model": {"trainer": "T"}, "spectral_layer": "last",
                                                     "methods": {"spectral": {"tau": 0.5}}, "cases": rows}))
    return out / "ood_scores.json", ref


def test_evaluate_reports_failure_detection_with_references(tmp_path, capsys):
    import json
    from nnunet_mt_ood.cli import main
    # Dice = 2 min(s, r) / (s + r) for nested masks: (8, 8) -> 1.0, (4, 8) -> 0.667, (2, 8) -> 0.4, (1, 8) -> 0.222
    a, a_ref = _folder(tmp_path, "id", {"i1": (0.1, 8, 8), "i2": (0.3, 4, 8), "i3": (0.2, 1, 8)})
    b, b_ref = _folder(tmp_path, "ood", {"o1": (0.9, 2, 8), "o2": (0.8, 8, 8)})
    assert main(["evaluate", str(a), str(b), "--ood", "o*", "-o", str(tmp_path / "ev"),
                 "-ref", str(a_ref), str(b_ref)]) == 0
    failure = json.loads((tmp_path / "ev.json").read_text())["failure"]
    dice = dict(zip(["i1", "i2", "i3", "o1", "o2"], failure["dice"]))
    assert dice == pytest.approx({"i1": 1.0, "i2": 2 / 3, "i3": 2 / 9, "o1": 0.4, "o2": 1.0})
    f = failure["methods"]["spectral"]
    # failed (Dice < 0.5): i3 (score 0.2) and o1 (0.9); kept: i1 0.1, i2 0.3, o2 0.8. Failed above kept:
    # i3 > i1; o1 > i1, i2, o2 -> 4 of the 6 pairs
    assert f["n_failed"] == 2 and f["failure_auroc"] == pytest.approx(4 / 6)
    risks = 1 - np.array([1.0, 2 / 9, 2 / 3, 1.0, 0.4])  # in order of score: i1, i3, i2, o2, o1
    assert f["aurc"] == pytest.approx(np.mean(np.cumsum(risks) / np.arange(1, 6)))
    assert f["aurc_optimal"] <= f["aurc"] and f["aurc_random"] == pytest.approx(np.mean(risks))
    assert (tmp_path / "ev_risk_coverage.png").stat().st_size > 0
    assert "failure AUROC" in (tmp_path / "ev.md").read_text()
    # one reference folder per scores file, and every case needs its reference
    assert main(["evaluate", str(a), str(b), "--ood", "o*", "-o", str(tmp_path / "x"), "-ref", str(a_ref)]) == 2
    (a_ref / "i2.nii.gz").unlink()
    assert main(["evaluate", str(a), str(b), "--ood", "o*", "-o", str(tmp_path / "y"), "-ref", str(a_ref),
                 str(b_ref)]) == 2
    err = capsys.readouterr().err
    assert "-ref: 1 folders for 2 scores files" in err and "i2.nii.gz: reference of case 'i2' missing" in err
    assert not (tmp_path / "y.json").exists()
