"""The channel Gram matrix F^T F (and channel sums) of a whole image's feature map, streamed during
sliding-window prediction.

nnU-Net assembles a volume's logits as the Gaussian-weighted average of the windows' outputs. The
feature map F is assembled the same way (un-mirrored pass only), but never as a whole. The window
edges along each axis cut the padded volume into cells, each covered by a fixed set of windows, known
from the window list before the first window arrives. A cell's weighted feature sum is kept only while
it is open: from the first window that covers it until the last; then it is divided by its weights,
cropped to the image (the padding nnU-Net adds to images smaller than the patch is left out), folded into
F^T F (float64, in chunks of at most ``FOLD_CHUNK_BYTES``) and freed. This is exact for any window order
and holds only the open cells, the least an exact F^T F can hold. On the CPU each cell lives in its own
anonymous memory map, returned to the system when the cell closes (the C library's allocator would keep
freed blocks of up to 32 MB and let the process grow past the open cells), and the fold buffer is
allocated once. With nnU-Net's order (first axis
outermost) the open cells peak at the overlap of two consecutive rows along the first axis, a band of
(patch_x - step_x) planes of the whole cross-section, times C + 1 float32 values per voxel: the floor,
since a voxel in that band needs the features of both rows before it can enter F^T F.
``memory_saving_order`` puts the axis with the smallest band outermost instead (half the open cells of a
150 x 256 x 256 CT with a 128^3 patch).
"""
import bisect
import mmap
from itertools import product
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nnunet_mt_ood.options import LAYERS

FOLD_CHUNK_BYTES = 32 * 2 ** 20  # the float64 buffer finished cells are folded through into F^T F


def memory_saving_order(windows: Sequence[Tuple[slice, ...]]) -> List[int]:
    """Indices of `windows` (spatial slices of one sliding-window pass) in the order that keeps the fewest
    cells of ``GramAccumulator`` open: the axis whose overlap band (patch - smallest step along it, times the
    volume's extent along the other axes, in voxels) is smallest outermost, then the next, as nnU-Net's own
    order does with the first axis. The Gram matrix is the same for any order; only nnU-Net's summation of
    overlapping logits changes (it adds them in float16, so the rounding differs)."""
    shape = [max(w[a].stop for w in windows) for a in range(len(windows[0]))]
    bands = []
    for a in range(len(shape)):
        starts = sorted({w[a].start for w in windows})
        patch = windows[0][a].stop - windows[0][a].start
        overlap = max([patch - (b - c) for c, b in zip(starts, starts[1:])] or [0])
        bands.append(max(overlap, 0) * int(np.prod([n for b, n in enumerate(shape) if b != a])))
    axes = sorted(range(len(shape)), key=lambda a: (bands[a], a))
    return sorted(range(len(windows)), key=lambda i: tuple(windows[i][a].start for a in axes))


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
    """Streams F^T F over the windows of one sliding-window pass (see module docstring).

    ``open_bytes`` / ``peak_open_bytes``: bytes held by open cells now / at most during the pass; the fold
    buffer (at most ``FOLD_CHUNK_BYTES``) comes on top.
    """

    def __init__(self, patch_size: Sequence[int], gaussian: Optional[torch.Tensor]):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.gaussian = gaussian  # (px, py, pz) window weights; None: uniform
        self.gram: Optional[torch.Tensor] = None

    def begin(self, image_shape: Sequence[int], padded_shape: Sequence[int],
              windows: Sequence[Tuple[slice, ...]], device=None) -> None:
        """image_shape: spatial shape before nnU-Net's padding; padded_shape: the shape windows tile;
        windows: every window's spatial slices, as nnU-Net will predict them (in any order); device: where
        the open cells and F^T F live (nnU-Net's results device; default: the features' device)."""
        self.device = None if device is None else torch.device(device)
        self.padded_shape = tuple(int(s) for s in padded_shape)
        offset = [(p - s) // 2 for p, s in zip(self.padded_shape, image_shape)]
        self.crop = tuple(slice(o, o + int(s)) for o, s in zip(offset, image_shape))
        self.edges = [sorted({0, size} | {w[a].start for w in windows} | {w[a].stop for w in windows})
                      for a, size in enumerate(self.padded_shape)]
        self.pending = np.zeros([len(e) - 1 for e in self.edges], dtype=np.int64)  # windows yet to come, per cell
        for w in windows:
            self.pending[self._cell_slices(w)] += 1
        self.cells: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}  # open cells: (weighted sum, weight)
        self.fold_buffer: Optional[torch.Tensor] = None
        self.gram = None
        self.voxels = 0
        self.open_bytes = self.peak_open_bytes = 0

    def _cell_shape(self, cell) -> tuple:
        return tuple(int(self.edges[a][i + 1] - self.edges[a][i]) for a, i in enumerate(cell))

    def _cell_slices(self, window: Tuple[slice, ...]) -> Tuple[slice, ...]:
        """The cell index ranges a window covers, per axis."""
        out = []
        for a, s in enumerate(window):
            i0, i1 = bisect.bisect_left(self.edges[a], s.start), bisect.bisect_left(self.edges[a], s.stop)
            if i1 >= len(self.edges[a]) or self.edges[a][i0] != s.start or self.edges[a][i1] != s.stop:
                raise ValueError(f"window {window} is not one of the windows given to begin()")
            out.append(slice(i0, i1))
        return tuple(out)

    def add(self, features: torch.Tensor, window: Tuple[slice, ...]) -> None:
        """features: (C, *patch) of the window at spatial slices `window` of the padded volume, in any
        floating dtype (float16 under nnU-Net's autocast): summed in float32, folded in float64."""
        features = features.to(self.device or features.device, torch.float32)
        if features.shape[1:] != self.patch_size:  # lower-resolution layer: nearest upsampling to the patch grid
            features = nn.functional.interpolate(features[None], size=self.patch_size, mode="nearest")[0]
        if self.gaussian is None or self.gaussian.device != features.device:
            self.gaussian = torch.ones(self.patch_size, device=features.device) if self.gaussian is None \
                else self.gaussian.to(features.device)
        if self.gram is None:
            channels = features.shape[0]
            self.gram = torch.zeros((channels, channels), dtype=torch.float64, device=features.device)
            self.channel_sums = torch.zeros(channels, dtype=torch.float64, device=features.device)
        ranges = [range(s.start, s.stop) for s in self._cell_slices(window)]
        for cell in product(*ranges):
            if self.pending[cell] <= 0:
                raise ValueError(f"window {window} arrived more often than in the list given to begin()")
            bounds = [(self.edges[a][i], self.edges[a][i + 1]) for a, i in enumerate(cell)]
            inside = tuple(slice(lo - w.start, hi - w.start) for (lo, hi), w in zip(bounds, window))
            if cell not in self.cells:
                self.cells[cell] = self._open(self._cell_shape(cell), features.shape[0], features.device)
            total, weight = self.cells[cell]
            g = self.gaussian[inside]
            total.addcmul_(features[(slice(None), *inside)], g)  # in place: no C x cell temporary
            weight += g
            self.pending[cell] -= 1
            if self.pending[cell] == 0:
                self._fold(bounds, total, weight)
                self._close(self.cells.pop(cell))

    def _open(self, shape: tuple, channels: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Zeroed (weighted sum (C, *shape), weight (*shape)) float32 buffers of a cell."""
        self.open_bytes += 4 * (channels + 1) * int(np.prod(shape))
        self.peak_open_bytes = max(self.peak_open_bytes, self.open_bytes)
        if torch.device(device).type != "cpu":
            return torch.zeros((channels, *shape), device=device), torch.zeros(shape, device=device)
        n = int(np.prod(shape))
        memory = mmap.mmap(-1, 4 * (channels + 1) * n)  # anonymous: zero-filled, unmapped when dropped
        flat = torch.frombuffer(memory, dtype=torch.float32)
        return flat[:channels * n].view(channels, *shape), flat[channels * n:].view(shape)

    def _close(self, buffers: Tuple[torch.Tensor, torch.Tensor]) -> None:
        self.open_bytes -= 4 * sum(b.numel() for b in buffers)

    def finish(self) -> torch.Tensor:
        """F^T F (C x C, float64) of the image's assembled features."""
        if self.cells or self.gram is None:
            raise RuntimeError(f"{int(self.pending.sum())} window-cell visits announced to begin() never arrived")
        return self.gram

    def _fold(self, bounds, total: torch.Tensor, weight: torch.Tensor) -> None:
        """Folds a finished cell (voxels at `bounds` of the padded volume), cropped to the image, into the
        Gram matrix, a chunk of first-axis planes at a time (float64 accumulation)."""
        crop = []
        for (lo, hi), c in zip(bounds, self.crop):
            a, b = max(lo, c.start), min(hi, c.stop)
            if a >= b:
                return  # padding only
            crop.append(slice(a - lo, b - lo))
        channels = total.shape[0]
        plane = (crop[1].stop - crop[1].start, crop[2].stop - crop[2].start)
        chunk = min(crop[0].stop - crop[0].start, max(1, FOLD_CHUNK_BYTES // (8 * channels * plane[0] * plane[1])))
        if self.fold_buffer is None or self.fold_buffer.numel() < channels * chunk * plane[0] * plane[1]:
            self.fold_buffer = torch.empty(channels * chunk * plane[0] * plane[1], dtype=torch.float64,
                                           device=total.device)
        for a in range(crop[0].start, crop[0].stop, chunk):
            rows = (slice(a, min(crop[0].stop, a + chunk)), *crop[1:])
            n = (rows[0].stop - rows[0].start) * plane[0] * plane[1]
            f = self.fold_buffer[:channels * n].view(channels, rows[0].stop - rows[0].start, *plane)
            f.copy_(total[(slice(None), *rows)]).div_(weight[rows])  # float64 quotient, no temporary
            f = f.view(channels, n)
            self.gram.addmm_(f, f.T)
            self.channel_sums += f.sum(1)
            self.voxels += n


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
        """windows: every window's spatial slices, as nnU-Net will predict them; device: where the weights and
        sums live (nnU-Net's results device)."""
        padded_shape = tuple(int(s) for s in padded_shape)
        if self.gaussian is None:
            self.gaussian = torch.ones(self.patch_size, device=device)
        elif device is not None:
            self.gaussian = self.gaussian.to(device)
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
        """features: (C, *feature grid) of the window at spatial slices `window` of the padded volume, any
        floating dtype (summed in float64 on the device of ``begin``)."""
        features = features.to(self.inverse_weight.device)
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
    arming before each window keeps exactly the un-mirrored pass. The hook sits on the layer of the original
    module (beneath ``torch.compile`` and DDP wrappers) and is excluded from compilation: a compiled network
    runs it eagerly, between two compiled graphs, every call (traced into the graph instead, its ``armed``
    flag would be a guard that recompiles the network at every window). ``captured``: features passed on.
    """

    def __init__(self, network: nn.Module, layer: str, callback):
        from nnunet_mt.network import original_module
        module, self.use_input = feature_module(original_module(network), layer)
        self.callback = callback
        self.armed = False
        self.captured = 0
        self.handle = module.register_forward_hook(torch.compiler.disable(self._hook))

    def arm(self) -> None:
        self.armed = True

    def _hook(self, module, inputs, output):
        if self.armed:
            self.armed = False
            self.captured += 1
            features = inputs[0] if self.use_input else output
            assert features.shape[0] == 1, "nnU-Net's sliding window predicts one window per call"
            self.callback(features[0].detach())

    def remove(self) -> None:
        self.handle.remove()
