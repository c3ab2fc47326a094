"""Multi-GPU and multi-node training with PyTorch's own engine: `torchrun` (or SLURM's `srun`) starts one
process per rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `setup` joins the
process group (NCCL on CUDA, gloo on the CPU) and returns the `World` the trainer talks to. Without those
variables there is no process group and every helper is a no-op, so a single process trains as before.

Every wait is bounded by DTC_DIST_TIMEOUT seconds (default 300): a rank that cannot reach the master, or a
peer that died or hangs, ends the run with a `DistributedError` that says so, not a silent hang."""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .errors import InputError

TIMEOUT_ENV = "DTC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
CHECK_REPLICAS_ENV = "DTC_CHECK_REPLICAS"  # N > 0: compare the replicas' weights every N iterations


class DistributedError(RuntimeError):
    """The ranks lost each other (a peer died, hung, or could not be reached in time)."""


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InputError(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds")
    return value


def check_replicas_every() -> int:
    raw = os.environ.get(CHECK_REPLICAS_ENV, "0")
    if not raw.isdigit():
        raise InputError(f"{CHECK_REPLICAS_ENV}={raw!r}: must be a whole number of iterations (0: off)")
    return int(raw)


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip().lstrip("-").isdigit():
        raise InputError(f"distributed run: environment variable {name}={raw!r} must be an integer "
                         "(start ranks with torchrun, or set RANK, WORLD_SIZE, LOCAL_RANK for each process)")
    return int(raw)


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size`, computing on `device`."""

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.distributed else None

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def wrap(self, model: nn.Module, sync_batchnorm: bool) -> nn.Module:
        """DistributedDataParallel around `model` (which must already be on `self.device`); the
        replicas start from rank 0's weights and buffers, and gradients are averaged over the ranks."""
        if not self.distributed:
            return model
        if sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def sum(self, values: list) -> list[float]:
        """Element-wise sum over all ranks of `values` (numbers or one-element tensors), as floats; one
        exchange and one device-to-host copy, however many values."""
        device = self._comm_device() if self.distributed else self.device
        t = torch.stack([torch.as_tensor(v).detach().to(device, torch.float64).reshape(()) for v in values])
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def gather_str(self, text: str) -> list[str]:
        """`text` of every rank, in rank order."""
        if not self.distributed:
            return [text]
        out: list = [None] * self.size
        dist.all_gather_object(out, text)
        return out

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every replica rank 0's buffers (batch-norm running statistics), which each rank's
        forward passes have since updated with its own batch."""
        if self.distributed:
            for buf in module.buffers():
                dist.broadcast(buf, src=0)

    def check_replicas(self, module: nn.Module, iteration: int) -> list[str]:
        """Every rank's `weights_digest`; raises `DistributedError` unless all are equal."""
        digests = self.gather_str(weights_digest(module))
        if len(set(digests)) > 1:
            raise DistributedError(f"the replicas' weights differ after iteration {iteration} "
                                   f"(digests by rank: {digests}); DDP did not keep them in step")
        return digests

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()

    @contextmanager
    def failures_explained(self):
        """Turn the backends' low-level errors about lost peers into a `DistributedError` naming the rank."""
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as e:
            if not self.distributed or not _is_peer_failure(e):
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.size}: lost contact with the other ranks ({_first_line(e)}). "
                f"Another rank died or stalled for more than {TIMEOUT_ENV}={timeout_s():g} s; its own log "
                "says why. Resume from the last checkpoint with --resume.") from None


def leave_lost_world(code: int) -> None:
    """End this rank now if a process group is still up: after a peer is lost, gloo's threads abort the
    interpreter's teardown (std::terminate, exit -6), which would replace the exit code the message gave."""
    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _is_peer_failure(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(
        k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer"))


def env_rank() -> int:
    """This process's rank as torchrun describes it (0 outside a distributed run)."""
    return _env_int("RANK") if "WORLD_SIZE" in os.environ else 0


def setup(device: torch.device) -> World:
    """Join the process group described by the torchrun environment, or return a one-rank World."""
    if "WORLD_SIZE" not in os.environ:
        return World(device)
    if not dist.is_available():
        raise InputError("WORLD_SIZE is set but this PyTorch build has no torch.distributed support")
    size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if size < 1 or not 0 <= rank < size:
        raise InputError(f"distributed run: RANK={rank} must be in [0, WORLD_SIZE={size})")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise InputError(f"distributed run: {' and '.join(missing)} not set (the address and port of rank 0's "
                         "node; torchrun sets them from --master-addr/--master-port or --rdzv-endpoint)")
    if device.type == "cuda":
        if device.index is not None:
            raise InputError(f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; "
                             "pass --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs")
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} visible GPUs: "
                             "start at most that many ranks per node (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s()))
        world = World(device, rank, size, local_rank)
        world.barrier()  # every rank is there (NCCL connects lazily; this makes it connect now)
    except RuntimeError as e:
        raise DistributedError(
            f"rank {rank} of {size}: could not form the {backend} process group with the master at {where} "
            f"within {TIMEOUT_ENV}={timeout_s():g} s ({_first_line(e)}). Check that all {size} ranks were "
            "started, that MASTER_ADDR/MASTER_PORT name rank 0's node and an open port, and that WORLD_SIZE "
            "matches the number of processes.") from None
    return world


def weights_digest(module: nn.Module) -> str:
    """A short hash of the exact bytes of every parameter: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
