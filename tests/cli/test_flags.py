"""One flag style, nnU-Net's: single-dash short flags, underscore long flags, in every command's --help; the
spellings of the previous release still parse, to the same value, and stay out of --help."""
import argparse
import re

import pytest

from nnunet_mt.arguments import add_renamed

RENAMED = [  # (command line with the new spelling, the same with the old one)
    (["evaluate", "-ref", "r", "-pred", "p", "--n_bins", "7"],
     ["evaluate", "-ref", "r", "-pred", "p", "--n-bins", "7"]),
    (["calibrate", "-d", "1", "-f", "0", "--per_source"], ["calibrate", "-d", "1", "-f", "0", "--per-source"]),
    (["experiment", "ood", "--train", "1", "--ood", "2", "--method", "msp", "--print_jobs", "--tables_only"],
     ["experiment", "ood", "--train", "1", "--ood", "2", "--methods", "msp", "--print-jobs", "--tables-only"]),
]
RENAMED_OOD = [
    (["score", "-i", "i", "-o", "o", "-d", "1", "-c", "3d_fullres", "-f", "0", "--no_calibration",
      "--global_temperature"],
     ["score", "-i", "i", "-o", "o", "-d", "1", "-c", "3d_fullres", "-f", "0", "--no-calibration",
      "--global-temperature"]),
    (["evaluate", "a.json", "--ood", "x*", "--failure_dice", "0.3"],
     ["evaluate", "a.json", "--ood", "x*", "--failure-dice", "0.3"]),
]


def _parsers():
    from nnunet_mt.cli import build_parser as mt
    from nnunet_mt_ood.cli import build_parser as ood
    return {"nnunet_mt": mt(), "nnunet_mt_ood": ood()}


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_help_shows_nnunets_flag_style():
    for prog, parser in _parsers().items():
        for name, sub in _subparsers(parser):
            shown = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", sub.format_help().split("options:")[-1])
            flags = [f for f in shown if f.startswith("--")]
            assert flags, (prog, name)
            bad = [f for f in flags if not re.fullmatch(r"--[a-z0-9]+(_[a-z0-9]+)*", f)]
            assert not bad, f"{prog} {name}: {bad}"


@pytest.mark.parametrize("new, old", RENAMED + RENAMED_OOD)
def test_old_spellings_parse_to_the_same_values_and_are_hidden(new, old):
    parser = _parsers()["nnunet_mt_ood" if (new, old) in RENAMED_OOD else "nnunet_mt"]
    parsed_new, parsed_old = vars(parser.parse_args(new)), vars(parser.parse_args(old))
    assert {k: v for k, v in parsed_new.items() if k != "func"} == {k: v for k, v in parsed_old.items() if k != "func"}
    command = dict(_subparsers(parser))[" ".join(new[:2]) if new[0] == "experiment" else new[0]]
    text = command.format_help()
    for flag in old:
        if flag.startswith("--") and flag not in new:
            assert flag not in text


def test_add_renamed_defaults_come_from_the_new_flag():
    parser = argparse.ArgumentParser()
    add_renamed(parser, "--n_bins", "--n-bins", type=int, default=10, help="bins")
    add_renamed(parser, "--plots_only", "--plots-only", action="store_true")
    assert vars(parser.parse_args([])) == {"n_bins": 10, "plots_only": False}
    assert vars(parser.parse_args(["--n-bins", "3", "--plots-only"])) == {"n_bins": 3, "plots_only": True}
    assert "--n-bins" not in parser.format_help() and "--n_bins" in parser.format_help()
