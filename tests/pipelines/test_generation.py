"""pipeline("generation"): parity with diffusers' DiTPipeline, per-image seeds, labels, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def dit_dir(tiny_root):
    return tiny_checkpoint("dit", root=tiny_root)


@pytest.fixture(scope="module")
def gen(dit_dir):
    return vfm.pipeline("generation", model=str(dit_dir), device="cpu", batch_size=4)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_equals_diffusers_dit_pipeline(gen, dit_dir, cfg):
    from diffusers import DiTPipeline

    ref = DiTPipeline.from_pretrained(str(dit_dir))
    ref.set_progress_bar_config(disable=True)
    seeds = [0, 1, 2]
    want = ref(class_labels=[3, 1, 3], guidance_scale=cfg, num_inference_steps=6, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images  # fmt: skip
    got = gen(labels=["golden retriever", 1, 3], guidance_scale=cfg, steps=6, seed=0, output_type="np", progress=False)
    assert got.labels == [3, 1, 3] and got.seeds == seeds and got.names[0] == "golden retriever"
    want_u8 = (np.asarray(want) * 255).round().astype(np.uint8)
    assert np.abs(np.stack(got.images).astype(int) - want_u8.astype(int)).max() <= 1


def test_images_do_not_depend_on_the_batch(dit_dir):
    one = vfm.pipeline("generation", model=str(dit_dir), device="cpu", batch_size=1)
    many = vfm.pipeline("generation", model=str(dit_dir), device="cpu", batch_size=8)
    a = one(labels=[2], num_images_per_label=3, steps=4, seed=5, output_type="np", progress=False)
    b = many(labels=[2], num_images_per_label=3, steps=4, seed=5, output_type="np", progress=False)
    # same noise per image whatever the batch; batched matmuls may round differently (at most one level)
    assert len(a.images) == len(b.images) == 3
    for i, (x, y) in enumerate(zip(a.images, b.images, strict=True)):
        assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).max() <= 1, i
    assert not np.array_equal(a.images[0], a.images[1])  # different seeds, different images


def test_presets_grid_and_errors(gen):
    out = gen(labels=["goldfish", "Tabby"], num_images_per_label=2, steps=2, progress=False)
    assert len(out) == 4 and out.protocol["preset"] == "quick" and out.protocol["guidance_scale"] == 4.0
    sheet = out.grid()
    assert sheet.size == (2 * out.images[0].size[0], 2 * out.images[0].size[1])
    assert out.to_dict()["labels"] == [1, 1, 2, 2]
    paper = gen(labels=[0], steps=1, preset="paper", progress=False)
    assert paper.protocol["guidance_scale"] == 1.5 and paper.protocol["steps"] == 1  # explicit steps override
    with pytest.raises(ValueError, match="unknown class 'goldfsh'.*goldfish"):
        gen(labels=["goldfsh"], steps=1)
    with pytest.raises(ValueError, match="outside"):
        gen(labels=[1000], steps=1)
    with pytest.raises(ValueError, match="unknown preset"):
        gen(labels=[0], preset="fast")
    with pytest.raises(TypeError, match="DiT"):
        vfm.pipeline("generation", model=str(tiny_checkpoint("dinov2")), device="cpu")
