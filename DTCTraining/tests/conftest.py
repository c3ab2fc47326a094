"""Shared fixtures: small synthetic phantoms written to disk once per session, and the real data path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LA_ROOT = Path(os.environ.get("DTC_LA_ROOT", Path(__file__).resolve().parents[3] / "shared" / "data" / "LA"))


def run_dtc(*args, check=True, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `dtc` CLI (as `python -m dtc_training`) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "dtc_training", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"dtc {args[0]} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def events(stdout: str, kind: str | None = None) -> list[dict]:
    """JSON progress records from a run's stdout; other lines are ignored, as a GUI does."""
    records = []
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (kind is None or record.get("event") == kind):
            records.append(record)
    return records


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """8 phantoms of 48x48x32 voxels: 3 labeled, 3 unlabeled, 2 validation; returns the datalist path."""
    out = tmp_path_factory.mktemp("phantoms")
    run_dtc("make-phantoms", "-o", out, "--count", 8, "--labeled", 3, "--validation", 2,
            "--size", 48, 48, 32, "--spacing", 2.5, 2.5, 2.5, "--seed", 3)
    return out / "datalist.json"


@pytest.fixture(scope="session")
def trained_run(phantoms, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One 60-iteration `dtc train` run on the phantoms (folder, process), for every test that needs a
    trained model."""
    out = tmp_path_factory.mktemp("trained")
    return out, run_dtc("train", "--datalist", phantoms, "-o", out, "--iterations", 60, "--val-every", 30, *TINY)


@pytest.fixture
def la_root() -> Path:
    if not (LA_ROOT / "train.list").is_file():
        pytest.skip(f"real LA data not present at {LA_ROOT}")
    return LA_ROOT


TINY = ["--patch", 32, 32, 32, "--n-filters", 4, "--workers", 0, "--progress", "json"]
