"""Bad numbers on every command line, refused when the arguments are parsed: exit code 2, one line naming
the argument, nothing written. In-process (the commands' main(argv)), so the matrix is quick; the
subprocess rows of tests/cli/test_bad_inputs.py cover exit codes and tracebacks of the real console scripts."""
import pytest

from nnunet_mt.cli import main as nnunet_mt
from nnunet_mt_ood.cli import main as nnunet_mt_ood

MODEL = ["-d", "12", "-c", "3d_fullres", "-f", "0", "-device", "cpu"]
JVD = ["experiment", "joint-vs-dedicated", "-d", "12", "13", "-o", "{ws}/exp"]
OOD_EXP = ["experiment", "ood", "--train", "12", "--ood", "13", "-o", "{ws}/exp"]
SCORE = ["score", "-i", "{ws}/in", "-o", "{ws}/out", *MODEL]
EVALUATE = ["evaluate", "-ref", "{ws}/in", "-pred", "{ws}/in"]

# (command, argv, the argument the error line names, what it must say)
ROWS = [
    (nnunet_mt, ["demo-data", "-o", "{ws}/demo", "--seed", "-1"], "--seed", "outside"),
    (nnunet_mt, ["demo-data", "-o", "{ws}/demo", "-d", "1000"], "-d", "outside [1, 999]"),
    (nnunet_mt, ["demo-data", "-o", "{ws}/demo", "-d", "12.5"], "-d", "not an integer"),
    (nnunet_mt, ["demo-data", "-o", "{ws}/demo", "--n_test", "0"], "--n_test", "outside"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "0"], "-o", "outside [1, 999]"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "600", "--alpha", "nan"], "--alpha", "not a finite number"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "600", "--alpha", "inf"], "--alpha", "not a finite number"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "600", "--alpha", "-0.5"], "--alpha", "outside [0, 1]"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "600", "--alpha", "half"], "--alpha", "not a number"),
    (nnunet_mt, EVALUATE + ["--n_bins", "0"], "--n_bins", "outside"),
    (nnunet_mt, EVALUATE + ["-np", "0"], "-np", "outside"),
    (nnunet_mt, JVD + ["--seed", "-3"], "--seed", "outside"),
    (nnunet_mt, JVD + ["--budget", "0"], "--budget", "outside"),
    (nnunet_mt, JVD + ["--id", "1000"], "--id", "outside [1, 999]"),
    (nnunet_mt, JVD + ["--id", "999"], "--id 999", "up to id 1001"),  # derived ids: the dedicated datasets' too
    (nnunet_mt, JVD + ["--parts", "0"], "--parts", "outside"),
    (nnunet_mt, JVD + ["-npp", "-1"], "-npp", "outside"),
    (nnunet_mt, OOD_EXP + ["--mc_samples", "0"], "--mc_samples", "outside"),
    (nnunet_mt_ood, ["fit", *MODEL, "-C", "nan"], "-C", "not a finite number"),
    (nnunet_mt_ood, ["fit", *MODEL, "-C", "-1"], "-C", "outside [0, inf]"),
    (nnunet_mt_ood, ["fit", *MODEL, "--mc_samples", "0"], "--mc_samples", "outside"),
    (nnunet_mt_ood, ["fit", *MODEL, "-step_size", "0"], "-step_size", "outside (0, 1]"),
    (nnunet_mt_ood, ["fit", *MODEL, "-step_size", "1.5"], "-step_size", "outside (0, 1]"),
    (nnunet_mt_ood, ["fit", *MODEL, "-num_parts", "0"], "-num_parts", "outside"),
    (nnunet_mt_ood, SCORE + ["-C", "inf"], "-C", "not a finite number"),
    (nnunet_mt_ood, SCORE + ["-step_size", "nan"], "-step_size", "not a finite number"),
    (nnunet_mt_ood, SCORE + ["-part_id", "-1"], "-part_id", "outside"),
    (nnunet_mt_ood, SCORE + ["-npp", "-2"], "-npp", "outside"),
    (nnunet_mt_ood, SCORE + ["--window_order", "fast"], "--window_order", "invalid choice"),
    (nnunet_mt_ood, ["fit", *MODEL, "--window_order", "rows"], "--window_order", "invalid choice"),
]


@pytest.mark.parametrize("command,argv,argument,says", ROWS,
                         ids=[f"{r[0].__module__.split('.')[0]}-{r[1][0]}-{r[2]}-{r[1][-1]}" for r in ROWS])
def test_bad_number_refused_before_any_work(command, argv, argument, says, tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    for var, sub in (("nnUNet_raw", "in"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        code = command([a.format(ws=tmp_path) for a in argv])
    except SystemExit as e:  # argparse's refusal
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and argument in errors[0] and says in errors[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
