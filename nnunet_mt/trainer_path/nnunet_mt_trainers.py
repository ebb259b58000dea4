# nnU-Net imports every module of the folders in nnUNet_extTrainer by its bare name and looks for the
# requested class there. This module only re-exports our trainers from their real home, so pickling,
# DDP spawning and checkpoints all refer to ``nnunet_mt.trainer``.
from nnunet_mt.trainer import *  # noqa: F401,F403
from nnunet_mt.trainer import __getattr__  # noqa: F401  (budget and fine-tune variants, made by name)
