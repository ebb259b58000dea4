"""Checks of the files our commands write and read back (fit files, score parts, ood_scores.json, nnU-Net
checkpoints): required fields, their types, finite numbers. A file that fails is named in a one-line InputError with
the field, instead of a KeyError or TypeError traceback later."""
import json
import math
from typing import Any, Dict

KINDS = {
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "numbers": lambda v: isinstance(v, list) and all(KINDS["number"](x) for x in v),
    "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "str or null": lambda v: v is None or isinstance(v, str),
}
WHAT = {"number": "a finite number", "int": "an integer", "str": "a string", "bool": "true or false",
        "dict": "an object", "list": "a list", "numbers": "a list of finite numbers", "strs": "a list of strings",
        "str or null": "a string or null"}


def check_fields(path: str, data: Any, fields: Dict[str, str], where: str = "") -> None:
    """Raises InputError naming path and the first field that is missing or not of its kind."""
    from nnunet_mt.errors import InputError
    if not isinstance(data, dict):
        raise InputError(f"{path}: {where or 'content'} is not a JSON object")
    for key, kind in fields.items():
        if key not in data:
            raise InputError(f"{path}: field '{where}{key}' missing")
        if not KINDS[kind](data[key]):
            raise InputError(f"{path}: field '{where}{key}' is not {WHAT[kind]} ({str(data[key])[:40]!r})")


def read_json(path: str, fields: Dict[str, str], what: str) -> dict:
    """The JSON object in path, checked against fields; what: the kind of file, for the message."""
    from nnunet_mt.errors import InputError
    try:
        with open(path) as f:
            data = json.load(f)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a {what} (not text)")
    except ValueError as e:  # json.JSONDecodeError, and NaN-free parsing errors
        raise InputError(f"{path}: not a {what} (invalid JSON: {e})")
    check_fields(path, data, fields)
    return data


SCORES_REPORT = {"model": "dict", "spectral_layer": "str", "methods": "dict", "cases": "list"}


def check_scores_report(path: str, report: dict) -> None:
    """ood_scores.json (or one part of it): every method with its tau, every case with a finite score and a
    flag for every method."""
    check_fields(path, report, SCORES_REPORT)
    for method, info in report["methods"].items():
        check_fields(path, info, {"tau": "number"}, where=f"methods.{method}.")
    for i, row in enumerate(report["cases"]):
        check_fields(path, row, {"case": "str", **{f"{m}_score": "number" for m in report["methods"]},
                                 **{f"{m}_is_ood": "bool" for m in report["methods"]}}, where=f"cases[{i}].")


CHECKPOINT = {"network_weights": "dict", "init_args": "dict", "trainer_name": "str"}  # what nnU-Net's predictor reads


def check_checkpoint(path: str) -> dict:
    """Refuses a truncated, corrupt or hand-edited nnU-Net checkpoint (.pth) with one line naming the file and
    the field, before nnU-Net's predictor would fail on it with a traceback; returns the checkpoint (on the CPU)."""
    import torch
    from nnunet_mt.errors import InputError
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle, zip and torch errors of broken files come in many types
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e).strip()[:80]})")
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: not an nnU-Net checkpoint (a {type(checkpoint).__name__}, not a dict)")
    check_fields(path, checkpoint, CHECKPOINT)
    check_fields(path, checkpoint["init_args"], {"configuration": "str"}, where="init_args.")
    return checkpoint
