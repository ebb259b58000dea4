"""Files our commands wrote and read back, truncated, corrupted or hand-edited: fit files (score), score
parts (collect) and ood_scores.json (evaluate). Each is refused with one line naming the file (and the
field), exit code 2, nothing written. In-process, through main(argv)."""
import json

import numpy as np
import pytest

from conftest import assert_refused_in_process, nnunet_folders
from nnunet_mt_ood.cli import main as nnunet_mt_ood

FOLD = "res/Dataset012_CorticalPlateMR/T__nnUNetPlans__3d_fullres/fold_0"
GOOD_FIT = {"method": "spectral", "layer": "last", "C": 2.5, "tau": 0.1, "n_channels": 2,
            "case_ids": ["a", "b", "c"], "sources": ["S", "S", "S"], "train_scores": [0.1, 0.2, 0.3],
            "model": {"trainer": "T"}, "tta": None}
GOOD_REPORT = {"model": {"trainer": "T"}, "spectral_layer": "last", "methods": {"spectral": {"tau": 0.1}},
               "cases": [{"case": "a", "spectral_score": 0.05, "spectral_is_ood": False}]}


def _fit_files(ws, meta=None, npz=None, raw_json=None):
    fold = ws / FOLD
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_text("")  # the fit files are read before the checkpoint
    (ws / "raw/Dataset012_CorticalPlateMR").mkdir(parents=True)
    path = fold / "spectral_signatures_last.json"
    if isinstance(raw_json, bytes):
        path.write_bytes(raw_json)
    else:
        path.write_text(raw_json if raw_json is not None else json.dumps(dict(GOOD_FIT, **(meta or {}))))
    if npz == "garbage":
        (fold / "spectral_signatures_last.npz").write_bytes(b"PK\x03\x04 not a zip")
    else:
        np.savez(fold / "spectral_signatures_last.npz", **{npz or "signatures": np.ones((3, 2)) * [[1], [2], [3]]})
    return ["score", "-i", str(ws / "in"), "-o", str(ws / "out"), "-d", "12", "-c", "3d_fullres", "-tr", "T",
            "-f", "0", "-device", "cpu"]


def _knn_fit(ws, k):
    """A knn fit whose recorded k was edited by hand."""
    argv = _fit_files(ws)
    meta = dict(GOOD_FIT, method="knn", layer="bottleneck", k=k)
    (ws / FOLD / "ood_fit_knn_bottleneck.json").write_text(json.dumps(meta))
    np.savez(ws / FOLD / "ood_fit_knn_bottleneck.npz", features=np.ones((3, 2)) * [[1], [2], [3]])
    return argv + ["--method", "knn"]


def _report(ws, edit=None, raw=None, name="ood_scores.json"):
    report = json.loads(json.dumps(GOOD_REPORT))
    if edit:
        edit(report)
    (ws / name).write_text(raw if raw is not None else json.dumps(report))
    return ws / name


def _evaluate(**kwargs):
    return lambda ws: ["evaluate", str(_report(ws, **kwargs)), "--ood", "x*", "-o", str(ws / "ev")]


def _collect(**kwargs):
    def setup(ws):
        (ws / "parts").mkdir()
        _report(ws / "parts", name="ood_scores.part_0_of_2.json")
        _report(ws / "parts", name="ood_scores.part_1_of_2.json", **kwargs)
        return ["collect", str(ws / "parts")]
    return setup


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
