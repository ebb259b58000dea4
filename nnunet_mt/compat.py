"""The nnU-Net releases our overrides are tested against (the contract tests), and a one-line warning
when another one is installed. The range equals pyproject.toml's nnunetv2 requirement (tested)."""
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

TESTED_NNUNET = ("2.8", "2.9")  # >= first, < second
_warned = False


def _release(text: str) -> tuple:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():  # 2.8.1rc1, 2.9.0.dev0: stop at the first non-numeric part
            break
    return tuple(parts)


def untested_nnunet(installed: Optional[str] = None) -> Optional[str]:
    """The warning text when the installed (or given) nnunetv2 version lies outside TESTED_NNUNET, else None."""
    if installed is None:
        try:
            installed = version("nnunetv2")
        except PackageNotFoundError:
            return None
    low, high = (_release(v) for v in TESTED_NNUNET)
    if low <= _release(installed) < high:
        return None
    return (f"nnunet-mt is tested with nnunetv2 >= {TESTED_NNUNET[0]}, < {TESTED_NNUNET[1]}; nnunetv2 {installed} is "
            f"installed: the trainer and predictor overrides may not match it (see documentation/nnunet_seam.md)")


def warn_if_untested_nnunet() -> None:
    global _warned
    message = untested_nnunet()
    if message and not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=2)
