"""Files our commands wrote and read back, truncated, corrupted or hand-edited: fit files (score), score
parts (collect) and ood_scores.json (evaluate). Each is refused with one line naming the file (and the
field), exit code 2, nothing written. In-process, through main(argv)."""
import json

import pytest

from conftest import assert_refused_in_process, nnunet_folders
from nnunet_mt_ood.cli import main as nnunet_mt_ood
from written_files import GOOD_FIT, GOOD_REPORT, _collect, _evaluate, _fit_files, _knn_fit

# (row id, setup(ws) -> argv, words the error line must contain)
ROWS = [
    ("fit-json-truncated", lambda ws: _fit_files(ws, raw_json=json.dumps(GOOD_FIT)[:40]),
     ["spectral_signatures_last.json", "invalid JSON"]),
    ("fit-json-missing-tau", lambda ws: _fit_files(ws, raw_json=json.dumps({k: v for k, v in GOOD_FIT.items() if k != "tau"})),
     ["spectral_signatures_last.json", "'tau' missing"]),
    ("fit-json-nan-C", lambda ws: _fit_files(ws, meta={"C": float("nan")}), ["'C'", "finite number"]),
    ("fit-json-case-ids-not-list", lambda ws: _fit_files(ws, meta={"case_ids": "abc"}), ["'case_ids'", "list of strings"]),
    ("fit-json-a-list", lambda ws: _fit_files(ws, raw_json="[1, 2]"), ["spectral_signatures_last.json", "not a JSON object"]),
    ("fit-json-binary", lambda ws: _fit_files(ws, raw_json=b"\xff\xfe\x00\x01"), ["spectral_signatures_last.json", "not text"]),
    ("fit-npz-corrupt", lambda ws: _fit_files(ws, npz="garbage"), ["spectral_signatures_last.npz", "unreadable"]),
    ("fit-npz-wrong-array", lambda ws: _fit_files(ws, npz="other"), ["spectral_signatures_last.npz", "unreadable"]),
    ("fit-npz-wrong-shape", lambda ws: _fit_files(ws, meta={"n_channels": 5}), ["spectral_signatures_last.npz", "expected"]),
    ("knn-fit-k-zero", lambda ws: _knn_fit(ws, 0), ["ood_fit_knn_bottleneck.json", "k must be a whole number"]),
    ("knn-fit-k-text", lambda ws: _knn_fit(ws, "two"), ["ood_fit_knn_bottleneck.json", "k must be a whole number"]),
    ("knn-fit-k-too-large", lambda ws: _knn_fit(ws, 3), ["ood_fit_knn_bottleneck.json", "at least 4"]),
    ("evaluate-report-truncated", _evaluate(raw=json.dumps(GOOD_REPORT)[:30]), ["ood_scores.json", "cannot read"]),
    ("evaluate-score-nan", _evaluate(edit=lambda r: r["cases"][0].update(spectral_score=float("nan"))),
     ["ood_scores.json", "'cases[0].spectral_score'", "finite number"]),
    ("evaluate-flag-not-bool", _evaluate(edit=lambda r: r["cases"][0].update(spectral_is_ood="no")),
     ["'cases[0].spectral_is_ood'", "true or false"]),
    ("evaluate-tau-missing", _evaluate(edit=lambda r: r["methods"]["spectral"].pop("tau")),
     ["'methods.spectral.tau' missing"]),
    ("evaluate-score-missing", _evaluate(edit=lambda r: r["cases"][0].pop("spectral_score")),
     ["'cases[0].spectral_score' missing"]),
    ("evaluate-cases-not-list", _evaluate(edit=lambda r: r.update(cases={"a": 1})), ["'cases'", "a list"]),
    ("collect-part-truncated", _collect(raw='{"model": '), ["ood_scores.part_1_of_2.json", "cannot read"]),
    ("collect-part-score-inf", _collect(edit=lambda r: r["cases"][0].update(spectral_score=float("inf"))),
     ["ood_scores.part_1_of_2.json", "finite number"]),
    ("collect-part-no-model", _collect(edit=lambda r: r.pop("model")), ["ood_scores.part_1_of_2.json", "'model' missing"]),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_file_read_back(row, tmp_path, monkeypatch, capsys):
    _, setup, needles = row
    nnunet_folders(tmp_path, monkeypatch)
    (tmp_path / "in").mkdir()
    assert_refused_in_process(nnunet_mt_ood, setup(tmp_path), needles, tmp_path, capsys)
