"""The toyworld experiments as eval tasks: suites load by name, and each task run by the Runner gives what the
experiment's own function gives on the same encoder (so the numbers in the docs carry over)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.eval.runner import Runner
from visionfm.eval.suite import load_suite, parse_suite, shipped_suites
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


def test_toyworld_suites_ship_with_the_toyworld():
    names = shipped_suites()
    for s in ("toyworld", "toyworld-seg", "toyworld-grounding", "toyworld-generation", "toyworld-distill"):
        assert s in names
    tasks = {s: [t["task"] for t in load_suite(s).tasks] for s in names if s.startswith("toyworld-")}
    assert tasks == {
        "toyworld-seg": ["toyworld_seg"],
        "toyworld-grounding": ["toyworld_grounding"],
        "toyworld-generation": ["generation", "toyworld_generation_baselines"],
        "toyworld-distill": ["toyworld_student"],
    }


def _suite(task: dict) -> object:
    return parse_suite({"name": "t", "datasets": {}, "tasks": [task]})


def test_seg_task_equals_the_experiment_function(clip_dir, tmp_path):
    from visionfm.toyworld.seg import run

    opts = {"modes": ["vanilla", "maskclip"], "kinds": ["colour"], "splits": ["test", "heldout"], "num": 3,
            "num_val": 3, "pamr": True, "short_side": 64, "stride": 16}  # fmt: skip
    res = Runner(_suite({"name": "seg", "task": "toyworld_seg", **opts}), str(clip_dir), tmp_path).run()["results"][0]
    direct = run(vfm.load_encoder(str(clip_dir), device="cpu"), **opts)["results"]
    assert len(direct) == 2 * 2 + 2  # two modes x two splits, plus the best mode with PAMR on both splits
    want = {f"mIoU colour {r['split']} {r['mode']}{'+pamr' if r['refine'] else ''}": r["mIoU"] for r in direct}
    assert res["metrics"] == pytest.approx(want, abs=0)
    assert all(0.0 <= v <= 1.0 for v in want.values())
    assert res["samples"] == 6 and res["dataset"] == "toyworld" and len(res["rows"]) == 6
    assert res["protocol"]["model"] == str(clip_dir)


def test_seg_task_refines_the_best_mode_with_a_sam(clip_dir, tiny_root, tmp_path):
    sam = str(tiny_checkpoint("sam", root=tiny_root))
    opts = {"modes": ["vanilla", "maskclip"], "kinds": ["shape"], "splits": ["test"], "num": 2, "num_val": 2,
            "pamr": False, "sam": sam, "short_side": 64, "stride": 16}  # fmt: skip
    res = Runner(_suite({"name": "seg", "task": "toyworld_seg", **opts}), str(clip_dir), tmp_path).run()["results"][0]
    rows = res["rows"]
    assert [(r["mode"], r["refine"]) for r in rows][:2] == [("vanilla", None), ("maskclip", None)]
    refined = [r for r in rows if r["refine"] == "sam"]
    assert len(refined) == 1 and refined[0]["mode"] in ("vanilla", "maskclip")  # the best unrefined mode, refined
    assert f"mIoU shape test {refined[0]['mode']}+sam" in res["metrics"] and res["protocol"]["sam"] == sam


def test_grounding_task_equals_the_experiment_function(clip_dir, tmp_path):
    from visionfm.toyworld.grounding import run

    opts = {"modes": ["maskclip"], "splits": ["test"], "num": 2, "num_val": 2, "short_side": 64}
    res = Runner(_suite({"name": "gr", "task": "toyworld_grounding", **opts}), str(clip_dir), tmp_path).run()
    direct = run(vfm.load_encoder(str(clip_dir), device="cpu"), **opts)["results"]
    assert len(direct) == 1
    want = {f"{m} test maskclip": direct[0][m] for m in ("box_AP", "box_AP50", "mask_AP", "mask_AP50")}
    assert res["results"][0]["metrics"] == pytest.approx(want, abs=0)


def _pixel_dit(path):
    from diffusers import DDIMScheduler

    from visionfm.foundation.dit import save_pixel_dit
    from visionfm.training.dit_train import build_transformer

    torch.manual_seed(0)
    tr = build_transformer({"sample_size": 16, "patch_size": 4, "num_layers": 1, "num_attention_heads": 2,
                            "attention_head_dim": 8}, num_classes=3)  # fmt: skip
    return save_pixel_dit(path, tr, DDIMScheduler(), {0: "red", 1: "green", 2: "blue"})


def test_generation_baselines_task(clip_dir, tmp_path):
    from visionfm.toyworld.generation import _image_set_fd, untrained_copy

    model = _pixel_dit(tmp_path / "dit")
    gen = {"name": "generation", "task": "generation", "reference": "real", "classes": ["red", "blue"],
           "num_per_class": 2, "steps": 2, "guidance_scale": 2.0, "seed": 0,
           "metrics": [{"metric": "fd", "encoder": str(clip_dir), "label": "c"}]}  # fmt: skip
    base = {"name": "baselines", "task": "toyworld_generation_baselines", "generation": "generation",
            "reference": "real", "untrained_seed": 3}  # fmt: skip
    real = {"source": "toyworld", "split": "test", "num": 6, "seed": 11, "image_size": 32, "label": "colour"}
    suite = parse_suite({"name": "g", "datasets": {"real": real}, "tasks": [gen, base]})
    out = tmp_path / "out"
    results = Runner(suite, str(model), out, batch_size=4).run()["results"]
    trained, res = results
    assert set(res["metrics"]) == {"FD-c untrained DiT", "FD-c uniform noise", "FD-c real scenes (floor)"}
    assert res["samples"] == 4 and (out / "samples.png").is_file()
    # the untrained twin is the same architecture re-initialised with the given seed, run through the same task
    twin = untrained_copy(model, tmp_path / "twin", seed=3)
    again = Runner(parse_suite({"name": "g", "datasets": {"real": real}, "tasks": [gen]}), str(twin), tmp_path / "o2")
    assert res["metrics"]["FD-c untrained DiT"] == pytest.approx(again.run()["results"][0]["metrics"]["FD-c"])
    assert res["metrics"]["FD-c untrained DiT"] != pytest.approx(trained["metrics"]["FD-c"])
    # noise and the floor are scored against the reference statistics the generation task saved
    stats = next((out / "reference_stats").glob("*.safetensors"))
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    assert res["metrics"]["FD-c uniform noise"] == pytest.approx(_image_set_fd(noise, str(clip_dir), stats))
    report = json.loads(next(out.glob("g__*.json")).read_text())
    assert [r["name"] for r in report["results"]] == ["generation", "baselines"]


def test_student_task_reports_both_models_and_ratios(tiny_root, clip_dir, tmp_path, monkeypatch):
    import visionfm.toyworld.student as st

    calls = []

    def fake_compare(student, teacher, *, num_seg, batch):
        calls.append((student.info.family, teacher, num_seg, batch))
        row = {"zero_shot": {"colour / heldout": 0.5}, "seg_mIoU_heldout_colour": 0.25}
        return {"student": dict(row, model="s"), "teacher": dict(row, model="t"),
                "ratios": {"flops_teacher_over_student": 4.0, "throughput_student_over_teacher": 6.0,
                           "seg_student_over_teacher": 1.0}}  # fmt: skip

    monkeypatch.setattr(st, "compare", fake_compare)
    task = {"name": "student", "task": "toyworld_student", "teacher": str(clip_dir), "num_seg": 7, "batch": 8}
    student = tiny_checkpoint("student", root=tiny_root)
    res = Runner(_suite(task), str(student), tmp_path).run()["results"][0]
    assert calls == [("student", str(clip_dir), 7, 8)]
    assert (
        res["metrics"]["flops teacher/student"] == 4.0 and res["metrics"]["zero-shot colour / heldout student"] == 0.5
    )
    assert res["samples"] == 1200 + 7
