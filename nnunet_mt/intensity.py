"""The paper's intensity normalization (Karimi & Gholipour, sec. III-A), as pure numpy.

- CT: Hounsfield units clipped to [-1000, 1000] and mapped linearly to [0, 1].
- MR: the image divided by the standard deviation of its voxel intensities (no mean subtraction).

Which branch an image takes is decided from the image alone, so prediction needs nothing but the file:
raw CT in HU holds air (about -1000 HU), lung (-900 to -500) or scanner padding (-1024 to -3024) below
``CT_BELOW_HU``; fat (about -100 HU) and soft tissue lie above it, and MR intensities (magnitude images
>= 0, or z-scored images, a few units below 0 at most) never reach it. ``nnunet_mt merge`` checks this
rule against every image of every source before it writes anything.
"""
import numpy as np

PAPER_CHANNEL_NAME = "nnunet_mt_ct_or_mr"  # dataset.json channel name that selects this scheme in nnU-Net
CT_BELOW_HU = -200.0  # an image whose minimum lies below this is CT in HU
CT_WINDOW_HU = (-1000.0, 1000.0)  # mapped to [0, 1]
MR_MIN_STD = 1e-8  # a constant MR image is left unscaled instead of divided by 0


def looks_like_ct(minimum: float) -> bool:
    """True when an image with this minimum intensity is taken as CT in HU (see the module docstring)."""
    return float(minimum) < CT_BELOW_HU


def normalize_ct(image: np.ndarray) -> np.ndarray:
    """HU in [-1000, 1000] -> [0, 1], clipped outside; float32, same shape."""
    low, high = CT_WINDOW_HU
    out = np.clip(image, low, high).astype(np.float32, copy=False)
    out -= low
    out /= high - low
    return out


def normalize_mr(image: np.ndarray) -> np.ndarray:
    """image / std(image) (std over all voxels, float64 accumulation); float32, same shape."""
    std = float(np.std(image, dtype=np.float64))
    return (image / max(std, MR_MIN_STD)).astype(np.float32, copy=False)


def paper_normalize(image: np.ndarray) -> np.ndarray:
    """One channel of one image, CT or MR decided by ``looks_like_ct``; float32, same shape."""
    return normalize_ct(image) if looks_like_ct(np.min(image)) else normalize_mr(image)
