"""argparse types that refuse a bad number when the command line is parsed, before any work: argparse
prints one line, ``<prog>: error: argument -C: <why>``, and exits with code 2."""
import argparse
import math
from typing import Callable, Optional


def number(kind: type = float, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False) -> Callable[[str], float]:
    """A type for ``add_argument(type=...)``: a finite int or float within [low, high] ((low, high] if low_open)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low) or high is not None and value > high:
            left = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is outside {left}{'-inf' if low is None else low}, "
                                             f"{'inf' if high is None else high}]")
        return value
    parse.__name__ = kind.__name__
    return parse


DATASET_ID = number(int, 1, 999)  # nnU-Net's DatasetXXX ids
COUNT = number(int, 1)
PROCESSES = number(int, 0)
SEED = number(int, 0, 2 ** 31 - 1)


def add_renamed(parser: argparse.ArgumentParser, flag: str, old: str, **kwargs) -> argparse.Action:
    """``parser.add_argument(flag, **kwargs)`` plus ``old``, the spelling of an earlier release: same destination,
    hidden from --help, kept for one release (nnU-Net's style: single-dash short flags, underscore long flags)."""
    action = parser.add_argument(flag, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k not in ("required", "default", "help", "metavar")}
    parser.add_argument(old, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **hidden)
    return action


def add_subject_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--subject_pattern / --subject_map (nnunet_mt.subjects.SubjectRule): which cases are one subject; `what`
    says what the command does with subjects."""
    parser.add_argument("--subject_pattern", metavar="REGEX", help="cases whose ids give the same match (first "
                        "group, or the whole match) are one subject, e.g. '(pat\\d+)' makes pat0004 and pat0004m "
                        f"one: {what} (default: each case its own subject)")
    parser.add_argument("--subject_map", metavar="FILE", help="subjects from a JSON object or two-column CSV/TSV "
                        "(case id, subject); cases not listed are their own subject")
