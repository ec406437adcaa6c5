"""Heads and the ``classification`` recipe task (linear probe / full fine-tuning / adapters) on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

import visionfm as vfm
from visionfm.adapters.heads import ClassificationHead, EncoderWithHead, SegmentationHead
from visionfm.testing import tiny_checkpoint
from visionfm.training.recipes import run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_heads_shapes_and_errors(tiny_root):
    enc = vfm.load_encoder(str(tiny_checkpoint("dinov2", root=tiny_root)), device="cpu")
    x = torch.randn(2, 3, *enc.info.image_size)
    cls = EncoderWithHead(enc, ClassificationHead(enc.info.embed_dim, 5, kind="mlp", hidden=16))
    assert cls(x).shape == (2, 5)
    for kind in ("linear", "upsample"):
        seg = EncoderWithHead(enc, SegmentationHead(enc.info.width, 3, kind=kind, hidden=8))
        assert seg(x).shape == (2, 3, *enc.info.image_size)
    with pytest.raises(ValueError, match="linear"):
        ClassificationHead(4, 2, kind="conv")
    with pytest.raises(ValueError, match="upsample"):
        SegmentationHead(4, 2, kind="mlp")


def _recipe(tmp_path, model, tuning, steps=6):
    return {
        "task": "classification",
        "model": str(model),
        "tuning": tuning,
        "head": {"kind": "linear"},
        "data": {
            "train": {"source": "toyworld", "split": "train", "num": 48, "label": "colour", "image_size": 48},
            "test": {"source": "toyworld", "split": "test", "num": 20, "label": "colour", "image_size": 48},
        },
        "train": {"output_dir": str(tmp_path / tuning), "max_steps": steps, "batch_size": 8, "lr": 0.01,
                  "save_every": 3, "log_every": 1, "num_workers": 0, "progress": False},
    }  # fmt: skip


@pytest.mark.parametrize("tuning", ["linear_probe", "full"])
def test_classification_recipe_trains_and_evaluates(tmp_path, tiny_root, tuning):
    from safetensors.torch import load_file

    model = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    before = {k: v.clone() for k, v in vfm.load_encoder(str(model), device="cpu").state_dict().items()}
    out = run_recipe(_recipe(tmp_path, model, tuning))
    res = json.loads((out / "eval.json").read_text())
    assert res["test"]["samples"] == 20 and 0 <= res["test"]["acc1"] <= 1
    head = load_file(str(out / "head.safetensors"))
    assert head["net.weight"].shape[0] == 6  # six colours
    if tuning == "linear_probe":
        assert res["trainable_parameters"] == head["net.weight"].numel() + head["net.bias"].numel()
        assert not (out / "encoder.safetensors").exists()
    else:
        assert res["trainable_parameters"] == res["total_parameters"]
        tuned = load_file(str(out / "encoder.safetensors"))
        assert any(not torch.equal(tuned[k], before[k]) for k in before if k in tuned)  # the encoder did train


def test_classification_recipe_errors(tmp_path, tiny_root):
    model = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    bad = _recipe(tmp_path, model, "lora")
    bad["tuning"] = "prefix"
    with pytest.raises(ValueError, match="tuning must be one of"):
        run_recipe(bad)
    bad = _recipe(tmp_path, model, "full")
    del bad["data"]
    with pytest.raises(ValueError, match="needs 'model', 'data.train'"):
        run_recipe(bad)


def test_segmentation_recipe_trains_and_reports_miou(tmp_path, tiny_root):
    model = tiny_checkpoint("dinov2", root=tiny_root)
    data = {"source": "toyworld", "label": "none", "max_objects": 2, "image_size": 56, "target": "semantic_colour"}
    recipe = {
        "task": "segmentation",
        "model": str(model),
        "tuning": "linear_probe",
        "classnames": ["red", "green", "blue", "yellow", "purple", "orange"],
        "head": {"kind": "upsample", "hidden": 8},
        "data": {"train": dict(data, split="train", num=16), "test": dict(data, split="test", num=4)},
        "train": {"output_dir": str(tmp_path / "seg"), "max_steps": 4, "batch_size": 4, "lr": 0.01, "save_every": 2,
                  "log_every": 1, "num_workers": 0, "progress": False},
    }  # fmt: skip
    out = run_recipe(recipe)
    res = json.loads((out / "eval.json").read_text())
    assert 0 <= res["test"]["mIoU"] <= 1 and len(res["test"]["IoU"]) == 7
    assert res["trainable_parameters"] < res["total_parameters"]


def test_load_encoder_and_pipelines_take_a_saved_adapter(tmp_path, tiny_root, photos):
    from visionfm import adapters

    path = tiny_checkpoint("clip", "transformers", root=tiny_root)
    enc = vfm.load_encoder(str(path), device="cpu")
    adapters.attach(enc, "lora", r=4)
    for name, p in enc.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a trained-looking adapter (B = 0 would be a no-op)
    saved = adapters.save(enc, tmp_path / "adapter")
    loaded = vfm.load_encoder(str(path), device="cpu", adapter=str(saved))
    plain = vfm.load_encoder(str(path), device="cpu")
    x = loaded.preprocess(photos[:2])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x).pooled, enc.eval()(x).pooled, atol=1e-6, rtol=0)
        assert not torch.allclose(loaded(x).pooled, plain(x).pooled, atol=1e-4)
    clf = vfm.pipeline("zero-shot-classification", model=str(path), device="cpu", adapter=str(saved))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(enc(x).pooled, dim=-1)
    got = clf.encoder.encode(photos[:2]).pooled
    torch.testing.assert_close(torch.nn.functional.normalize(got, dim=-1), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("recipe", "kind", "backend", "size"),
    [
        ("lora_dinov2_classification", "dinov2", None, 56),
        ("lora_clip_segmentation", "clip", "transformers", 48),
        ("lora_toyworld_classification", "clip-resnet", "open_clip", 64),
    ],
)
def test_shipped_adapter_recipes_run(recipe, kind, backend, size, tmp_path, tiny_root):
    """The shipped recipes run end to end (on tiny checkpoints in place of the hub models) and save PEFT adapters."""
    import peft

    from visionfm.training.recipes import load_recipe

    model = tiny_checkpoint(kind, backend, root=tiny_root)
    overrides = [
        f"model={model}", f"train.output_dir={tmp_path / recipe}", "train.max_steps=2", "train.batch_size=4",
        "train.save_every=1", "train.num_workers=0", "train.progress=false", "train.mixed_precision=no",
        "data.train.num=8", "data.test.num=4", f"data.train.image_size={size}", f"data.test.image_size={size}",
    ]  # fmt: skip
    out = run_recipe(load_recipe(recipe, overrides))
    res = json.loads((out / "eval.json").read_text())
    assert res["tuning"] == "lora" and 0 < res["trainable_parameters"] < res["total_parameters"]
    cfg = peft.PeftConfig.from_pretrained(str(out / "adapter"))
    assert cfg.peft_type == peft.PeftType.LORA and (out / "adapter" / "adapter_model.safetensors").exists()


def test_coop_tuning_and_an_eval_suite_at_the_end(tmp_path, tiny_root):
    from visionfm.adapters import PromptLearner

    model = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndatasets:\n  a: {source: toyworld, split: test, num: 12, label: colour, image_size: 48}\n"
        "tasks:\n  - {task: zero_shot_classification, dataset: a, templates: single}\n"
    )
    recipe = _recipe(tmp_path, model, "coop")
    recipe["coop"] = {"n_ctx": 4, "init": "a photo of a"}
    recipe["eval_suite"] = str(suite)
    out = run_recipe(recipe)
    res = json.loads((out / "eval.json").read_text())
    assert res["trainable_parameters"] == 4 * 32  # four context vectors of the text width, nothing else
    assert res["eval_suite"][0]["samples"] == 12
    enc = vfm.load_encoder(str(model), device="cpu")
    learner = PromptLearner.from_file(out / "coop_context.safetensors", enc)
    assert learner().shape == (6, enc.info.embed_dim)
    bad = _recipe(tmp_path, model, "coop")
    bad["task"] = "segmentation"
    bad["classnames"] = ["red"]
    with pytest.raises(ValueError, match="classification task only"):
        run_recipe(bad)
