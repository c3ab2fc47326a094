"""`dtc train --split-batchnorm`: the labeled and unlabeled crops go through the network in separate passes,
so batch norm normalises each group by its own statistics; at inference the network is the same."""
import subprocess
import sys

import pytest
import torch

from conftest import TINY, events, run_dtc
from dtc_training.batchnorm import GroupedForward
from dtc_training.checkpoint import load_checkpoint
from dtc_training.config import TrainConfig
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import load_model
from test_distributed import dist_env, free_port


@pytest.fixture
def net_and_batch():
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4)
    # two "labeled" crops and two "unlabeled" ones of another brightness: their statistics differ
    image = torch.cat([torch.randn(2, 1, 32, 32, 16), 3 + 2 * torch.randn(2, 1, 32, 32, 16)])
    return net, image


def test_each_group_is_normalised_as_if_it_were_the_whole_batch(net_and_batch):
    net, image = net_and_batch
    net.train()
    torch.manual_seed(1)  # the same dropout masks in both: the groups draw them in order
    grouped = GroupedForward(net, 2)(image)
    torch.manual_seed(1)
    alone = [net(image[:2]), net(image[2:])]
    for i, output in enumerate(grouped):
        torch.testing.assert_close(output, torch.cat([alone[0][i], alone[1][i]]))
    torch.manual_seed(1)
    joint = net(image)
    assert not torch.allclose(grouped[0][:2], joint[0][:2], atol=1e-3)  # one batch mixes the statistics


def test_in_eval_mode_it_is_the_same_network(net_and_batch):
    net, image = net_and_batch
    net.eval()
    for got, expected in zip(GroupedForward(net, 2)(image), net(image)):
        torch.testing.assert_close(got, expected)
    assert len(GroupedForward(net, 2)(image[:2])) == 2  # a batch of labeled crops only: one pass


def test_the_switch_changes_training_is_recorded_and_resumes(phantoms, tmp_path):
    common = ["--datalist", phantoms, "--lr-schedule", "step", *TINY]
    plain = run_dtc("train", "-o", tmp_path / "plain", "--iterations", 1, *common)
    whole = run_dtc("train", "-o", tmp_path / "whole", "--iterations", 3, "--split-batchnorm", *common)
    first_plain, first_split = events(plain.stdout, "progress")[0], events(whole.stdout, "progress")[0]
    assert first_split["loss_dice"] != pytest.approx(first_plain["loss_dice"], rel=1e-4)
    run_dtc("train", "-o", tmp_path / "split", "--iterations", 2, "--split-batchnorm", *common)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["config"]["split_batchnorm"] is True
    # resumed without the flag: the run's own switch, and the weights of the uninterrupted run
    run_dtc("train", "--datalist", phantoms, "-o", tmp_path / "split", "--resume", "--iterations", 3,
            "--progress", "json")
    split, uninterrupted = load_model(tmp_path / "split" / "model.safetensors"), load_model(
        tmp_path / "whole" / "model.safetensors")
    assert split[1]["config"]["split_batchnorm"] is True
    for (name, got), expected in zip(split[0].state_dict().items(), uninterrupted[0].state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert TrainConfig.from_dict({"iterations": 10}).split_batchnorm is False  # a run saved before the switch


def test_two_ranks_keep_identical_replicas_with_the_switch(phantoms, tmp_path):
    """DistributedDataParallel sees one forward (the wrapper's two passes) per backward."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "dtc_training", "train",
           "--datalist", str(phantoms), "-o", str(tmp_path), "--iterations", "3", "--labeled-batch", "1",
           "--unlabeled-batch", "1", "--split-batchnorm", *map(str, TINY)]
    proc = subprocess.run(cmd, env=dist_env(DTC_CHECK_REPLICAS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = events(proc.stdout, "replicas")
    assert [c["iteration"] for c in checks] == [1, 2, 3]
    assert all(c["weights"][0] == c["weights"][1] for c in checks)
