"""What one click on Segment costs a clinician, end to end, in the Slicer module's own logic (real MRML from
slicer-core): the volume written for the inference child, the request, the model loaded (and quantized for
int8) on its first use, the inference, the label read back into a "Left atrium" segment. The inference
alone is `inference_speed.py`'s subject; this is what the user waits for.

    python benchmarks/segment_click.py [--la-root DIR] [--case ID] [--clicks 3] [--precision auto fp32]

Per precision, three kinds of click: `cold` (no child yet: it starts, imports torch and MONAI, loads the
model), `warm` (the same child, model loaded), and `prepared` (a new child started ahead with the model to load,
as entering the module does, and done with both). The network has the trained model's shape (16 filters,
112x112x80 patches, 0.625 mm) and untrained weights: its time does not depend on them. Prints a JSON record
per click: wall time, the child's own report of its inference time, and the child's resident and peak memory
(Linux /proc)."""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import slicer
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "DTCSegmentation"))
from DTCSegmentationLib.InferenceLogic import InferenceLogic  # noqa: E402
from DTCSegmentationLib.ModelStore import ModelStore  # noqa: E402
from DTCSegmentationLib.Parameters import SegmentParameters  # noqa: E402

from dtc_training import la  # noqa: E402
from dtc_training.model import DualTaskVNet  # noqa: E402
from dtc_training.model_io import save_model  # noqa: E402

DEFAULT_LA = HERE.parents[1] / "shared" / "data" / "LA"
SPACING = 0.625  # mm, the LA data's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--la-root", type=Path, default=DEFAULT_LA)
    p.add_argument("--case", help="LA case id (default: the last of train.list, as inference_speed.py)")
    p.add_argument("--clicks", type=int, default=3, help="clicks per precision")
    p.add_argument("--precision", nargs="+", default=["auto", "fp32"])
    args = p.parse_args()
    image, _ = la.read_case(args.la_root, args.case or la.read_case_list(args.la_root)[-1])
    slicer.mrmlScene = slicer.vtkMRMLScene()
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "LA case")
    slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(image.transpose(2, 1, 0)))
    volume.SetSpacing(SPACING, SPACING, SPACING)
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        meta = {"n_filters": 16, "in_channels": 1, "patch_size": [112, 112, 80], "spacing": [SPACING] * 3,
                "normalization": "zscore", "k": 1500.0, "label_name": "Left atrium", "data": {"source": "untrained"}}
        model = save_model(Path(folder) / "model.safetensors", DualTaskVNet(in_channels=1, n_filters=16), meta)
        logic = InferenceLogic(store=ModelStore(Path(folder) / "store"))
        segmentation = None
        for precision in args.precision:
            logic.shutdown()
            kinds = ["cold"] + ["warm"] * (args.clicks - 1) + ["prepared"]
            for click, kind in enumerate(kinds, 1):
                params = SegmentParameters(precision=precision)
                if kind == "prepared":
                    logic.shutdown()
                    logic.prepare(str(model), params)
                    while logic.server.pending:
                        logic.server.poll()
                        time.sleep(0.1)
                started = time.perf_counter()
                job = logic.segment(volume, str(model), segmentation, params=params, timeout=600)
                total = time.perf_counter() - started
                segmentation = job.segmentationNode  # later clicks update the same segment, as a rerun does
                report = next((line for line in job.log if "->" in line), "")
                inference = re.search(r", ([\d.]+) s\)", report)
                print(json.dumps({"precision": precision, "click": click, "kind": kind, "seconds": round(total, 2),
                                  "inference_seconds": float(inference.group(1)) if inference else None,
                                  **childMemory(logic.server.process.pid), "shape": list(image.shape),
                                  "report": report.strip()}), flush=True)
        logic.shutdown()


def childMemory(pid: int) -> dict:
    """The child's resident and peak resident memory in MB (Linux), else nothing."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    kib = {key: int(value.split()[0]) for key, value in
           (line.split(":", 1) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM")))}
    return {"child_rss_mb": round(kib["VmRSS"] / 1024), "child_peak_rss_mb": round(kib["VmHWM"] / 1024)}


if __name__ == "__main__":
    main()
