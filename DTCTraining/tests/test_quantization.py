"""int8 fast mode on the CPU (`--precision int8`): the quantized network keeps the fp32 network's output
within quantization error, labels what fp32 labels, reports itself, and refuses what it cannot do."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_dtc
from dtc_training import quantization
from dtc_training.errors import InputError
from dtc_training.infer import Model, segment
from test_infer import ball_image, threshold_model_file


def test_int8_of_a_trained_model_keeps_its_labels(phantoms, trained_run):
    # A trained network, not a random one: random weights amplify any rounding layer after layer, which
    # no trained model does (on the real LA model int8 agreed with fp32 at Dice 0.995).
    model = Model.load(trained_run[0] / "model.safetensors", "cpu")
    image = sitk.ReadImage(str(phantoms.parent / "images/phantom_007.nrrd"))
    fp32 = segment(image, model, probability=True, precision="fp32")
    int8 = segment(image, model, probability=True, precision="int8")
    reference, quantized = (sitk.GetArrayFromImage(r.probability) for r in (fp32, int8))
    expected, label = (sitk.GetArrayFromImage(r.label).astype(bool) for r in (fp32, int8))
    assert expected.sum() > 1000 and reference.std() > 0.1  # something to compare
    assert np.abs(quantized - reference).mean() < 0.02
    assert 2 * (expected & label).sum() / (expected.sum() + label.sum()) > 0.95


def test_int8_labels_the_ball_as_fp32_does(tmp_path):
    model = Model.load(threshold_model_file(tmp_path / "model.safetensors", spacing=None), "cpu")
    image, _, _ = ball_image(size=(70, 50, 30), spacing=(1.0, 1.0, 1.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                             centre_index=(35, 25, 15))
    fp32, int8 = segment(image, model, precision="fp32"), segment(image, model, precision="int8")
    assert (fp32.info["precision"], int8.info["precision"]) == ("fp32", "int8")
    assert int8.info["windows"] == fp32.info["windows"] > 1
    label = sitk.GetArrayFromImage(int8.label)
    assert label.sum() > 1000
    np.testing.assert_array_equal(label, sitk.GetArrayFromImage(fp32.label))


def test_cli_reports_int8(tmp_path):
    model = threshold_model_file(tmp_path / "model.safetensors")
    image, _, _ = ball_image()
    source, report = tmp_path / "scan.nrrd", tmp_path / "report.json"
    sitk.WriteImage(image, str(source))
    proc = run_dtc("infer", "--model", model, source, "-o", tmp_path / "label.nrrd", "--precision", "int8",
                   "--report", report)
    assert json.loads(report.read_text())["reports"][0]["precision"] == "int8"
    assert "(fast mode, int8, " in proc.stderr
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "label.nrrd"))).any()


def test_int8_without_a_quantized_engine_is_refused(tmp_path, monkeypatch):
    model = Model.load(threshold_model_file(tmp_path / "model.safetensors"), "cpu")
    image, _, _ = ball_image()
    monkeypatch.setattr(quantization, "ENGINES", ("no-such-engine",))  # as on an ARM build of torch
    with pytest.raises(InputError, match="lacks .*use --precision fp32"):
        segment(image, model, precision="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_is_refused_on_cuda(tmp_path):
    model = Model.load(threshold_model_file(tmp_path / "model.safetensors"), "cuda")
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        segment(ball_image()[0], model, precision="int8")
