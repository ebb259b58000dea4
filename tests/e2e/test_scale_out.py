"""Split scoring and fitting (-num_parts K -part_id i) in separate processes equal one process."""
import io
import json
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, CASES, TRAINER, assert_refused, run

pytestmark = pytest.mark.slow
MODEL = ["-d", "500", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-device", "cpu"]


def _fold_dir(root):
    return root / "res" / "Dataset500_MultiTask" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"


def _parallel(commands, env):
    """Starts every command at once (separate processes, as on a cluster) and waits for all. Each process gets
    one thread, as a cluster job gets its own cores: on 2 cores, 2-3 processes of 2 threads each ran 3x slower."""
    env = dict(env, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=900) for p in procs]
    for c, p, (out, err) in zip(commands, procs, outputs):
        assert p.returncode == 0, f"{' '.join(c)}:\n{out[-2000:]}\n{err[-2000:]}"
    return [out for out, _ in outputs]


def _refused(env, cmd, *needles):
    assert_refused(cmd, env, *needles)


@pytest.fixture(scope="module")
def score_inputs(trained, tmp_path_factory):
    root, _ = trained
    inputs = tmp_path_factory.mktemp("parts_in")
    for case in CASES + ["D013_prostatemr_017"]:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    os.link(root / "raw/Dataset014_HippocampusMR/imagesTs/hippocampusmr_010_0000.nii.gz",
            inputs / "hippocampusmr_010_0000.nii.gz")
    return inputs


def test_score_in_three_parts_equals_one_process(trained, score_inputs, tmp_path):
    root, env = trained
    score = [os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(score_inputs), *MODEL, "-npp", "0", "-nps", "0",
             "--disable_tta", "--save_probabilities"]
    single, split = tmp_path / "single", tmp_path / "split"
    run(score + ["-o", str(single)], env)
    outs = _parallel([score + ["-o", str(split), "-num_parts", "3", "-part_id", str(i)] for i in range(3)], env)
    parts = sorted(p.name for p in split.glob("ood_scores.part_*"))
    assert parts == [f"ood_scores.part_{i}_of_3.json" for i in range(3)] and not (split / "ood_scores.json").exists()
    # the same case assignment as nnUNetv2_predict -num_parts 3: every third of the sorted list
    cases = sorted(f[:-12] for f in os.listdir(score_inputs))
    for i in range(3):
        part = json.loads((split / f"ood_scores.part_{i}_of_3.json").read_text())
        assert [r["case"] for r in part["cases"]] == cases[i::3]
    assert "nnunet_mt_ood collect" in outs[0]
    run([os.path.join(BIN, "nnunet_mt_ood"), "collect", str(split)], env, process=True)
    merged, reference = (json.loads((d / "ood_scores.json").read_text()) for d in (split, single))
    assert merged["methods"] == reference["methods"] and merged["model"] == reference["model"]
    assert [r["case"] for r in merged["cases"]] == [r["case"] for r in reference["cases"]] == cases
    for a, b in zip(merged["cases"], reference["cases"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == (pytest.approx(b[k], abs=1e-7) if isinstance(b[k], float) else b[k])
    assert (split / "ood_scores.csv").read_text().splitlines()[0] == (single / "ood_scores.csv").read_text().splitlines()[0]
    for case in cases:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(split / f"{case}.nii.gz"))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(single / f"{case}.nii.gz"))))

    # refusals: a missing part, overlapping parts, an invalid part id
    collect = [os.path.join(BIN, "nnunet_mt_ood"), "collect", str(split)]
    part1 = (split / "ood_scores.part_1_of_3.json").read_text()
    (split / "ood_scores.part_1_of_3.json").unlink()
    _refused(env, collect, "ood_scores.part_1_of_3.json", "part missing")
    overlapping = json.loads(part1)
    overlapping["cases"].append(json.loads((split / "ood_scores.part_0_of_3.json").read_text())["cases"][0])
    (split / "ood_scores.part_1_of_3.json").write_text(json.dumps(overlapping))
    _refused(env, collect, "ood_scores.part_1_of_3.json", "parts overlap", cases[0])
    _refused(env, score + ["-o", str(tmp_path / "bad"), "-num_parts", "3", "-part_id", "3"], "-part_id 3")
    assert not (tmp_path / "bad").exists()


def test_fit_in_two_parts_equals_one_fit(trained):
    root, env = trained
    fold = _fold_dir(root)
    saved = {f: (fold / f).read_bytes() for f in ("spectral_signatures_last.npz", "spectral_signatures_last.json")}
    fit = [os.path.join(BIN, "nnunet_mt_ood"), "fit", *MODEL]
    try:
        _parallel([fit + ["-num_parts", "2", "-part_id", str(i)] for i in range(2)], env)
        assert (fold / "spectral_signatures_last.json").read_bytes() == saved["spectral_signatures_last.json"]
        run(fit + ["-num_parts", "2", "--collect"], env)
        merged = json.loads((fold / "spectral_signatures_last.json").read_text())
        original = json.loads(saved["spectral_signatures_last.json"])
        assert merged["case_ids"] == original["case_ids"] and merged["sources"] == original["sources"]
        assert merged["tau"] == pytest.approx(original["tau"], rel=1e-5)
        np.testing.assert_allclose(np.load(fold / "spectral_signatures_last.npz")["signatures"],
                                   np.load(io.BytesIO(saved["spectral_signatures_last.npz"]))["signatures"], atol=1e-6)
        (fold / "ood_fit_parts/part_1_of_2.npz").unlink()
        _refused(env, fit + ["-num_parts", "2", "--collect"], "part_1_of_2.npz", "fit part missing")
    finally:
        for f, content in saved.items():
            (fold / f).write_bytes(content)

