"""The distill recipe: teachers computed once (cache), student saved as a loadable encoder."""

from __future__ import annotations

import json

import pytest
import torch

import visionfm as vfm
from visionfm.testing import tiny_checkpoint
from visionfm.training.recipes import run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, tiny_root, steps):
    return {
        "task": "distill",
        "teachers": {
            "clip": {"model": str(tiny_checkpoint("clip", "open_clip", root=tiny_root)), "kind": "clip"},
            "dino": {"model": str(tiny_checkpoint("dinov2", root=tiny_root)), "kind": "dino"},
        },
        "student": {"image_size": 48, "patch_size": 16, "width": 32, "depth": 2, "heads": 2, "adaptor_hidden": 32},
        "data": {"source": "toyworld", "split": "train", "num": 16, "label": "none", "image_size": 48},
        "augment": {"seeds": 1},
        "train": {"output_dir": str(tmp_path / "student"), "max_steps": steps, "batch_size": 4, "lr": 0.005,
                  "save_every": 4, "log_every": 1, "num_workers": 0, "progress": False},
    }  # fmt: skip


def test_later_epochs_do_no_teacher_forward_passes(tmp_path, tiny_root):
    out = run_recipe(_recipe(tmp_path, tiny_root, steps=12))  # 3 epochs of 16 samples
    summary = json.loads((out / "distill_summary.json").read_text())
    assert summary["teacher_rows_computed"] == 2 * 16  # each sample once per teacher, in epoch 1 only
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    computed = [int(x["teacher_rows_computed"]) for x in lines if "teacher_rows_computed" in x]
    # one row per step; nothing computed after the first epoch (steps 1-4)
    assert len(computed) == 12 and computed[-1] == computed[3] == 32


def test_student_is_a_first_class_encoder(tmp_path, tiny_root, photos, monkeypatch):
    import copy

    import torch.nn.functional as F
    from safetensors.torch import load_file

    import visionfm.foundation.student as student_mod

    saved = []  # the in-memory student exactly as the recipe hands it to save_student
    real_save = student_mod.save_student

    def recording_save(encoder, path):
        saved.append(copy.deepcopy(encoder).eval())
        return real_save(encoder, path)

    monkeypatch.setattr(student_mod, "save_student", recording_save)
    out = run_recipe(_recipe(tmp_path, tiny_root, steps=4))
    assert len(saved) == 1, "the distill recipe did not save its student through save_student"
    trained = saved[0]
    ref_state = trained.state_dict()
    loaded = vfm.load_encoder(str(out), device="cpu")
    assert loaded.info.family == "student" and loaded.teachers == ["clip", "dino"]
    on_disk = load_file(str(out / "model.safetensors"))
    assert len(ref_state) > 0 and set(on_disk) == set(ref_state) == set(loaded.state_dict())
    for k, v in loaded.state_dict().items():
        assert torch.equal(on_disk[k], ref_state[k].cpu()), f"saved {k} differs from the trained student"
        assert torch.equal(v, on_disk[k]), f"loaded {k} differs from model.safetensors"
    x = loaded.preprocess(photos[:2])
    with torch.inference_mode():
        pooled = loaded(x).pooled
        want = trained.adaptors["clip"].summary(trained.student(x)[0])  # the CLIP adaptor on the class token
    assert pooled.shape == want.shape == (2, loaded.info.embed_dim)
    torch.testing.assert_close(pooled, want, atol=0, rtol=0)

    # zero-shot labels from first principles: the trained student's image embeddings against the CLIP teacher's
    # text embeddings of the "single" template, softmax over logit_scale * cosine, best first
    labels = ["a cat", "a dog", "a rocket"]
    teacher = vfm.load_encoder(str(tiny_checkpoint("clip", "open_clip", root=tiny_root)), device="cpu")
    with torch.inference_mode():
        text = F.normalize(teacher.encode_text([f"a photo of a {lab}." for lab in labels]).float(), dim=-1)
        probs = (teacher.logit_scale * F.normalize(want.float(), dim=-1) @ text.t()).softmax(-1)
    clf = vfm.pipeline("zero-shot-classification", model=str(out), device="cpu", templates="single")
    res = clf(photos[:2], labels=labels)
    assert len(res) == 2
    for i, preds in enumerate(res):
        order = probs[i].argsort(descending=True).tolist()
        assert [d["label"] for d in preds] == [labels[j] for j in order], f"image {i}"
        assert [d["score"] for d in preds] == pytest.approx(probs[i, order].tolist(), abs=1e-5), f"image {i}"


def test_zero_shot_seg_runs_on_a_student(tmp_path, tiny_root, photos):
    out = run_recipe(_recipe(tmp_path, tiny_root, steps=2))
    seg = vfm.pipeline("zero-shot-seg", model=str(out), device="cpu", templates="single")
    res = seg(photos[1], labels=["a cat", "a sofa"], background=True)
    assert res.label_map.shape == photos[1].shape[:2] and res.protocol["mode"] == "student-adaptor"
    with pytest.raises(ValueError, match="no attention modes"):
        vfm.pipeline("zero-shot-seg", model=str(out), device="cpu", mode="naclip")


@pytest.mark.parametrize("recipe", ["distill_toyworld", "distill_clip_dinov2_sam"])
def test_shipped_distill_recipes_run(recipe, tmp_path, tiny_root):
    """The shipped recipes run end to end with tiny stand-ins for the teachers (SAM: patch losses only)."""
    from visionfm.training.recipes import load_recipe

    overrides = [
        f"teachers.clip.model={tiny_checkpoint('clip', 'open_clip', root=tiny_root)}",
        f"teachers.dino.model={tiny_checkpoint('dinov2', root=tiny_root)}",
        "student.image_size=48", "student.patch_size=16", "student.width=32", "student.depth=1", "student.heads=2",
        "student.adaptor_hidden=16", "data.num=8", "data.image_size=48", f"train.output_dir={tmp_path / recipe}",
        "train.max_steps=2", "train.batch_size=4", "train.save_every=1", "train.num_workers=0",
        "train.progress=false", "train.mixed_precision=no",
    ]  # fmt: skip
    if recipe == "distill_clip_dinov2_sam":
        overrides.append(f"teachers.sam.model={tiny_checkpoint('sam', root=tiny_root)}")
    out = run_recipe(load_recipe(recipe, overrides))
    student = vfm.load_encoder(str(out), device="cpu")
    assert set(student.teachers) == ({"clip", "dino", "sam"} if "sam" in recipe else {"clip", "dino"})
