"""First-use dependency check and install (DTCSegmentationLib.Dependencies). The installed packages are
real; a missing or outdated package is simulated by hiding its metadata, and the installers are recording
stand-ins (a real install would download gigabytes)."""
from __future__ import annotations

import importlib.util

import pytest

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
    assert len(asked) == 1 and "torch>=2.1, monai>=1.3" in asked[0]
    assert installed == []


def test_accepting_installs_torch_through_its_installer_and_the_rest_through_pip(environment):
    torch_installs, pip_installs = [], []
    Dependencies.ensure(confirm=lambda text, details: True, installTorch=torch_installs.append,
                        pipInstall=pip_installs.append)
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
