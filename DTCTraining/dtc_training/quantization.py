"""int8 inference on the CPU: a post-training static quantization of the BN-folded network.

The quantized 3x3x3 convolutions, where fast mode spends its time, run 2-3x faster than fp32 ones: 2.9x
with torch's x86 engine on a CPU with 8-bit dot-product instructions (AVX512-VNNI), 2x with the oneDNN
engine on an AVX2-only CPU, where the x86 engine (which picks FBGEMM's kernels for these 3D convolutions)
ran slower than fp32 (docs/benchmarks.md, "int8 on the CPU"). So oneDNN's engine comes first. The labels
move slightly (Dice about 0.995 against fp32 fast mode on the held-out LA cases).

- Calibration needs no data: the activation ranges are observed on one small synthetic LA phantom
  (`phantoms.make_phantom`, z-scored as a scan is). Phantoms of 48x48x32, 64x64x48 and 112x112x80 voxels,
  and (in a first trial) real LA windows gave the same agreement with fp32 on held-out LA cases. The small
  phantom costs 0.2 s; quantizing takes about 0.65 s in all.
- The transposed convolutions stay in fp32: torch's quantized ConvTranspose3d returned errors larger
  than the output itself on a random test layer (torch 2.13, x86 engine).
- This uses torch's FX graph-mode quantization (`torch.ao.quantization`), which torch marks deprecated
  in favour of the separate torchao package; a torch without it, or without a quantized engine that has
  3D convolutions (QNNPACK alone, as on some ARM builds), gets a clear error instead of a guess."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .phantoms import make_phantom
from .sliding_window import BothHeads, FoldedVNet
from .volumes import zscore

ENGINES = ("onednn", "x86", "fbgemm")  # quantized engines with 3D convolution kernels, fastest first
CALIBRATION_SIZE = (64, 64, 48)  # voxels; multiples of 16, as every window
_CALIBRATION_SEED = 0


def _supported_engines() -> list[str]:
    engines = getattr(torch.backends, "quantized", None)
    return engines.supported_engines if engines is not None else []


def available_engine() -> str | None:
    """The first of `ENGINES` this torch has, or None."""
    return next((e for e in ENGINES if e in _supported_engines()), None)


def quantization_engine() -> str:
    """The quantized engine int8 inference uses; InputError where this torch has none for 3D convolutions."""
    engine = available_engine()
    if engine is None:
        raise InputError(f"int8 inference needs torch's oneDNN or x86 (FBGEMM) quantized kernels, which torch "
                         f"{torch.__version__} on this machine lacks (engines: "
                         f"{', '.join(_supported_engines()) or 'none'}); use --precision fp32")
    return engine


def calibration_window(size=CALIBRATION_SIZE) -> torch.Tensor:
    """A z-scored phantom, (1, 1, x, y, z)."""
    image, _ = make_phantom(np.random.default_rng(_CALIBRATION_SEED), size=size)
    return torch.from_numpy(zscore(image))[None, None]


def quantized_copy(folded: FoldedVNet | BothHeads, engine: str | None = None) -> nn.Module:
    """An int8 copy of the folded network for the CPU: same call and output (sigmoid(seg), float32; for
    `BothHeads`, also the level set, whose head stays in fp32: quantized, tanh's fixed 1/128 steps moved its
    zero level by up to 0.06, a voxel or two, and the task transform sigmoid(-1500 z) is sharp there).
    `engine`: a torch quantized engine (benchmarks/int8_engines.py compares them); default: the first of
    `ENGINES` this torch has."""
    engine = engine or quantization_engine()
    try:
        from torch.ao.quantization import QConfig, QConfigMapping, MinMaxObserver, default_per_channel_weight_observer
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as error:
        raise InputError(f"int8 inference needs torch.ao.quantization, which torch {torch.__version__} "
                         f"lacks ({error}); use --precision fp32") from None
    torch.backends.quantized.engine = engine
    # 7-bit activations (0..127), as torch's x86 default: without VNNI the 8-bit products can saturate.
    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
                      weight=default_per_channel_weight_observer)
    mapping = (QConfigMapping().set_global(qconfig).set_object_type(nn.ConvTranspose3d, None)
               .set_module_name_regex(r"(.*\.)?out_conv$", None).set_object_type(torch.tanh, None))
    window = calibration_window()
    # The tracer's per-node Python stack traces (debugging aids) cost about a second here: off while tracing.
    previous = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per call: see the docstring
            prepared = prepare_fx(folded.cpu().eval(), mapping, (window,))
            with torch.inference_mode():
                prepared(window)
            return convert_fx(prepared)
    finally:
        torch.fx.config.do_not_emit_stack_traces = previous
