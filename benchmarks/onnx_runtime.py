"""onnxruntime (CPU) against PyTorch eager on the same exported weights, in one process.

Run: ``python -m benchmarks.onnx_runtime [--models vit-b-16,sam-vit-b] [--iters 3] [--out benchmarks/results]``.
Each model (random weights at real size, the speed suite's checkpoints) is exported once with
``visionfm.foundation.onnx_export.export_onnx`` (vision graph only), then ``enc(pixel_values)`` (PyTorch eager, fp32)
and ``OnnxEncoder(export)(pixel_values)`` run in turn on the same preprocessed batch of real photos: 1 warm-up, then
the median of ``--iters`` rounds. Writes ``onnx_cpu.json`` and prints a markdown table: images/s of each side, the
ratio onnxruntime / eager, and the largest absolute difference of the pooled and patch features.
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
    from visionfm.foundation.onnx_runtime import OnnxEncoder

    p = argparse.ArgumentParser(prog="python -m benchmarks.onnx_runtime", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit-b-16,sam-vit-b")
    p.add_argument("--iters", type=int, default=3)
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
        ort = OnnxEncoder(export)
        b = BATCH.get(model, 2)
        px = eager.preprocess((sm.write_images(8) * b)[:b])
        sides = {"eager": eager, "onnxruntime": ort}
        times: dict[str, list[float]] = {k: [] for k in sides}
        with torch.inference_mode():
            outs = {k: enc(px) for k, enc in sides.items()}  # warm-up, and the outputs compared
            for _ in range(args.iters):
                for k, enc in sides.items():
                    t0 = time.perf_counter()
                    enc(px)
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = max(float((outs["eager"].pooled - outs["onnxruntime"].pooled).abs().max()),
                   float((outs["eager"].patches - outs["onnxruntime"].patches).abs().max()))  # fmt: skip
        rows.append({"model": model, "batch": b, "eager_images_per_s": b / med["eager"],
                     "onnx_images_per_s": b / med["onnxruntime"], "ratio": med["eager"] / med["onnxruntime"],
                     "max_abs_diff": diff, "export_s": export_s, "threads": torch.get_num_threads()})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_cpu.json").write_text(json.dumps({"rows": rows, "command": "python -m benchmarks.onnx_runtime " +
                                                   " ".join(argv or [])}, indent=1))  # fmt: skip
    print("| model | batch | eager img/s | onnxruntime img/s | ratio | max abs diff |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['eager_images_per_s']:.3g} | {r['onnx_images_per_s']:.3g} | "
              f"**{r['ratio']:.2f}×** | {r['max_abs_diff']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
