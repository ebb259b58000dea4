"""The paper's network: a 3D U-Net with residual blocks (short skips) and U-Net skips (long skips).

14 features in the first stage, doubling per stage; the number of stages follows the patch size
(4 poolings for 96^3). Built from dynamic_network_architectures' ResidualEncoderUNet, nnU-Net's own
building blocks, so nnU-Net's predictor and checkpoints handle it like any nnU-Net network.
"""
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

FIRST_STAGE_FEATURES = 14
MAX_STAGES = 5
MIN_BOTTLENECK_VOXELS = 4  # per axis


def num_stages(patch_size: Sequence[int]) -> int:
    """Resolution stages for a patch (voxels): halve while every axis stays >= 4 voxels, at most 5 stages."""
    stages, size = 1, min(patch_size)
    while stages < MAX_STAGES and size % 2 == 0 and size // 2 >= MIN_BOTTLENECK_VOXELS:
        size //= 2
        stages += 1
    return stages


class DropoutConv3d(nn.Conv3d):
    """A Conv3d followed by element-wise dropout, active in train mode only (p in ``dropout_p``).

    Keeps Conv3d's parameter names, so weights move freely between the dropout and plain networks.
    """
    dropout_p = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(super().forward(x), self.dropout_p, self.training)


def add_dropout_after_convs(network: nn.Module, p: float) -> nn.Module:
    """Dropout p after every 3D convolution except the segmentation heads (in place; returns network)."""
    heads = {id(m) for name, m in network.named_modules() if "seg_layers" in name}
    for module in network.modules():
        if type(module) is nn.Conv3d and id(module) not in heads:
            module.__class__ = DropoutConv3d
            module.dropout_p = p
    return network


def build_residual_unet(num_input_channels: int, num_classes: int, patch_size: Sequence[int],
                        first_stage_features: int = FIRST_STAGE_FEATURES, dropout_p: float = 0.0) -> nn.Module:
    """The paper's residual 3D U-Net for a patch size in voxels (deep supervision off)."""
    n = num_stages(patch_size)
    network = ResidualEncoderUNet(
        input_channels=num_input_channels,
        n_stages=n,
        features_per_stage=[first_stage_features * 2 ** s for s in range(n)],
        conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_blocks_per_stage=[1] * n,
        num_classes=num_classes,
        n_conv_per_stage_decoder=[1] * (n - 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )
    network.apply(network.initialize)
    # Without deep supervision the decoder only runs its last segmentation head; the others (kept, so that
    # checkpoints keep their keys) get no gradient, which DDP (nnUNetv2_train -num_gpus N) refuses at the
    # second iteration unless they are frozen.
    for head in network.decoder.seg_layers[:-1]:
        head.requires_grad_(False)
    if dropout_p > 0:
        add_dropout_after_convs(network, dropout_p)
    return network


def original_module(network: nn.Module) -> nn.Module:
    """The module beneath the wrappers nnU-Net puts around a network: ``torch.compile``'s ``OptimizedModule``
    (``_orig_mod``; its state-dict keys carry that prefix) and ``DistributedDataParallel`` (``module``), in any
    nesting. Weights loaded and hooks registered here are the ones the wrapped network runs with."""
    while True:
        inner = getattr(network, "_orig_mod", None)
        if inner is None and isinstance(network, nn.parallel.DistributedDataParallel):
            inner = network.module
        if not isinstance(inner, nn.Module):
            return network
        network = inner
