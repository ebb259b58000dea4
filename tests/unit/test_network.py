import torch
from torch import nn

from nnunet_mt.network import DropoutConv3d, build_residual_unet, num_stages


def test_stages_follow_patch_size():
    assert num_stages((96, 96, 96)) == 5  # 96 -> 48 -> 24 -> 12 -> 6
    assert num_stages((48, 48, 48)) == 4  # 48 -> 24 -> 12 -> 6
    assert num_stages((32, 32, 32)) == 4  # 32 -> 16 -> 8 -> 4


def test_paper_network_shape_and_features():
    net = build_residual_unet(1, 2, (32, 32, 32))
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv3d))
    assert first_conv.out_channels == 14
    assert [s.output_channels for s in net.encoder.stages] == [14, 28, 56, 112]
    assert net.decoder.deep_supervision is False
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)


def test_dropout_after_every_conv_but_the_head_and_same_parameter_names():
    plain = build_residual_unet(1, 2, (32, 32, 32))
    dropped = build_residual_unet(1, 2, (32, 32, 32), dropout_p=0.1)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    convs = [m for m in dropped.modules() if isinstance(m, nn.Conv3d)]
    heads = list(dropped.decoder.seg_layers.modules())
    assert all(isinstance(m, DropoutConv3d) for m in convs if m not in heads)
    assert not any(isinstance(m, DropoutConv3d) for m in heads)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        dropped.eval(), plain.eval()
        torch.testing.assert_close(dropped(x), plain(x))  # eval: dropout off
        dropped.train()
        assert not torch.allclose(dropped(x), dropped(x))  # train: stochastic
