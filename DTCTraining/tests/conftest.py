"""Shared fixtures: small synthetic phantoms written to disk once per session, and the real data path."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

LA_ROOT = Path(os.environ.get("DTC_LA_ROOT", Path(__file__).resolve().parents[3] / "shared" / "data" / "LA"))


# Commands run in this process through the CLI's own `main(argv)`: each fresh interpreter costs 5-8 s of
# importing torch and MONAI on a 2-core CI machine, which for these commands tested nothing. Training runs
# in its own process (signals, workers, stop files), as does any call that sets `env` or `cwd`; a call
# that `dtc train` must refuse before it trains may ask for this process with `in_process=True`.
IN_PROCESS = {"infer", "evaluate", "info", "devices", "import-official", "convert", "models", "make-phantoms"}


def run_dtc(*args, check=True, timeout=600, in_process=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `dtc` CLI and capture its output and exit code."""
    args = [str(a) for a in args]
    if in_process is None:
        in_process = args[0] in IN_PROCESS and not kwargs
    if in_process:
        proc = _run_in_process(args)
    else:
        proc = subprocess.run([sys.executable, "-m", "dtc_training", *args], capture_output=True, text=True,
                              timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"dtc {args[0]} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _run_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """`dtc ARGS` as `python -m dtc_training` runs it, in this process: stdout, stderr (log records
    included) and the exit code, an argparse usage error's 2 included."""
    from dtc_training.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler, level = logging.StreamHandler(err), root.level
    handler.setFormatter(logging.Formatter("%(message)s"))  # as the commands' logging.basicConfig
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("always")  # a warning shown by an earlier test is shown again, as in a new process
            try:
                code = main(args)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["dtc", *args], code, out.getvalue(), err.getvalue())


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
