"""Lets nnU-Net find our trainers and our normalization scheme with no manual step.

``site-packages/nnunet_mt_trainers.pth`` imports this module at interpreter start. It
- appends ``TRAINER_DIR`` to ``nnUNet_extTrainer`` (nnU-Net >= 2.8 searches those folders for trainer
  classes), keeping whatever the user already set;
- installs an import hook that registers the paper's normalization (``nnunet_mt.normalization``) the
  moment nnU-Net's ``map_channel_name_to_normalization`` module is imported, so nnU-Net's planner,
  preprocessor and predictor find it by name in every process, worker processes included;
- installs one that lets nnU-Net's trainer lookup (``recursive_find_trainer_class_by_name``, used by
  nnUNetv2_train, nnUNetv2_predict and our commands) take our recipes (``nnUNetTrainerMultiTask*``) from
  ``nnunet_mt.trainer`` directly instead of importing every module of nnU-Net's trainer package first (about
  100 modules, 3 s per command); every other name is searched as nnU-Net does.
Set ``NNUNET_MT_NO_AUTO_TRAINER_PATH=1`` to switch both off. Only modules that every interpreter has
loaded already are imported here: this runs in every Python process of the environment.
"""
import os
import sys
from importlib.machinery import PathFinder

TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainer_path")
NORMALIZATION_MAPPING_MODULE = "nnunetv2.preprocessing.normalization.map_channel_name_to_normalization"
TRAINER_LOOKUP_MODULE = "nnunetv2.utilities.find_objects"
TRAINER_LOOKUP = "recursive_find_trainer_class_by_name"
OUR_TRAINER_PREFIX = "nnUNetTrainerMultiTask"


def register_trainer_path(environ=os.environ) -> None:
    if environ.get("NNUNET_MT_NO_AUTO_TRAINER_PATH"):
        return
    parts = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if TRAINER_DIR not in parts:
        environ["nnUNet_extTrainer"] = os.pathsep.join(parts + [TRAINER_DIR])


def _register_normalization(module) -> None:
    from nnunet_mt.normalization import register
    register(module)


class AfterImport:
    """``sys.meta_path`` entry that runs ``callback(module)`` once the module ``name`` has executed."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute, callback = spec.loader.exec_module, self.callback

        def exec_module(module):
            execute(module)
            callback(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance only
        return spec


def _shortcut_trainer_lookup(module) -> None:
    """Wraps the module's TRAINER_LOOKUP: our recipe names from nnunet_mt.trainer, the rest searched as before
    (the original stays reachable as ``.nnunet_search``)."""
    search = getattr(module, TRAINER_LOOKUP, None)
    if search is None or hasattr(search, "nnunet_search"):
        return

    def find_trainer(trainer_name: str):
        if trainer_name.startswith(OUR_TRAINER_PREFIX):
            from nnunet_mt.trainer import trainer_variant
            try:
                return trainer_variant(trainer_name)
            except AttributeError:  # not a name of ours after all: nnU-Net's search and its error
                pass
        return search(trainer_name)
    find_trainer.nnunet_search = search
    setattr(module, TRAINER_LOOKUP, find_trainer)


def _after_import(name: str, callback, environ=os.environ) -> None:
    """Runs callback(module) once nnU-Net's module ``name`` is imported (at once if it is already)."""
    if environ.get("NNUNET_MT_NO_AUTO_TRAINER_PATH"):
        return
    if name in sys.modules:  # imported before us (e.g. in an interactive session)
        callback(sys.modules[name])
    elif not any(isinstance(f, AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, AfterImport(name, callback))


def install_normalization_hook(environ=os.environ) -> None:
    _after_import(NORMALIZATION_MAPPING_MODULE, _register_normalization, environ)


def install_trainer_lookup_hook(environ=os.environ) -> None:
    _after_import(TRAINER_LOOKUP_MODULE, _shortcut_trainer_lookup, environ)


register_trainer_path()
install_normalization_hook()
install_trainer_lookup_hook()
