"""Which window order each command hands nnU-Net's predictor: fit defaults to memory_saving_order (it writes
no segmentations), and --window_order overrides it. In-process, with the predictor replaced by a recorder."""
import pytest

from conftest import nnunet_folders, run_main
from nnunet_mt.errors import InputError


@pytest.mark.parametrize("flag,expected", [([], "memory"), (["--window_order", "nnunet"], "nnunet"),
                                           (["--window_order", "memory"], "memory")])
def test_fit_hands_the_window_order_to_the_predictor(flag, expected, tmp_path, monkeypatch, capsys):
    import nnunet_mt_ood.cli as cli
    import nnunet_mt_ood.fit_command as fit_command
    nnunet_folders(tmp_path, monkeypatch)
    model = tmp_path / "res" / "Dataset012_CorticalPlateMR" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (tmp_path / "pre" / "Dataset012_CorticalPlateMR").mkdir(parents=True)
    seen = []

    def recorder(*args, window_order="nnunet", **kwargs):
        seen.append(window_order)
        raise InputError("recorded")
    monkeypatch.setattr(fit_command, "make_predictor", recorder)
    code, _, err = run_main(cli.main, ["fit", "-d", "12", "-c", "3d_fullres", "-f", "0", "-device", "cpu", *flag],
                            capsys)
    assert code == 2 and "recorded" in err, err
    assert seen == [expected]
