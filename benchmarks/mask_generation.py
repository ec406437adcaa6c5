"""Automatic SAM mask generation: visionfm's pipeline vs transformers' ``mask-generation`` pipeline.

Same weights, same process, same image, same point grid, thresholds and NMS (single crop, CPU). Two
threshold settings: SAM's defaults (IoU 0.88, stability 0.95) and permissive ones (0, 0) under which every
candidate mask is kept until NMS. Two sizes: the tiny test SAM and a SAM with ViT-B's architecture and random
weights (no hub here; speed does not depend on the values). Masks are checked to agree one-to-one at IoU >= 0.98.

Run: python benchmarks/mask_generation.py [--sizes tiny vit-b] [--points-per-side 16] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def checkpoint(size: str, root: Path) -> Path:
    from visionfm.testing import tiny_checkpoint

    if size == "tiny":
        return tiny_checkpoint("sam")
    from transformers import SamConfig, SamImageProcessor, SamModel

    torch.manual_seed(0)
    path = root / "sam-vit-b-random"
    SamModel(SamConfig()).save_pretrained(path)  # SamConfig's defaults are SAM ViT-B (1024 px)
    SamImageProcessor().save_pretrained(path)
    return path


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def run(size: str, root: Path, points_per_side: int, thresholds: tuple[float, float], device: str = "cpu") -> dict:
    import skimage.data as d
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    import visionfm as vfm

    path = checkpoint(size, root)
    image = d.astronaut()
    opts = dict(pred_iou_thresh=thresholds[0], stability_score_thresh=thresholds[1])
    ours = vfm.pipeline("mask-generation", model=str(path), device=device)
    ref = hf_pipeline("mask-generation", model=str(path), device=device)
    t0 = time.perf_counter()
    got = ours(image, points_per_side=points_per_side, points_per_batch=64, **opts)  # cold: includes the encoder
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = ref(Image.fromarray(image), points_per_crop=points_per_side, points_per_batch=64, **opts)
    t_ref = time.perf_counter() - t0
    ref_masks = [torch.as_tensor(np.asarray(m)).bool() for m in want["masks"]]
    matched = all(max((_iou(m, r) for r in ref_masks), default=0) >= 0.98 for m in got.masks) and len(got) == len(
        ref_masks
    )
    return {
        "size": size,
        "grid": f"{points_per_side}x{points_per_side}",
        "pred_iou_thresh": thresholds[0],
        "stability_score_thresh": thresholds[1],
        "masks": len(got),
        "ours_s": round(t_ours, 3),
        "transformers_s": round(t_ref, 3),
        "speedup": round(t_ref / t_ours, 1),
        "same_masks": bool(matched),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "vit-b"], choices=["tiny", "vit-b"])
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from zero_shot_classification import _cpu_name  # same folder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for th in ((0.88, 0.95), (0.0, 0.0)):
                rows.append(run(size, Path(tmp), args.points_per_side, th))
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "mask_generation.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=1))
    print(
        "\n| size | grid | IoU / stability thresholds | masks | visionfm (s) | transformers (s) | speed-up | same masks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        th = f"{r['pred_iou_thresh']} / {r['stability_score_thresh']}"
        print(
            f"| {r['size']} | {r['grid']} | {th} | {r['masks']} | {r['ours_s']} | {r['transformers_s']} | {r['speedup']}x | {r['same_masks']} |"
        )


if __name__ == "__main__":
    main()
