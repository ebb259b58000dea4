"""nnunet_mt_ood: out-of-distribution detection for nnU-Net v2 models (spectral signatures)."""
from nnunet_mt_ood.detector import SpectralOODDetector
from nnunet_mt_ood.signatures import spectral_signature

__all__ = ["SpectralOODDetector", "spectral_signature"]
