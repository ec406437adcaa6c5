"""Speed options of ``load_encoder``: token merging, quantization, bf16, and the ``speed="fast"`` preset that picks
them.

What pays where was measured (``python -m benchmarks --suite speed-quality``; figures in ``docs/benchmarks.md``):

- On a CPU **without** bf16 instructions (no ``avx512_bf16`` / ``amx_bf16`` flag, e.g. this repository's 2-core
  AVX-512 machines), bf16 matmuls run 4-5x *slower* than fp32, while dynamic int8 Linear layers (VNNI) run about
  2x faster; ``"fast"`` is int8 + token merging.
- On a CPU **with** them (Sapphire Rapids and later: AMX), ``"fast"`` is bf16 + token merging.
- On CUDA, ``"fast"`` is bf16 + token merging.

Token merging is left out for families without ViT blocks (CNN towers, the diffusion generators). For generators,
``pipeline("generation", ..., speed="fast")`` also turns on step caching at interval 2 (:data:`FAST_CACHE`).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

SPEED_PRESETS = ("fast",)
#: token merging of the ``"fast"`` preset: the ratio of patch tokens merged away by the last block ("sequence"
#: families) or around each MLP ("mlp" families); chosen on the toy models' accuracy (docs/benchmarks.md).
FAST_TOKEN_MERGING = 0.5
#: step caching interval of ``speed="fast"`` in the generation pipeline (docs/benchmarks.md: FD-toyCLIP with it)
FAST_CACHE = 2


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (``avx512_bf16`` or AMX), without which bf16 is slower than
    fp32 on CPU."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def fast_options(device: torch.device) -> dict[str, Any]:
    """The options of ``speed="fast"`` on ``device`` (see the module docstring)."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return {"dtype": torch.bfloat16, "token_merging": FAST_TOKEN_MERGING}
    if device.type == "cpu":
        return {"quantize": "int8", "token_merging": FAST_TOKEN_MERGING}
    return {"token_merging": FAST_TOKEN_MERGING}


def resolve_speed_options(
    speed: str | None,
    device: torch.device,
    *,
    dtype: Any = None,
    token_merging: Any = None,
    quantize: str | None = None,
    calibration: Any = None,
) -> dict[str, Any]:
    """Merge a preset with explicit options (explicit ones win) and validate them before any loading.

    Returns:
        ``{"dtype", "token_merging", "quantize", "calibration", "speed"}``.
    """
    from .token_merging import parse_token_merging

    chosen: dict[str, Any] = {}
    if speed is not None:
        if speed not in SPEED_PRESETS:
            raise ValueError(f"speed={speed!r} is not a speed preset; choose from {list(SPEED_PRESETS)} or None")
        chosen = fast_options(device)
    if quantize is not None and dtype is None and "dtype" in chosen:
        chosen.pop("dtype")  # quantization runs from fp32 weights
    if dtype is not None:
        chosen["dtype"] = dtype
    if token_merging is not None:
        chosen["token_merging"] = token_merging
    if quantize is not None:
        chosen["quantize"] = quantize
    q = chosen.get("quantize")
    if q is not None:
        from .quantize import QUANTIZE_MODES

        if q not in QUANTIZE_MODES:
            raise ValueError(f"quantize={q!r} is not a mode; choose from {list(QUANTIZE_MODES)} or None")
    if q == "int8-static" and calibration is None:
        raise ValueError("quantize='int8-static' needs calibration=images (a few representative inputs)")
    if calibration is not None and q != "int8-static":
        raise ValueError(f"calibration= is only used by quantize='int8-static', got quantize={q!r}")
    return {
        "dtype": chosen.get("dtype"),
        "token_merging": parse_token_merging(chosen.get("token_merging")),
        "quantize": q,
        "calibration": calibration,
        "speed": speed,
    }


def apply_speed_options(
    encoder: nn.Module,
    *,
    token_merging: int | float | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    speed: str | None = None,
) -> dict[str, Any]:
    """Apply resolved options to a loaded encoder, in place; record them as ``encoder.speed_options``.

    Nothing is installed when every option is off, so the encoder is then bit-identical to a plain load. A quantized
    encoder also gets ``encoder.quantize_report`` (layers converted, kept in float and why, weight bytes).

    Returns:
        ``encoder.speed_options``: ``{}`` when off, else ``{"speed", "token_merging", "quantize", "dtype"}``.
    """
    from .token_merging import apply_token_merging

    if quantize is not None:
        from .quantize import quantize_encoder

        pixels = None
        if calibration is not None:
            pixels = calibration if isinstance(calibration, torch.Tensor) else encoder.preprocess(calibration)
        report = quantize_encoder(encoder, quantize, calibration=pixels)
        encoder.quantize_report = report
        logger.info("quantized %s: %s", type(encoder).__name__, report)
    if token_merging is not None:
        try:
            apply_token_merging(encoder, token_merging)
        except ValueError as e:
            if speed is None:  # asked for explicitly: the family cannot
                raise
            logger.info("speed=%r: no token merging for %s (%s)", speed, type(encoder).__name__, e)
            token_merging = None
    opts: dict[str, Any] = {}
    if speed or token_merging is not None or quantize is not None:
        dtype = next((p.dtype for p in encoder.parameters() if p.is_floating_point()), torch.float32)
        opts = {"speed": speed, "token_merging": token_merging, "quantize": quantize, "dtype": str(dtype)}
    encoder.speed_options = opts
    return opts
