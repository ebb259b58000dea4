"""The paper's normalization as an nnU-Net normalization scheme, found by nnU-Net's own lookups.

nnU-Net maps a dataset.json channel name to a scheme (``get_normalization_scheme``), writes the scheme's
class name into the plans, and later finds the class by name among the modules of its own
``nnunetv2/preprocessing/normalization`` folder (``recursive_find_python_class``), in every process,
workers included. ``nnunet_mt._startup`` (run at every interpreter start) calls ``register`` right after
nnU-Net's ``map_channel_name_to_normalization`` module is first imported, which adds our channel name to
nnU-Net's mapping and our class to that module, where both lookups find it. Mirrors nnunetv2 2.8.1.
"""
import numpy as np
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ImageNormalization

from nnunet_mt.intensity import PAPER_CHANNEL_NAME, paper_normalize


class PaperCTorMRNormalization(ImageNormalization):
    """Karimi & Gholipour: CT clipped [-1000, 1000] HU -> [0, 1]; MR divided by its std; decided per image."""
    leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true = False  # planner: never a nonzero mask

    def run(self, image: np.ndarray, seg: np.ndarray = None) -> np.ndarray:
        return paper_normalize(image).astype(self.target_dtype, copy=False)


def register(mapping_module) -> None:
    """Adds the scheme to nnU-Net's ``map_channel_name_to_normalization`` module (idempotent)."""
    mapping_module.channel_name_to_normalization_mapping[PAPER_CHANNEL_NAME.casefold()] = PaperCTorMRNormalization
    setattr(mapping_module, PaperCTorMRNormalization.__name__, PaperCTorMRNormalization)
