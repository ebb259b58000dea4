"""Spectral signature of a feature map (Karimi & Gholipour, sec. III-D).

The singular values of the (voxels x channels) feature matrix F equal the square roots of the
eigenvalues of the channel Gram matrix F^T F, which is how this module computes them: the Gram matrix
can be accumulated window by window without holding F.
"""
import numpy as np

# Singular values below SINGULAR_VALUE_FLOOR * (largest singular value) are raised to that floor before
# the log, so an all-zero channel gives a finite signature (about -23 before normalization).
SINGULAR_VALUE_FLOOR = 1e-10


def gram_matrix(features) -> np.ndarray:
    """F^T F (channels x channels, float64) of features shaped (channels, *spatial), numpy or torch."""
    f = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
    f = f.reshape(f.shape[0], -1).astype(np.float64)
    return f @ f.T


def log_spectrum_from_gram(gram: np.ndarray) -> np.ndarray:
    """Log singular values of F, descending (floored, see SINGULAR_VALUE_FLOOR), from its Gram matrix F^T F."""
    eigenvalues = np.clip(np.linalg.eigvalsh(np.asarray(gram, dtype=np.float64)), 0, None)
    singular_values = np.sqrt(eigenvalues)[::-1]
    largest = singular_values[0] if singular_values[0] > 0 else 1.0
    return np.log(np.maximum(singular_values, SINGULAR_VALUE_FLOOR * largest))


def unit_length(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def signature_from_gram(gram: np.ndarray) -> np.ndarray:
    """The paper's signature: unit-L2-norm log singular values, descending, from a channel Gram matrix F^T F."""
    return unit_length(log_spectrum_from_gram(gram))


def centred_signature(log_spectrum: np.ndarray) -> np.ndarray:
    """The size- and scale-invariant variant: the log spectrum minus its mean, then unit L2 norm. Features
    scaled by a factor a (singular values times a) or an image of the same content with k times the voxels
    (singular values times sqrt(k)) add a constant to every log singular value, which the paper's signature
    keeps (its L2 normalisation divides, it does not subtract) and this one removes."""
    log_spectrum = np.asarray(log_spectrum, dtype=np.float64)
    return unit_length(log_spectrum - log_spectrum.mean())


def multilayer_signature(signatures) -> np.ndarray:
    """Several layers' signatures (each unit length) concatenated, divided by sqrt(layers): unit length, each
    layer weighing the same in the distance."""
    return np.concatenate([np.asarray(s, dtype=np.float64) for s in signatures]) / np.sqrt(len(signatures))


def spectral_signature(features) -> np.ndarray:
    """Spectral signature of features shaped (channels, *spatial): shape (channels,), unit L2 norm."""
    return signature_from_gram(gram_matrix(features))
