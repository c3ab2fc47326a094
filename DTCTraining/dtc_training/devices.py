"""The devices this tool runs on: the `--device` option (`auto`, `cpu`, `cuda` or `cuda:N`, turned into a
torch.device or refused with a message before any work starts), and `device_report()`, what `dtc devices`
prints: what this PyTorch build can use here, and why not where it cannot."""
from __future__ import annotations

import platform
import re

import torch

from .errors import InputError


def resolve_device(requested: str | torch.device | None) -> torch.device:
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {requested}: not a device this tool runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {requested}: CUDA is not available in this PyTorch build or on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA GPUs from compute capability 8.0 (Ampere) on (older
    GPUs only emulate it, which `torch.cuda.is_bf16_supported()` counts as support), and CPUs with bf16
    instructions, AVX512-BF16 or AMX (others emulate it, about 100x slower than float32)."""
    if device.type == "cpu":
        # torch.cpu's probes of the CPU's instruction sets (through the cpuinfo library, on every OS)
        return any(getattr(torch.cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_bf16(amp: str, device: torch.device) -> bool:
    """Whether training autocasts to bf16 under `--amp`: `bf16` always; `auto` on CUDA GPUs that compute bf16
    natively, and never on a CPU, not even one with bf16 instructions (up to 2.6x faster there;
    docs/benchmarks.md), so that a CPU run's numbers do not depend on which CPU ran it."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda" and native_bf16(device))


def build_runs_on(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a PyTorch build compiled for `arch_list` (`torch.cuda.get_arch_list()`) has kernels for a GPU
    of compute `capability`: a cubin `sm_XY` runs on major version X from minor Y up (`sm_XYa`, `sm_XYf`:
    on X.Y only), PTX `compute_XY` on any GPU from X.Y up (compiled on first use). A GPU without either
    fails with "no kernel image is available", as new GPUs do with older builds."""
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        match = re.fullmatch(r"(\d+?)(\d)([af]?)", digits)
        if match is None:
            continue
        version, specific = (int(match[1]), int(match[2])), bool(match[3])
        if kind == "sm" and version[0] == capability[0] and (
                version[1] == capability[1] if specific else version[1] <= capability[1]):
            return True
        if kind == "compute" and not specific and version <= tuple(capability):
            return True
    return False


def _smoke_test(device: torch.device) -> str:
    """'ok', or the error of one small 3D convolution with its gradient on `device` (what training needs)."""
    try:
        conv = torch.nn.Conv3d(1, 2, 3).to(device)
        conv(torch.rand(1, 1, 8, 8, 8, device=device)).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return "ok"
    except Exception as e:  # the message is the report (no kernel image, out of memory, driver errors)
        return f"{type(e).__name__}: {e}".strip()


def device_report(smoke_test: bool = True) -> dict:
    """This machine as PyTorch sees it: versions, the CUDA build, every GPU with its memory, compute capability
    and whether the build has kernels for it, what `--device auto` picks; `problems` (a GPU this build cannot
    use, a failed test convolution) and `notes` (a CPU-only build), each in words."""
    from . import __version__

    cuda_build = torch.version.cuda
    report = {"dtc_training": __version__, "torch": torch.__version__, "python": platform.python_version(),
              "cuda_build": cuda_build, "cuda_available": torch.cuda.is_available(),
              "cpu_threads": torch.get_num_threads(), "cpu_bf16": native_bf16(torch.device("cpu")),
              "auto_device": str(resolve_device("auto")), "gpus": [],
              "notes": [], "problems": []}
    if smoke_test:
        report["cpu_check"] = _smoke_test(torch.device("cpu"))
    if cuda_build is None:
        report["notes"].append("this PyTorch build has no CUDA support (a CPU build): training and segmenting run "
                               "on the CPU; to use an NVIDIA GPU, install a CUDA build of PyTorch")
    elif not torch.cuda.is_available():
        report["problems"].append(f"this PyTorch build supports CUDA {cuda_build}, but no usable GPU was found: "
                                  "no NVIDIA GPU, no driver, or a driver older than the build needs")
    else:
        arch_list = torch.cuda.get_arch_list()
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            capability = (props.major, props.minor)
            gpu = {"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                   "capability": f"{props.major}.{props.minor}",
                   "build_has_kernels": build_runs_on(capability, arch_list),
                   "bf16": native_bf16(torch.device("cuda", index))}
            if not gpu["build_has_kernels"]:
                report["problems"].append(
                    f"cuda:{index} ({props.name}, compute capability {gpu['capability']}): this PyTorch build has "
                    f"no kernels for it (built for {' '.join(arch_list)}); install a newer CUDA build of PyTorch")
            if smoke_test:
                gpu["check"] = _smoke_test(torch.device("cuda", index))
                if gpu["check"] != "ok":
                    report["problems"].append(f"cuda:{index} ({props.name}) failed a test convolution: {gpu['check']}")
            report["gpus"].append(gpu)
    if smoke_test and report["cpu_check"] != "ok":
        report["problems"].append(f"the CPU failed a test convolution: {report['cpu_check']}")
    return report
