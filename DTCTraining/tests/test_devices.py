"""`dtc devices` and the decisions behind it: which GPUs a PyTorch build has kernels for, which compute in bf16."""
import json

import pytest
import torch

from conftest import run_dtc
from dtc_training.devices import autocast_bf16, build_runs_on, native_bf16

CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]  # a cu126 build's list


@pytest.mark.parametrize("capability, arch_list, expected", [
    ((8, 6), ["sm_80"], True),  # a cubin runs on later minors of its major version
    ((8, 0), ["sm_86"], False),  # but not on earlier ones
    ((12, 0), CU126_ARCHS, False),  # an RTX 50xx with a build made before it: "no kernel image is available"
    ((12, 0), CU126_ARCHS + ["sm_120"], True),
    ((10, 0), ["sm_100"], True), ((10, 3), ["sm_100"], True), ((9, 0), ["sm_100"], False),
    ((9, 0), ["sm_90a"], True), ((10, 0), ["sm_90a"], False), ((9, 1), ["sm_90a"], False),  # arch-specific
    ((10, 0), ["compute_90"], True), ((8, 9), ["compute_90"], False),  # PTX: any later GPU, compiled on first use
    ((8, 0), [], False),  # a CPU build lists nothing
])
def test_a_build_has_kernels_for_its_gpus_families_and_ptx_for_later_ones(capability, arch_list, expected):
    assert build_runs_on(capability, arch_list) is expected


def test_bf16_counts_as_native_from_ampere_on_and_on_cpus_with_bf16_instructions(monkeypatch):
    # No GPU here: the capability query stands in for one (the decision is what is tested).
    for capability, expected in (((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert native_bf16(torch.device("cuda", 0)) is expected
    # The CPU's instruction-set probes stand in for other CPUs.
    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert native_bf16(torch.device("cpu")) is expected


def test_amp_auto_autocasts_on_gpus_with_native_bf16_only_never_on_a_cpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)  # a bf16 CPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert not autocast_bf16("auto", cpu) and autocast_bf16("bf16", cpu) and not autocast_bf16("off", cpu)
    assert autocast_bf16("auto", gpu) and not autocast_bf16("off", gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # emulates bf16
    assert not autocast_bf16("auto", gpu) and autocast_bf16("bf16", gpu)


def test_dtc_devices_reports_what_torch_sees_and_tests_every_device():
    report = json.loads(run_dtc("devices", "--json").stdout)
    assert report["torch"] == torch.__version__ and report["cuda_build"] == torch.version.cuda
    assert report["cuda_available"] == torch.cuda.is_available()
    assert report["auto_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["cpu_check"] == "ok" and report["cpu_threads"] >= 1
    assert report["cpu_bf16"] is native_bf16(torch.device("cpu"))
    assert len(report["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert all(gpu["check"] == "ok" and gpu["build_has_kernels"] for gpu in report["gpus"])
    assert report["problems"] == []
    if torch.version.cuda is None:
        assert any("no CUDA support" in note for note in report["notes"])
    text = run_dtc("devices").stdout
    assert f"torch {torch.__version__}" in text and f"--device auto uses: {report['auto_device']}" in text
    assert ("bf16: native" if report["cpu_bf16"] else "bf16: emulated") in text.splitlines()[2]  # the CPU's line
    assert text.rstrip().endswith("no problems found")
    assert "cpu_check" not in json.loads(run_dtc("devices", "--json", "--no-test").stdout)
