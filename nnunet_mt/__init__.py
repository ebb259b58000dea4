"""nnunet-mt: multi-task training for nnU-Net v2 (Karimi & Gholipour).

Kept import-light on purpose: ``nnunet_mt._startup`` runs at every interpreter start.
"""
__version__ = "0.1.0"
