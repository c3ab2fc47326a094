"""`--precision`: auto resolves per device (fp16 on CUDA, int8 on an x86-64 CPU with a quantized engine, fp32
elsewhere), official mode is always fp32, impossible combinations are refused, and every report names the
arithmetic that actually ran."""
import json

import pytest
import SimpleITK as sitk
import torch

from conftest import run_dtc
from dtc_training import precision, quantization
from dtc_training.errors import InputError
from dtc_training.infer import Model, segment
from dtc_training.precision import resolve_precision
from test_evaluate import fake_la_root
from test_infer import ball_image, threshold_model_file

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
HAS_ENGINE = quantization.available_engine() is not None


@pytest.mark.skipif(not HAS_ENGINE, reason="this torch has no quantized engine with 3D convolutions")
def test_auto_is_int8_on_an_x86_64_cpu_only(monkeypatch):
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    assert resolve_precision("auto", "fast", CPU) == "int8"
    monkeypatch.setattr(precision.platform, "machine", lambda: "AMD64")  # Windows spells it so
    assert resolve_precision("auto", "fast", CPU) == "int8"
    monkeypatch.setattr(precision.platform, "machine", lambda: "arm64")
    assert resolve_precision("auto", "fast", CPU) == "fp32"
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(quantization, "ENGINES", ("no-such-engine",))
    assert resolve_precision("auto", "fast", CPU) == "fp32"


def test_auto_is_fp16_on_cuda_and_official_is_always_fp32():
    assert resolve_precision("auto", "fast", CUDA) == "fp16"
    assert resolve_precision("fp32", "fast", CUDA) == "fp32"
    for device in (CPU, CUDA):
        assert resolve_precision("auto", "official", device) == "fp32"
        assert resolve_precision("fp32", "official", device) == "fp32"


@pytest.mark.parametrize("requested, mode, device, message", [
    ("int4", "fast", CPU, "precision 'int4': choose one of auto, fp32, fp16, int8"),
    ("int8", "official", CPU, "official mode is the fp32 parity reference: int8 runs in fast mode only"),
    ("fp16", "official", CUDA, "official mode is the fp32 parity reference: fp16 runs in fast mode only"),
    ("int8", "fast", CUDA, "int8 runs on the CPU only"),
    ("fp16", "fast", CPU, "fp16 runs on CUDA only"),
])
def test_refusals(requested, mode, device, message):
    with pytest.raises(InputError, match=message):
        resolve_precision(requested, mode, device)


def test_reports_name_what_ran(tmp_path):
    model = Model.load(threshold_model_file(tmp_path / "model.pt"), "cpu")
    image, _, _ = ball_image()
    default = "int8" if precision.int8_by_default() else "fp32"
    assert segment(image, model).info["precision"] == default
    assert segment(image, model, precision="fp32").info["precision"] == "fp32"
    assert segment(image, model, mode="official").info["precision"] == "fp32"

    source, report = tmp_path / "scan.nrrd", tmp_path / "report.json"
    sitk.WriteImage(image, str(source))
    proc = run_dtc("infer", "--model", tmp_path / "model.pt", source, "-o", tmp_path / "label.nrrd",
                   "--device", "cpu", "--report", report)
    assert json.loads(report.read_text())["reports"][0]["precision"] == default
    assert f"(fast mode, {default}, " in proc.stderr


def test_evaluate_records_the_resolved_precision(tmp_path):
    model = threshold_model_file(tmp_path / "model.pt", spacing=(0.625, 0.625, 0.625))
    fake_la_root(tmp_path / "LA", ["caseA"])
    for flags, expected in [((), "int8" if precision.int8_by_default() else "fp32"),
                            (("--precision", "fp32"), "fp32"), (("--mode", "official"), "fp32")]:
        run_dtc("evaluate", "--model", model, "--la-root", tmp_path / "LA", "--device", "cpu", *flags,
                "--json", tmp_path / "r.json")
        assert json.loads((tmp_path / "r.json").read_text())["settings"]["precision"] == expected
    proc = run_dtc("evaluate", "--model", model, "--la-root", tmp_path / "LA", "--device", "cpu",
                   "--precision", "fp16", check=False)
    assert proc.returncode == 2 and "fp16 runs on CUDA only" in proc.stderr


def test_cli_refuses_a_precision_before_reading_inputs(tmp_path):
    model = threshold_model_file(tmp_path / "model.pt")
    proc = run_dtc("infer", "--model", model, tmp_path / "missing.nrrd", "-o", tmp_path / "label.nrrd",
                   "--device", "cpu", "--precision", "fp16", check=False)
    assert proc.returncode == 2 and "fp16 runs on CUDA only" in proc.stderr and "missing.nrrd" not in proc.stderr
