"""Downloading catalog models (dtc_training.download, model_store.pull, `dtc models`) from a local HTTP
server started here (real sockets): good, corrupt, truncated and missing files, a web page instead of the
file, a refused connection, a cancelled and a resumed download, a server that ignores Range; and the
model catalog itself."""
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_dtc
from dtc_training.catalog import load_catalog
from dtc_training.download import DownloadCancelled, DownloadError, download
from dtc_training.errors import InputError
from dtc_training.model import DualTaskVNet
from dtc_training.model_io import load_model
from file_server import FileServer, Served, git_blob_sha1, official_checkpoint, refused_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def official() -> bytes:
    return official_checkpoint()


def checksum(data: bytes) -> str:
    return f"git-blob-sha1:{git_blob_sha1(data)}"


def test_a_good_file_is_verified_by_its_git_blob_hash_with_progress(tmp_path, official):
    seen = []
    with FileServer({"/m.pth": Served(official)}) as server:
        path = download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official),
                        progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == official and sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]
    assert seen[-1] == (len(official), len(official)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    sha256 = "sha256:" + hashlib.sha256(official).hexdigest()
    with FileServer({"/m.pth": Served(official)}) as server:
        assert download(server.url("/m.pth"), tmp_path / "again.pth", sha256).read_bytes() == official


def test_a_corrupt_file_is_discarded_with_a_checksum_message(tmp_path, official):
    damaged = official[:100] + bytes([official[100] ^ 1]) + official[101:]
    with FileServer({"/m.pth": Served(damaged)}) as server, pytest.raises(DownloadError, match="checksum mismatch"):
        download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial


def test_a_truncated_download_resumes_with_a_range_request(tmp_path, official):
    half = len(official) // 2
    url_path = "/m.pth"
    with FileServer({url_path: Served(official, cut_after=half)}) as server:
        with pytest.raises(DownloadError, match="downloading again resumes it"):
            download(server.url(url_path), tmp_path / "m.pth", checksum(official))
        assert not (tmp_path / "m.pth").exists() and (tmp_path / "m.pth.part").stat().st_size == half
        server.routes[url_path] = Served(official)  # the line is back
        assert download(server.url(url_path), tmp_path / "m.pth", checksum(official)).read_bytes() == official
    assert server.requests == [(url_path, None), (url_path, f"bytes={half}-")]
    assert not (tmp_path / "m.pth.part").exists()


def test_a_server_that_ignores_range_gives_the_whole_file_again(tmp_path, official):
    (tmp_path / "m.pth.part").write_bytes(b"stale bytes of another file")
    with FileServer({"/m.pth": Served(official, ranges=False)}) as server:
        assert download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official)).read_bytes() == official
    assert server.requests[0][1] == "bytes=27-"


def test_a_cancelled_download_keeps_its_part_and_resumes(tmp_path, official):
    with FileServer({"/m.pth": Served(official)}) as server:
        with pytest.raises(DownloadCancelled, match="cancelled"):
            download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official), cancelled=lambda: True)
        kept = (tmp_path / "m.pth.part").stat().st_size
        assert 0 < kept < len(official)
        assert download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official)).read_bytes() == official
    assert server.requests[-1][1] == f"bytes={kept}-"


@pytest.mark.parametrize("served, message", [
    (None, r"not found on the server \(HTTP 404\)"),
    (Served(b"<html><body>Please log in to the proxy</body></html>", "text/html"), "sent a web page"),
    (Served(b"\n<!DOCTYPE html><html>Blocked by policy</html>"), "sent a web page"),
])
def test_a_missing_file_or_a_web_page_is_a_clear_error_and_nothing_is_kept(tmp_path, official, served, message):
    with FileServer({"/m.pth": served} if served else {}) as server, pytest.raises(DownloadError, match=message):
        download(server.url("/m.pth"), tmp_path / "m.pth", checksum(official))
    assert list(tmp_path.iterdir()) == []


def test_no_network_is_a_clear_error(tmp_path, official):
    with pytest.raises(DownloadError, match=r"cannot reach 127.0.0.1:\d+ .*no network connection"):
        download(refused_url(), tmp_path / "m.pth", checksum(official))
    assert list(tmp_path.iterdir()) == []


def write_catalog(path: Path, entries: list) -> Path:
    path.write_text(json.dumps({"format": "dtc-model-catalog", "models": entries}))
    return path


def official_entry(url: str, data: bytes, entry_id: str = "official-test") -> dict:
    return {"id": entry_id, "title": "Official test weights", "description": "4 filters", "version": "v1",
            "format": "official-dtc-pth", "url": url, "checksum": checksum(data), "size": None,
            "spacing": [0.625, 0.625, 0.625], "licence": "MIT (test)", "citation": "Luo et al. 2021",
            "intended_use": "tests", "source": {"repository": "local"}}


def test_dtc_models_pull_converts_and_stores_with_provenance(tmp_path, official, monkeypatch):
    store = tmp_path / "store"
    with FileServer({"/dtc.pth": Served(official)}) as server:
        monkeypatch.setenv("DTC_MODEL_CATALOG", str(write_catalog(
            tmp_path / "catalog.json", [official_entry(server.url("/dtc.pth"), official)])))
        proc = run_dtc("models", "--store", store, "pull", "official-test", "--progress", "json")
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["event"] for e in events][-2:] == ["converting", "pulled"] and events[0]["event"] == "download"
        pulled = events[-1]
        assert pulled["name"] == "official-test" and Path(pulled["path"]) == store / "official-test" / "model.safetensors"
        net, meta = load_model(pulled["path"])
        reference = DualTaskVNet(n_filters=4)
        reference.load_state_dict(torch.load(io.BytesIO(official), weights_only=True))
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in net.state_dict().items())
        assert meta["provenance"]["licence"] == "MIT (test)" and meta["provenance"]["checksum"] == checksum(official)
        assert meta["spacing"] == [0.625] * 3
        listing = run_dtc("models", "--store", store, "list", "--json")
        assert json.loads(listing.stdout)[0]["status"] == "in the store as official-test"
        again = run_dtc("models", "--store", store, "pull", "official-test", "--progress", "json")
        assert json.loads(again.stdout.splitlines()[-1])["name"] == "official-test"
    assert len(server.requests) == 1  # the second pull found it in the store
    assert sorted(p.name for p in store.iterdir()) == [".downloads", "official-test"]
    assert list((store / ".downloads").iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not-a-model", "refused"])
def test_a_failed_pull_leaves_nothing_in_the_store(tmp_path, official, monkeypatch, case):
    junk = b"checksummed, but not weights"
    with FileServer({"/junk.pth": Served(junk)}) as server:
        url = {"missing": server.url("/gone.pth"), "not-a-model": server.url("/junk.pth"), "refused": refused_url()}[case]
        monkeypatch.setenv("DTC_MODEL_CATALOG", str(write_catalog(
            tmp_path / "catalog.json", [official_entry(url, junk if case == "not-a-model" else official)])))
        proc = run_dtc("models", "--store", tmp_path / "store", "pull", "official-test", "--progress", "json",
                       check=False)
    expected = {"missing": (1, "HTTP 404"), "not-a-model": (2, "not a DTC model file"), "refused": (1, "cannot reach")}
    code, text = expected[case]
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("dtc models: error: ") and text in proc.stderr
    store = tmp_path / "store"
    assert not store.exists() or [p.name for p in store.iterdir() if not p.name.startswith(".")] == []
    downloads = tmp_path / "store" / ".downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []


def test_the_download_and_the_store_import_no_torch():
    code = ("import sys; import dtc_training.commands.models, dtc_training.model_store, dtc_training.download; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize("change, message", [
    ({"id": "Bad Id"}, "needs an id"),
    ({"checksum": None}, "needs an http"),
    ({"checksum": "md5:abc"}, "write sha256"),
    ({"url": "ftp://example.org/x.pth"}, "needs an http"),
    ({"format": "onnx"}, "format 'onnx'"),
])
def test_a_malformed_catalog_entry_is_refused_naming_it(tmp_path, official, change, message):
    catalog = write_catalog(tmp_path / "catalog.json", [{**official_entry("https://example.org/x.pth", official), **change}])
    with pytest.raises(InputError, match=message):
        load_catalog(catalog)


def test_the_shipped_catalog_pins_the_authors_weights_and_describes_the_built_in_model():
    entries = {e.id: e for e in load_catalog(REPO / "DTCTraining" / "dtc_training" / "models.json")}
    commit = "2525b9ccba84d7872fe22328b8b3298e7eafdc12"
    for entry_id, path, blob in (("dtc-la-16labels-official", "model/DTC_16labels/dtc_16_aaai2021.pth",
                                  "8e447c57dc0afd92b32d9577f218be4929e00c38"),
                                 ("dtc-la-8labels-official", "model/DTC_8labels/dtc_8_latest.pth",
                                  "97c4b3f0a13d9e00a5941b40748f00fa1e92a706")):
        entry = entries[entry_id]
        assert entry.url == f"https://raw.githubusercontent.com/HiLab-git/DTC/{commit}/{path}"
        assert entry.checksum == f"git-blob-sha1:{blob}" and entry.licence.startswith("MIT")
        assert entry.format == "official-dtc-pth" and entry.source["commit"] == commit
    builtin = entries["la-builtin"]
    assert builtin.builtin and builtin.file.endswith(".safetensors") and "not for clinical" in builtin.intended_use
    shipped = REPO / "Resources" / "Models" / builtin.file
    if shipped.is_file():  # the shipped file is the one the catalog describes
        assert builtin.size == shipped.stat().st_size
        assert builtin.checksum == "sha256:" + hashlib.sha256(shipped.read_bytes()).hexdigest()
        assert shipped.stat().st_size <= 25 * 2**20
