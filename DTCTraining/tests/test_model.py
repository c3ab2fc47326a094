import pytest
import torch

from dtc_training.model import DualTaskVNet


def test_official_configuration_has_the_published_parameter_count():
    assert sum(p.numel() for p in DualTaskVNet().parameters()) == 9_448_866


def test_n_filters_scales_the_network():
    assert sum(p.numel() for p in DualTaskVNet(n_filters=8).parameters()) < 9_448_866 / 3


@pytest.mark.parametrize("shape", [(2, 1, 32, 32, 16), (1, 1, 48, 32, 32)])
def test_heads_give_one_channel_at_input_resolution(shape):
    net = DualTaskVNet(n_filters=4).eval()
    with torch.no_grad():
        seg, levelset = net(torch.randn(shape))
    assert seg.shape == levelset.shape == shape
    assert levelset.abs().max() < 1  # tanh head


def test_dropout_only_in_training_mode():
    net = DualTaskVNet(n_filters=4)
    x = torch.randn(1, 1, 32, 32, 16)
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])


def test_state_dict_uses_the_official_key_names():
    keys = DualTaskVNet().state_dict().keys()
    assert {"block_one.conv.0.weight", "block_five_up.conv.0.weight", "out_conv.weight", "out_conv2.weight"} <= set(keys)
    assert len(keys) == 207  # reference section 1 (weights, biases and BN buffers)
