"""nnU-Net's folder variables unset: every command that needs one says which, in one line, exit code 2
(nnU-Net itself would raise a traceback deep inside), before any work. In-process, through main(argv)."""
import pytest

from nnunet_mt.cli import main as nnunet_mt
from nnunet_mt_ood.cli import main as nnunet_mt_ood

MODEL = ["-d", "12", "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMultiTask", "-device", "cpu"]

# (command, argv, the variable left unset)
ROWS = [
    (nnunet_mt_ood, ["fit", *MODEL], "nnUNet_results"),
    (nnunet_mt_ood, ["fit", *MODEL], "nnUNet_preprocessed"),
    (nnunet_mt_ood, ["score", "-i", "{ws}/in", "-o", "{ws}/out", *MODEL], "nnUNet_results"),
    (nnunet_mt, ["evaluate", "-ref", "{ws}/in", "-pred", "{ws}/in", "-d", "12"], "nnUNet_raw"),
    (nnunet_mt, ["share-plans", "-s", "500", "-t", "12"], "nnUNet_raw"),
    (nnunet_mt, ["share-plans", "-s", "500", "-t", "12"], "nnUNet_preprocessed"),
    (nnunet_mt, ["experiment", "joint-vs-dedicated", "-d", "12", "13", "-o", "{ws}/exp"], "nnUNet_results"),
    (nnunet_mt, ["merge", "-d", "12", "-o", "600"], "nnUNet_raw"),
]


@pytest.mark.parametrize("command,argv,unset", ROWS,
                         ids=[f"{r[0].__module__.split('.')[0]}-{r[1][0]}-{r[2]}" for r in ROWS])
def test_unset_nnunet_folder_is_named(command, argv, unset, tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv(unset)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        code = command([a.format(ws=tmp_path) for a in argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and unset in errors[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
