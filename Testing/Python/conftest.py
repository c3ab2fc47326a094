"""Shared fixtures for the DTCSegmentation logic tests. They run on real MRML (the `slicer-core` wheel):
a fresh scene per test, phantom volumes built with the backend's phantom generator."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "DTCSegmentation"
# the panel's Qt modules in DTCSegmentationLib: everything else there is Qt-free logic
PANEL_MODULES = ("Widget", "ParameterWidgets", "LabeledPairsTable", "TrainingSection", "ModelsSection",
                 "DependenciesSection", "AdaptationSection")
for path in (MODULE_DIR, REPO / "DTCTraining"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import slicer  # noqa: E402
import vtk  # noqa: E402


@pytest.fixture(autouse=True)
def noBuiltinModel(monkeypatch):
    """No built-in model unless a test gives one (`DTC_BUILTIN_MODELS`): the model shipped in the repository
    must not change what the tests see."""
    monkeypatch.setenv("DTC_BUILTIN_MODELS", "")


def offlinePip(requirements):
    """Slicer's `slicer.util.pip_install` with real pip and no network: pip's lines printed as Slicer prints
    them, and CalledProcessError when it fails (an index on a closed local port, no configuration, one retry)."""
    args = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--index-url",
            "http://127.0.0.1:9/simple", "--retries", "1", "--timeout", "2", "--dry-run", "--ignore-installed"]
    requirements = shlex.split(requirements) if isinstance(requirements, str) else list(requirements)
    process = subprocess.Popen(args + requirements, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        print(line.rstrip())
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, args)


@pytest.fixture
def scene():
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)


def obliqueMatrix(spacing=(0.7, 0.9, 1.6), origin=(-20.0, 15.0, 7.5), angle=23.0):
    """IJK-to-RAS with a rotation about an oblique axis and anisotropic spacing."""
    t = vtk.vtkTransform()
    t.Translate(*origin)
    t.RotateWXYZ(angle, 0.3, 0.5, 0.8)
    t.Scale(*spacing)
    m = vtk.vtkMatrix4x4()
    m.DeepCopy(t.GetMatrix())
    return m


def addVolume(scene, array_kji, name, matrix=None, labelmap=False):
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    if matrix is not None:
        node.SetIJKToRASMatrix(matrix)
    node.CreateDefaultDisplayNodes()
    return node


def phantom(seed=0, size=(32, 32, 32)):
    """(image, label) in (k, j, i) order from the backend's LA-like phantom generator."""
    from dtc_training.phantoms import make_phantom

    image, label = make_phantom(np.random.default_rng(seed), size=size)
    return (np.ascontiguousarray(image.transpose(2, 1, 0)).astype(np.float32),
            np.ascontiguousarray(label.transpose(2, 1, 0)).astype(np.uint8))


@pytest.fixture
def phantomScene(scene):
    """Three labeled phantoms (one as a segmentation on the volume's grid, one as a segmentation with
    another geometry, one as a labelmap) and two unlabeled volumes, all oblique and anisotropic."""
    from DTCSegmentationLib import SceneIO

    logic = SceneIO.segmentationsLogic(scene)
    nodes = {"labeled": [], "unlabeled": []}
    for i in range(3):
        image, label = phantom(i)
        m = obliqueMatrix(origin=(-10.0 * i, 5.0, 2.0))
        volume = addVolume(scene, image, f"case{i}", m)
        if i == 1:  # the label lives on a coarser grid than its volume (same orientation)
            labelmap = addVolume(scene, label[::2, ::2, ::2], f"case{i}-label",
                                 obliqueMatrix(spacing=(1.4, 1.8, 3.2), origin=(-10.0 * i, 5.0, 2.0)), labelmap=True)
        else:
            labelmap = addVolume(scene, label, f"case{i}-label", m, labelmap=True)
        if i == 2:
            nodes["labeled"].append((volume, labelmap))
            continue
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"case{i}-seg")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume if i == 0 else labelmap)
        logic.ImportLabelmapToSegmentationNode(labelmap, seg)
        scene.RemoveNode(labelmap)
        nodes["labeled"].append((volume, seg))
    for i in range(3, 5):
        image, _ = phantom(i)
        nodes["unlabeled"].append(addVolume(scene, image, f"unlabeled{i}", obliqueMatrix()))
    return nodes


@pytest.fixture(scope="session")
def tinyModel(tmp_path_factory):
    """A real DTC model file (untrained weights, n_filters 4, 16^3 patches): fast to make and to run."""
    import torch
    from dtc_training.model import DualTaskVNet
    from dtc_training.model_io import save_model

    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("model") / "model.safetensors", DualTaskVNet(in_channels=1, n_filters=4),
                      TINY_MODEL_METADATA)


TINY_MODEL_METADATA = {"n_filters": 4, "in_channels": 1, "patch_size": [16, 16, 16], "spacing": None,
                       "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium", "data": {"source": "test"}}


@pytest.fixture(scope="session")
def brightModel(tmp_path_factory):
    """A DTC model file whose network labels the voxels brighter than half an SD above the scan's mean,
    whatever the orientation (channel 0 carries relu(z) from the first stage to the head through the last
    skip): for tests of where a label lands, which an untrained network's near-threshold output cannot tell."""
    import torch
    from dtc_training.model import DualTaskVNet
    from dtc_training.model_io import save_model

    net = DualTaskVNet(in_channels=1, n_filters=4).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        for layer in net.modules():
            if isinstance(layer, torch.nn.BatchNorm3d):
                layer.weight.fill_(1.0)  # running statistics 0 and 1: identity
        net.block_one.conv[0].weight[0, 0, 1, 1, 1] = 1.0
        net.block_nine.conv[0].weight[0, 0, 1, 1, 1] = 1.0
        net.out_conv2.weight[0, 0] = 1.0
        net.out_conv2.bias.fill_(-0.5)
    return save_model(tmp_path_factory.mktemp("bright") / "model.safetensors", net, TINY_MODEL_METADATA)
