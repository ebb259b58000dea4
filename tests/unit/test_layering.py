"""The packages' import layering, read from the source with ast (no import needed):
- only four modules import nnunetv2 (the rest reach nnU-Net through nnunet_mt/nnunet_glue.py);
- nnunet_mt_ood builds on nnunet_mt's core, and that core (trainer included) never imports nnunet_mt_ood:
  the trainer runs the end-of-training fit as the `nnunet_mt_ood fit` command. Only the experiments, which
  orchestrate both, read nnunet_mt_ood's method registry."""
import ast
import os

from conftest import REPO as ROOT

NNUNET_IMPORTERS = {"nnunet_mt/trainer.py", "nnunet_mt/normalization.py", "nnunet_mt/nnunet_glue.py",
                    "nnunet_mt_ood/predictor.py"}


def _imports():
    """{module path: set of imported top-level dotted names} for every module of both packages."""
    out = {}
    for package in ("nnunet_mt", "nnunet_mt_ood"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                names = set()
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, ast.Import):
                        names.update(a.name for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names.add(node.module)
                out[os.path.relpath(path, ROOT).replace(os.sep, "/")] = names
    return out


def test_at_most_six_modules_import_nnunetv2():
    importers = {m for m, names in _imports().items() if any(n.split(".")[0] == "nnunetv2" for n in names)}
    assert importers == NNUNET_IMPORTERS and len(importers) <= 6


def test_nnunet_mt_core_never_imports_nnunet_mt_ood():
    offenders = {m for m, names in _imports().items()
                 if m.startswith("nnunet_mt/") and not m.startswith("nnunet_mt/experiments/")
                 and any(n.split(".")[0] == "nnunet_mt_ood" for n in names)}
    assert not offenders


def test_nnunet_mt_ood_never_imports_the_trainer_or_the_experiments():
    offenders = {m for m, names in _imports().items() if m.startswith("nnunet_mt_ood/")
                 and any(n.startswith(("nnunet_mt.trainer", "nnunet_mt.experiments", "nnunet_mt.cli")) for n in names)}
    assert not offenders
