"""Move the LA data to a lent GPU machine in pieces: the device tool carries at most 64 MiB per call and
does not see ../shared. The 179 MB of h5 files pack losslessly into about 88 MB: each image holds fewer
than 256 distinct float32 values (z-scored 8-bit MRI), so it travels as those values plus a uint8 index
(z-major, bz2), the label as bz2. Unpacking rebuilds every mri_norm2.h5 and checks each array against the
SHA-256 taken from the original at packing time.

    python benchmarks/carry_la.py pack ../shared/data/LA carry/la --part-mib 30 58   # here: part-NN.npz
    # device call k (carry ["carry/la/part-0k.npz"]):
    python benchmarks/carry_la.py unpack carry/la /tmp/LA     # there: adds the carried parts' cases (a file or a folder)
    python benchmarks/carry_la.py check /tmp/LA               # there: every array against its digest

--part-mib gives the size of each part in turn, the last repeated (the first is smaller when the same
call also carries wheels)."""
from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np

CASES = "2018LA_Seg_Training Set"
DIGESTS = "ARRAYS.sha256"  # "<case> <image digest> <label digest>", written beside the rebuilt cases
UNPACKED = "PARTS"  # "<part file name> <its size>" per part unpacked, so that a part is unpacked once


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def encode(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        image, label = f["image"][:], f["label"][:]
    # unique bit patterns, not values: -0.0 and 0.0 compare equal but must come back as they were
    bits, index = np.unique(image.view(f"u{image.itemsize}"), return_inverse=True)
    values = bits.view(image.dtype)
    if len(values) > 256:
        raise ValueError(f"{path}: {len(values)} distinct intensities, more than a uint8 index holds")
    index = index.astype(np.uint8).reshape(image.shape).transpose(2, 1, 0)  # z-major compresses better
    case = path.parent.name
    return {f"{case}/values": values, f"{case}/shape": np.array(image.shape),
            f"{case}/index": np.frombuffer(bz2.compress(index.tobytes(), 9), np.uint8),
            f"{case}/label": np.frombuffer(bz2.compress(label.tobytes(), 9), np.uint8),
            f"{case}/digests": np.array([digest(image), digest(label)])}


def pack(root: Path, out: Path, part_mib: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cases = (root / "train.list").read_text().split()
    with ProcessPoolExecutor() as pool:
        encoded = list(pool.map(encode, [root / CASES / c / "mri_norm2.h5" for c in cases]))
    parts: list[dict] = [{"train.list": np.array(cases)}]
    for arrays in encoded:
        budget = part_mib[min(len(parts) - 1, len(part_mib) - 1)] * 2**20
        if sum(a.nbytes for a in parts[-1].values()) + sum(a.nbytes for a in arrays.values()) > budget:
            parts.append({})
        parts[-1].update(arrays)
    for number, arrays in enumerate(parts):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # already compressed; no pickled objects, so np.load needs no pickle
        (out / f"part-{number:02d}.npz").write_bytes(buffer.getvalue())
        print(f"part-{number:02d}.npz: {len({k.split('/')[0] for k in arrays if '/' in k})} cases, "
              f"{buffer.tell() / 2**20:.1f} MiB")


def rebuild(item: tuple[Path, str, dict]) -> str:
    dest, case, arrays = item
    shape = tuple(arrays["shape"])
    index = np.frombuffer(bz2.decompress(arrays["index"].tobytes()), np.uint8).reshape(shape[::-1]).transpose(2, 1, 0)
    image = arrays["values"][index]
    label = np.frombuffer(bz2.decompress(arrays["label"].tobytes()), np.uint8).reshape(shape)
    folder = dest / CASES / case
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "mri_norm2.h5.part", "w") as f:
        f["image"], f["label"] = image, label
    (folder / "mri_norm2.h5.part").rename(folder / "mri_norm2.h5")
    image_digest, label_digest = arrays["digests"]
    return f"{case} {image_digest} {label_digest}"


def unpack(parts: Path, dest: Path) -> None:
    """Rebuild the cases of a part file, or of every part in a folder, skipping a part already unpacked into
    dest (a warm machine keeps the parts of its earlier calls beside the one just carried)."""
    dest.mkdir(parents=True, exist_ok=True)
    done = set((dest / UNPACKED).read_text().splitlines()) if (dest / UNPACKED).exists() else set()
    for part in [parts] if parts.is_file() else sorted(parts.glob("part-*.npz")):
        part_key = f"{part.name} {part.stat().st_size}"
        if part_key in done:
            print(f"{part.name}: unpacked into {dest} already")
            continue
        with np.load(part, allow_pickle=False) as npz:
            if "train.list" in npz:
                (dest / "train.list").write_text("\n".join(npz["train.list"]) + "\n")
            by_case: dict[str, dict] = {}
            for key in npz.files:
                if "/" in key:
                    case, name = key.split("/")
                    by_case.setdefault(case, {})[name] = npz[key]
        with ProcessPoolExecutor() as pool:
            lines = list(pool.map(rebuild, [(dest, case, arrays) for case, arrays in by_case.items()]))
        with open(dest / DIGESTS, "a") as f:
            f.writelines(line + "\n" for line in lines)
        print(f"unpacked {len(lines)} cases of {part.name} into {dest}")
        with open(dest / UNPACKED, "a") as f:
            f.write(part_key + "\n")


def check(root: Path) -> None:
    """Every case of train.list present and equal to the original; exit 1 otherwise (a missing part must stop
    a device call before it trains on part of the data)."""
    expected = set((root / "train.list").read_text().split()) if (root / "train.list").exists() else set()
    digests = dict(line.split(maxsplit=1) for line in (root / DIGESTS).read_text().splitlines()) \
        if (root / DIGESTS).exists() else {}  # a part unpacked twice appends its lines again: the last counts
    bad = 0
    for case, line in digests.items():
        with h5py.File(root / CASES / case / "mri_norm2.h5", "r") as f:
            if (digest(f["image"][:]), digest(f["label"][:])) != tuple(line.split()):
                print(f"{case}: arrays differ from the original")
                bad += 1
    missing = sorted(expected - set(digests)) if expected else ["train.list"]
    print(f"{len(digests)} cases present, {bad} bad, {len(missing)} missing"
          + (f" (e.g. {missing[0]})" if missing else ""))
    sys.exit(1 if bad or missing else 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["pack", "unpack", "check"])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--part-mib", type=float, nargs="+", default=[60])
    args = p.parse_args()
    if args.command == "pack":
        pack(*args.paths, args.part_mib)
    else:
        {"unpack": unpack, "check": check}[args.command](*args.paths)


if __name__ == "__main__":
    main()
