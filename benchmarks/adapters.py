"""LoRA vs full fine-tuning at ViT-B/16 size: step time and peak memory, same model, same batch.

A transformers CLIP vision tower with ViT-B/16's architecture and random weights (no hub here) plus a linear
head, trained with AdamW on random images. Each configuration runs in its own subprocess so that peak
resident memory (``ru_maxrss``) belongs to that configuration alone; the parent prints and saves the
comparison. On CUDA, peak memory is ``torch.cuda.max_memory_allocated``.

Run: ``python benchmarks/adapters.py [--batch 8] [--steps 5] [--device cpu|cuda] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def build(device: str):
    """A ViT-B/16 CLIP encoder (random weights) wrapped as a visionfm Encoder."""
    import tempfile

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    import visionfm as vfm
    from visionfm.foundation.clip import write_clip_tokenizer_files

    torch.manual_seed(0)
    cfg = CLIPConfig(
        projection_dim=512,
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
    )  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "clip-vit-b-16-random"
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(path)
    write_clip_tokenizer_files(path)
    return vfm.load_encoder(str(path), device=device)


def child(tuning: str, batch: int, steps: int, device: str) -> dict:
    """One configuration: returns step time and peak memory."""
    from visionfm import adapters
    from visionfm.adapters.heads import ClassificationHead, EncoderWithHead

    enc = build(device)
    for p in enc.parameters():
        p.requires_grad_(tuning == "full")
    if tuning != "full":
        adapters.attach(enc, tuning, r=8, targets="attention")
    model = EncoderWithHead(enc, ClassificationHead(enc.info.embed_dim, 10)).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not timed
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
    return dict(tuning=tuning, trainable=sum(p.numel() for p in params), total=sum(p.numel() for p in model.parameters()),
                step_s=round(sorted(times[1:])[len(times[1:]) // 2], 3), peak_mib=round(peak, 1),
                rss_before_training_mib=round(rss0, 1), batch=batch, device=device)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tunings", default="full,lora")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps, args.device)))
        return
    rows = []
    for tuning in args.tunings.split(","):
        cmd = [sys.executable, __file__, "--child", tuning, "--batch", str(args.batch), "--steps", str(args.steps),
               "--device", args.device]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(rows[-1], flush=True)
    full = next((r for r in rows if r["tuning"] == "full"), None)
    for r in rows:
        if full:
            r["step_time_vs_full"] = round(r["step_s"] / full["step_s"], 3)
            r["peak_memory_vs_full"] = round(r["peak_mib"] / full["peak_mib"], 3)
    report = dict(machine=dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                               torch=torch.__version__), rows=rows)  # fmt: skip
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "adapters.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {Path(args.out) / 'adapters.json'}")


if __name__ == "__main__":
    main()
