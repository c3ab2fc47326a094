"""First-use dependency check and install. Nothing here runs at import time.

* torch goes through the PyTorch extension (`PyTorchUtils`) when it is installed: it picks the CUDA build
  that fits the driver; else pip;
* the other packages go through pip after one confirmation that lists them;
* headless (no main window, or `interactive=False`): no dialog ever; a `DependencyError` lists what is
  missing and the command that installs it.

`DeviceCheck` runs `dtc devices` in a child process: what the Python that trains and segments can use (its
torch, CUDA build, GPUs, a test convolution on each), shown by the panel's Check button for bug reports.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from typing import Callable, Optional

from .Process import ChildProcess, backendEnvironment, collectOutput, explainFailure, pythonExecutable

# (import name, distribution name, requirement). SimpleITK and numpy ship with Slicer: never pip them there.
REQUIREMENTS = [
    ("torch", "torch", "torch>=2.1"),
    ("monai", "monai", "monai>=1.3"),
    ("scipy", "scipy", "scipy>=1.10"),
    ("h5py", "h5py", "h5py>=3.8"),
    ("SimpleITK", "SimpleITK", "SimpleITK>=2.2"),
    ("numpy", "numpy", "numpy>=1.24"),
]
SLICER_BUNDLED = {"SimpleITK", "numpy"}


class DependencyError(RuntimeError):
    def __init__(self, missing: list[str], message: str = ""):
        self.missing = missing
        super().__init__(message or (
            "missing Python packages: " + ", ".join(missing) +
            ". Install them with: PythonSlicer -m pip install " + " ".join(f'"{m}"' for m in missing)))


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tuple(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


@dataclass
class Status:
    missing: list  # requirement strings to install
    versions: dict  # dist -> installed version or None
    backend: bool  # dtc_training importable

    @property
    def ok(self) -> bool:
        return not self.missing and self.backend

    def text(self) -> str:
        lines = [f"{d}: {v or 'missing'}" for d, v in self.versions.items()]
        lines.append("dtc_training backend: " + ("found" if self.backend else "missing"))
        return "\n".join(lines)


def check() -> Status:
    """Which requirements are missing or too old; uses package metadata (does not import torch)."""
    missing, versions = [], {}
    for module, dist, requirement in REQUIREMENTS:
        version = _version(dist)
        if version is None and importlib.util.find_spec(module) is not None:
            version = "unknown"
        versions[dist] = version
        floor = requirement.split(">=")[1] if ">=" in requirement else None
        if version is None or (floor and version != "unknown" and _tuple(version) < _tuple(floor)):
            missing.append(requirement)
    backend = importlib.util.find_spec("dtc_training") is not None
    return Status(missing, versions, backend)


def _inSlicer():
    import slicer

    return slicer if getattr(slicer, "app", None) is not None else None


def _headless(slicer) -> bool:
    return slicer is None or bool(slicer.app.commandOptions().noMainWindow)


def ensure(interactive: bool = True, confirm: Optional[Callable[[str, str], bool]] = None,
           installTorch: Optional[Callable[[str], None]] = None,
           pipInstall: Optional[Callable[[list], None]] = None) -> Status:
    """Make sure the dependencies are there; install them (after one confirmation) when allowed.
    The callables default to Slicer's (PyTorch extension, `slicer.util.pip_install`, confirm dialog)."""
    status = check()
    if not status.backend:
        raise DependencyError([], "the dtc_training backend is not found; reinstall the DTCSegmentation extension "
                                  "(or pip install the DTCTraining folder)")
    if not status.missing:
        return status
    slicer = _inSlicer()
    toInstall = [r for r in status.missing if slicer is None or r.split(">=")[0] not in SLICER_BUNDLED]
    if not interactive or (_headless(slicer) and confirm is None):
        raise DependencyError(status.missing)
    details = "\n".join(toInstall)
    if confirm is None:
        confirm = lambda text, detail: slicer.util.confirmOkCancelDisplay(text, detailedText=detail)  # noqa: E731
    if not confirm("DTCSegmentation needs these Python packages, which will be downloaded and installed "
                   "(this can take several minutes):\n" + ", ".join(toInstall), details):
        raise DependencyError(status.missing, "installation cancelled: " + ", ".join(status.missing))
    torchReq = next((r for r in toInstall if r.startswith("torch")), None)
    others = [r for r in toInstall if not r.startswith("torch")]
    if torchReq:
        if installTorch is None:
            installTorch = _defaultInstallTorch(slicer)
        installTorch(torchReq)
    if others:
        if pipInstall is None:
            pipInstall = lambda reqs: slicer.util.pip_install(" ".join(f'"{r}"' for r in reqs))  # noqa: E731
        pipInstall(others)
    importlib.invalidate_caches()
    return check()


def _defaultInstallTorch(slicer) -> Callable[[str], None]:
    def install(requirement: str) -> None:
        version = requirement[len("torch"):]
        try:
            import PyTorchUtils  # the PyTorch extension

            logic = PyTorchUtils.PyTorchUtilsLogic()
            if logic.installTorch(askConfirmation=False, torchVersionRequirement=version) is None:
                raise DependencyError([requirement], "PyTorch installation failed or was cancelled")
        except ImportError:
            slicer.util.pip_install(f'"{requirement}"')
    return install


def report(status: Status, devices: Optional[str] = None) -> str:
    """What the panel's Check shows and Copy report copies: the packages, then (once every package is there)
    the devices, or that they are being checked."""
    if not status.ok:
        return status.text() + "\nSome packages are missing."
    return status.text() + "\nReady.\n" + (devices if devices is not None else "Checking the devices...")


class DeviceCheck:
    """`dtc devices` started in a child process; `poll()` it from a timer (or `wait()` headless) and read
    `report`: the devices text, or why the check failed."""

    def __init__(self, processFactory=ChildProcess, python: Optional[str] = None):
        self.process = processFactory([python or pythonExecutable(), "-m", "dtc_training", "devices"],
                                      env=backendEnvironment())
        self.lines: list[str] = []
        self.report: Optional[str] = None

    def poll(self) -> bool:
        """Collect output; True once the child has ended and `report` is set."""
        if self.report is not None:
            return True
        code = collectOutput(self.process, self.lines)
        if code is None:
            return False
        self.report = "\n".join(self.lines) if code == 0 else explainFailure(code, self.lines)
        return True

    def wait(self, timeout: float = 120) -> str:
        if self.process.wait(timeout) is None:
            self.process.killTree()
            self.report = f"the device check did not finish within {timeout:.0f} s"
        self.poll()
        return self.report
