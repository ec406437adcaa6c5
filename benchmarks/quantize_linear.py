"""Does static int8 pay over dynamic int8 on this CPU? One ViT-B MLP Linear, three ways, in one process.

Run: ``python -m benchmarks.quantize_linear [--threads N] [--rounds 25]``. Prints a JSON line per variant: the
minimum and median milliseconds over interleaved rounds of ``[8 * 197, 768] @ 768 -> 3072`` (a ViT-B/16 batch of 8
through the first MLP Linear), and the relative error of the output against fp32. Variants: fp32 ``nn.Linear``;
``Int8DynamicLinear`` (``quantize="int8"``); ``Int8StaticLinear`` calibrated on the same input
(``quantize="int8-static"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


def main(argv: list[str] | None = None) -> None:
    from visionfm.foundation.quantize import quantize_encoder

    p = argparse.ArgumentParser(prog="python -m benchmarks.quantize_linear", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(8 * 197, 768)
    fp32 = nn.Sequential(nn.Linear(768, 3072)).eval()
    dyn = nn.Sequential(nn.Linear(768, 3072)).eval()
    dyn.load_state_dict(fp32.state_dict())
    sta = nn.Sequential(nn.Linear(768, 3072)).eval()
    sta.load_state_dict(fp32.state_dict())
    quantize_encoder(dyn, "int8")
    quantize_encoder(sta, "int8-static", calibration=x)
    variants = {"fp32": fp32, "int8 dynamic": dyn, "int8 static": sta}
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        ref = fp32(x)
        for m in variants.values():
            m(x)
        for _ in range(args.rounds):
            for k, m in variants.items():
                t0 = time.perf_counter()
                m(x)
                times[k].append(1000 * (time.perf_counter() - t0))
        for k, m in variants.items():
            err = float((m(x) - ref).norm() / ref.norm())
            print(json.dumps({"variant": k, "threads": torch.get_num_threads(), "min_ms": round(min(times[k]), 2),
                              "median_ms": round(statistics.median(times[k]), 2), "rel_error": round(err, 5)}))  # fmt: skip


if __name__ == "__main__":
    main()
