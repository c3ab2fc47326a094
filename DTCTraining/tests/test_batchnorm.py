import torch
from torch import nn

from dtc_training.batchnorm import recalibrate_batchnorm, recalibrated_copy
from dtc_training.model import DualTaskVNet


def test_statistics_are_the_average_over_dropout_free_batches_and_weights_stay():
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4)
    batches = [torch.randn(2, 1, 32, 32, 16) * 3 + 1, torch.randn(2, 1, 32, 32, 16) - 2]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batchnorm(net, batches, torch.device("cpu"))
    assert net.training  # mode restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())
    first_norm = net.block_one.conv[1]
    with torch.no_grad():
        conv = [net.block_one.conv[0](x) for x in batches]
    expected_mean = sum(c.mean((0, 2, 3, 4)) for c in conv) / 2
    expected_var = sum(c.var((0, 2, 3, 4), unbiased=True) for c in conv) / 2
    assert torch.allclose(first_norm.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(first_norm.running_var, expected_var, rtol=1e-4)
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, nn.BatchNorm3d))


def test_dropout_is_off_while_statistics_are_gathered():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 16)
    a, b = DualTaskVNet(n_filters=4), DualTaskVNet(n_filters=4)
    b.load_state_dict(a.state_dict())
    recalibrate_batchnorm(a, [x], torch.device("cpu"))
    torch.manual_seed(1)  # other dropout masks would give other statistics
    recalibrate_batchnorm(b, [x], torch.device("cpu"))
    assert torch.equal(a.block_six.conv[1].running_var, b.block_six.conv[1].running_var)


def test_recalibrated_copy_leaves_the_training_model_alone():
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4)
    net(torch.randn(2, 1, 32, 32, 16))  # some training-mode statistics to keep
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = [torch.randn(2, 1, 32, 32, 16) * 2 + 1]
    clone = recalibrated_copy(net, images, torch.device("cpu"))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    recalibrate_batchnorm(net, images, torch.device("cpu"))  # what the final model gets
    assert all(torch.equal(v, clone.state_dict()[k]) for k, v in net.state_dict().items())
    assert not torch.equal(before["block_one.conv.1.running_mean"], net.state_dict()["block_one.conv.1.running_mean"])
