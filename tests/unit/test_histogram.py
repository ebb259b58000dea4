"""The intensity-histogram baseline (nnunet_mt_ood/histogram.py) on known answers."""
import numpy as np
import pytest
import torch

from nnunet_mt_ood.histogram import (FINE_BINS, FINE_RANGE, IntensityHistogramDetector, coarse_edges,
                                     coarse_fractions, fine_intensity_histogram)

WIDTH = (FINE_RANGE[1] - FINE_RANGE[0]) / FINE_BINS  # 0.02


def _bin(value):
    return int(np.floor((value - FINE_RANGE[0]) / WIDTH))


def test_fine_histogram_counts_fractions_per_channel_with_the_tails_in_the_end_bins():
    image = np.zeros((2, 3, 4, 5), np.float32)  # 60 voxels per channel
    image[0, 0] = 1.0  # 20 voxels at 1.0
    image[0, 1, 0] = -100.0  # 5 voxels below the range
    image[1] = 0.5
    image[1, 2, :, :] = 50.0  # 20 voxels above the range
    h = fine_intensity_histogram(image, slab=2)  # slabs of 2 slices: the sum over slabs is the whole image
    assert h.shape == (2 * FINE_BINS,) and h.dtype == np.float64
    first, second = h[:FINE_BINS], h[FINE_BINS:]
    assert first[_bin(1.0)] == pytest.approx(20 / 60) and first[0] == pytest.approx(5 / 60)
    assert first[_bin(0.0)] == pytest.approx(35 / 60) and first.sum() == pytest.approx(1.0)
    assert second[_bin(0.5)] == pytest.approx(40 / 60) and second[-1] == pytest.approx(20 / 60)
    # a torch tensor in half precision gives the same fractions (0.5 and 1.0 are exact in float16)
    np.testing.assert_allclose(fine_intensity_histogram(torch.from_numpy(image).half()), h)
    with pytest.raises(ValueError, match="channels, z, y, x"):
        fine_intensity_histogram(np.zeros((4, 4, 4)))


def test_coarse_edges_span_the_central_mass_and_fractions_keep_the_tails():
    pooled = np.zeros(FINE_BINS)
    pooled[100], pooled[1000:1010], pooled[1500] = 0.002, 0.099, 0.008  # 0.2 % below, 99 % centre, 0.8 % above
    edges = coarse_edges(pooled / pooled.sum(), bins=5, coverage=0.99)  # tails of 0.5 % each side
    assert edges[0] == 1000 and edges[-1] == 1501  # the upper 0.5 % quantile falls in fine bin 1500
    assert len(edges) == 6 and np.all(np.diff(edges) > 0)
    fine = np.zeros(FINE_BINS)
    fine[100], fine[1300], fine[1700] = 0.25, 0.5, 0.25
    fractions = coarse_fractions(fine, edges)
    assert fractions.sum() == pytest.approx(1.0)
    assert fractions[0] == pytest.approx(0.25) and fractions[-1] == pytest.approx(0.25)  # tails in the end bins
    assert fractions[np.searchsorted(edges, 1300, side="right") - 1] == pytest.approx(0.5)  # bin 3 of 5
    # a span narrower than the bins asked for: fewer, unique edges
    narrow = np.zeros(FINE_BINS)
    narrow[1000:1003] = 1 / 3
    assert list(coarse_edges(narrow, bins=10, coverage=1.0)) == [1000, 1001, 1002, 1003]


def _image_histogram(values):
    return fine_intensity_histogram(np.asarray(values, np.float32).reshape(1, 1, 1, -1))


def test_distance_is_sqrt2_hellinger_and_an_intensity_shift_is_flagged():
    rng = np.random.default_rng(0)
    train = np.stack([_image_histogram(rng.normal(0, 1, 4000)) for _ in range(6)])
    detector = IntensityHistogramDetector(c=2.5, bins=40).fit(train)
    assert detector.fit(train) is detector and len(detector.edges_) == 1
    # an image with the training distribution: close; the same image scaled by 1.5 or shifted by 2: far
    same = _image_histogram(rng.normal(0, 1, 4000))
    assert detector.score(same)[0] < detector.threshold_
    assert detector.predict(_image_histogram(rng.normal(0, 1.5, 4000)))[0]
    assert detector.predict(_image_histogram(rng.normal(2, 1, 4000)))[0]
    # known answers of the vector distance: identical histograms 0; all mass in different coarse bins sqrt(2)
    low, high = _image_histogram(np.full(10, -3.0)), _image_histogram(np.full(10, 3.0))
    rows = detector._rows(np.stack([low, high, low]))
    assert np.linalg.norm(rows[0] - rows[2]) == 0.0
    assert np.linalg.norm(rows[0] - rows[1]) == pytest.approx(np.sqrt(2))
    # the score: the smallest sqrt(2) * Hellinger distance = || sqrt(p) - sqrt(q) || of the coarse fractions
    q = coarse_fractions(same, detector.edges_[0])
    hellinger = [np.sqrt(0.5 * np.sum((np.sqrt(coarse_fractions(t, detector.edges_[0])) - np.sqrt(q)) ** 2))
                 for t in train]
    assert detector.score(same)[0] == pytest.approx(np.sqrt(2) * min(hellinger), rel=1e-12)
    with pytest.raises(ValueError, match="fitted on 1 channels"):
        detector.score(np.zeros((1, 2 * FINE_BINS)))
    with pytest.raises(ValueError, match="bins"):
        IntensityHistogramDetector(bins=0)
