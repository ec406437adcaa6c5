"""Compare a distilled student with its CLIP teacher on toyworld: zero-shot accuracy, zero-shot-seg mIoU, FLOPs,
throughput.

``visionfm eval toyworld-distill --model runs/distill_toyworld [--set tasks.student.teacher=toyworld-clip]``
(the ``toyworld_student`` eval task).

- Zero-shot: :func:`visionfm.toyworld.demo.evaluate` (600 scenes per set, the demo's prompts) for each model.
- Segmentation: :func:`visionfm.toyworld.seg.run` on colour labels. The teacher uses ``maskclip`` (the dense mode
  it was distilled with); the student uses its CLIP adaptor's patch outputs. The background threshold is tuned
  on validation scenes for each model.
- FLOPs: ``torch.utils.flop_counter`` over one image-tower forward at the native size.
- Throughput: images/s of that forward at batch 256 (median of 5, after a warm-up), in this process.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import torch

from ..foundation.encoder import Encoder
from ..foundation.loading import load_encoder
from .demo import evaluate
from .seg import run as seg_run

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


def compare(
    student: str | Encoder, teacher: str | Encoder = "toyworld-clip", *, num_seg: int = 200, batch: int = 256
) -> dict[str, Any]:
    """Teacher and student side by side; returns a JSON-able report."""
    rows: dict[str, Any] = {}
    for role, model, mode in (("teacher", teacher, "maskclip"), ("student", student, "student-adaptor")):
        enc = model if isinstance(model, Encoder) else load_encoder(model, device="cpu")
        zs, _ = evaluate(enc)
        seg = seg_run(enc, modes=(mode,), kinds=("colour",), splits=("heldout",), num=num_seg, pamr=False)
        rows[role] = {
            "model": model if isinstance(model, str) else enc.info.name,
            "zero_shot": {f"{r.task} / {r.images}": r.top1 for r in zs},
            "seg_mIoU_heldout_colour": seg["results"][0]["mIoU"],
            "params": sum(p.numel() for p in enc.parameters()),
            "flops_per_image": flops_per_image(enc),
            "images_per_s": throughput(enc, batch),
        }
    t, s = rows["teacher"], rows["student"]
    rows["ratios"] = {
        "flops_teacher_over_student": t["flops_per_image"] / s["flops_per_image"],
        "throughput_student_over_teacher": s["images_per_s"] / t["images_per_s"],
        "zero_shot_student_over_teacher": {k: s["zero_shot"][k] / t["zero_shot"][k] for k in t["zero_shot"]},
        "seg_student_over_teacher": s["seg_mIoU_heldout_colour"] / t["seg_mIoU_heldout_colour"],
    }
    return rows


def student_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """The ``toyworld_student`` eval task: the runner's model (a student) against ``teacher`` (default
    ``toyworld-clip``). Task keys: ``teacher``, ``num_seg`` (default 200), ``batch`` (throughput batch, default 256).

    Metrics: each model's zero-shot top-1 rows and held-out colour mIoU (``"<row> student"`` / ``"<row> teacher"``,
    in [0, 1]), and the ratios ``flops teacher/student``, ``throughput student/teacher``, ``seg mIoU
    student/teacher``. Throughput is timed in this process: it depends on the machine and its load.
    """
    rep = compare(runner.encoder, task.get("teacher", "toyworld-clip"), num_seg=int(task.get("num_seg", 200)),
                  batch=int(task.get("batch", 256)))  # fmt: skip
    rep["student"]["model"] = runner.model_name
    metrics: dict[str, float] = {}
    for role in ("student", "teacher"):
        for k, v in rep[role]["zero_shot"].items():
            metrics[f"zero-shot {k} {role}"] = v
        metrics[f"seg mIoU heldout colour {role}"] = rep[role]["seg_mIoU_heldout_colour"]
    r = rep["ratios"]
    metrics["flops teacher/student"] = r["flops_teacher_over_student"]
    metrics["throughput student/teacher"] = r["throughput_student_over_teacher"]
    metrics["seg mIoU student/teacher"] = r["seg_student_over_teacher"]
    return {"task": task["task"], "dataset": "toyworld", "metrics": metrics, "samples": 600 * 2 + int(task.get("num_seg", 200)),
            "skipped": 0, "protocol": {k: v for k, v in task.items() if k not in ("name", "task")}, "rows": rep}  # fmt: skip
