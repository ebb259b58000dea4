"""Environment variables that change what our code does inside nnU-Net's own commands (nnU-Net's style:
``nnUNet_...``), named here so the commands that set them and the code that reads them agree.

- ``nnUNet_mt_fit_after_training=0`` in ``nnUNetv2_train``'s environment: no spectral OOD fit at the end of
  training (the model is the same; ``nnunet_mt_ood fit`` does the fit later). The experiments set it.
- ``nnUNet_mt_final_validation=0`` in ``nnUNetv2_train``'s environment: no final validation of the fold after
  training (nnU-Net's prediction and Dice of the validation cases; the model is the same, and
  ``nnUNetv2_train ... --val`` runs it later). The experiments set it: their tables use the test cases.
"""
FIT_AFTER_TRAINING_ENV = "nnUNet_mt_fit_after_training"
FINAL_VALIDATION_ENV = "nnUNet_mt_final_validation"
