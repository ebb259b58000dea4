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


def signature_from_gram(gram: np.ndarray) -> np.ndarray:
    """Unit-L2-norm log singular values, descending, from a channel Gram matrix F^T F."""
    eigenvalues = np.clip(np.linalg.eigvalsh(np.asarray(gram, dtype=np.float64)), 0, None)
    singular_values = np.sqrt(eigenvalues)[::-1]
    largest = singular_values[0] if singular_values[0] > 0 else 1.0
    log_s = np.log(np.maximum(singular_values, SINGULAR_VALUE_FLOOR * largest))
    norm = np.linalg.norm(log_s)
    return log_s / norm if norm > 0 else log_s


def spectral_signature(features) -> np.ndarray:
    """Spectral signature of features shaped (channels, *spatial): shape (channels,), unit L2 norm."""
    return signature_from_gram(gram_matrix(features))
