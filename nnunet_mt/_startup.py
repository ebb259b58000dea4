"""Lets nnU-Net find our trainers with no manual step.

``site-packages/nnunet_mt_trainers.pth`` imports this module at interpreter start. It appends
``TRAINER_DIR`` to ``nnUNet_extTrainer`` (nnU-Net >= 2.8 searches those folders for trainer classes),
keeping whatever the user already set. Set ``NNUNET_MT_NO_AUTO_TRAINER_PATH=1`` to switch it off.
Only ``os`` is imported here: this runs in every Python process of the environment.
"""
import os

TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainer_path")


def register_trainer_path(environ=os.environ) -> None:
    if environ.get("NNUNET_MT_NO_AUTO_TRAINER_PATH"):
        return
    parts = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if TRAINER_DIR not in parts:
        environ["nnUNet_extTrainer"] = os.pathsep.join(parts + [TRAINER_DIR])


register_trainer_path()
