import numpy as np
import pytest
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from nnunet_mt_ood.features import GramAccumulator, feature_module, memory_saving_order
from nnunet_mt.network import build_residual_unet


def _windows(shape, patch, step=0.5):
    steps = compute_steps_for_sliding_window(shape, patch, step)
    return [tuple(slice(s, s + p) for s, p in zip((a, b, c), patch))
            for a in steps[0] for b in steps[1] for c in steps[2]]


@pytest.mark.parametrize("image_shape,step,chunk_bytes,order", [
    ((13, 9, 7), 0.5, None, "nnunet"), ((2, 9, 7), 0.5, None, "nnunet"),  # second: smaller than the patch, padded
    ((23, 9, 7), 0.5, 1, "nnunet"), ((23, 10, 7), 0.75, 1, "nnunet"),  # planes folded one by one; -step_size 0.75
    ((13, 9, 7), 0.5, None, "shuffled"), ((23, 10, 7), 0.75, None, "reversed"),  # exact for any window order
    ((9, 23, 7), 0.5, None, "memory"),  # memory_saving_order
])
def test_streamed_gram_equals_explicit_assembly(image_shape, step, chunk_bytes, order, monkeypatch):
    import nnunet_mt_ood.features as features
    if chunk_bytes is not None:
        monkeypatch.setattr(features, "FOLD_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(0)
    patch = (4, 4, 4)
    padded = tuple(max(s, p) for s, p in zip(image_shape, patch))
    gaussian = compute_gaussian(patch, sigma_scale=1. / 8, value_scaling_factor=10,
                                device=torch.device("cpu")).float()
    windows = _windows(padded, patch, step)
    assert len(windows) > 4
    if order == "shuffled":
        windows = [windows[i] for i in rng.permutation(len(windows))]
    elif order == "reversed":
        windows = windows[::-1]
    elif order == "memory":
        windows = [windows[i] for i in memory_saving_order(windows)]
    acc = GramAccumulator(patch, gaussian)
    acc.begin(image_shape, padded, windows)
    full = torch.zeros((5, *padded))
    weight = torch.zeros(padded)
    for w in windows:
        f = torch.from_numpy(rng.normal(size=(5, *patch))).float()
        acc.add(f, w)
        full[(slice(None), *w)] += f * gaussian
        weight[w] += gaussian
    offset = [(p - s) // 2 for p, s in zip(padded, image_shape)]
    crop = tuple(slice(o, o + s) for o, s in zip(offset, image_shape))
    f = (full / weight)[(slice(None), *crop)].reshape(5, -1).double()
    np.testing.assert_allclose(acc.finish().numpy(), (f @ f.T).numpy(), rtol=1e-5)
    np.testing.assert_allclose(acc.channel_sums.numpy(), f.sum(1).numpy(), rtol=1e-5, atol=1e-6)
    assert acc.voxels == int(np.prod(image_shape))
    assert acc.open_bytes == 0 and not acc.cells


def test_gram_accumulator_holds_only_open_cells():
    """Known answer: windows of 4 planes at steps of 2 along the first axis (one window across the others).
    Each 2-plane cell is open from its first window to its second, and a window folds the cell it closes
    before it opens the next, so one cell (2 planes of C + 1 float32 values per voxel) is held at a time,
    half of the patch-deep slab a plane-by-plane scheme holds."""
    patch, channels = (4, 4, 4), 5
    shape = (12, 4, 4)
    windows = _windows(shape, patch)
    assert [w[0].start for w in windows] == [0, 2, 4, 6, 8]
    acc = GramAccumulator(patch, None)
    acc.begin(shape, shape, windows)
    cell_bytes = 4 * (channels + 1) * 2 * 4 * 4
    held = []
    for w in windows:
        acc.add(torch.ones((channels, *patch)), w)
        held.append(acc.open_bytes)
    assert held == [cell_bytes] * 4 + [0]
    assert acc.peak_open_bytes == cell_bytes
    np.testing.assert_allclose(acc.finish().numpy(), np.full((channels, channels), 12 * 4 * 4.))


def test_memory_saving_order_known_answer():
    """A 12 x 20 x 4 volume, patch 8 x 8 x 4, step 0.5: first-axis starts 0, 4 (overlap 4 planes of 20 x 4 = 320
    voxels), second-axis starts 0, 4, 8, 12 (overlap 4 planes of 12 x 4 = 192 voxels), one window along the
    third (no overlap: band 0). So the third axis goes outermost, then the second, then the first. In
    nnU-Net's order the open cells peak at the first-axis band, 4 x 20 x 4 voxels; in this order at the
    second-axis band, 4 x 12 x 4 voxels, plus one 4 x 4 x 4 cell of the next row, which the window opens before
    it closes the band's last cell (cells are visited in index order)."""
    patch, shape, channels = (8, 8, 4), (12, 20, 4), 3
    windows = _windows(shape, patch)
    assert len(windows) == 8 and windows == sorted(windows, key=lambda w: (w[0].start, w[1].start))
    order = memory_saving_order(windows)
    assert [(windows[i][0].start, windows[i][1].start) for i in order] == [
        (0, 0), (4, 0), (0, 4), (4, 4), (0, 8), (4, 8), (0, 12), (4, 12)]
    peaks = []
    for ordered in (windows, [windows[i] for i in order]):
        acc = GramAccumulator(patch, None)
        acc.begin(shape, shape, ordered)
        for w in ordered:
            acc.add(torch.ones((channels, *patch)), w)
        np.testing.assert_allclose(acc.finish().numpy(), np.full((channels, channels), 12 * 20 * 4.))
        peaks.append(acc.peak_open_bytes // (4 * (channels + 1)))
    assert peaks == [4 * 20 * 4, 4 * 12 * 4 + 4 * 4 * 4]
    cube = _windows((12, 12, 12), (8, 8, 8))  # equal bands: nnU-Net's own order
    assert memory_saving_order(cube) == list(range(len(cube)))


def test_gram_accumulator_refuses_windows_it_was_not_told_about():
    patch = (4, 4, 4)
    windows = _windows((12, 4, 4), patch)
    acc = GramAccumulator(patch, None)
    acc.begin((12, 4, 4), (12, 4, 4), windows)
    with pytest.raises(ValueError, match="not one of the windows"):
        acc.add(torch.ones((2, *patch)), (slice(1, 5), slice(0, 4), slice(0, 4)))
    acc.add(torch.ones((2, *patch)), windows[0])
    with pytest.raises(RuntimeError, match="never arrived"):
        acc.finish()
    acc.begin((12, 4, 4), (12, 4, 4), windows[:1])
    acc.add(torch.ones((2, *patch)), windows[0])
    with pytest.raises(ValueError, match="more often"):
        acc.add(torch.ones((2, *patch)), windows[0])


def test_feature_layers_of_our_network():
    net = build_residual_unet(1, 2, (32, 32, 32))
    module, use_input = feature_module(net, "last")
    assert module is net.decoder.seg_layers[-1] and use_input and module.in_channels == 14
    module, use_input = feature_module(net, "bottleneck")
    assert module is net.encoder.stages[-1] and not use_input
    with pytest.raises(ValueError, match="no 'last' feature layer"):
        feature_module(torch.nn.Conv3d(1, 1, 1), "last")


def test_feature_layers_of_nnunets_default_network():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    net = PlainConvUNet(1, 4, [32, 64, 128, 256], torch.nn.Conv3d, 3, [1, 2, 2, 2], 2, 2, [2, 2, 2],
                        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU,
                        deep_supervision=False)
    seen = []
    module, use_input = feature_module(net, "last")
    handle = module.register_forward_hook(lambda m, i, o: seen.append((i[0] if use_input else o).shape))
    with torch.no_grad():
        net(torch.zeros(1, 1, 32, 32, 32))
    handle.remove()
    assert seen == [(1, 32, 32, 32, 32)]  # nnU-Net's default: 32 features at full resolution


@pytest.mark.parametrize("feature_grid", [(8, 8, 8), (2, 2, 2), (3, 3, 3), (1, 1, 1)])
@pytest.mark.parametrize("image_shape", [(19, 11, 9), (5, 11, 9)])  # second: padded along the first axis
def test_pooled_sums_equal_upsampled_explicit_assembly(feature_grid, image_shape):
    """Mahalanobis' channel means, streamed without upsampling, equal the mean of the explicitly assembled
    map of nearest-upsampled window features (what the Gram accumulator used to compute)."""
    from nnunet_mt_ood.features import PooledAccumulator
    rng = np.random.default_rng(1)
    patch, channels = (8, 8, 8), 6
    padded = tuple(max(s, p) for s, p in zip(image_shape, patch))
    gaussian = compute_gaussian(patch, sigma_scale=1. / 8, value_scaling_factor=10,
                                device=torch.device("cpu")).float()
    windows = _windows(padded, patch)
    acc = PooledAccumulator(patch, gaussian)
    acc.begin(image_shape, padded, windows)
    full = torch.zeros((channels, *padded), dtype=torch.float64)
    weight = torch.zeros(padded, dtype=torch.float64)
    for w in windows:
        f = torch.from_numpy(rng.normal(size=(channels, *feature_grid))).float()
        acc.add(f, w)
        up = torch.nn.functional.interpolate(f[None], size=patch, mode="nearest")[0].double()
        full[(slice(None), *w)] += up * gaussian.double()
        weight[w] += gaussian.double()
    offset = [(p - s) // 2 for p, s in zip(padded, image_shape)]
    crop = tuple(slice(o, o + s) for o, s in zip(offset, image_shape))
    expected = (full / weight)[(slice(None), *crop)].reshape(channels, -1).sum(1)
    np.testing.assert_allclose(acc.channel_sums.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    assert acc.voxels == int(np.prod(image_shape))
