"""The channel Gram matrix F^T F (and channel sums) of a whole image's feature map, streamed during
sliding-window prediction.

nnU-Net assembles a volume's logits as the Gaussian-weighted average of the windows' outputs. The
feature map F is assembled the same way (un-mirrored pass only), but never as a whole: windows come in
order of their start along the first axis, so once a window starting further along arrives, every
plane before that start is final. Those planes are divided by their weights, cropped to the image
(the padding nnU-Net adds to images smaller than the patch is left out), folded into F^T F (float64)
and dropped. Memory: one slab of C x patch_x x Y x Z float32 plus its weights, instead of
C x X x Y x Z, allocated once per image: the slab's rows are moved forward in place when windows move on,
and finished planes are folded in chunks of at most ``FOLD_CHUNK_BYTES`` of float64, so no temporary copy
of the slab is ever made. The floor is that slab: with nnU-Net's window order (first axis outermost),
a plane is final only once the windows of the next start along that axis have all arrived.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

LAYERS = ("last", "bottleneck")
FOLD_CHUNK_BYTES = 64 * 2 ** 20  # float64 working set when folding finished planes into F^T F


def feature_module(network: nn.Module, layer: str) -> Tuple[nn.Module, bool]:
    """(module, use_input) whose forward gives the requested features of an nnU-Net U-Net.

    last: the input of the final segmentation head (the last decoder stage's output);
    bottleneck: the output of the deepest encoder stage.
    """
    decoder, encoder = getattr(network, "decoder", None), getattr(network, "encoder", None)
    if layer == "last" and decoder is not None and hasattr(decoder, "seg_layers"):
        return decoder.seg_layers[-1], True
    if layer == "bottleneck" and encoder is not None and hasattr(encoder, "stages"):
        return encoder.stages[-1], False
    raise ValueError(f"the network ({type(network).__name__}) has no '{layer}' feature layer "
                     f"(supported: {', '.join(LAYERS)} of nnU-Net's U-Nets)")


class GramAccumulator:
    """Streams F^T F over the windows of one sliding-window pass (see module docstring)."""

    def __init__(self, patch_size: Sequence[int], gaussian: Optional[torch.Tensor]):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.gaussian = gaussian  # (px, py, pz) window weights; None: uniform
        self.gram: Optional[torch.Tensor] = None

    def begin(self, image_shape: Sequence[int], padded_shape: Sequence[int]) -> None:
        """image_shape: spatial shape before nnU-Net's padding; padded_shape: the shape windows tile."""
        self.padded_shape = tuple(int(s) for s in padded_shape)
        offset = [(p - s) // 2 for p, s in zip(self.padded_shape, image_shape)]
        self.crop = tuple(slice(o, o + int(s)) for o, s in zip(offset, image_shape))
        self.gram = None
        self.buffer = self.weight = None
        self.start = 0
        self.voxels = 0

    def add(self, features: torch.Tensor, window: Tuple[slice, ...]) -> None:
        """features: (C, *patch) of the window at spatial slices `window` of the padded volume."""
        features = features.float()
        if features.shape[1:] != self.patch_size:  # lower-resolution layer: nearest upsampling to the patch grid
            features = nn.functional.interpolate(features[None], size=self.patch_size, mode="nearest")[0]
        x0 = window[0].start
        if self.buffer is None:
            self._new_buffer(features.shape[0], x0, features.device)
        elif x0 > self.start:
            self._finalize(x0 - self.start)
            self._shift(x0)
        rows = slice(x0 - self.start, x0 - self.start + self.patch_size[0])
        if self.gaussian is None:
            self.gaussian = torch.ones(self.patch_size, device=features.device)
        g = self.gaussian
        self.buffer[(slice(None), rows, *window[1:])].addcmul_(features, g)  # in place: no C x patch temporary
        self.weight[(rows, *window[1:])] += g

    def finish(self) -> torch.Tensor:
        """F^T F (C x C, float64) of the image's assembled features."""
        if self.buffer is not None:
            self._finalize(self.buffer.shape[1])
            self.buffer = self.weight = None
        return self.gram

    def _new_buffer(self, channels: int, x0: int, device) -> None:
        rows = min(self.patch_size[0], self.padded_shape[0])
        self.buffer = torch.zeros((channels, rows, *self.padded_shape[1:]), dtype=torch.float32, device=device)
        self.weight = torch.zeros((rows, *self.padded_shape[1:]), dtype=torch.float32, device=device)
        self.start = x0
        if self.gram is None:
            self.gram = torch.zeros((channels, channels), dtype=torch.float64, device=device)
            self.channel_sums = torch.zeros(channels, dtype=torch.float64, device=device)

    def _shift(self, x0: int) -> None:
        """Moves the slab's origin to plane x0: rows still open move to the front (plane by plane, in place),
        the rest is zeroed for the windows to come."""
        step, rows = x0 - self.start, self.buffer.shape[1]
        for i in range(max(0, rows - step)):
            self.buffer[:, i] = self.buffer[:, i + step]
            self.weight[i] = self.weight[i + step]
        self.buffer[:, max(0, rows - step):] = 0
        self.weight[max(0, rows - step):] = 0
        self.start = x0

    def _finalize(self, n_rows: int) -> None:
        """Folds planes [start, start + n_rows) into the Gram matrix, cropped to the image, a chunk of planes
        at a time (float64 accumulation)."""
        lo, hi = max(self.start, self.crop[0].start), min(self.start + n_rows, self.crop[0].stop)
        channels = self.buffer.shape[0]
        plane_voxels = (self.crop[1].stop - self.crop[1].start) * (self.crop[2].stop - self.crop[2].start)
        chunk = max(1, FOLD_CHUNK_BYTES // (8 * channels * max(plane_voxels, 1)))
        for a in range(lo, hi, chunk):
            rows = slice(a - self.start, min(hi, a + chunk) - self.start)
            weight = self.weight[(rows, *self.crop[1:])]
            f = (self.buffer[(slice(None), rows, *self.crop[1:])].double() / weight).reshape(channels, -1)
            self.gram += f @ f.T
            self.channel_sums += f.sum(1)
            self.voxels += f.shape[1]


def nearest_source_index(out_size: int, in_size: int) -> torch.Tensor:
    """For each of out_size positions, the input position PyTorch's ``interpolate(mode="nearest")`` copies."""
    scale = in_size / out_size
    return (torch.arange(out_size, dtype=torch.float64) * scale).floor().long().clamp(max=in_size - 1)


class PooledAccumulator:
    """Channel sums of the assembled feature map over the image, streamed per window, exactly, with no
    upsampling and no Gram matrix (what Mahalanobis needs).

    The assembled map is F(v) = sum_w g(v - w) f_w(v) / W(v), with W = sum_w g(. - w) nnU-Net's normalising
    weight, known from the window list before prediction. Hence sum_v F(v) = sum_w sum_b f_w[b] A_w[b], where
    b runs over the window's feature voxels and A_w[b] sums g / W over the image voxels that nearest
    upsampling to the patch grid would fill with f_w[b]. Memory: 1 / W over the padded volume (float32).
    """

    def __init__(self, patch_size: Sequence[int], gaussian: Optional[torch.Tensor]):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.gaussian = gaussian
        self.channel_sums: Optional[torch.Tensor] = None

    def begin(self, image_shape: Sequence[int], padded_shape: Sequence[int], windows: Sequence[Tuple[slice, ...]],
              device=None) -> None:
        """windows: every window's spatial slices, as nnU-Net will predict them."""
        padded_shape = tuple(int(s) for s in padded_shape)
        if self.gaussian is None:
            self.gaussian = torch.ones(self.patch_size, device=device)
        weight = torch.zeros(padded_shape, dtype=torch.float32, device=self.gaussian.device)
        for w in windows:
            weight[w] += self.gaussian
        weight.reciprocal_()  # in place: one volume in memory; the windows cover every padded voxel
        for axis, (p, s) in enumerate(zip(padded_shape, image_shape)):  # nnU-Net's padding is not image
            o = (p - int(s)) // 2
            weight[(slice(None),) * axis + (slice(0, o),)] = 0
            weight[(slice(None),) * axis + (slice(o + int(s), p),)] = 0
        self.inverse_weight = weight
        self.channel_sums = None
        self.voxels = int(np.prod([int(s) for s in image_shape]))

    def add(self, features: torch.Tensor, window: Tuple[slice, ...]) -> None:
        """features: (C, *feature grid) of the window at spatial slices `window` of the padded volume."""
        share = self.inverse_weight[window] * self.gaussian  # (patch): each voxel's weight in the image mean
        for axis, size in enumerate(features.shape[1:]):
            if size != share.shape[axis]:  # sum the voxels that nearest upsampling fills from one feature voxel
                index = nearest_source_index(share.shape[axis], size).to(share.device)
                shape = list(share.shape)
                shape[axis] = size
                share = torch.zeros(shape, dtype=share.dtype, device=share.device).index_add_(axis, index, share)
        sums = features.reshape(features.shape[0], -1).double() @ share.reshape(-1).double()
        self.channel_sums = sums if self.channel_sums is None else self.channel_sums + sums


class FeatureCapture:
    """Forward hook that passes the first call's features after each ``arm()`` to a callback.

    nnU-Net calls the network 1 + (number of mirror combinations) times per window, un-mirrored first;
    arming before each window keeps exactly the un-mirrored pass.
    """

    def __init__(self, network: nn.Module, layer: str, callback):
        module, self.use_input = feature_module(network, layer)
        self.callback = callback
        self.armed = False
        self.handle = module.register_forward_hook(self._hook)

    def arm(self) -> None:
        self.armed = True

    def _hook(self, module, inputs, output):
        if self.armed:
            self.armed = False
            features = inputs[0] if self.use_input else output
            assert features.shape[0] == 1, "nnU-Net's sliding window predicts one window per call"
            self.callback(features[0].detach())

    def remove(self) -> None:
        self.handle.remove()
