import os
import shutil
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)  # the venv's console scripts (nnUNetv2_*, nnunet_mt)
TRAINER = "nnUNetTrainerMultiTaskSmoke"
CASES = ["D011_liverct_040", "D012_corticalplatemr_008", "D013_prostatemr_016"]  # CT, MR, anisotropic MR


def run(cmd, env, check=True, timeout=900):
    """Runs a real command line; returns CompletedProcess with text output."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def copy_dataset(root, name, new_id):
    """A copy of raw dataset `name` as Dataset<new_id>_Broken, to be broken by a test."""
    dst = root / "raw" / f"Dataset{new_id}_Broken"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(root / "raw" / name, dst)
    return dst


def assert_merge_refused(env, root, args, *needles):
    """`nnunet_mt merge ARGS` exits 2 with one line containing every needle, and writes nothing."""
    listing = sorted(os.listdir(root / "raw"))
    r = run([os.path.join(BIN, "nnunet_mt"), "merge", *args], env, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert sorted(os.listdir(root / "raw")) == listing  # nothing written, not even a partial folder


def nnunet_folders(root, monkeypatch):
    """Empty raw/pre/res folders under root as $nnUNet_raw/_preprocessed/_results (for in-process runs)."""
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (root / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))


def assert_refused_in_process(main, argv, needles, root, capsys):
    """main(argv) exits 2 with one error line containing every needle, no traceback, and leaves every file
    under root as it was (nothing written, nothing changed)."""
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def nnunet_env(root):
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "res"), nnUNet_def_n_proc="1",
               PATH=BIN + os.pathsep + env.get("PATH", ""))
    env.pop("nnUNet_n_proc_DA", None)
    return env


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory):
    """Demo datasets in a fresh nnUNet_raw; returns (root, env)."""
    root = tmp_path_factory.mktemp("nnunet")
    env = nnunet_env(root)
    run([os.path.join(BIN, "nnunet_mt"), "demo-data", "--seed", "0"], env)
    return root, env


@pytest.fixture(scope="session")
def preprocessed(demo_raw):
    """demo-data -> merge -> nnUNetv2_plan_and_preprocess, through the real commands."""
    root, env = demo_raw
    run([os.path.join(BIN, "nnunet_mt"), "merge", "-d", "11", "12", "13:1,2", "-o", "500"], env)
    run([os.path.join(BIN, "nnUNetv2_plan_and_preprocess"), "-d", "500", "-c", "3d_fullres", "-np", "1"], env)
    return root, env


@pytest.fixture(scope="session")
def trained(preprocessed):
    """... -> nnUNetv2_train (fold 0, 2 epochs), through the real commands."""
    root, env = preprocessed
    train_env = dict(env, nnUNet_n_proc_DA="0")
    run([os.path.join(BIN, "nnUNetv2_train"), "500", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], train_env)
    return root, env


@pytest.fixture(scope="session")
def predicted(trained, tmp_path_factory):
    """nnUNetv2_predict (with --save_probabilities) on a CT, an MR and an anisotropic MR test case."""
    root, env = trained
    inputs = tmp_path_factory.mktemp("inputs")
    for case in CASES:
        os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
    out = root / "pred"
    run([os.path.join(BIN, "nnUNetv2_predict"), "-i", str(inputs), "-o", str(out), "-d", "500", "-c", "3d_fullres",
         "-f", "0", "-tr", TRAINER, "-npp", "0", "-nps", "0", "-device", "cpu", "--save_probabilities"], env)
    return root, out
