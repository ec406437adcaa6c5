"""DINOv3 (ViT and ConvNeXt) and C-RADIO as distillation teachers, through the ``distill`` recipe: the cached
targets are the teacher's own ``Features`` for the student's views, and the student's loss goes down."""

from __future__ import annotations

import json

import pytest
import torch

import visionfm as vfm
from visionfm.data.datasets import build_dataset
from visionfm.distill import TeacherCache
from visionfm.distill.train import AugmentedImages
from visionfm.testing import tiny_checkpoint
from visionfm.training.recipes import run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, N, STEPS, BATCH = 64, 8, 10, 4
# kind -> (teacher grid, summary width, patch width) of the tiny checkpoint; the student's grid is 4 x 4
TEACHERS = {
    "dinov3": ((4, 4), 32, 32),  # ViT-/16 at 64 px, 4 registers (not in the patch targets), CLS summary
    "dinov3-convnext": ((3, 3), 32, 32),  # stride 32 at 96 px, no CLS: the pooled last stage is the summary
    "radio": ((4, 4), 64, 32),  # summary: CLS tokens 0 and 2 concatenated; 3 CLS + 2 registers not in patches
}


def _recipe(tmp_path, teacher_dir):
    data = {"source": "toyworld", "split": "train", "num": N, "label": "none", "image_size": SIZE}
    return {
        "task": "distill",
        "teachers": {"t": {"model": str(teacher_dir), "kind": "dino"}},
        "student": {"image_size": SIZE, "patch_size": 16, "width": 32, "depth": 2, "heads": 2, "adaptor_hidden": 32},
        "data": data,
        "augment": {"seeds": 1, "hflip": True},
        "train": {"output_dir": str(tmp_path / "student"), "max_steps": STEPS, "batch_size": BATCH, "lr": 0.005,
                  "save_every": 100, "log_every": 1, "num_workers": 0, "progress": False},
    }  # fmt: skip


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_teacher_targets_are_its_features_and_the_student_learns_them(kind, tmp_path, tiny_root):
    teacher_dir = tiny_checkpoint(kind, root=tiny_root)
    recipe = _recipe(tmp_path, teacher_dir)
    out = run_recipe(recipe)

    summary = json.loads((out / "distill_summary.json").read_text())
    assert summary["teacher_rows_computed"] == N  # each view once; later epochs read the cache

    # The student's views (seed 0: the toyworld scene at 64 px, flipped or not) and the teacher's Features for them
    # through its own user-facing preprocessing (every teacher's native size is reached by the same resize).
    views = AugmentedImages(build_dataset("train", dict(recipe["data"])), SIZE, seeds=1, hflip=True)
    items = [views[i] for i in range(len(views))]
    ids = [sid for _, sid, _ in items]
    assert any(not torch.equal(img, views.ds[i]["image"]) for i, (img, _, _) in enumerate(items)), "no view flipped"
    teacher = vfm.load_encoder(str(teacher_dir), device="cpu")
    want = teacher.encode([img.permute(1, 2, 0).numpy() for img, _, _ in items])
    grid, summary_dim, patch_dim = TEACHERS[kind]
    assert want.grid == grid and want.pooled.shape == (N, summary_dim) and want.patches.shape[-1] == patch_dim

    cached, hit = TeacherCache(out / "teacher_cache", "t").lookup(ids, [0] * N)
    assert hit.all() and cached is not None
    assert cached["summary"].shape == (N, summary_dim) and cached["patches"].shape == (N, *grid, patch_dim)
    tol = dict(rtol=1e-3, atol=1e-4)  # fp16 storage (the ConvNeXt input is resized 64 -> 96 on both sides)
    torch.testing.assert_close(cached["summary"], want.pooled.float(), **tol)
    torch.testing.assert_close(cached["patches"], want.patches.float(), **tol)
    if kind == "dinov3":  # the ViT's summary is its CLS token; registers are neither summary nor patches
        assert want.registers is not None and want.registers.shape[1] == 4
        torch.testing.assert_close(cached["summary"], want.cls.float(), **tol)
    if kind == "radio":
        torch.testing.assert_close(cached["summary"][:, :patch_dim], want.cls.float(), **tol)

    # the student fits the teacher: the loss of the last epoch is well below the first step's
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == STEPS
    last_epoch = losses[-(N // BATCH) :]
    assert max(last_epoch) < 0.7 * losses[0], losses
    cos = [x["t/summary_cos"] for x in lines if "t/summary_cos" in x]
    assert sum(cos[-2:]) / 2 > cos[0] + 0.1, cos

    student = vfm.load_encoder(str(out), device="cpu")
    assert student.teachers == ["t"]
    x = student.preprocess([img.permute(1, 2, 0).numpy() for img, _, _ in items])
    with torch.inference_mode():
        s_sum, s_pat = student.adaptor(x, "t")
    assert s_sum.shape == (N, summary_dim) and s_pat.shape == (N, 4, 4, patch_dim)
