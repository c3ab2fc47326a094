"""Make the built-in model the extension ships: a trained run's model file plus a JSON of its provenance
become `Resources/Models/la-builtin.safetensors` (fp16 weights, loaded back as float32; at most 25 MiB),
and the catalog's built-in entry gets its version, size, checksum and spacing.

    python benchmarks/make_builtin_model.py RUN/model.safetensors --provenance provenance.json

The provenance JSON is an object with at least these fields (shown by `dtc info` and the Models section):
training_data, recipe, command, commit, date, hardware, development_split (the same recipe trained on the
64 development-training cases, scored on the 16 held-out ones), intended_use. Exit codes: 0 written,
2 refused (a missing field, a file over the limit, a model that does not load), nothing written then.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "DTCTraining" / "dtc_training" / "models.json"
BUILTIN_ID = "la-builtin"
REQUIRED = ("training_data", "recipe", "command", "commit", "date", "hardware", "development_split", "intended_use")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="the trained run's model file (model.safetensors, or model.pt)")
    p.add_argument("--provenance", type=Path, required=True, help="JSON object: " + ", ".join(REQUIRED))
    p.add_argument("--version", help="the catalog version (default: the provenance's date and commit)")
    p.add_argument("--catalog", type=Path, default=CATALOG, help="catalog whose built-in entry is updated")
    p.add_argument("-o", "--output", type=Path, help="default: Resources/Models/<the entry's file>")
    p.add_argument("--max-mib", type=float, default=25.0, help="refuse a file larger than this (25)")
    return p.parse_args(argv)


def fp16_difference(full, half) -> float:
    """The largest difference between the fp32 and the fp16 network's probabilities on one random
    64x64x48 input: a check that halving the weights kept the model."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64, 48)
    with torch.no_grad():
        return float((torch.sigmoid(full(x)[0]) - torch.sigmoid(half(x)[0])).abs().max())


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "DTCTraining"))
    from dtc_training.errors import InputError
    from dtc_training.files import atomic_write
    from dtc_training.model_io import load_model, save_model

    try:
        provenance = json.loads(args.provenance.read_text(encoding="utf-8"))
        missing = [key for key in REQUIRED if not isinstance(provenance, dict) or not provenance.get(key)]
        if missing:
            raise InputError(f"{args.provenance}: lacks {', '.join(missing)}")
        catalog = json.loads(args.catalog.read_text(encoding="utf-8"))
        entry = next(e for e in catalog["models"] if e["id"] == BUILTIN_ID)
        net, meta = load_model(args.model)
    except (OSError, ValueError, StopIteration, KeyError) as e:
        print(f"make_builtin_model: error: {e or 'no built-in entry in the catalog'}", file=sys.stderr)
        return 2
    version = args.version or f"{provenance['date']} ({str(provenance['commit'])[:7]})"
    out = args.output or REPO / "Resources" / "Models" / entry["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.new")
    provenance = {**provenance, "catalog_id": BUILTIN_ID, "version": version, "licence": entry["licence"]}
    save_model(staged, net, {**meta, "provenance": provenance}, precision="fp16")
    size = staged.stat().st_size
    if size > args.max_mib * 2**20:
        staged.unlink()
        print(f"make_builtin_model: error: {out.name} would be {size / 2**20:.1f} MiB, over the {args.max_mib:g} MiB "
              "a shipped model may take; train fewer filters", file=sys.stderr)
        return 2
    half, _ = load_model(staged)
    difference = fp16_difference(net, half)
    staged.replace(out)
    entry.update(version=version, size=size, spacing=meta.get("spacing"),
                 checksum="sha256:" + hashlib.sha256(out.read_bytes()).hexdigest())
    atomic_write(args.catalog, lambda f: f.write(json.dumps(catalog, indent=2, ensure_ascii=False) + "\n"), mode="w")
    print(f"wrote {out} ({size / 2**20:.1f} MiB, fp16; probabilities within {difference:.1e} of fp32's on a "
          f"random input); catalog entry {BUILTIN_ID!r} updated in {args.catalog}: version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
