"""`dtc models`: the model catalog (`list`) and downloads into the model store (`pull ID`), the store the
Slicer module uses. The download itself runs without torch; converting an official checkpoint runs in a
`dtc import-official` child."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HELP = "list the model catalog, or download a model of it into the model store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, help="model store folder (default: $DTC_MODEL_STORE, else "
                                              "~/.dtcsegmentation/models, the Slicer module's)")
    p.add_argument("--catalog", type=Path, help="catalog file (default: $DTC_MODEL_CATALOG, else the one shipped)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the catalog's models and whether each is here")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    pull = actions.add_parser("pull", help="download a catalog model, verify it and add it to the store")
    pull.add_argument("id", help="the model's id (see `dtc models list`)")
    pull.add_argument("--progress", choices=("auto", "bar", "json"), default="auto",
                      help="progress as a line on a terminal (bar) or JSON lines (json; auto: bar on a terminal)")


def run(args) -> int:
    from ..catalog import load_catalog
    from ..model_store import ModelStore

    store = ModelStore(args.store)
    entries = load_catalog(args.catalog)
    if args.action == "list":
        return _list(store, entries, args.json)
    entry = next((e for e in entries if e.id == args.id), None)
    if entry is None:
        from ..errors import InputError

        raise InputError(f"{args.id!r}: no such model in the catalog ({', '.join(e.id for e in entries)})")
    return _pull(store, entry, args.progress == "json" or (args.progress == "auto" and not sys.stdout.isatty()))


def _list(store, entries, as_json: bool) -> int:
    rows = []
    for entry in entries:
        here = store.installed(entry)
        status = ("built-in" if here is not None and here.builtin else f"in the store as {here.name}" if here
                  else "not in this installation" if entry.builtin else "not downloaded")
        rows.append({**dataclasses.asdict(entry), "status": status, "path": str(here.path) if here else None})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        size = f"{row['size'] / 2**20:.1f} MB" if row["size"] else "size unknown" if row["url"] else "shipped"
        print(f"{row['id']}  [{row['status']}]\n  {row['title']}; version {row['version']}; {size}; "
              f"licence {row['licence']}\n  {row['intended_use']}")
    print(f"store: {store.root}")
    return 0


def _pull(store, entry, as_json: bool) -> int:
    from ..download import DownloadError
    from ..model_store import ModelStoreError

    last = [0.0]

    def emit(event: str, **values) -> None:
        if as_json:
            print(json.dumps({"event": event, **values}), flush=True)
        elif event == "download":
            total = values["total"]
            shown = f"{values['done'] / 2**20:.1f}" + (f" of {total / 2**20:.1f} MB ({values['done'] / total:.0%})"
                                                        if total else " MB")
            print(f"\rdownloading {entry.id}: {shown}", end="", flush=True)
        else:
            print(("\n" if event == "converting" else "") + f"{event} {values.get('path', '')}".strip(), flush=True)

    def progress(done: int, total) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or done == total:  # a few lines a second, and the last one
            last[0] = now
            emit("download", done=done, total=total)

    try:
        info = store.pull(entry, progress, onConverting=lambda: emit("converting"))
    except KeyboardInterrupt:
        print(f"dtc models: download of {entry.id} cancelled; pulling it again resumes it", file=sys.stderr)
        return 3
    except DownloadError as e:
        print(f"dtc models: error: {e}", file=sys.stderr)
        return 1
    except ModelStoreError as e:  # downloaded and verified, but refused as a model
        print(f"dtc models: error: {e}", file=sys.stderr)
        return 2
    emit("pulled", name=info.name, path=str(info.path))
    return 0
