"""The extension's CMake code, configured against a stand-in for Slicer's CMake package
(Testing/CMake/SlicerStandIn: no Slicer build exists on these machines). The stand-in's macros take the
arguments of Slicer's and CTK's and copy what they would copy, so this checks that the CMake files run,
name existing files, set the Extensions Index metadata, and bundle a complete, importable dtc_training."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    build = tmp_path_factory.mktemp("extension-build")
    proc = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build),
                           f"-DSlicer_DIR={REPO / 'Testing' / 'CMake' / 'SlicerStandIn'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return build


def test_configure_bundles_the_module_and_the_whole_backend(configured):
    modules = configured / "lib" / "Slicer" / "qt-scripted-modules"
    assert (modules / "DTCSegmentation.py").is_file()
    assert (modules / "DTCSegmentationLib" / "Widget.py").is_file()
    assert (modules / "Resources" / "UI" / "DTCSegmentation.ui").is_file()
    backend = sorted(p.relative_to(REPO / "DTCTraining").as_posix()
                     for p in (REPO / "DTCTraining" / "dtc_training").rglob("*.py"))
    bundled = sorted(p.relative_to(modules).as_posix() for p in (modules / "dtc_training").rglob("*.py"))
    assert bundled == backend
    # the bundled copy works on its own, as `PythonSlicer -m dtc_training` in the training child
    code = "import dtc_training.cli as cli; print(cli.__file__); cli.main(['--help'])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=modules, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(modules), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.startswith(str(modules / "dtc_training" / "cli.py")), proc.stdout + proc.stderr
    assert "make-phantoms" in proc.stdout
    assert (configured / "extension-metadata.txt").read_text().splitlines() == ["PyTorch", "Segmentation"]


def test_a_listed_file_that_does_not_exist_fails_the_configure(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "demo", "__pycache__"))
    (source / "DTCSegmentation" / "DTCSegmentationLib" / "ProgressPlot.py").unlink()
    proc = subprocess.run(["cmake", "-S", str(source), "-B", str(tmp_path / "build"),
                           f"-DSlicer_DIR={source / 'Testing' / 'CMake' / 'SlicerStandIn'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "ProgressPlot.py" in proc.stderr


def test_the_built_in_model_is_installed_beside_the_bundled_backend_which_lists_it(tmp_path, tinyModel):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "demo", "__pycache__"))
    models = source / "Resources" / "Models"
    models.mkdir(parents=True, exist_ok=True)
    for old in models.glob("*.safetensors"):
        old.unlink()
    shutil.copyfile(tinyModel, models / "la-test.safetensors")
    build, prefix = tmp_path / "build", tmp_path / "installed"
    for command in (["cmake", "-S", str(source), "-B", str(build),
                     f"-DSlicer_DIR={source / 'Testing' / 'CMake' / 'SlicerStandIn'}"],
                    ["cmake", "--install", str(build), "--prefix", str(prefix)]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    installed = prefix / "lib" / "Slicer" / "qt-scripted-modules" / "Resources" / "Models" / "la-test.safetensors"
    assert installed.read_bytes() == tinyModel.read_bytes()
    # the bundled backend finds it with no setting, lists it as built-in, and reads it without torch
    modules = build / "lib" / "Slicer" / "qt-scripted-modules"
    assert (modules / "dtc_training" / "models.json").is_file()
    code = ("import sys; from dtc_training.model_store import ModelStore; s = ModelStore(sys.argv[1]); "
            "print(s.default(), [m.builtin for m in s.list()], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "DTC_BUILTIN_MODELS"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], cwd=modules, capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": str(modules)})
    assert proc.stdout.split() == ["la-test", "[True]", "False"], proc.stdout + proc.stderr
