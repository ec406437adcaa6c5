"""Compare a distilled student with its CLIP teacher on toyworld: zero-shot accuracy, zero-shot-seg mIoU, FLOPs,
throughput.

``python -m visionfm.distill.evaluate runs/distill_toyworld [--teacher toyworld-clip] [--out DIR]``

- Zero-shot: :func:`visionfm.demo.evaluate` (600 scenes per set, the demo's prompts) for each model.
- Segmentation: :func:`visionfm.eval.toyworld_seg.run` on colour labels. The teacher uses ``maskclip`` (the dense mode
  it was distilled with); the student uses its CLIP adaptor's patch outputs. The background threshold is tuned
  on validation scenes for each model.
- FLOPs: ``torch.utils.flop_counter`` over one image-tower forward at the native size.
- Throughput: images/s of that forward at batch 256 (median of 5, after a warm-up), in this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def flops_per_image(encoder: Any) -> float:
    """FLOPs of one forward of one image at the encoder's native size (multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *encoder.info.image_size, device=encoder.device, dtype=encoder.dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        encoder(x)
    return float(fc.get_total_flops())


def throughput(encoder: Any, batch: int = 256, repeats: int = 5) -> float:
    """Images/s of the image-tower forward at ``batch`` (median over ``repeats``)."""
    x = torch.randn(batch, 3, *encoder.info.image_size, device=encoder.device, dtype=encoder.dtype)
    times = []
    with torch.inference_mode():
        encoder(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder(x)
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def compare(student: str, teacher: str = "toyworld-clip", *, num_seg: int = 200) -> dict[str, Any]:
    """Teacher and student side by side; returns a JSON-able report."""
    import visionfm as vfm
    from visionfm.demo import evaluate

    from ..eval.toyworld_seg import run as seg_run

    rows: dict[str, Any] = {}
    for role, name, mode in (("teacher", teacher, "maskclip"), ("student", student, "student-adaptor")):
        enc = vfm.load_encoder(name, device="cpu")
        zs, _ = evaluate(enc)
        seg = seg_run(name, modes=(mode,), kinds=("colour",), splits=("heldout",), num=num_seg, pamr=False)
        rows[role] = {
            "model": name,
            "zero_shot": {f"{r.task} / {r.images}": r.top1 for r in zs},
            "seg_mIoU_heldout_colour": seg["results"][0]["mIoU"],
            "params": sum(p.numel() for p in enc.parameters()),
            "flops_per_image": flops_per_image(enc),
            "images_per_s": throughput(enc),
        }
    t, s = rows["teacher"], rows["student"]
    rows["ratios"] = {
        "flops_teacher_over_student": t["flops_per_image"] / s["flops_per_image"],
        "throughput_student_over_teacher": s["images_per_s"] / t["images_per_s"],
        "zero_shot_student_over_teacher": {k: s["zero_shot"][k] / t["zero_shot"][k] for k in t["zero_shot"]},
        "seg_student_over_teacher": s["seg_mIoU_heldout_colour"] / t["seg_mIoU_heldout_colour"],
    }
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print and write the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student")
    p.add_argument("--teacher", default="toyworld-clip")
    p.add_argument("--num-seg", type=int, default=200)
    p.add_argument("--out", help="write the JSON here (default: STUDENT/compare.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_grad_enabled(False)
    rep = compare(args.student, args.teacher, num_seg=args.num_seg)
    out = Path(args.out or Path(args.student) / "compare.json")
    out.write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep, indent=1))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
