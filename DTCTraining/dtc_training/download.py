"""Downloading a catalog model file over HTTP(S), in pure Python (urllib; no torch, so the Slicer process
or any light process can run it): progress reports, cancelling, resuming a partial file with a Range
request (or starting again where the server ignores it), and a checksum check before the file gets its
final name. Every failure is one `DownloadError` line saying what happened and what to do; the partial
file is kept where a later try can resume it, and removed where its bytes are wrong."""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Optional

from . import __version__

CHUNK = 256 * 1024
TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 1024 * 2**20  # no DTC model is larger: a server sending more is sending something else
CHECKSUMS = ("sha256", "git-blob-sha1")


class DownloadError(Exception):
    """A download that did not give the verified file; the message says why in one line."""


class DownloadCancelled(DownloadError):
    pass


def parse_checksum(text: str) -> tuple[str, str]:
    """"sha256:<64 hex>" or "git-blob-sha1:<40 hex>" -> (kind, hex digest)."""
    kind, _, digest = str(text).partition(":")
    lengths = {"sha256": 64, "git-blob-sha1": 40}
    if kind not in lengths or not re.fullmatch(rf"[0-9a-f]{{{lengths[kind]}}}", digest):
        raise ValueError(f"checksum {text!r}: write sha256:<64 hex digits> or git-blob-sha1:<40 hex digits>")
    return kind, digest


def file_checksum(path: Path, kind: str) -> str:
    """The file's sha256, or its git blob hash: SHA-1 of b"blob <size>\\0" + the content, which is what a
    git repository's tree names the file by (so a pinned commit's listing gives the expected value)."""
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_text(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def download(url: str, dest: str | os.PathLike, checksum: str, size: Optional[int] = None,
             progress: Optional[Callable[[int, Optional[int]], None]] = None,
             cancelled: Optional[Callable[[], bool]] = None, timeout: float = TIMEOUT_S) -> Path:
    """Fetch `url` to `dest` and return it once its checksum matches. Bytes go to `dest` + ".part", which
    a later call resumes (a Range request) after a cut connection or a cancel; `progress(done, total)`
    is called as bytes arrive (total None when the server does not say); `cancelled()` returning True
    stops it with DownloadCancelled."""
    dest = Path(dest)
    kind, expected = parse_checksum(checksum)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # not a prefix of the file: start again
        part.unlink()
        have = 0
    if size is None or have < size:
        _fetch(url, part, have, size, progress, cancelled, timeout)
    got = file_checksum(part, kind)
    if got != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: checksum mismatch ({kind} {got}, the catalog says {expected}): the file "
                            "changed on the server or was corrupted on the way, and was discarded. Try again; "
                            "if it persists, the catalog entry is out of date")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, have: int, size: Optional[int], progress, cancelled, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"dtc-training/{__version__}",
                                                   **({"Range": f"bytes={have}-"} if have else {})})
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already whole (the checksum decides)
            return
        if e.code == 404:
            raise DownloadError(f"{url}: not found on the server (HTTP 404); the catalog entry is out of date") from None
        raise DownloadError(f"{url}: the server refused the download (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot reach {host} ({reason}): no network connection, or a proxy or firewall "
                            "in the way; nothing was stored") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # a whole file (the server ignored the Range): start again
        kind = response.headers.get("Content-Type", "")
        first = _read(response, url, have, min(CHUNK, 512))
        if "html" in kind.lower() or first.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            raise DownloadError(f"{url}: the server sent a web page, not the model file (a proxy's or a "
                                "login page?); open the address in a browser, or download it there and "
                                "import the file")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else size
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise DownloadError(f"{url}: the server offers {_size_text(total)}, more than any DTC model; refused")
        done = have
        with part.open("ab" if resumed else "wb") as out:
            block = first
            while block:
                try:
                    out.write(block)
                    out.flush()  # what was reported is in the file, for a resume after a kill
                except OSError as e:  # a full disk: named against the file, which keeps what it had
                    raise OSError(e.errno, e.strerror, str(part)) from e
                done += len(block)
                if done > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"{url}: more than {_size_text(MAX_DOWNLOAD_BYTES)} arrived; refused")
                if progress:
                    progress(done, total)
                if cancelled and cancelled():
                    raise DownloadCancelled(f"download cancelled after {_size_text(done)}; downloading again "
                                            "resumes it")
                block = _read(response, url, done, CHUNK)
    if total is not None and done < total:
        raise DownloadError(f"{url}: the connection ended after {_size_text(done)} of {_size_text(total)}; "
                            "downloading again resumes it")


def _read(response, url: str, done: int, n: int) -> bytes:
    try:
        return response.read(n)
    except (OSError, HTTPException) as e:  # a socket timeout, a connection cut short
        raise DownloadError(f"{url}: the connection broke after {_size_text(done)} ({e or type(e).__name__}); "
                            "downloading again resumes it") from None
