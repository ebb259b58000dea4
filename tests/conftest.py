import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest

# Two test workers on two cores: nnU-Net sets torch to one thread per core in every training and prediction,
# so two such processes share each core; OpenMP threads that wait sleep instead of spinning on a busy core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout (tests/ sits in it)
BIN = os.path.dirname(sys.executable)  # the venv's console scripts (nnUNetv2_*, nnunet_mt)
TRAINER = "nnUNetTrainerMultiTaskSmoke"
CASES = ["D011_liverct_040", "D012_corticalplatemr_008", "D013_prostatemr_016"]  # CT, MR, anisotropic MR


# The slowest files first, longest first: pytest-xdist hands whole files to its workers in this order
# (`--dist loadfile --no-loadscope-reorder` in the Makefile), so the two workers finish close together.
SLOWEST_FIRST = ["test_experiments.py", "test_gpu_check.py", "test_calibration_end_to_end.py",
                 "test_training_schedule.py", "test_ood_baselines_end_to_end.py", "test_ood_end_to_end.py",
                 "test_gpu_paths.py", "test_scale_out.py", "test_ddp.py", "test_interruptions.py"]
# (ordered by measured time instead, 2026-12-06: 973 s instead of 890 s; where each session stage gets built
# matters as much as each file's own time)


# A full run writes about 350 MB of models and predictions under the temporary folder (two workers, each with
# its copy of the session model). With less room than this, stop at once with one clear line instead of
# letting every test fail on a half-written file.
MIN_FREE_BYTES = 1 << 30


def pytest_sessionstart(session):
    import tempfile
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        pytest.exit(f"{folder}: only {free / 2**20:.0f} MB free; the test suite needs at least "
                    f"{MIN_FREE_BYTES / 2**20:.0f} MB there (set TMPDIR to a folder with more room)", returncode=1)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keeps its order


# Our own commands, run by run() in the test process: the console script's main(argv) with the command's
# environment, its output captured (the same code as the console script, without the 5-10 s of importing torch
# and nnU-Net that every new interpreter pays). A test that needs a separate interpreter passes process=True.
# nnU-Net's console scripts run the same way: the entry point function of the installed nnunetv2 with sys.argv
# set, as the console script calls it (nnunetv2 2.8 reads $nnUNet_raw/_preprocessed/_results when it uses them,
# not at import).
from nnunet_mt.experiments.jobs import OUR_COMMANDS  # noqa: E402 (the experiments' runner's own table)


def _nnunet_console_scripts():
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group="console_scripts") if ep.value.startswith("nnunetv2.")}


NNUNET_COMMANDS = _nnunet_console_scripts()


def _main_of(name):
    """A function of argv that runs console script `name` as its wrapper would (exit code or None)."""
    import importlib
    if name in OUR_COMMANDS:
        return importlib.import_module(OUR_COMMANDS[name]).main
    entry = NNUNET_COMMANDS[name].load()

    def main(argv):
        saved = sys.argv
        sys.argv = [name] + argv
        try:
            return entry()
        finally:
            sys.argv = saved
    return main


@contextlib.contextmanager
def environment(env):
    """This process's environment is exactly `env` inside the block (restored after, with torch's thread count:
    nnU-Net's training sets one thread per core on the CPU)."""
    import torch
    saved, threads = dict(os.environ), torch.get_num_threads()
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        torch.set_num_threads(threads)


def _run_in_process(cmd, env):
    import io
    import traceback
    main = _main_of(os.path.basename(cmd[0]))
    out, err = io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(cmd[1:]))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:  # what the interpreter would print before exiting with 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(cmd, code or 0, out.getvalue(), err.getvalue())


def run(cmd, env, check=True, timeout=900, process=False):
    """Runs a real command line with environment env; returns CompletedProcess with text output. Our commands
    and nnU-Net's run in this process (OUR_COMMANDS, NNUNET_COMMANDS) unless process=True; every other program
    in a subprocess."""
    if not process and os.path.basename(cmd[0]) in {**OUR_COMMANDS, **NNUNET_COMMANDS}:
        result = _run_in_process(cmd, env)
    else:
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


def assert_refused(cmd, env, *needles):
    """The command line exits with code 2 and no traceback; its one error line (`<prog>: error: ...`, the last
    line of its stderr: a progress bar may come before it) contains every needle. Returns the result."""
    r = run(cmd, env, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0] and all(n in errors[0] for n in needles), r.stderr
    return r


def assert_merge_refused(env, root, args, *needles):
    """`nnunet_mt merge ARGS` is refused (assert_refused) with nothing else on stderr, and writes nothing."""
    listing = sorted(os.listdir(root / "raw"))
    r = assert_refused([os.path.join(BIN, "nnunet_mt"), "merge", *args], env, *needles)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(os.listdir(root / "raw")) == listing  # nothing written, not even a partial folder


def nnunet_folders(root, monkeypatch):
    """Empty raw/pre/res folders under root as $nnUNet_raw/_preprocessed/_results (for in-process runs)."""
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (root / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))


def run_main(main, argv, capsys):
    """(exit code, stdout, stderr) of a command's main(argv) run in this process."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused_in_process(main, argv, needles, root, capsys):
    """main(argv) exits 2 with one error line containing every needle, no traceback, and leaves every file
    under root as it was (nothing written, nothing changed)."""
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    code, _, err = run_main(main, argv, capsys)
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


# The session's demo model is built once per test run, by the real commands, in a shared folder. Under
# pytest-xdist (`make test` runs two workers) the first worker that needs a stage builds it under a file
# lock and each worker then works on its own copy, so tests that add to or change the folders stay
# independent, as they are in a one-process run (where the shared folder is the worker's own).
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# each stage and the stage it builds on: demo data; merged + preprocessed; trained; predicted; and a plain
# nnU-Net model (nnU-Net's own nnUNetTrainer, tiny budget) on the cortical-plate demo dataset alone
STAGES = {"raw": None, "pre": "raw", "res": "pre", "pred": "res", "plain": "raw"}
PLAIN_MODEL = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def _build_stage(stage, root, env):
    if stage == "raw":
        run([os.path.join(BIN, "nnunet_mt"), "demo-data", "--seed", "0"], env, process=True)
    elif stage == "pre":
        run([os.path.join(BIN, "nnunet_mt"), "merge", "-d", "11", "12", "13:1,2", "-o", "500"], env, process=True)
        run([os.path.join(BIN, "nnUNetv2_plan_and_preprocess"), "-d", "500", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
            env)
    elif stage == "res":
        # no final validation: no test reads it (calibrate predicts the validation cases itself)
        run([os.path.join(BIN, "nnUNetv2_train"), "500", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
            dict(env, nnUNet_n_proc_DA="0", nnUNet_mt_final_validation="0"))
    elif stage == "plain":
        run([os.path.join(BIN, "nnUNetv2_plan_and_preprocess"), "-d", "12", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
            env)
        from plain_nnunet_model import train_plain_model
        with environment(dict(env, nnUNet_n_proc_DA="0")), open(os.devnull, "w") as sink, \
                contextlib.redirect_stdout(sink):
            train_plain_model("12", 0)
    else:
        inputs = root / "pred_inputs"
        inputs.mkdir()
        for case in CASES:
            os.link(root / "raw/Dataset500_MultiTask/imagesTs" / f"{case}_0000.nii.gz", inputs / f"{case}_0000.nii.gz")
        run([os.path.join(BIN, "nnUNetv2_predict"), "-i", str(inputs), "-o", str(root / "pred"), "-d", "500",
             "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-npp", "0", "-nps", "0", "-device", "cpu",
             "--save_probabilities"], env)


def _listing(root):
    """Every file below root, relative (a stage also adds files inside folders an earlier stage made: training
    writes pre/Dataset500_MultiTask/splits_final.json)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _stage(factory, local_root, stage):
    """Builds the shared folder up to `stage` (once per run), then copies what each of those stages made
    into this worker's root, unless that root is the shared folder."""
    import filelock  # a dependency of torch
    base = factory.getbasetemp()
    shared = (base.parent if WORKER else base) / "shared_nnunet"
    shared.mkdir(exist_ok=True)
    chain = [stage]
    while STAGES[chain[-1]]:
        chain.append(STAGES[chain[-1]])
    with filelock.FileLock(str(shared) + ".lock"):
        for name in reversed(chain):
            marker = shared / f".{name}_built"
            if not marker.exists():
                before = _listing(shared)
                _build_stage(name, shared, nnunet_env(shared))
                marker.write_text(json.dumps(sorted(_listing(shared) - before)))
        made = json.loads((shared / f".{stage}_built").read_text())
    if local_root != shared:
        for rel in made:
            (local_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(shared / rel, local_root / rel)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("nnunet") if WORKER else base / "shared_nnunet"
    root.mkdir(exist_ok=True)
    return root


def _stage_fixture(stage, upstream, doc):
    """A session fixture that builds `stage` (once per run) into the root of fixture `upstream`; (root, env)."""
    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory, request):
        root, env = request.getfixturevalue(upstream)
        _stage(tmp_path_factory, root, stage)
        return root, env
    fixture.__doc__ = doc
    return fixture


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory, session_root):
    """Demo datasets in a fresh nnUNet_raw; returns (root, env)."""
    _stage(tmp_path_factory, session_root, "raw")
    return session_root, nnunet_env(session_root)


preprocessed = _stage_fixture("pre", "demo_raw", "demo-data -> merge -> nnUNetv2_plan_and_preprocess, through the "
                              "real commands.")
trained = _stage_fixture("res", "preprocessed", "... -> nnUNetv2_train (fold 0, 2 epochs), through the real commands.")
plain_model = _stage_fixture("plain", "demo_raw", "nnUNetv2_plan_and_preprocess -d 12, then nnU-Net's own "
                             "nnUNetTrainer for 1 epoch of 2 iterations with its validation "
                             "(tests/plain_nnunet_model.py): a plain nnU-Net model, in "
                             "res/Dataset012_CorticalPlateMR/PLAIN_MODEL.")


predicted_stage = _stage_fixture("pred", "trained", "... -> nnUNetv2_predict (with --save_probabilities) on a CT, "
                                 "an MR and an anisotropic MR test case.")


@pytest.fixture(scope="session")
def predicted(predicted_stage):
    """(root, the folder nnUNetv2_predict wrote) of the predicted stage."""
    return predicted_stage[0], predicted_stage[0] / "pred"
