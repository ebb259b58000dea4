"""A plain nnU-Net model at a tiny budget: nnU-Net's own nnUNetTrainer (its network, augmentation, training
loop and validation, as nnUNetv2_train runs them) for 1 epoch of 2 iterations on the CPU. The final
validation runs without test-time mirroring (8x fewer passes); the checkpoint, written before it, keeps
nnU-Net's mirroring axes.

    python plain_nnunet_model.py DATASET FOLD
"""
import sys

import torch
from nnunetv2.run.run_training import get_trainer_from_args

if __name__ == "__main__":
    dataset, fold = sys.argv[1], int(sys.argv[2])
    trainer = get_trainer_from_args(dataset, "3d_fullres", fold, "nnUNetTrainer", "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.run_training()
    trainer.inference_allowed_mirroring_axes = None
    trainer.perform_actual_validation(False)
