"""First-use dependency check and install. Nothing here runs at import time.

* the requirements are the module's `Resources/requirements.txt` (the backend's pyproject.toml lists the
  same; the tests check it), read here and nowhere else;
* torch goes through the PyTorch extension (`PyTorchUtils`, whose light-the-torch picks the CUDA build that
  fits the driver); through pip only where that extension is not installed, and the confirmation says so;
  a failure of the extension's installer is reported, never replaced by pip's torch (CPU-only on Windows);
* the other packages go through pip after the same one confirmation; SimpleITK and numpy ship with Slicer;
* every installer failure ends as a `DependencyError` that says why (InstallFailure) and what to do;
* a CPU-only torch on a computer with an NVIDIA GPU is pointed out, with the fix (`Status.gpuAdvice`);
* headless (no main window, or `interactive=False`): no dialog ever; a `DependencyError` lists what is
  missing and the command that installs it.

`DeviceCheck` runs `dtc devices` in a child process: what the Python that trains and segments can use (its
torch, CUDA build, GPUs, a test convolution on each), shown by the panel's Check button for bug reports.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .InstallFailure import capturedOutput, explainInstallFailure, freeSpace, installFolder, lastLines
from .Process import ChildProcess, backendEnvironment, collectOutput, explainFailure, pythonExecutable

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
SLICER_BUNDLED = {"SimpleITK", "numpy"}  # part of Slicer's Python: checked, never installed there


class DependencyError(RuntimeError):
    def __init__(self, missing: list[str], message: str = "", details: str = ""):
        self.missing = missing
        self.details = details  # the installer's last output lines, for a dialog's details
        super().__init__(message or (
            "missing Python packages: " + ", ".join(missing) +
            ". Install them with: PythonSlicer -m pip install " + " ".join(f'"{m}"' for m in missing)))


def requirements(path: Optional[Path] = None) -> list[tuple[str, str]]:
    """(name, minimum version or "") per line of the requirements file, the format of pip and of
    slicer.packaging.load_requirements. Each name is the package's distribution and import name."""
    path, found = path or REQUIREMENTS_FILE, []
    for line in (line.strip() for line in path.read_text(encoding="utf-8").splitlines()):
        if line and not line.startswith(("#", "-")):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=\s*([\d.]+))?", line)
            if match is None:
                raise ValueError(f"{path}: cannot read the requirement {line!r} (NAME or NAME>=VERSION)")
            found.append((match.group(1), match.group(2) or ""))
    return found


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tuple(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def torchCudaBuild() -> Optional[str]:
    """The CUDA version torch was built for, read from its version.py without importing torch (seconds, and
    a broken torch could take Slicer down); None for a CPU-only build or no torch."""
    spec = importlib.util.find_spec("torch")
    path = Path(spec.origin).parent / "version.py" if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:  # `cuda: Optional[str] = '12.8'`
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "cuda" for t in targets) and isinstance(node.value, ast.Constant):
            return node.value.value
    return None


def gpuAdvice(torchVersion: Optional[str]) -> Optional[str]:
    """Why and how to replace a CPU-only torch on a computer with an NVIDIA GPU (nvidia-smi comes with
    its driver); None otherwise."""
    if torchVersion is None or shutil.which("nvidia-smi") is None or torchCudaBuild() is not None:
        return None
    return (f"PyTorch {torchVersion} is a CPU-only build, but this computer has an NVIDIA GPU (nvidia-smi found): "
            "training and segmenting run on the CPU, many times slower. To use the GPU: open the PyTorch Utils module, "
            "click Uninstall PyTorch, restart Slicer, then click Install PyTorch with the computation backend "
            "'automatic' (it picks the CUDA build for the driver).")


@dataclass
class Status:
    missing: list  # requirement strings to install: absent, too old, or installed but not importable
    versions: dict  # dist -> what was found ("2.5.1", "missing", "unknown", "2.5.1, broken: cannot be imported")
    backend: bool  # dtc_training importable
    gpuAdvice: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.missing and self.backend

    def text(self) -> str:
        lines = [f"{d}: {v}" for d, v in self.versions.items()]
        lines.append("dtc_training backend: " + ("found" if self.backend else "missing"))
        return "\n".join(lines + ([self.gpuAdvice] if self.gpuAdvice else []))


def check() -> Status:
    """Which requirements are missing, too old or broken; from package metadata (imports nothing)."""
    missing, versions = [], {}
    for name, floor in requirements():
        requirement = f"{name}>={floor}" if floor else name
        version, importable = _version(name), importlib.util.find_spec(name) is not None
        if importable:
            versions[name] = version or "unknown"
        else:  # metadata without the package is a broken or half-removed install
            versions[name] = f"{version}, broken: cannot be imported" if version else "missing"
        if not importable or (floor and version and _tuple(version) < _tuple(floor)):
            missing.append(requirement)
    backend = importlib.util.find_spec("dtc_training") is not None
    return Status(missing, versions, backend, gpuAdvice(_version("torch") if "torch" in versions else None))


def _inSlicer():
    import slicer

    return slicer if getattr(slicer, "app", None) is not None else None


def _headless(slicer) -> bool:
    return slicer is None or bool(slicer.app.commandOptions().noMainWindow)


def _hasPyTorchExtension() -> bool:
    return importlib.util.find_spec("PyTorchUtils") is not None


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
    if slicer is not None and any(r.split(">=")[0] in SLICER_BUNDLED for r in status.missing):
        raise DependencyError(status.missing, "Slicer's own Python lacks " + ", ".join(status.missing) +
                              ": reinstall Slicer (these ship with it)")
    if not interactive or (_headless(slicer) and confirm is None):
        raise DependencyError(status.missing)
    torchReq = next((r for r in status.missing if r.split(">=")[0] == "torch"), None)
    others = [r for r in status.missing if r is not torchReq]
    viaPip = not _hasPyTorchExtension()
    if confirm is None:
        confirm = lambda text, detail: slicer.util.confirmOkCancelDisplay(text, detailedText=detail)  # noqa: E731
    if not confirm(_confirmation(torchReq, others, viaPip), "\n".join(status.missing)):
        raise DependencyError(status.missing, "installation cancelled: " + ", ".join(status.missing))
    if torchReq:
        what = "PyTorch (through pip)" if viaPip else "PyTorch (through the PyTorch extension)"
        _install(what, installTorch or _defaultInstallTorch(viaPip), torchReq, status.missing)
    if others:
        _install(", ".join(others) + " (through pip)", pipInstall or _pipInstall, others, status.missing)
    importlib.invalidate_caches()
    after = check()
    if after.missing:
        raise DependencyError(after.missing, "installed, but still not importable: " + ", ".join(after.missing) +
                              ". Restart Slicer and click Check in the Dependencies section.")
    return after


def _confirmation(torchReq: Optional[str], others: list, viaPip: bool) -> str:
    lines = ["DTCSegmentation needs these Python packages, which will be downloaded and installed "
             f"(this can take several minutes; {freeSpace(installFolder())} in {installFolder()}):"]
    if torchReq and viaPip:
        lines.append(f"{torchReq} from pip: the PyTorch extension is not installed, and pip's PyTorch is CPU-only "
                     "on Windows (install the PyTorch extension from the Extensions Manager to use an NVIDIA GPU)")
    elif torchReq:
        lines.append(f"{torchReq} through the PyTorch extension, which picks the build for your GPU")
    return "\n".join(lines + ([", ".join(others)] if others else []))


def _install(what: str, installer: Callable, argument, missing: list) -> None:
    """Run an installer; any failure becomes a DependencyError saying why and what to do."""
    output: list[str] = []
    try:
        with capturedOutput(output):
            installer(argument)
    except DependencyError:
        raise
    except Exception as e:  # pip's or another extension's code: whatever it raises must reach the user as words
        raise DependencyError(missing, explainInstallFailure(what, e, output), lastLines(output)) from e


def _pipInstall(requirements: list) -> None:
    import slicer

    slicer.util.pip_install(" ".join(f'"{r}"' for r in requirements))  # raises CalledProcessError on failure


def _defaultInstallTorch(viaPip: bool) -> Callable[[str], None]:
    def install(requirement: str) -> None:
        if viaPip:  # only where the PyTorch extension is absent; the confirmation said so
            _pipInstall([requirement])
            return
        import PyTorchUtils  # the PyTorch extension

        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=requirement[len("torch"):])
        if torch is None:
            raise DependencyError([requirement], "the PyTorch extension did not install PyTorch")
    return install


def report(status: Status, devices: Optional[str] = None) -> str:
    """What the panel's Check shows and Copy report copies: the packages, then (once every package is there)
    the devices, or that they are being checked."""
    if not status.ok:
        return status.text() + "\nSome packages are missing or broken: click Install... to install them."
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
