"""Known answers for the paired statistics over subjects (nnunet_mt.statistics, nnunet_mt_ood.evaluation)."""
import numpy as np
import pytest

from nnunet_mt.statistics import (bootstrap_interval, format_difference, paired_difference,
                                  paired_difference_over_runs, subject_means, verdict)
from nnunet_mt_ood.evaluation import aurc, aurc_with_interval, auc_with_interval, roc_auc


def test_subject_means_average_the_images_of_a_subject():
    assert subject_means([1, 3, 5, np.nan], ["a", "a", "b", "c"]) == {"a": 2.0, "b": 5.0}


def test_constant_differences_give_a_point_interval_and_a_side():
    r = paired_difference([0.9, 0.8, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5], ["s1", "s2", "s3", "s4"], n_boot=500)
    assert r["difference"] == pytest.approx(0.1) and r["interval"] == pytest.approx([0.1, 0.1])
    assert r["verdict"] == "better" and r["n_subjects"] == 4 and r["p_wilcoxon"] is None  # 4 < 6 subjects
    lower_is_better = paired_difference([0.9, 0.8], [0.8, 0.7], ["s1", "s2"], higher_is_better=False, n_boot=200)
    assert lower_is_better["verdict"] == "worse"


def test_two_subjects_bootstrap_known_distribution():
    # means of 2 draws from {0, 1}: 0 (1/4), 0.5 (1/2), 1 (1/4): the 2.5 and 97.5 percentiles are 0 and 1
    r = paired_difference([0.0, 1.0], [0.0, 0.0], ["a", "b"])
    assert r["difference"] == 0.5 and r["interval"] == [0.0, 1.0]
    assert r["verdict"] == "no difference detected"  # the interval touches 0


def test_three_subjects_bootstrap_known_distribution():
    # differences 0, 0, 3: the resampled mean is k with k ~ Binomial(3, 1/3); P(k=0) = 8/27 > 2.5 %,
    # P(k=3) = 1/27 > 2.5 %: the interval is [0, 3]
    assert bootstrap_interval(lambda idx: np.array([0.0, 0.0, 3.0])[idx].mean(), 3) == (0.0, 3.0)


def test_runs_are_resampled_with_the_subjects():
    # seed 0: joint better by 0.2 on all 4 subjects, seed 1: no difference. Averaged over the seeds every subject
    # gains 0.1, so a bootstrap over subjects alone gives [0.1, 0.1], "better". Drawing 2 runs of 2 with
    # replacement gives both seed 0 (1/4: 0.2), one of each (1/2: 0.1), both seed 1 (1/4: 0.0): [0.0, 0.2]
    runs = [[0.2] * 4, [0.0] * 4]
    subjects = ["a", "b", "c", "d"]
    averaged = paired_difference([0.1] * 4, [0.0] * 4, subjects, n_boot=500)
    assert averaged["interval"] == pytest.approx([0.1, 0.1]) and averaged["verdict"] == "better"
    r = paired_difference_over_runs(runs, subjects, n_boot=2000)
    assert r["difference"] == pytest.approx(0.1) and r["interval"] == pytest.approx([0.0, 0.2])
    assert r["verdict"] == "no difference detected" and (r["n_runs"], r["n_subjects"], r["n_images"]) == (2, 4, 4)
    assert format_difference(r) == "+0.100 [+0.000, +0.200], 4 subj. x 2 runs, no difference detected"
    # two seeds that agree: the runs add no width, the interval is the subjects' ([0.1, 0.1]), and the verdict stays
    agree = paired_difference_over_runs([[0.1, 0.1, 0.1, 0.1]] * 2, subjects, n_boot=500)
    assert agree["interval"] == pytest.approx([0.1, 0.1]) and agree["verdict"] == "better"


def test_one_run_is_the_subject_bootstrap_and_one_subject_has_no_interval():
    d = [0.3, 0.1, -0.05, 0.2, 0.0, 0.25]
    subjects = ["a", "a", "b", "c", "d", "e"]  # a's two images count once: subject means 0.2, -0.05, 0.2, 0.0, 0.25
    one = paired_difference_over_runs([d], subjects, n_boot=3000, seed=1)
    ref = paired_difference(d, [0.0] * 6, subjects, n_boot=3000, seed=1)
    assert one["difference"] == pytest.approx(ref["difference"]) == pytest.approx(0.6 / 5)
    assert one["interval"] == pytest.approx(ref["interval"], abs=0.02) and one["n_runs"] == 1
    single = paired_difference_over_runs([[0.1, 0.2], [0.3, 0.0]], ["a", "a"])  # 2 images, 2 runs, 1 subject
    assert single["interval"] is None and single["difference"] == pytest.approx(0.15)
    assert single["verdict"] == "no difference detected"
    # an image missing in one run (NaN) is left out of that run only
    gap = paired_difference_over_runs([[0.1, np.nan], [0.1, 0.3]], ["a", "b"], n_boot=200)
    assert gap["difference"] == pytest.approx((0.1 + 0.3) / 2)
    with pytest.raises(ValueError, match="runs, images"):
        paired_difference_over_runs([0.1, 0.2], ["a", "b"])


def test_images_of_one_subject_count_once():
    # subject a: two images whose differences cancel; b and c: +0.2 each. Per image the mean would be
    # 0.1 over 4 images; per subject it is (0 + 0.2 + 0.2) / 3
    r = paired_difference([1.0, 0.0, 0.2, 0.2], [0.0, 1.0, 0.0, 0.0], ["a", "a", "b", "c"], n_boot=200)
    assert r["difference"] == pytest.approx(0.4 / 3) and r["n_subjects"] == 3 and r["n_images"] == 4


def test_wilcoxon_exact_p_with_eight_subjects():
    d = np.arange(1, 9) / 100  # all eight positive, distinct: exact two-sided p = 2 / 2**8
    r = paired_difference(d, np.zeros(8), [f"s{i}" for i in range(8)], n_boot=200)
    assert r["p_wilcoxon"] == pytest.approx(2 / 256)
    assert r["verdict"] == "better" and r["interval"][0] > 0


def test_non_finite_images_are_left_out():
    r = paired_difference([np.inf, 0.5, 0.5], [0.1, 0.4, 0.4], ["a", "b", "c"], n_boot=100)
    assert r["n_images"] == 2 and r["n_subjects"] == 2 and r["difference"] == pytest.approx(0.1)


def test_verdict_rule():
    assert verdict([0.01, 0.2]) == "better" and verdict([-0.2, -0.01]) == "worse"
    assert verdict([-0.01, 0.2]) == "no difference detected" and verdict(None) == "no difference detected"
    assert verdict([0.01, 0.2], higher_is_better=False) == "worse"


def test_format_difference_line():
    r = {"difference": 0.041, "interval": [-0.012, 0.09], "n_subjects": 4, "p_wilcoxon": None,
         "verdict": "no difference detected"}
    assert format_difference(r) == "+0.041 [-0.012, +0.090], 4 subj., no difference detected"


def test_auc_interval_resamples_subjects_not_images():
    # one in-distribution subject with 3 images, one OOD subject with 3 (mirrors): only resamples that hold
    # both subjects have an AUC, and it is the full-sample AUC each time
    scores, is_ood = [0.1, 0.2, 0.5, 0.4, 0.6, 0.7], [0, 0, 0, 1, 1, 1]
    r = auc_with_interval(scores, is_ood, ["id", "id", "id", "ood", "ood", "ood"], n_boot=300)
    assert r["n_subjects"] == 2 and r["n_images"] == 6
    assert r["value"] == pytest.approx(roc_auc(scores, is_ood)) == pytest.approx(8 / 9)
    assert r["interval"] == pytest.approx([8 / 9, 8 / 9])


def test_aurc_interval_contains_the_value_and_shrinks_to_it_for_identical_subjects():
    scores, risks = [0.1, 0.9, 0.1, 0.9], [0.0, 1.0, 0.0, 1.0]
    r = aurc_with_interval(scores, risks, ["a", "a", "b", "b"], n_boot=300)
    assert r["value"] == pytest.approx(aurc(scores, risks))
    assert r["interval"] == pytest.approx([r["value"], r["value"]])  # both subjects alike: every resample equal
