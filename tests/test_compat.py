"""The declared nnU-Net range: one place (nnunet_mt/compat.py), the same as pyproject.toml, and a warning
outside it."""
import os
import re

from nnunet_mt.compat import TESTED_NNUNET, untested_nnunet


def test_range_matches_pyproject():
    text = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    low, high = re.search(r'"nnunetv2>=([\d.]+),<([\d.]+)"', text).groups()
    assert (low, high) == TESTED_NNUNET


def test_warning_outside_the_tested_range():
    assert untested_nnunet("2.8.1") is None and untested_nnunet("2.8.0") is None
    assert untested_nnunet("2.8.2rc1") is None
    for other in ("2.7.3", "2.9.0", "3.0", "2.9.0.dev0"):
        message = untested_nnunet(other)
        assert message is not None and f"nnunetv2 {other} is installed" in message and "\n" not in message
