"""Move the LA data to a lent GPU machine in pieces: the device tool carries at most 64 MiB per call and
does not see ../shared, so the cases are packed into tar parts of at most 60 MiB in an ignored folder,
carried one per call, and unpacked outside the repository on the warm machine.

    python benchmarks/carry_la.py pack ../shared/data/LA carry/la       # here: writes carry/la/part-NN.tar
    # device call k (carry ["carry/la/part-0k.tar"]):
    python benchmarks/carry_la.py unpack carry/la /tmp/LA                # there: adds the part's cases
    python benchmarks/carry_la.py check /tmp/LA                          # there: SHA256SUMS of every case"""
from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

PART_BYTES = 60 * 2**20


def pack(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = [root / "train.list", root / "SHA256SUMS"] + sorted(root.glob("2018LA_Seg_Training Set/*/mri_norm2.h5"))
    part, size, tar = 0, 0, None
    for f in files:
        if tar is None or size + f.stat().st_size > PART_BYTES:
            if tar:
                tar.close()
            tar, size = tarfile.open(out / f"part-{part:02d}.tar", "w"), 0
            part += 1
        tar.add(f, arcname=str(f.relative_to(root)))
        size += f.stat().st_size
    tar.close()
    print(f"{len(files)} files in {part} parts under {out}")


def unpack(parts: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for part in sorted(parts.glob("part-*.tar")):
        with tarfile.open(part) as tar:
            tar.extractall(dest, filter="data")
        print(f"unpacked {part.name} into {dest}")


def check(root: Path) -> None:
    bad = 0
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = root / name.lstrip("*")
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            print(f"{path}: checksum mismatch")
            bad += 1
    cases = len(list(root.glob("2018LA_Seg_Training Set/*/mri_norm2.h5")))
    print(f"{cases} cases present, {bad} bad")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    {"pack": pack, "unpack": unpack, "check": check}[command](*map(Path, paths))
