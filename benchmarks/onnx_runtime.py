"""onnxruntime (CPU) against PyTorch eager on the same exported weights, in one process.

Run: ``python -m benchmarks.onnx_runtime [--models vit-b-16,sam-vit-b] [--iters 3] [--out benchmarks/results]``.
Each model (random weights at real size, the speed suite's checkpoints) is exported once with
``visionfm.foundation.onnx_export.export_onnx`` (the vision graph, and for SAM the prompt-decoder graphs). Eager
PyTorch (fp32) first runs alone, before any onnxruntime session exists in the process (1 warm-up, then ``--iters``
rounds); then ``enc(pixel_values)`` and the export's ``forward`` run in turn on the same preprocessed batch of real
photos (1 warm-up each, then ``--iters`` rounds). Each number is a median. For SAM, the mask decoder is timed the
same way, on one image embedding with ``--prompts`` point prompts in one multimask call, as automatic mask
generation makes them. Writes ``onnx_cpu.json`` and prints a markdown table: images (or prompts) per second of each
side, the ratio onnxruntime / eager (eager alone, and eager in turn), and the largest absolute difference of the
outputs. ``--memory-arena`` turns onnxruntime's CPU memory arena on (``OnnxEncoder``'s default is off: with it on,
eager PyTorch in the same process ran up to 2x slower after the first onnxruntime run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from . import suite_models as sm

BATCH = {"vit-b-16": 8, "sam-vit-b": 1}


def main(argv: list[str] | None = None) -> None:
    import visionfm
    from visionfm.foundation.onnx_export import export_onnx
    from visionfm.foundation.onnx_runtime import load_onnx_encoder

    p = argparse.ArgumentParser(prog="python -m benchmarks.onnx_runtime", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit-b-16,sam-vit-b")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--prompts", type=int, default=64, help="SAM: point prompts per mask-decoder call")
    p.add_argument("--memory-arena", action="store_true", help="onnxruntime's CPU memory arena on (OnnxEncoder: off)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        path = sm.checkpoint(model)
        export = sm.cache_root() / f"onnx-{model}"
        t0 = time.perf_counter()
        export_onnx(path, export, text=False, dense=False)
        export_s = time.perf_counter() - t0
        eager = visionfm.load_encoder(str(path), device="cpu")
        b = BATCH.get(model, 2)
        px = eager.preprocess((sm.write_images(8) * b)[:b])
        eager_calls = {"vision": (eager, px, b, "images")}
        if callable(getattr(eager, "decode_masks", None)):  # SAM: the prompt decoder on one embedding, many points
            with torch.inference_mode():
                tensors = eager.decoder_inputs(px[:1])
            g = torch.Generator().manual_seed(0)
            points = torch.rand(1, args.prompts, 1, 2, generator=g) * eager.info.image_size[0]
            labels = torch.ones(1, args.prompts, 1, dtype=torch.long)
            eager_calls["prompt decoder"] = (_Decoder(eager, tensors, points, labels), None, args.prompts, "prompts")
        alone = {}  # eager, before any onnxruntime session exists in the process
        with torch.inference_mode():
            for graph, (f, x, _, _) in eager_calls.items():
                f(x)  # warm-up
                alone[graph] = statistics.median(_time(f, x) for _ in range(args.iters))
        ort = load_onnx_encoder(export, memory_arena=args.memory_arena)
        calls = {"vision": ({"eager": eager, "onnxruntime": ort}, px, b, "images")}
        if "prompt decoder" in eager_calls:
            dec = eager_calls["prompt decoder"][0]
            calls["prompt decoder"] = ({"eager": dec, "onnxruntime": _Decoder(ort, tensors, points, labels)}, None,
                                       args.prompts, "prompts")  # fmt: skip
        for graph, (sides, x, n, unit) in calls.items():
            times: dict[str, list[float]] = {k: [] for k in sides}
            with torch.inference_mode():
                outs = {k: f(x) for k, f in sides.items()}  # warm-up, and the outputs compared
                for _ in range(args.iters):
                    for k, f in sides.items():
                        times[k].append(_time(f, x))
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"model": model, "graph": graph, "batch": n, "unit": unit, "eager_per_s": n / med["eager"],
                   "onnx_per_s": n / med["onnxruntime"], "ratio": med["eager"] / med["onnxruntime"],
                   "max_abs_diff": _diff(outs["eager"], outs["onnxruntime"]), "export_s": export_s,
                   "threads": torch.get_num_threads(), "memory_arena": args.memory_arena}  # fmt: skip
            row["eager_alone_per_s"] = n / alone[graph]
            row["ratio_vs_alone"] = alone[graph] / med["onnxruntime"]
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_cpu.json").write_text(json.dumps({"rows": rows, "command": "python -m benchmarks.onnx_runtime " +
                                                   " ".join(argv or [])}, indent=1))  # fmt: skip
    print("| model | graph | batch | eager alone /s | eager in turn /s | onnxruntime /s | ratio (alone) "
          "| ratio (in turn) | max abs diff |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        alone = r.get("eager_alone_per_s")
        alone_s, ratio_alone = (f"{alone:.3g}", f"**{r['ratio_vs_alone']:.2f}×**") if alone else ("-", "-")
        print(
            f"| {r['model']} | {r['graph']} | {r['batch']} {r['unit']} | {alone_s} | {r['eager_per_s']:.3g} | "
            f"{r['onnx_per_s']:.3g} | {ratio_alone} | **{r['ratio']:.2f}×** | {r['max_abs_diff']:.1e} |"
        )


def _time(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


class _Decoder:
    """One multimask mask-decoder call on a fixed embedding and fixed point prompts (eager or onnxruntime)."""

    def __init__(self, enc, tensors, points, labels) -> None:
        self.enc, self.tensors, self.points, self.labels = enc, tensors, points, labels

    def __call__(self, _x):
        return self.enc.decode_masks(self.tensors, points=self.points, labels=self.labels, multimask=True)


def _diff(a, b) -> float:
    if isinstance(a, tuple):  # (low-res logits, IoU scores)
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
    return max(float((a.pooled - b.pooled).abs().max()), float((a.patches - b.patches).abs().max()))


if __name__ == "__main__":
    main()
