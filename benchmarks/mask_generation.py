"""Automatic SAM / SAM 2 mask generation: visionfm's pipeline vs transformers' ``mask-generation`` pipeline.

Same weights, same process, same image, same point grid, thresholds and NMS (single crop, CPU). Two
threshold settings: the model's reference defaults (SAM: IoU 0.88, stability 0.95; SAM 2: IoU 0.8, stability 0.95)
and permissive ones (0, 0) under which every candidate mask is kept until NMS. Models: SAM 1 (``SamModel``) and
SAM 2 (``Sam2Model``; transformers' pipeline runs it too). Sizes: the tiny test checkpoints (``tiny``) and
random-weight models with the real architectures (no hub here; speed does not depend on the values): ``vit-b``
(SAM ViT-B) and ``hiera-t`` (``Sam2Config()``'s defaults, SAM 2.1 Hiera-T), both 1024 px. The image is square
(``skimage.data.astronaut``): transformers' pipeline places SAM 2's grid points by the longest edge (SAM 1's frame),
which equals SAM 2's square frame only for square images. Masks are checked to agree one-to-one at IoU >= 0.98.

Run: python benchmarks/mask_generation.py [--models sam sam2] [--sizes tiny vit-b hiera-t] [--points-per-side 16]
[--out benchmarks/results]  (each model runs at the sizes that exist for it: SAM tiny/vit-b, SAM 2 tiny/hiera-t)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: The sizes each model runs at.
SIZES = {"sam": ("tiny", "vit-b"), "sam2": ("tiny", "hiera-t")}
#: The reference automatic-mask thresholds (pred_iou_thresh, stability_score_thresh) of each model.
DEFAULT_THRESHOLDS = {"sam": (0.88, 0.95), "sam2": (0.8, 0.95)}


def checkpoint(size: str, root: Path, model: str = "sam") -> Path:
    """The checkpoint directory of ``model`` (``"sam"`` or ``"sam2"``) at ``size`` (see :data:`SIZES`)."""
    from visionfm.testing import tiny_checkpoint

    if size not in SIZES[model]:
        raise ValueError(f"{model} runs at sizes {SIZES[model]}, not {size!r}")
    if size == "tiny":
        return tiny_checkpoint(model)
    torch.manual_seed(0)
    if model == "sam":
        from transformers import SamConfig, SamImageProcessor, SamModel

        path = root / "sam-vit-b-random"
        SamModel(SamConfig()).save_pretrained(path)  # SamConfig's defaults are SAM ViT-B (1024 px)
        SamImageProcessor().save_pretrained(path)
        return path
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    path = root / "sam2-hiera-t-random"
    Sam2Model(Sam2Config()).save_pretrained(path)  # Sam2Config's defaults are SAM 2.1 Hiera-T (1024 px)
    Sam2ImageProcessor().save_pretrained(path)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(path)
    return path


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def run(
    size: str,
    root: Path,
    points_per_side: int,
    thresholds: tuple[float, float],
    device: str = "cpu",
    model: str = "sam",
) -> dict:
    """One timed comparison (cold: the image encoder included) of ``model`` at ``size`` on one square photo."""
    import skimage.data as d
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    import visionfm as vfm

    path = checkpoint(size, root, model)
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
        "model": model,
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
    p.add_argument("--models", nargs="+", default=["sam", "sam2"], choices=list(SIZES))
    p.add_argument("--sizes", nargs="+", default=["tiny", "vit-b", "hiera-t"], choices=["tiny", "vit-b", "hiera-t"])
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from zero_shot_classification import _cpu_name  # same folder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for size in [s for s in args.sizes if s in SIZES[model]]:
                for th in (DEFAULT_THRESHOLDS[model], (0.0, 0.0)):
                    rows.append(run(size, Path(tmp), args.points_per_side, th, model=model))
                    print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "mask_generation.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=1))
    print(
        "\n| model | size | grid | IoU / stability thresholds | masks | visionfm (s) | transformers (s) | speed-up "
        "| same masks |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        th = f"{r['pred_iou_thresh']} / {r['stability_score_thresh']}"
        print(
            f"| {r['model']} | {r['size']} | {r['grid']} | {th} | {r['masks']} | {r['ours_s']} | {r['transformers_s']} | {r['speedup']}x | {r['same_masks']} |"
        )


if __name__ == "__main__":
    main()
