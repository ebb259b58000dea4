"""Files our commands write, made by hand for the read-back tests (good ones, and ones edited to be bad):
a fit in a fold folder, score reports and score parts. Shared by test_bad_files_read_back.py and
test_bad_inputs_round2.py."""
import json

import numpy as np

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
