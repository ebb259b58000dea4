"""nnunet_mt_ood: out-of-distribution detection for nnU-Net v2 models (spectral signatures)."""
