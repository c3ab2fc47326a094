"""First-use dependency check and install (DTCSegmentationLib.Dependencies). The installed packages are
real; a missing or outdated package is simulated by hiding its metadata. The installers are recording
stand-ins (a real install would download gigabytes), or real pip pointed at an index that does not answer,
or a stand-in for the PyTorch extension with the real one's `installTorch` parameters."""
from __future__ import annotations

import ast
import errno
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import real_api
import slicer
from conftest import MODULE_DIR, REPO, offlinePip

from DTCSegmentationLib import Dependencies
from DTCSegmentationLib.Dependencies import DependencyError

REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def environment(monkeypatch):
    """Pretend `monai` is absent and `torch` is older than required; everything else is as installed."""
    real_version = Dependencies._version
    versions = {"monai": None, "torch": "2.0.1"}
    monkeypatch.setattr(Dependencies, "_version", lambda dist: versions.get(dist, real_version(dist)))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "monai" else REAL_FIND_SPEC(name, *a))


def test_check_reads_the_real_environment():
    status = Dependencies.check()
    assert status.ok, status.text()
    assert status.versions["torch"] and status.versions["monai"]
    assert "dtc_training backend: found" in status.text()


def test_check_lists_missing_and_outdated_packages(environment):
    status = Dependencies.check()
    assert status.missing == ["torch>=2.1", "monai>=1.3"] and not status.ok
    assert "monai: missing" in status.text() and "torch: 2.0.1" in status.text()


def test_headless_never_asks_and_names_the_install_command(environment):
    calls = []
    with pytest.raises(DependencyError) as error:
        Dependencies.ensure(interactive=False, confirm=lambda *a: calls.append(a) or True,
                            installTorch=calls.append, pipInstall=calls.append)
    assert calls == []
    assert error.value.missing == ["torch>=2.1", "monai>=1.3"]
    assert 'PythonSlicer -m pip install "torch>=2.1" "monai>=1.3"' in str(error.value)


def test_without_slicer_and_without_a_confirm_callback_nothing_is_installed(environment):
    # the slicer-core wheel has no application: the headless path, never a dialog
    with pytest.raises(DependencyError, match="monai"):
        Dependencies.ensure(interactive=True)


def test_declining_the_one_confirmation_installs_nothing(environment):
    asked, installed = [], []
    with pytest.raises(DependencyError, match="installation cancelled"):
        Dependencies.ensure(confirm=lambda text, details: asked.append(text) or False,
                            installTorch=installed.append, pipInstall=installed.append)
    assert len(asked) == 1 and "torch>=2.1" in asked[0] and "monai>=1.3" in asked[0]
    assert installed == []


def test_accepting_installs_torch_through_its_installer_and_the_rest_through_pip(environment):
    torch_installs, pip_installs = [], []
    with pytest.raises(DependencyError, match="installed, but still not importable: torch>=2.1, monai>=1.3"):
        Dependencies.ensure(confirm=lambda text, details: True, installTorch=torch_installs.append,
                            pipInstall=pip_installs.append)  # recorders, which install nothing
    assert torch_installs == ["torch>=2.1"]  # the PyTorch extension picks the CUDA build in Slicer
    assert pip_installs == [["monai>=1.3"]]


def test_a_missing_backend_is_reported_before_anything_is_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dtc_training" else REAL_FIND_SPEC(name, *a))
    with pytest.raises(DependencyError, match="dtc_training backend is not found"):
        Dependencies.ensure(confirm=lambda *a: pytest.fail("must not ask"))


def test_device_check_reports_what_the_backend_python_can_use():
    check = Dependencies.DeviceCheck()  # the real `dtc devices` in a child process
    report = check.wait(timeout=120)
    assert "torch " in report and "--device auto uses:" in report
    assert "test convolution ok" in report


def test_a_failed_device_check_says_why():
    import sys

    def failing(args, env=None):  # a real child that fails as a broken torch install would
        from DTCSegmentationLib.Process import ChildProcess

        return ChildProcess([sys.executable, "-c", "import sys; print('OSError: libcudnn.so.9: cannot open shared "
                                                  "object file'); sys.exit(1)"], env=env)

    report = Dependencies.DeviceCheck(processFactory=failing).wait(timeout=60)
    assert "exit code 1" in report and "libcudnn" in report


def test_the_requirements_file_is_the_list_the_code_reads_and_the_backend_declares(tmp_path, monkeypatch):
    import tomllib

    declared = tomllib.loads((REPO / "DTCTraining" / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [f"{name}>={floor}" for name, floor in Dependencies.requirements()]
    assert sorted(listed) == sorted(declared)
    assert list(Dependencies.check().versions) == [name for name, _ in Dependencies.requirements()]
    planted = tmp_path / "requirements.txt"
    planted.write_text((MODULE_DIR / "Resources" / "requirements.txt").read_text() + "no-such-package>=1.0\n")
    monkeypatch.setattr(Dependencies, "REQUIREMENTS_FILE", planted)
    assert Dependencies.check().missing == ["no-such-package>=1.0"]
    planted.write_text("torch == 2.1\n")
    with pytest.raises(ValueError, match="requirements.txt: cannot read the requirement 'torch == 2.1'"):
        Dependencies.check()


def test_a_package_whose_files_are_gone_is_broken_and_reinstalled(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scipy" else REAL_FIND_SPEC(name, *a))
    status = Dependencies.check()
    assert status.missing == ["scipy>=1.10"] and "broken: cannot be imported" in status.versions["scipy"]


def test_without_network_pip_fails_with_the_reason_and_what_to_do(environment):
    with pytest.raises(DependencyError) as error:
        Dependencies.ensure(confirm=lambda *a: True, installTorch=lambda req: None, pipInstall=offlinePip)
    message = str(error.value)
    assert message.startswith("monai>=1.3 (through pip) could not be installed: the package index could not be reached")
    assert "What to do: connect to the internet" in message
    assert "Failed to establish a new connection" in error.value.details  # pip's own words, for the details


def test_a_full_disk_and_a_failure_of_unknown_cause_are_explained(environment):
    def full(requirements):
        print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device")
        raise subprocess.CalledProcessError(1, ["pip", "install"])

    with pytest.raises(DependencyError, match=r"could not be installed: the disk is full \(.* GB free in .*\)\. "
                                              r"What to do: free some disk space"):
        Dependencies.ensure(confirm=lambda *a: True, installTorch=lambda req: None, pipInstall=full)

    def full2(requirements):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DependencyError, match="the disk is full"):
        Dependencies.ensure(confirm=lambda *a: True, installTorch=full2, pipInstall=lambda reqs: None)

    def conflict(requirements):
        print("ERROR: Cannot install monai because these package versions have conflicting dependencies.")
        raise subprocess.CalledProcessError(1, ["pip", "install"])

    with pytest.raises(DependencyError) as error:
        Dependencies.ensure(confirm=lambda *a: True, installTorch=lambda req: None, pipInstall=conflict)
    assert "it stopped with exit code 1" in str(error.value) and "conflicting dependencies" in error.value.details


PYTORCH_UTILS = """
import subprocess


class PyTorchUtilsLogic:
    \"\"\"The PyTorch extension's logic as far as the module uses it, with the real `installTorch` parameters.\"\"\"

    calls = []

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        PyTorchUtilsLogic.calls.append((askConfirmation, torchVersionRequirement))
        print("light-the-torch: ERROR: {failure}")
        {raises}
"""


@pytest.fixture
def pytorchExtension(tmp_path, monkeypatch):
    """A PyTorch extension on sys.path whose installer fails as light-the-torch does; pip records any torch."""
    def make(failure, raises):
        (tmp_path / "PyTorchUtils.py").write_text(textwrap.dedent(PYTORCH_UTILS).format(failure=failure, raises=raises))
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop("PyTorchUtils", None)  # the next import reads the new file
        importlib.invalidate_caches()
    pipped = []
    monkeypatch.setattr(slicer.util, "pip_install", pipped.append)
    yield make, pipped
    sys.modules.pop("PyTorchUtils", None)


def test_the_stand_in_pytorch_extension_has_the_real_installer_parameters():
    if not real_api.available():
        pytest.skip("no Slicer API reference")
    tree = ast.parse((real_api.REFERENCE / "SlicerPyTorch" / "PyTorchUtils.py").read_text())
    real = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "installTorch")
    ours = next(n for n in ast.walk(ast.parse(textwrap.dedent(PYTORCH_UTILS).format(failure="", raises="")))
                if isinstance(n, ast.FunctionDef) and n.name == "installTorch")
    assert [a.arg for a in ours.args.args] == [a.arg for a in real.args.args]


def test_a_failed_pytorch_extension_install_is_explained_and_not_replaced_by_pips_torch(environment, pytorchExtension):
    make, pipped = pytorchExtension
    make("HTTPSConnectionPool(host='download.pytorch.org'): Max retries exceeded (NewConnectionError)",
         "raise subprocess.CalledProcessError(1, ['PythonSlicer', '-m', 'light_the_torch', 'install', 'torch'])")
    asked = []
    with pytest.raises(DependencyError) as error:
        Dependencies.ensure(confirm=lambda text, details: asked.append(text) or True, pipInstall=lambda reqs: None)
    assert "through the PyTorch extension, which picks the build for your GPU" in asked[0]
    assert str(error.value).startswith("PyTorch (through the PyTorch extension) could not be installed: the "
                                       "package index could not be reached")
    assert "light-the-torch" in error.value.details
    import PyTorchUtils

    assert PyTorchUtils.PyTorchUtilsLogic.calls == [(False, ">=2.1")]
    make("No module named 'light_the_torch._patch'", "import light_the_torch._patch")  # an ImportError inside it
    with pytest.raises(DependencyError, match="ModuleNotFoundError: No module named 'light_the_torch'"):
        Dependencies.ensure(confirm=lambda *a: True, pipInstall=lambda reqs: None)
    assert pipped == []  # never pip's torch instead


def test_without_the_pytorch_extension_the_confirmation_says_torch_comes_from_pip(environment, monkeypatch):
    pipped, asked = [], []
    monkeypatch.setattr(slicer.util, "pip_install", pipped.append)
    with pytest.raises(DependencyError, match="still not importable"):  # the recorders install nothing
        Dependencies.ensure(confirm=lambda text, details: asked.append(text) or True, pipInstall=lambda reqs: None)
    assert "torch>=2.1 from pip: the PyTorch extension is not installed" in asked[0]
    assert "CPU-only on Windows" in asked[0]
    assert pipped == ['"torch>=2.1"']


@pytest.mark.skipif(Dependencies.torchCudaBuild() is not None, reason="this torch is a CUDA build")
def test_a_cpu_only_torch_on_a_computer_with_an_nvidia_gpu_is_explained_with_the_fix(tmp_path, monkeypatch):
    assert Dependencies.check().gpuAdvice is None or os.name == "nt"  # no nvidia-smi on this machine's PATH
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI 570.86'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    status = Dependencies.check()
    assert status.ok and "is a CPU-only build, but this computer has an NVIDIA GPU" in status.gpuAdvice
    assert "PyTorch Utils module" in status.gpuAdvice and status.gpuAdvice in Dependencies.report(status)
