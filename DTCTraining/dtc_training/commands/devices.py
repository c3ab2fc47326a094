"""`dtc devices`: what this PyTorch build can use on this machine (the GPUs, their memory and compute
capability, whether the build has kernels for them, a test convolution on each), and why not where it cannot."""
from __future__ import annotations

import argparse

HELP = "report the CPU and GPUs this PyTorch build can train and segment on, and any problem"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-test", dest="smoke_test", action="store_false",
                   help="skip the test convolution on each device")


def format_report(report: dict) -> str:
    lines = [f"dtc_training {report['dtc_training']}, torch {report['torch']}, Python {report['python']}",
             f"CUDA build: {report['cuda_build'] or 'none (CPU-only PyTorch)'}; CUDA available: "
             f"{'yes' if report['cuda_available'] else 'no'}",
             f"CPU: {report['cpu_threads']} threads, bf16: "
             + ("native (--amp bf16, the panel's Precision bf16, trains faster here; docs/training.md)"
                if report["cpu_bf16"] else "emulated (slow)")
             + (f", test convolution {report['cpu_check']}" if "cpu_check" in report else "")]
    for gpu in report["gpus"]:
        lines.append(f"cuda:{gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, compute capability "
                     f"{gpu['capability']}, kernels in this build: {'yes' if gpu['build_has_kernels'] else 'NO'}, "
                     f"bf16: {'native' if gpu['bf16'] else 'no (training stays in float32)'}"
                     + (f", test convolution {gpu['check']}" if "check" in gpu else ""))
    lines.append(f"--device auto uses: {report['auto_device']}")
    lines += [f"note: {note}" for note in report["notes"]]
    lines += [f"problem: {problem}" for problem in report["problems"]] or ["no problems found"]
    return "\n".join(lines)


def run(args) -> int:
    import json

    from ..devices import device_report

    report = device_report(smoke_test=args.smoke_test)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
