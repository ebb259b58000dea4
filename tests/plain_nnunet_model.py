"""A plain nnU-Net model at a tiny budget: nnU-Net's own nnUNetTrainer (its network, augmentation, training
loop and validation, as nnUNetv2_train runs them) for 1 epoch of 2 iterations on the CPU. The final
validation runs without test-time mirroring (8x fewer passes); the checkpoint, written before it, keeps
nnU-Net's mirroring axes.

    python plain_nnunet_model.py DATASET FOLD     (the test session calls train_plain_model in its process)
"""
import sys

import torch


def train_plain_model(dataset: str, fold: int) -> None:
    """nnUNetTrainer on `dataset`, fold `fold`, 1 epoch of 2 iterations, validated without mirroring (needs
    $nnUNet_raw/_preprocessed/_results set and the dataset preprocessed)."""
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(dataset, "3d_fullres", fold, "nnUNetTrainer", "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.run_training()
    trainer.inference_allowed_mirroring_axes = None
    trainer.perform_actual_validation(False)


if __name__ == "__main__":
    train_plain_model(sys.argv[1], int(sys.argv[2]))
