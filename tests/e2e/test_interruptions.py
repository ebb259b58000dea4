"""kill -9 in the middle of merge and score: rerunning finishes, and the results equal an uninterrupted run."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, CASES, TRAINER, run

pytestmark = pytest.mark.slow


def _digest(folder):
    """name -> sha256 of every file below folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_when(cmd, env, ready, timeout=300):
    """Starts cmd, waits until ready() is true, then SIGKILLs it (no cleanup possible); returns whether it was
    still running when killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    while not ready() and proc.poll() is None and time.time() - start < timeout:
        time.sleep(0.05)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def test_merge_killed_then_rerun_equals_uninterrupted(demo_raw):
    root, env = demo_raw
    merge = [os.path.join(BIN, "nnunet_mt"), "merge", "-d", "11", "12", "-o", "610", "-n", "Killed"]
    final, partial = root / "raw/Dataset610_Killed", root / "raw/.partial.Dataset610_Killed"
    run(merge, env)
    reference = _digest(final)
    shutil.rmtree(final)

    def half_written():
        labels = partial / "labelsTr"
        return labels.is_dir() and len(os.listdir(labels)) >= 10
    assert _kill_when(merge, env, half_written), "merge finished before it could be killed"
    assert partial.is_dir() and not final.exists()  # nothing half-written under the real name
    run(merge, env)  # the rerun starts over, removing the leftover
    assert not partial.exists()
    assert _digest(final) == reference
    # rerunning a finished merge changes nothing: it refuses to overwrite without --overwrite
    again = run(merge, env, check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    assert _digest(final) == reference
    shutil.rmtree(final)


def test_score_killed_then_rerun_equals_uninterrupted(trained, tmp_path):
    root, env = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in CASES + ["D011_liverct_041", "D013_prostatemr_017"]:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    score = [os.path.join(BIN, "nnunet_mt_ood"), "score", "-i", str(inputs), "-d", "500", "-c", "3d_fullres", "-tr",
             TRAINER, "-f", "0", "-npp", "0", "-nps", "0", "-device", "cpu", "--disable_tta", "--save_probabilities"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run(score + ["-o", str(reference)], env)
    assert _kill_when(score + ["-o", str(killed)], env, lambda: len(list(killed.glob("*.nii.gz"))) >= 2)
    assert not (killed / "ood_scores.json").exists()
    run(score + ["-o", str(killed)], env)
    assert sorted(_digest(killed)) == sorted(_digest(reference))  # the same files, no leftovers
    ours, theirs = (json.loads((d / "ood_scores.json").read_text()) for d in (killed, reference))
    assert ours == theirs
    assert (killed / "ood_scores.csv").read_text() == (reference / "ood_scores.csv").read_text()
    for f in reference.glob("*.nii.gz"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(killed / f.name))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(f))))
    # rerunning a finished score rewrites the same content
    run(score + ["-o", str(killed)], env)
    assert json.loads((killed / "ood_scores.json").read_text()) == theirs
