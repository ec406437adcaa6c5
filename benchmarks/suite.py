"""The speed suite: visionfm and its peer libraries side by side, in one process, on the same random weights at real
model sizes.

Run: ``python -m benchmarks --suite all|encoders|e2e|pipelines --device cpu|cuda [--quick] [--models vit-b-16,...]
[--compile] [--out benchmarks/results]``. Writes ``<out>/suite_<device>.json`` and ``<out>/suite_<device>.md``.
``--suite speed-quality`` runs :mod:`benchmarks.speed_quality` instead (speed options against the fp32 baseline).

Cases, each one row per model:

- **encoder forward**: ours ``enc(pixel_values)`` vs the peer's raw forward (open_clip ``encode_image``, transformers
  ``Dinov2Model`` / ``SamModel.get_image_embeddings``, diffusers VAE + DiT forward) on the same preprocessed batch,
  under ``torch.inference_mode``, in the dtype under test. ``max_abs_diff``: of the pooled embeddings.
- **feature extraction e2e** (JPEG decode -> preprocess -> encoder): ours ``enc.encode(paths, batch_size=B)`` vs the
  peer's own image path (transformers' ``image-feature-extraction`` pipeline where it applies, else the library's
  processor + model). Also compared with the peer's raw forward on already-preprocessed batches
  (``ratio_vs_raw_forward``, goal >= 0.95).
- **pipelines**: the in-process functions of ``zero_shot_classification.py``, ``mask_generation.py`` and
  ``zero_shot_seg.py`` (grounding).

Metrics per side: images/s, per-batch latency p50/p95 (after warm-up; CUDA synchronised), peak memory above what was
resident before the case (CUDA: ``max_memory_allocated``; CPU: peak RSS from ``/proc/self/status`` after resetting it
through ``/proc/self/clear_refs``), FLOPs per image (``FlopCounterMode``, one forward) and MFU = FLOPs/s achieved /
the matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import suite_models as sm

SUITES = ("all", "encoders", "e2e", "pipelines", "speed-quality")  # "all": the first three


# -- ours ------------------------------------------------------------------------------------------------------------
def build_ours(model_dir: str | Path, device: str | torch.device, dtype: torch.dtype, compile: bool = False) -> Any:
    """Our encoder, the one place it is constructed (library-level options go here).

    ``compile``: ``load_encoder(..., compile=True)`` (``torch.compile`` of the encoder in place), so that both
    ``enc(pixel_values)`` and ``enc.encode(...)`` run the compiled forward.
    """
    import visionfm

    return visionfm.load_encoder(str(model_dir), device=device, dtype=dtype, compile=compile)


# -- measurement helpers ---------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


class PeakMemory:
    """Peak memory above the level resident on entry, in bytes (``None`` where it cannot be read)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self._base = _proc_status().get("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            hwm = _proc_status().get("VmHWM")
            self.peak = None if hwm is None or self._base is None else max(0, hwm - self._base)


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> tuple[list[float], int | None]:
    """Per-call seconds of ``iters`` calls after ``warmup`` calls, and peak memory over all of them."""
    times = []
    with PeakMemory(device) as mem:
        for _ in range(warmup):
            fn()
        _sync(device)
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return times, mem.peak


def time_interleaved(
    fns: list[Callable[[], Any]], device: torch.device, warmup: int, iters: int
) -> tuple[list[list[float]], list[int | None]]:
    """Per-call seconds of each of ``fns``, timed in turn (A B A B ...) so that load from other processes on a shared
    machine hits every side alike, and each side's peak memory over its own ``max(1, warmup)`` warm-up calls."""
    peaks = []
    for fn in fns:
        with PeakMemory(device) as mem:
            for _ in range(max(1, warmup)):
                fn()
        peaks.append(mem.peak)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for i, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return times, peaks


def _flop_mapping() -> dict[Any, Any]:
    """FLOP formulas FlopCounterMode lacks: the CPU flash-attention kernel of ``scaled_dot_product_attention``."""
    from torch.utils.flop_counter import sdpa_flop_count

    def sdpa_flop(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def mha_flop(q: Any, k: Any, v: Any, embed_dim: int, num_heads: int, *args: Any, out_shape: Any = None,
                 **kwargs: Any) -> int:  # fmt: skip
        # aten._native_multi_head_attention: nn.MultiheadAttention's inference fast path (batch-first [B, L, E])
        b, lq, e = q
        lk = k[1]
        return 2 * b * e * e * (2 * lq + 2 * lk) + 4 * b * lq * lk * e

    aten = torch.ops.aten
    out = {aten._native_multi_head_attention: mha_flop}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None:
            out[op] = sdpa_flop
    return out


class _TotalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP goes to the total ("Global") only."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _TotalOnly:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of one call of ``fn``, by ``torch.utils.flop_counter.FlopCounterMode``.

    Only the total is kept: the counter's per-module tracker is switched off. It hooks every module input that
    requires grad and fails in inference mode on a view of a parameter (a requires-grad tensor with no grad node),
    e.g. timm's attention-pool latent ``latent.expand(B, -1, -1)`` in PE-Core's head.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False, custom_mapping=_flop_mapping())
    if hasattr(fc, "mod_tracker"):
        fc.mod_tracker = _TotalOnly()
    with fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, quick: bool) -> dict[str, Any]:
    """The device's matmul throughput measured now: best FLOP/s over square matmuls of a few sizes."""
    if device.type == "cuda":
        sizes, reps = ([4096, 8192] if quick else [8192, 16384 if dtype != torch.float32 else 8192]), 10
    else:
        sizes, reps = ([1024, 2048] if quick else [2048, 4096]), 3
    best = 0.0
    per = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with torch.inference_mode():
            torch.mm(a, b)
            _sync(device)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.mm(a, b)
                _sync(device)
                ts.append(time.perf_counter() - t0)
        rate = 2 * n**3 / min(ts)
        per[str(n)] = round(rate / 1e12, 4)
        best = max(best, rate)
        del a, b
    return {"dtype": str(dtype).replace("torch.", ""), "sizes": sizes, "tflops_by_size": per, "tflops": best / 1e12}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def side_metrics(
    name: str,
    times: list[float],
    images_per_call: int,
    peak: int | None,
    flops_per_image: int | None,
    peak_flops: float,
) -> dict[str, Any]:
    """One side of a row."""
    ips = images_per_call * len(times) / sum(times) if times else None
    achieved = flops_per_image * ips if (flops_per_image and ips) else None
    return {
        "name": name,
        "images_per_s": ips,
        "latency_p50_s": _pct(times, 0.5),
        "latency_p95_s": _pct(times, 0.95),
        "peak_mem_mb": None if peak is None else peak / 2**20,
        "flops_per_image": flops_per_image,
        "achieved_tflops": None if achieved is None else achieved / 1e12,
        "mfu": None if achieved is None else achieved / peak_flops,
        "calls_timed": len(times),
    }


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def _param_mb(mods: list[torch.nn.Module]) -> float:
    return sum(p.numel() * p.element_size() for m in mods for p in m.parameters()) / 2**20


# -- configuration ---------------------------------------------------------------------------------------------------
_BATCH = {  # (cpu quick, cpu full, cuda quick, cuda full)
    "vit-b-16": (2, 8, 64, 256),
    "vit-b-16-hf": (2, 8, 64, 256),
    "vit-l-14": (2, 8, 64, 256),
    "dinov2-b-14": (2, 8, 64, 256),
    "dinov2-l-14": (2, 8, 64, 256),
    "dinov3-b-16": (2, 8, 64, 256),
    "radio-b-16": (2, 8, 64, 256),
    "siglip2-b-16": (2, 8, 64, 256),
    "siglip2-b-16-fixed": (2, 8, 64, 256),
    "aimv2-l-14": (2, 8, 64, 256),
    "pe-core-b-16": (2, 8, 64, 256),
    "mobileclip2-s2": (2, 8, 64, 256),
    "sam-vit-b": (1, 2, 8, 16),
    "dit-xl-2-256": (1, 2, 16, 64),
    "tiny-clip": (4, 8, 64, 256),
    "tiny-dinov2": (4, 8, 64, 256),
}


class Context:
    """Run settings shared by all cases."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.quick = args.quick
        self.compile = args.compile
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        self.batch_override = args.batch_size
        self.warmup = args.warmup if args.warmup is not None else (1 if self.quick else 3)
        self.iters = (
            args.iters if args.iters is not None else ((2 if self.quick else 5) if args.device == "cpu" else 10)
        )
        self.e2e_batches = args.e2e_batches if args.e2e_batches is not None else (4 if self.quick else 8)
        self.e2e_repeats = 2 if self.quick else 3
        self.cache = Path(args.cache) if args.cache else None
        self.peak: dict[str, Any] = {}
        self.raw_forward: dict[tuple[str, int], dict[str, Any]] = {}

    def batch(self, model: str) -> int:
        if self.batch_override:
            return self.batch_override
        i = (0 if self.quick else 1) + (2 if self.device.type == "cuda" else 0)
        return _BATCH.get(model, (2, 8, 64, 256))[i]

    @property
    def peak_flops(self) -> float:
        return self.peak["tflops"] * 1e12


class Loaded:
    """Ours and the peer for one model, loaded once and shared by its cases."""

    def __init__(self, ctx: Context, model: str) -> None:
        self.model = model
        self.path = sm.checkpoint(model, ctx.cache)
        t0 = time.perf_counter()
        self.ours = build_ours(self.path, ctx.device, ctx.dtype, ctx.compile)
        self.ours_load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.peer = sm.build_peer(model, self.path, ctx.device, ctx.dtype, self.ours)
        self.peer_load_s = time.perf_counter() - t0
        self.images = sm.write_images(max(8, ctx.batch(model) * ctx.e2e_batches), ctx.cache)
        self._px: dict[int, torch.Tensor] = {}

    def pixels(self, b: int) -> torch.Tensor:
        """A preprocessed batch of ``b`` real photos (our preprocessing), on the device, in the model dtype."""
        if b not in self._px:
            paths = (self.images * (b // len(self.images) + 1))[:b]
            self._px[b] = self.ours.preprocess(paths)
        return self._px[b]


def _base_row(ctx: Context, lm: Loaded, case: str, b: int) -> dict[str, Any]:
    return {
        "model": lm.model,
        "case": case,
        "device": str(ctx.device),
        "dtype": str(ctx.dtype).replace("torch.", ""),
        "batch_size": b,
        "compile": ctx.compile,
        "checkpoint": {"path": str(lm.path), **sm.describe(lm.path)},
    }


def _peer_raw_forward(ctx: Context, lm: Loaded, b: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The peer's raw forward at batch ``b`` (measured once per model and batch size)."""
    x = lm.pixels(b)
    with torch.inference_mode():
        flops = count_flops(lambda: lm.peer.forward(x))  # also the first warm-up call
        want = lm.peer.forward(x)
        times, peak = time_calls(lambda: lm.peer.forward(x), ctx.device, max(0, ctx.warmup - 1), ctx.iters)
    m = side_metrics(lm.peer.name, times, b, peak, flops // b, ctx.peak_flops)
    m["weights_mb"] = _param_mb(lm.peer.modules)
    ctx.raw_forward[(lm.model, b)] = m
    return m, want


def case_encoder_forward(ctx: Context, lm: Loaded) -> dict[str, Any]:
    b = ctx.batch(lm.model)
    x = lm.pixels(b)
    enc = lm.ours
    with torch.inference_mode():
        flops = count_flops(lambda: enc.forward(x))  # bypasses a compiled __call__: counted on the eager graph
        peer_flops = count_flops(lambda: lm.peer.forward(x))
        got, want = enc(x).pooled, lm.peer.forward(x)
        (t_ours, t_peer), (m_ours, m_peer) = time_interleaved(
            [lambda: enc(x), lambda: lm.peer.forward(x)], ctx.device, ctx.warmup, ctx.iters
        )
    ours = side_metrics("visionfm enc(pixel_values)", t_ours, b, m_ours, flops // b, ctx.peak_flops)
    ours["weights_mb"] = _param_mb([enc])
    ours["load_s"] = lm.ours_load_s
    peer = side_metrics(lm.peer.name, t_peer, b, m_peer, peer_flops // b, ctx.peak_flops)
    peer["weights_mb"] = _param_mb(lm.peer.modules)
    ctx.raw_forward[(lm.model, b)] = dict(peer)
    peer["load_s"] = lm.peer_load_s
    row = _base_row(ctx, lm, "encoder forward", b)
    row.update(
        images=b,
        ours=ours,
        peer=peer,
        ratio=ours["images_per_s"] / peer["images_per_s"],
        goal="ours >= 1.0x peer raw forward",
        max_abs_diff=_max_abs_diff(got, want),
        output_compared="pooled embedding [B, D]",
        pooled_abs_max=float(want.float().abs().max()),
        notes=lm.peer.note,
    )
    row["goal_met"] = row["ratio"] >= 1.0
    return row


def case_e2e(ctx: Context, lm: Loaded) -> dict[str, Any]:
    b = ctx.batch(lm.model)
    paths = lm.images[: b * ctx.e2e_batches]
    n_batches = (len(paths) + b - 1) // b
    enc = lm.ours

    def ours_all() -> torch.Tensor:  # one call over the whole list: decoding overlaps the forward (workers)
        return enc.encode(paths, batch_size=b, progress=False).pooled

    def peer_all() -> torch.Tensor:
        with torch.inference_mode():
            return lm.peer.e2e(paths, b)

    sides = [ours_all, peer_all]
    peaks = []
    for fn in sides:  # warm-up; peak memory of each side over its warm-up call
        with PeakMemory(ctx.device) as mem:
            fn()
        peaks.append(mem.peak)
    times: list[list[float]] = [[], []]
    outs: list[torch.Tensor] = [torch.empty(0), torch.empty(0)]
    for _ in range(max(1, ctx.e2e_repeats)):  # interleaved, run by run, so that outside load hits both sides alike
        for i, fn in enumerate(sides):
            _sync(ctx.device)
            t0 = time.perf_counter()
            outs[i] = fn()
            _sync(ctx.device)
            times[i].append((time.perf_counter() - t0) / n_batches)  # per-batch latency, averaged over the run
    (t_ours, t_peer), (m_ours, m_peer) = times, peaks
    got, want = (o.float().cpu() for o in outs)
    raw = ctx.raw_forward.get((lm.model, b))
    if raw is None:
        raw, _ = _peer_raw_forward(ctx, lm, b)
    flops = raw.get("flops_per_image")
    ours_flops = _ours_flops(ctx, lm, b)
    ours = side_metrics("visionfm enc.encode(paths)", t_ours, b, m_ours, ours_flops, ctx.peak_flops)
    peer = side_metrics(lm.peer.e2e_name, t_peer, b, m_peer, flops, ctx.peak_flops)
    row = _base_row(ctx, lm, "feature extraction e2e", b)
    row.update(
        images=len(paths),
        ours=ours,
        peer=peer,
        raw_forward=raw,
        ratio=ours["images_per_s"] / peer["images_per_s"],
        ratio_vs_raw_forward=ours["images_per_s"] / raw["images_per_s"],
        goal="ours >= 0.95x peer raw forward; >= 3x transformers image-feature-extraction pipeline",
        max_abs_diff=_max_abs_diff(got, want),
        output_compared="pooled embedding [N, D], each side with its own decode + preprocessing",
        pooled_abs_max=float(want.abs().max()),
        notes=(
            f"one enc.encode call over {len(paths)} paths (decode workers overlap the forward); per-batch latency "
            "= run time / batches; " + lm.peer.note
        ),
    )
    met = row["ratio_vs_raw_forward"] >= 0.95
    if "pipeline" in lm.peer.e2e_name:
        met = met and row["ratio"] >= 3.0
    row["goal_met"] = met
    return row


def _ours_flops(ctx: Context, lm: Loaded, b: int) -> int:
    if not hasattr(lm, "_ours_flops"):
        x = lm.pixels(b)
        with torch.inference_mode():
            lm._ours_flops = count_flops(lambda: lm.ours.forward(x)) // b
    return lm._ours_flops


# -- pipelines -------------------------------------------------------------------------------------------------------
def _pipeline_row(ctx: Context, model: str, case: str, images: int, ours_s: float, peer_s: float, peer_name: str,
                  diff: float | None, extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    def side(name: str, s: float) -> dict[str, Any]:
        return {"name": name, "images_per_s": images / s, "latency_p50_s": s, "latency_p95_s": s, "peak_mem_mb": None,
                "flops_per_image": None, "achieved_tflops": None, "mfu": None, "calls_timed": 1, "seconds": s}  # fmt: skip

    return {
        "model": model,
        "case": case,
        "device": str(ctx.device),
        "dtype": "float32",
        "batch_size": None,
        "compile": False,
        "images": images,
        "ours": side("visionfm pipeline", ours_s),
        "peer": side(peer_name, peer_s),
        "ratio": peer_s / ours_s,
        "max_abs_diff": diff,
        "notes": "one timed call per side (latency = the call); " + extra.pop("note", ""),
        **extra,
    }


def run_pipelines(ctx: Context, out_rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    from . import mask_generation, zero_shot_classification, zero_shot_seg

    dev = str(ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def attempt(name: str, fn: Callable[[], None]) -> None:
            print(f"[pipelines] {name} ...", flush=True)
            try:
                fn()
                print(f"[pipelines] {name}: {out_rows[-1]['ratio']:.2f}x", flush=True)
            except Exception as e:  # noqa: BLE001 - a failing case is reported, the others still run
                errors.append({"case": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
                print(f"[pipelines] {name} FAILED: {e}", flush=True)

        def zsc() -> None:
            n = 16 if ctx.quick else 64
            for rb in [8] if ctx.quick else [1, 8]:
                r = zero_shot_classification.run("vit-b-16", root, n, 4 if ctx.quick else 8, rb, device=dev)
                note = f"transformers timed on {r['transformers_timed_images']} images and scaled; batch_size={rb}"
                out_rows.append(_pipeline_row(ctx, "vit-b-16 (transformers CLIP)", "zero-shot-classification",
                                              n, r["ours_s"], r["transformers_s"],
                                              f'transformers pipeline("zero-shot-image-classification", batch_size={rb})',
                                              r["max_prob_diff"], {"labels": r["labels"], "note": note, "raw": r}))  # fmt: skip

        def masks() -> None:
            for th in [(0.88, 0.95)] if ctx.quick else [(0.88, 0.95), (0.0, 0.0)]:
                r = mask_generation.run("vit-b", root, 16, th, device=dev)
                out_rows.append(_pipeline_row(ctx, "sam-vit-b", "mask-generation", 1, r["ours_s"],
                                              r["transformers_s"], 'transformers pipeline("mask-generation")', None,
                                              {"same_masks": r["same_masks"], "masks": r["masks"], "raw": r,
                                               "note": f"16x16 grid, thresholds {th}, cold (encoder included)"}))  # fmt: skip

        def grounding() -> None:
            images = zero_shot_seg.make_images(1 if ctx.quick else 2)
            r = zero_shot_seg.grounding_vs_transformers(images, zero_shot_seg.owlv2_base(root), 0.1, device=dev)
            out_rows.append(_pipeline_row(ctx, "owlv2-base (ViT-B/16, 960 px)", "grounding", r["images"], r["ours_s"],
                                          r["transformers_s"], 'transformers pipeline("zero-shot-object-detection")',
                                          r["max_score_difference"],
                                          {"phrases": r["phrases"], "raw": r,
                                           "same_boxes": r["boxes_ours"] == r["boxes_transformers"],
                                           "note": f"{r['phrases']} phrases, no NMS on either side"}))  # fmt: skip

        attempt("zero-shot-classification", zsc)
        attempt("mask-generation", masks)
        attempt("grounding", grounding)


# -- machine and report ----------------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    mem = _proc_meminfo()
    if mem:
        info["ram_gib"] = round(mem / 2**30, 1)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    gpu_capability=f"{p.major}.{p.minor}")  # fmt: skip
    versions = {}
    for pkg in ("visionfm", "transformers", "open_clip_torch", "diffusers", "torchvision", "pillow", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    return info


def _proc_meminfo() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.{digits}g}"
    return str(v)


def _pct_str(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['torch_threads']} threads"
    lines = [
        f"# visionfm speed suite — {report['device']}",
        "",
        f"{report['timestamp']} · {where} · torch {m['torch']} · matmul peak "
        f"{report['matmul_peak']['tflops']:.3g} TFLOP/s ({report['matmul_peak']['dtype']}) · "
        f"`{report['command']}`",
        "",
        "| model | case | batch | dtype | ours img/s | peer img/s | ratio | vs raw fwd | ours p50 / p95 (s) | "
        "peer p50 / p95 (s) | ours / peer peak mem (MiB) | GFLOP/img | ours MFU | peer MFU | max abs diff | peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        o, p = r["ours"], r["peer"]
        flops = o.get("flops_per_image")
        diff = r.get("max_abs_diff")
        if diff is None and "same_masks" in r:
            diff = "same masks" if r["same_masks"] else "DIFFERENT masks"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["model"],
                    r["case"],
                    _fmt(r.get("batch_size")),
                    r["dtype"],
                    _fmt(o["images_per_s"]),
                    _fmt(p["images_per_s"]),
                    f"**{r['ratio']:.2f}×**",
                    "–" if r.get("ratio_vs_raw_forward") is None else f"{r['ratio_vs_raw_forward']:.2f}×",
                    f"{_fmt(o['latency_p50_s'])} / {_fmt(o['latency_p95_s'])}",
                    f"{_fmt(p['latency_p50_s'])} / {_fmt(p['latency_p95_s'])}",
                    f"{_fmt(o['peak_mem_mb'], 4)} / {_fmt(p['peak_mem_mb'], 4)}",
                    "–" if flops is None else _fmt(flops / 1e9),
                    _pct_str(o.get("mfu")),
                    _pct_str(p.get("mfu")),
                    _fmt(diff, 2),
                    p["name"],
                ]
            )
            + " |"
        )
    if report["errors"]:
        lines += ["", "Failed cases:", ""]
        lines += [f"- {e.get('model', '')} {e['case']}: {e['error']}" for e in report["errors"]]
    notes = sorted({r["notes"] for r in report["rows"] if r.get("notes")})
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# -- driver ----------------------------------------------------------------------------------------------------------
def _suites(text: str) -> str:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in parts if s not in SUITES]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {bad or text!r}; choose from {SUITES} (comma list allowed)")
    return ",".join(parts)


def _wants(args: argparse.Namespace, name: str) -> bool:
    return bool({"all", name} & set(args.suite.split(",")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--suite", default="all", type=_suites, help=f"one of {SUITES}, or a comma list (encoders,e2e)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=None,
                   help="small batches, few iterations (default on cpu)")  # fmt: skip
    p.add_argument("--models", default="all",
                   help=f"comma list of {sm.ALL_MODELS + sm.EXTRA_MODELS}, 'all' ({sm.ALL_MODELS}), or 'tiny' ({sm.TINY_MODELS})")  # fmt: skip
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default: fp32 cpu, bf16 cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile our encoder (not the peer)")
    p.add_argument("--batch-size", type=int, default=None, help="override every model's batch size")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--e2e-batches", type=int, default=None, help="batches of JPEG files in the e2e case")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--cache", default=None, help=f"checkpoint/image cache (default {sm.cache_root()})")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--skip-quality", action="store_true", help="speed-quality: speed rows only (no toy models)")
    args = p.parse_args(argv)
    if args.quick is None:
        args.quick = args.device == "cpu"
    if args.dtype is None:
        args.dtype = "bf16" if args.device == "cuda" else "fp32"
    return args


def write_report(
    args: argparse.Namespace,
    ctx: Context,
    models: list[str],
    rows: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    t_start: float,
    command: str | None,
    final: bool,
) -> dict[str, Any]:
    """Write ``suite_<device>.json`` and ``.md`` (after every case, so that an interrupted run keeps its rows)."""
    report = {
        "suite": args.suite,
        "device": args.device,
        "complete": final,
        "quick": ctx.quick,
        "compile": ctx.compile,
        "dtype": args.dtype,
        "models": models,
        "command": command or "python -m benchmarks " + " ".join(sys.argv[1:]),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "settings": {
            "warmup": ctx.warmup,
            "iters": ctx.iters,
            "e2e_batches": ctx.e2e_batches,
            "batch_sizes": {m: ctx.batch(m) for m in models},
        },
        "machine": machine_info(ctx.device),
        "matmul_peak": ctx.peak,
        "rows": rows,
        "errors": errors,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"suite_{args.device}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    (out / f"{stem}.md").write_text(markdown(report))
    return report


def run_suite(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """Run the suite and write ``suite_<device>.json`` and ``.md`` under ``args.out``; return the report."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if "speed-quality" in args.suite.split(","):
        from . import speed_quality

        report = speed_quality.run(args, machine_info(torch.device(args.device)))
        if args.suite == "speed-quality":
            return {**report, "errors": [r for r in report["speed"] if "error" in r]}
    ctx = Context(args)
    models = {"all": sm.ALL_MODELS, "tiny": sm.TINY_MODELS}.get(args.models) or [
        m.strip() for m in args.models.split(",") if m.strip()
    ]
    t_start = time.perf_counter()
    ctx.peak = matmul_peak(ctx.device, ctx.dtype, ctx.quick)
    print(f"matmul peak: {ctx.peak['tflops']:.3f} TFLOP/s ({ctx.peak['dtype']})", flush=True)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    cases = []
    if _wants(args, "encoders"):
        cases.append(("encoder forward", case_encoder_forward))
    if _wants(args, "e2e"):
        cases.append(("feature extraction e2e", case_e2e))
    for model in models if cases else []:
        try:
            print(f"[{model}] loading ...", flush=True)
            lm = Loaded(ctx, model)
        except Exception as e:  # noqa: BLE001
            errors.append({"model": model, "case": "load", "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()})  # fmt: skip
            print(f"[{model}] load FAILED: {e}", flush=True)
            continue
        for case, fn in cases:
            t0 = time.perf_counter()
            try:
                row = fn(ctx, lm)
                row["case_wall_s"] = time.perf_counter() - t0
                rows.append(row)
                write_report(args, ctx, models, rows, errors, t_start, command, final=False)
                print(f"[{model}] {case}: ours {row['ours']['images_per_s']:.3g} img/s, peer "
                      f"{row['peer']['images_per_s']:.3g} img/s, ratio {row['ratio']:.2f}, max|diff| "
                      f"{row['max_abs_diff']:.2e} ({row['case_wall_s']:.0f} s)", flush=True)  # fmt: skip
            except Exception as e:  # noqa: BLE001
                errors.append({"model": model, "case": case, "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc()})  # fmt: skip
                print(f"[{model}] {case} FAILED: {e}", flush=True)
        del lm
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    if _wants(args, "pipelines"):
        run_pipelines(ctx, rows, errors)
    report = write_report(args, ctx, models, rows, errors, t_start, command, final=True)
    print(markdown(report))
    print(f"wrote {Path(args.out) / f'suite_{args.device}.json'} and .md in {report['wall_s']:.0f} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run_suite(args)
    if report["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
