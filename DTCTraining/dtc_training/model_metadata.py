"""A DTC model file's metadata and tensor table, read and checked without torch: the Slicer process lists,
imports and chooses models with this module alone, and the loader checks every field here before it builds
or allocates anything.

A model file is a safetensors file: an 8-byte little-endian header length, a JSON header (each tensor's
dtype, shape and byte range, and `__metadata__`, whose "metadata" entry is this package's JSON metadata),
then the raw tensor bytes."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .errors import InputError

FORMAT = "dtc-model"
FORMAT_VERSION = 1
ARCHITECTURE = "DualTaskVNet"

# The architecture's limits: 64 filters is 4x the official width (151 M parameters, 0.6 GB in float32);
# patches are halved four times by the VNet, and a side above 512 voxels is no training patch.
MAX_N_FILTERS = 64
MAX_IN_CHANNELS = 16
MAX_PATCH_SIDE = 512
MAX_SPACING_MM = 100.0
MAX_K = 1e6
MAX_HEADER_BYTES = 16 * 2**20
# What the largest allowed network weighs in float32, rounded up: no model file may unpack to more.
MAX_WEIGHT_BYTES = 1024 * 2**20
ORIENTATION_AXES = ("RL", "AP", "SI")

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class ModelFileError(InputError):
    pass


def file_kind(path: Path) -> str | None:
    """"safetensors" (an 8-byte header length, then the header's '{'), "torch" (torch.save's zip archive,
    or the bare pickle of torch < 1.6, protocol 2+ opening with 0x80), or None for anything else (an image,
    JSON, text), which is not worth handing to a reader."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES:
        return "safetensors"
    return "torch" if head.startswith((b"PK\x03\x04", b"\x80")) else None


def is_safetensors(path: Path) -> bool:
    return file_kind(path) == "safetensors"


def read_header(path: str | Path) -> tuple[dict, dict]:
    """(metadata, tensor table {name: (dtype, shape, (start, end))}) of a safetensors model file, both
    checked: the metadata's fields and ranges, and every tensor's name, dtype, shape and byte range against
    the declared architecture. Reads the header only."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: not a DTC model file (empty or truncated)")
        length = struct.unpack("<Q", head)[0]
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise ModelFileError(f"{path}: not a DTC model file (its header length {length} does not fit)")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise ModelFileError(f"{path}: not a DTC model file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a DTC model file (its header is not a JSON object)")
    extra = header.pop("__metadata__", None)
    if not isinstance(extra, dict) or extra.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a DTC model file (a safetensors file without DTC metadata; for an "
                             "official DTC .pth use `dtc import-official`)")
    try:
        meta = json.loads(extra.get("metadata"))
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: damaged DTC model file: its metadata is not a JSON object")
    check_metadata(path, meta)
    table = _tensor_table(path, header, size - 8 - length)
    check_shapes(path, meta, {name: shape for name, (_, shape, _) in table.items()})
    return meta, table


def read_metadata(path: str | Path) -> dict:
    """A safetensors model file's checked metadata (see `read_header`)."""
    return read_header(path)[0]


def _tensor_table(path: Path, header: dict, data_bytes: int) -> dict:
    table, spans = {}, []
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise ModelFileError(f"{where}: malformed entry in the header")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise ModelFileError(f"{where}: dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        if not (isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):
            raise ModelFileError(f"{where}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise ModelFileError(f"{where}: byte range {offsets!r} lies outside the file (truncated or corrupt?)")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ModelFileError(f"{where}: byte range {offsets!r} does not hold a {dtype} tensor of shape {shape}")
        table[name] = (dtype, tuple(shape), tuple(offsets))
        spans.append(tuple(offsets))
    end = 0
    for start, stop in sorted(spans):
        if start != end:
            raise ModelFileError(f"{path}: the tensors' byte ranges overlap or leave gaps (corrupt file)")
        end = stop
    if end != data_bytes:
        raise ModelFileError(f"{path}: the file holds {data_bytes} bytes of tensors, its header {end} "
                             "(truncated or corrupt)")
    return table


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_metadata(path: str | Path, meta: dict) -> None:
    """Types and ranges of every field the loader and inference use, against the architecture's limits;
    the message names the file and the field."""
    def refuse(field, problem):
        raise ModelFileError(f"{path}: metadata field {field!r} {problem}")

    if meta.get("architecture") != ARCHITECTURE:
        refuse("architecture", f"is {meta.get('architecture')!r}, not {ARCHITECTURE!r}")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        refuse("format_version", f"is {version!r}, not a format number")
    if version > FORMAT_VERSION:
        from . import __version__

        refuse("format_version", f"is {version}: newer than this dtc_training ({__version__}) reads "
                                 f"({FORMAT_VERSION}); update dtc_training")
    for field, top in (("n_filters", MAX_N_FILTERS), ("in_channels", MAX_IN_CHANNELS)):
        if not _is_int(meta.get(field)) or not 1 <= meta[field] <= top:
            refuse(field, f"is {meta.get(field)!r}, not a whole number from 1 to {top}")
    patch = meta.get("patch_size")
    if not (isinstance(patch, list) and len(patch) == 3
            and all(_is_int(s) and 16 <= s <= MAX_PATCH_SIDE and s % 16 == 0 for s in patch)):
        refuse("patch_size", f"is {patch!r}, not three multiples of 16 from 16 to {MAX_PATCH_SIDE}")
    spacing = meta.get("spacing")
    if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3
                                    and all(_is_number(s) and 0 < s <= MAX_SPACING_MM for s in spacing)):
        refuse("spacing", f"is {spacing!r}, not three finite sizes in (0, {MAX_SPACING_MM:g}] mm (or null)")
    if not (_is_number(meta.get("k")) and 0 < meta["k"] <= MAX_K):
        refuse("k", f"is {meta.get('k')!r}, not a finite number in (0, {MAX_K:g}]")
    if meta.get("normalization", "zscore") != "zscore":
        refuse("normalization", f"is {meta['normalization']!r}; this dtc_training knows 'zscore'")
    if meta.get("la_zscore", "stored") not in ("stored", "crop"):
        refuse("la_zscore", f"is {meta['la_zscore']!r}, not 'stored' or 'crop'")
    orientation = meta.get("orientation")
    if orientation is not None and not (isinstance(orientation, str) and len(orientation) == 3 and sorted(
            axis for c in orientation for axis in ORIENTATION_AXES if c in axis) == sorted(ORIENTATION_AXES)):
        refuse("orientation", f"is {orientation!r}, not three letters naming the axes (e.g. 'LPS')")
    label = meta.get("label_name", "")
    if not isinstance(label, str) or len(label) > 200:
        refuse("label_name", "is not a name of at most 200 characters")
    dice = meta.get("validation_dice")
    if dice is not None and not (_is_number(dice) and 0 <= dice <= 1):
        refuse("validation_dice", f"is {dice!r}, not a Dice in [0, 1] (or null)")


def expected_shapes(meta: dict) -> dict[str, tuple]:
    """The state-dict shapes of `model.DualTaskVNet(in_channels, n_filters)`, computed without building it
    (test_model_io checks that they agree with the network)."""
    f, shapes = meta["n_filters"], {}

    def batch_norm(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def stage(name, n_convs, c_in, c_out):
        for i in range(n_convs):
            shapes[f"{name}.conv.{3 * i}.weight"] = (c_out, c_in if i == 0 else c_out, 3, 3, 3)
            shapes[f"{name}.conv.{3 * i}.bias"] = (c_out,)
            batch_norm(f"{name}.conv.{3 * i + 1}", c_out)

    def resample(name, c_in, c_out, up):
        shapes[f"{name}.conv.0.weight"] = (c_in, c_out, 2, 2, 2) if up else (c_out, c_in, 2, 2, 2)
        shapes[f"{name}.conv.0.bias"] = (c_out,)
        batch_norm(f"{name}.conv.1", c_out)

    stage("block_one", 1, meta["in_channels"], f)
    widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
    for i, (name, convs) in enumerate((("block_two", 2), ("block_three", 3), ("block_four", 3), ("block_five", 3))):
        down = ("block_one_dw", "block_two_dw", "block_three_dw", "block_four_dw")[i]
        resample(down, widths[i], widths[i + 1], up=False)
        stage(name, convs, widths[i + 1], widths[i + 1])
    for i, (name, convs) in enumerate((("block_six", 3), ("block_seven", 3), ("block_eight", 2), ("block_nine", 1))):
        up = ("block_five_up", "block_six_up", "block_seven_up", "block_eight_up")[i]
        resample(up, widths[4 - i], widths[3 - i], up=True)
        stage(name, convs, widths[3 - i], widths[3 - i])
    for head in ("out_conv", "out_conv2"):
        shapes[f"{head}.weight"], shapes[f"{head}.bias"] = (1, f, 1, 1, 1), (1,)
    return shapes


def check_shapes(path: str | Path, meta: dict, shapes: dict, network: str = ARCHITECTURE) -> None:
    """The file's tensors are exactly the declared architecture's, name for name and shape for shape."""
    expected = expected_shapes(meta)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    misshapen = [k for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    problems = [f"{len(keys)} {kind} (e.g. {keys[0]!r}{extra(keys[0])})"
                for keys, kind, extra in (
                    (missing, "missing", lambda k: ""), (unexpected, "unexpected", lambda k: ""),
                    (misshapen, "of another shape", lambda k: f": {list(shapes[k])}, not {list(expected[k])}"))
                if keys]
    if problems:
        raise ModelFileError(f"{path}: weights do not fit {network}(in_channels={meta['in_channels']}, "
                             f"n_filters={meta['n_filters']}): {', '.join(problems)}")
