"""Intensity-histogram OOD baseline (after Frolova, Vasiliuk et al. 2022: the intensity histogram of a whole
3D image, no network, as the image's embedding; distance to the nearest training image's). numpy in,
numbers out.

Two steps, so that the bins can be fitted on the training images:
- ``fine_intensity_histogram``: per channel, the fraction of the image's voxels in each of FINE_BINS equal
  bins over FINE_RANGE (values outside go to the end bins). Our commands take it on the image as nnU-Net
  preprocessed it for the model (resampled, normalized by the plans' scheme, cropped), so it is computed
  from the same array the network sees; FINE_RANGE spans every normalization scheme's values (z-scores;
  [0, 1] CT and std-scaled MR of the paper's scheme) at 0.02 per bin.
- ``IntensityHistogramDetector``: fit learns, per channel, ``bins`` equal coarse bins spanning the central
  ``coverage`` of the training images' pooled intensities; an image's vector is the square root of its
  coarse fractions (the mass beyond the span in the end bins), so the Euclidean distance between two
  images is sqrt(2) times the Hellinger distance of their histograms, in [0, sqrt(2 * channels)]; the score
  is the distance to the nearest training image, tau as for every detector.
"""
import numpy as np

from nnunet_mt_ood.detector import NearestNeighbourDetector

FINE_BINS = 2000
FINE_RANGE = (-20.0, 20.0)
IHF_BINS = 100  # coarse bins per channel
IHF_COVERAGE = 0.99  # central fraction of the training intensities the coarse bins span


def fine_intensity_histogram(image, slab: int = 16) -> np.ndarray:
    """image: (channels, z, y, x), numpy or torch (any device, any float dtype). Returns float64
    (channels * FINE_BINS,): per channel the fraction of voxels in each fine bin, channel after channel.
    Works through `slab` slices at a time (one slab's float32 copy at most)."""
    import torch
    x = torch.as_tensor(image)
    if x.ndim != 4 or x[0].numel() == 0:
        raise ValueError(f"need a non-empty (channels, z, y, x) image, got shape {tuple(x.shape)}")
    low, high = FINE_RANGE
    width = (high - low) / FINE_BINS
    histograms = []
    for channel in x:
        counts = torch.zeros(FINE_BINS, dtype=torch.float64, device=channel.device)
        for start in range(0, channel.shape[0], slab):
            values = channel[start:start + slab].float().reshape(-1)
            index = ((values - low) / width).floor().clamp_(0, FINE_BINS - 1).long()
            counts += torch.bincount(index, minlength=FINE_BINS).double()
        histograms.append((counts / counts.sum()).cpu().numpy())
    return np.concatenate(histograms)


def coarse_edges(pooled: np.ndarray, bins: int = IHF_BINS, coverage: float = IHF_COVERAGE) -> np.ndarray:
    """Fine-bin indices of the coarse bin edges (ascending, unique, at most bins + 1) spanning the central
    `coverage` of a channel's pooled fine histogram (FINE_BINS fractions)."""
    cumulative = np.cumsum(pooled) / pooled.sum()
    tail = (1.0 - coverage) / 2
    first = int(np.searchsorted(cumulative, tail, side="right"))  # the fine bin holding the `tail` quantile
    last = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
    last = min(max(last, first), FINE_BINS - 1)
    return np.unique(np.round(np.linspace(first, last + 1, bins + 1)).astype(int))


def coarse_fractions(fine: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fractions of one channel's fine histogram in the coarse bins between `edges` (fine-bin indices), the
    mass below the first edge added to the first bin and above the last edge to the last bin."""
    cumulative = np.concatenate([[0.0], np.cumsum(fine)])
    inner = cumulative[edges]
    inner[0], inner[-1] = 0.0, cumulative[-1]
    return np.diff(inner)


class IntensityHistogramDetector(NearestNeighbourDetector):
    """Distance of an image's square-root coarse histogram to the nearest training image's (groups: one
    subject per row, left out for the training images' own distances); tau = mean + c * std of those.
    fit's input and score's: rows of fine_intensity_histogram. Fitted: ``edges_`` (per channel, fine-bin
    indices of the coarse edges), ``train_`` (the training images' vectors)."""

    def __init__(self, c: float = 2.5, bins: int = IHF_BINS, coverage: float = IHF_COVERAGE):
        super().__init__(c, k=1, unit_length=False)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1 or not 0 < coverage <= 1:
            raise ValueError(f"bins must be a whole number >= 1 and coverage in (0, 1], got {bins!r}, {coverage!r}")
        self.bins, self.coverage = bins, coverage

    def _channels(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] % FINE_BINS:
            raise ValueError(f"need rows of channels * {FINE_BINS} fine-histogram fractions, got {x.shape[1]} values")
        return x.reshape(len(x), -1, FINE_BINS)

    def fit(self, train, groups=None) -> "IntensityHistogramDetector":
        pooled = self._channels(train).sum(0)
        self.edges_ = [coarse_edges(p, self.bins, self.coverage) for p in pooled]
        return super().fit(train, groups)

    def _rows(self, x) -> np.ndarray:
        channels = self._channels(x)
        if channels.shape[1] != len(self.edges_):
            raise ValueError(f"fitted on {len(self.edges_)} channels, got {channels.shape[1]}")
        return np.stack([np.concatenate([np.sqrt(coarse_fractions(image[c], self.edges_[c]))
                                         for c in range(len(self.edges_))]) for image in channels])
