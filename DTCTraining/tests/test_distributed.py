"""`dtc train` under torchrun: real 2-process runs on 127.0.0.1 with the gloo backend (CPU).

The ranks are started either by torchrun, or directly with the variables torchrun (or SLURM's srun)
sets, when a test must signal or kill one rank itself."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, events, run_dtc
from dtc_training import distributed
from dtc_training.data import load_files, read_datalist
from dtc_training.errors import InputError
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import load_model
from dtc_training.validation import validation_dice

ITERATIONS = 8
SEED = 1337  # TrainConfig's default
DIST_TIMEOUT_S = 10  # DTC_DIST_TIMEOUT in these tests: the bound on every wait for a peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DTC_DIST_TIMEOUT": str(DIST_TIMEOUT_S), **extra}


def start_rank(rank: int, world_size: int, port: int, *args) -> subprocess.Popen:
    """One rank as torchrun would start it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    env = dist_env(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, "-m", "dtc_training", "train", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_iteration(run_dir: Path, iteration: int, procs, timeout: float = 120) -> None:
    """Until rank 0's progress.jsonl reports `iteration` done (fails if a rank exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = run_dir / "progress.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        if any(json.loads(l).get("event") == "progress" and json.loads(l)["iteration"] >= iteration
               for l in lines if l.endswith("}")):
            return
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.1)
    raise AssertionError(f"no iteration {iteration} within {timeout} s")


def log_events(run_dir: Path, kind: str) -> list[dict]:
    return events((run_dir / "progress.jsonl").read_text(), kind)


def weights(model_file: Path | None = None) -> torch.Tensor:
    """All parameters of a model file (or of the seeded initial network) as one vector."""
    if model_file is not None:
        net, _ = load_model(model_file)
    else:
        torch.manual_seed(SEED)  # as the trainer seeds before it builds the network
        net = DualTaskVNet(n_filters=4)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.fixture(scope="module")
def two_ranks(phantoms, tmp_path_factory):
    """8 iterations on 2 ranks (1 labeled + 1 unlabeled item each) started by torchrun, with the
    replicas' weights compared after every iteration. The official lr steps: a run extended to 8 iterations
    equals it only where the schedule does not depend on the total (the poly decay does)."""
    out = tmp_path_factory.mktemp("two_ranks")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "dtc_training", "train", "--datalist", str(phantoms), "-o", str(out),
           "--iterations", str(ITERATIONS), "--labeled-batch", "1", "--unlabeled-batch", "1", *map(str, TINY),
           "--lr-schedule", "step"]
    proc = subprocess.run(cmd, env=dist_env(DTC_CHECK_REPLICAS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_replicas_hold_identical_weights_after_every_step(two_ranks):
    out, proc = two_ranks
    checks = events(proc.stdout, "replicas")
    assert [c["iteration"] for c in checks] == list(range(1, ITERATIONS + 1))
    for c in checks:
        assert len(c["weights"]) == 2 and c["weights"][0] == c["weights"][1], c
    assert len({c["weights"][0] for c in checks}) == ITERATIONS  # and the weights did change every step


def test_only_rank_0_reports_and_writes(two_ranks, phantoms):
    out, proc = two_ranks
    (start,) = events(proc.stdout, "start")  # one start line on stdout, not one per rank
    assert start["ranks"] == 2 and start["backend"] == "gloo"
    assert len(log_events(out, "start")) == 1
    assert [e["iteration"] for e in events(proc.stdout, "progress")] == list(range(1, ITERATIONS + 1))
    (done,) = events(proc.stdout, "done")
    # the 2 validation cases were shared by the 2 ranks: their mean is the one-process Dice of the saved model
    validation = load_files(read_datalist(phantoms), None, None, "test").validation
    net, meta = load_model(out / "model.safetensors")
    expected = validation_dice(net, validation, meta["patch_size"], torch.device("cpu"), meta["n_filters"])
    assert len(validation) == 2 and done["val_dice"] == pytest.approx(expected, abs=1e-4)
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.pt").is_file()
    assert json.loads((out / "train_config.json").read_text())["ranks"] == 2


def test_two_ranks_resumed_halfway_end_where_the_uninterrupted_run_ends(two_ranks, phantoms, tmp_path):
    out, _ = two_ranks

    def torchrun(iterations, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "dtc_training", "train", "--datalist", str(phantoms), "-o", str(tmp_path),
               "--iterations", str(iterations), "--labeled-batch", "1", "--unlabeled-batch", "1", *map(str, TINY),
               *extra]
        proc = subprocess.run(cmd, env=dist_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torchrun(ITERATIONS // 2, "--lr-schedule", "step")
    torchrun(ITERATIONS, "--resume")
    # Rank 1's dropout masks after the resume must be those of the uninterrupted run, or the weights part.
    torch.testing.assert_close(weights(tmp_path / "model.safetensors"), weights(out / "model.safetensors"), rtol=1e-5, atol=1e-6)


def test_two_ranks_learn_like_one_rank_with_the_same_global_batch(two_ranks, phantoms, tmp_path):
    """Same initial weights, same cases in every global batch, same lr and consistency schedules. Not
    bit-identical (docs/distributed.md): rank 1's items are augmented with other seeds, each rank drops
    out and normalizes (BatchNorm) its own items, and the Dice is taken per rank then averaged."""
    out2, proc2 = two_ranks
    one = run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--iterations", ITERATIONS,
                  "--labeled-batch", 2, "--unlabeled-batch", 2, "--lr-schedule", "step", *TINY, env=dist_env())
    loss1 = [e["loss"] for e in events(one.stdout, "progress")]
    loss2 = [e["loss"] for e in events(proc2.stdout, "progress")]
    assert abs(loss2[0] - loss1[0]) < 0.05 * loss1[0]  # the same network on the same cases
    for losses in (loss1, loss2):
        assert sum(losses[-3:]) < sum(losses[:3])  # both learn
    assert [e["lr"] for e in events(one.stdout, "progress")] == [e["lr"] for e in events(proc2.stdout, "progress")]
    w0 = weights()
    step1, step2 = weights(tmp_path / "model.safetensors") - w0, weights(out2 / "model.safetensors") - w0
    cosine = torch.nn.functional.cosine_similarity(step1, step2, dim=0).item()
    ratio = (step2.norm() / step1.norm()).item()
    print(f"first loss 1 rank {loss1[0]:.4f}, 2 ranks {loss2[0]:.4f}; weight change: cosine {cosine:.3f}, "
          f"norm ratio {ratio:.3f}")
    # measured: cosine 0.77, ratio 1.54 (per-rank Dice of 1 labeled item and 2-item BatchNorm push harder)
    assert cosine > 0.5, cosine  # unrelated updates would give about 0
    assert 0.4 < ratio < 2.5, ratio


def test_a_stop_on_one_rank_stops_all_and_resumes_with_another_world_size(phantoms, tmp_path):
    port = free_port()
    args = ["--datalist", phantoms, "-o", tmp_path, "--iterations", 200, "--checkpoint-every", 1000, *TINY]
    ranks = [start_rank(r, 2, port, *args) for r in range(2)]
    try:
        wait_for_iteration(tmp_path, 1, ranks)
        ranks[1].send_signal(signal.SIGTERM)  # as SLURM's scancel or torchrun would, but to one rank only
        codes = [p.wait(timeout=60) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert codes == [3, 3], [p.communicate() for p in ranks]
    (stopped,) = log_events(tmp_path, "stopped")
    assert stopped["reason"] == "SIGTERM"
    stopped_at = stopped["iteration"]
    # the checkpoint holds global iterations: one rank continues where two stopped
    resumed = run_dtc("train", "--datalist", phantoms, "-o", tmp_path, "--resume",
                      "--iterations", stopped_at + 2, "--progress", "json", env=dist_env())
    (start,) = events(resumed.stdout, "start")
    assert start["iteration"] == stopped_at and start["ranks"] == 1 and start["resumed"]
    assert [e["iteration"] for e in events(resumed.stdout, "progress")] == [stopped_at + 1, stopped_at + 2]
    assert events(resumed.stdout, "done")[0]["iterations"] == stopped_at + 2


def test_killing_one_rank_ends_the_others_with_an_error_in_bounded_time(phantoms, tmp_path):
    port = free_port()
    args = ["--datalist", phantoms, "-o", tmp_path, "--iterations", 200, "--checkpoint-every", 1000, *TINY]
    ranks = [start_rank(r, 2, port, *args) for r in range(2)]
    try:
        wait_for_iteration(tmp_path, 1, ranks)
        ranks[0].kill()  # the master: it also hosts the rendezvous store
        t0 = time.monotonic()
        code = ranks[1].wait(timeout=DIST_TIMEOUT_S + 30)
        elapsed = time.monotonic() - t0
        _, err = ranks[1].communicate()
    finally:
        for p in ranks:
            p.kill()
    assert code == 1, err[-2000:]
    assert "rank 1 of 2: lost contact with the other ranks" in err
    assert "Traceback" not in err
    print(f"rank 1 exited {elapsed:.1f} s after rank 0 was killed")
    assert elapsed < DIST_TIMEOUT_S + 20


def test_a_rank_that_cannot_reach_the_master_times_out_with_a_message(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))  # nobody listens there
    monkeypatch.setenv("DTC_DIST_TIMEOUT", "2")
    t0 = time.monotonic()
    with pytest.raises(distributed.DistributedError, match=r"rank 1 of 2: could not form the gloo process group"):
        distributed.setup(torch.device("cpu"))
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 must be in"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' must be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
      "DTC_DIST_TIMEOUT": "soon"}, "DTC_DIST_TIMEOUT='soon'"),
])
def test_a_misconfigured_world_is_refused_before_any_wait(monkeypatch, env, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    t0 = time.monotonic()
    with pytest.raises(InputError, match=message):
        distributed.setup(torch.device("cpu"))
    assert time.monotonic() - t0 < 5  # refused, not timed out


def test_sync_batchnorm_on_cpu_ranks_is_refused(tmp_path):
    from dtc_training.config import TrainConfig
    from dtc_training.trainer import _train

    cpu_rank = distributed.World(torch.device("cpu"), rank=0, size=2)
    with pytest.raises(InputError, match="SyncBatchNorm works on CUDA devices only"):
        _train(TrainConfig(sync_batchnorm=True), None, tmp_path, False, "json", cpu_rank)


def test_without_torchrun_there_is_one_rank_and_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.setup(torch.device("cpu"))
    assert (world.rank, world.size, world.distributed, world.is_main) == (0, 1, False, True)
    assert world.sum([1.5, torch.tensor(2.0), torch.tensor([3.0])]) == [1.5, 2.0, 3.0]


def test_weight_digest_sees_a_one_ulp_change():
    torch.manual_seed(0)
    net = DualTaskVNet(n_filters=4)
    before = distributed.weights_digest(net)
    assert distributed.weights_digest(net) == before
    with torch.no_grad():
        w = net.out_conv.bias
        w.copy_(torch.nextafter(w, w + 1))
    assert distributed.weights_digest(net) != before


def test_a_fine_tuning_under_torchrun_starts_every_rank_from_the_model(two_ranks, phantoms, tmp_path):
    """`dtc train --init` on 2 ranks: the replicas agree after every step and start from the model's weights
    (at a learning rate of 1e-9, the fine-tuned weights are the model's, not the seeded new network's)."""
    out, _ = two_ranks
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "dtc_training", "train", "--datalist", str(phantoms), "-o", str(tmp_path / "tuned"),
           "--init", str(out / "model.safetensors"), "--iterations", "2", "--lr", "1e-9",
           "--labeled-batch", "1", "--unlabeled-batch", "1", *map(str, TINY)]
    proc = subprocess.run(cmd, env=dist_env(DTC_CHECK_REPLICAS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(c["weights"][0] == c["weights"][1] for c in events(proc.stdout, "replicas"))
    tuned, model = weights(tmp_path / "tuned" / "model.safetensors"), weights(out / "model.safetensors")
    torch.testing.assert_close(tuned, model, rtol=0, atol=1e-6)
    assert (tuned - weights()).abs().max() > 1e-3
    assert json.loads((tmp_path / "tuned" / "train_config.json").read_text())["config"]["init"]["path"] == \
        str((out / "model.safetensors").resolve())
