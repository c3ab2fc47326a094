"""An installer's failure in words: why pip or the PyTorch extension could not install a package (no
network, a full disk, no permission, ...) and what the user can do about it, read from the installer's
output, which `capturedOutput` records while it runs (Slicer's pip_install prints pip's lines)."""
from __future__ import annotations

import contextlib
import errno
import io
import shutil
import sys
import sysconfig

NETWORK = ("Failed to establish a new connection", "Temporary failure in name resolution",
           "Name or service not known", "getaddrinfo failed", "NewConnectionError", "ConnectTimeoutError",
           "Read timed out", "Network is unreachable", "ProxyError", "Could not fetch URL", "CERTIFICATE_VERIFY_FAILED")
DISK = ("No space left on device", "[Errno 28]", "Not enough space on the disk", "[WinError 112]")
PERMISSION = ("Permission denied", "[Errno 13]", "Access is denied", "[WinError 5]")


def installFolder() -> str:
    """Where pip puts packages in this Python."""
    return sysconfig.get_paths()["purelib"]


def freeSpace(folder: str) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 1e9:.1f} GB free"
    except OSError:
        return "free space unknown"


def explainInstallFailure(what: str, error: BaseException, output: list[str]) -> str:
    """One paragraph: which installer failed on what, the cause, and what to do."""
    text = "\n".join(output) + f"\n{error}"
    code = getattr(error, "errno", None)
    folder = installFolder()
    if code == errno.ENOSPC or any(s in text for s in DISK):
        cause = f"the disk is full ({freeSpace(folder)} in {folder})"
        todo = "free some disk space (PyTorch with CUDA takes several GB) and click Install... again"
    elif any(s in text for s in NETWORK):
        cause = "the package index could not be reached (no network connection, or a proxy or firewall in the way)"
        todo = ("connect to the internet (behind a proxy, set HTTPS_PROXY before starting Slicer) and click "
                "Install... again")
    elif code in (errno.EACCES, errno.EPERM) or any(s in text for s in PERMISSION):
        cause = f"no permission to write to {folder}"
        todo = "install Slicer in a folder of your own, or start Slicer once as an administrator to install"
    else:
        exitCode = getattr(error, "returncode", None)
        cause = f"it stopped with exit code {exitCode}" if exitCode is not None else f"{type(error).__name__}: {error}"
        todo = ("click Install... again; if it fails again, the last lines of its output (details) say why, and the "
                "Python console shows all of them")
    return f"{what} could not be installed: {cause}. What to do: {todo}."


def lastLines(output: list[str], count: int = 20) -> str:
    return "\n".join([line for line in output if line.strip()][-count:])


class _Tee(io.TextIOBase):
    """A stream that writes through to `stream` and keeps the complete lines."""

    def __init__(self, stream, lines: list[str]):
        self.stream, self.lines, self.partial = stream, lines, ""

    def write(self, text: str) -> int:
        if self.stream is not None:
            self.stream.write(text)
        *complete, self.partial = (self.partial + text).split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


@contextlib.contextmanager
def capturedOutput(lines: list[str]):
    """Record what is printed meanwhile (still shown where it went before) into `lines`."""
    out, err = _Tee(sys.stdout, lines), _Tee(sys.stderr, lines)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield lines
        finally:
            lines.extend(t.partial for t in (out, err) if t.partial)
