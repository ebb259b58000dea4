import os
import subprocess
import sys

from nnunet_mt._startup import TRAINER_DIR, register_trainer_path


def _python(code, **env):
    full = dict(os.environ)
    full.pop("nnUNet_extTrainer", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)


def test_register_appends_and_keeps_user_value():
    env = {"nnUNet_extTrainer": "/my/trainers"}
    register_trainer_path(env)
    assert env["nnUNet_extTrainer"] == "/my/trainers" + os.pathsep + TRAINER_DIR
    register_trainer_path(env)  # idempotent
    assert env["nnUNet_extTrainer"].count(TRAINER_DIR) == 1
    off = {"NNUNET_MT_NO_AUTO_TRAINER_PATH": "1"}
    register_trainer_path(off)
    assert "nnUNet_extTrainer" not in off


def test_fresh_interpreter_has_path_set_by_installed_pth_file():
    r = _python("import os; print(os.environ['nnUNet_extTrainer'])", nnUNet_extTrainer="/user/dir")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split(os.pathsep) == ["/user/dir", TRAINER_DIR]


def test_nnunet_finds_all_our_trainers_by_name():
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
            "for n in ['nnUNetTrainerMultiTask', 'nnUNetTrainerMultiTask_dropout', 'nnUNetTrainerMultiTaskCPU_finetune',"
            " 'nnUNetTrainerMultiTaskSmoke', 'nnUNetTrainerMultiTaskDropout']:\n"
            "    c = f(n); print(c.__module__, c.__name__)\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("nnunet_mt.trainer ")]
    assert len(lines) == 5  # the last: an old name, still found (results folders trained under it load)
