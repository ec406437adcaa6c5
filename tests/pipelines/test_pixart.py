"""PixArt-α/Σ: loading and detection, denoiser features, and text-to-image generation with parity against
diffusers' PixArtAlphaPipeline / PixArtSigmaPipeline on the same tiny weights and seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.foundation import dit, pixart
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pixart_dir(tiny_root):
    return tiny_checkpoint("pixart", root=tiny_root)


@pytest.fixture(scope="module")
def sigma_dir(pixart_dir, tmp_path_factory):
    """The same weights as a PixArtSigmaPipeline directory (300 T5 tokens, no 1-step x0 shortcut)."""
    out = tmp_path_factory.mktemp("sigma") / "pixart-sigma"
    shutil.copytree(pixart_dir, out)
    index = json.loads((out / "model_index.json").read_text())
    (out / "model_index.json").write_text(json.dumps({**index, "_class_name": "PixArtSigmaPipeline"}))
    return out


@pytest.fixture(scope="module")
def gen(pixart_dir):
    return vfm.pipeline("generation", model=str(pixart_dir), device="cpu", batch_size=4)


def _reference(directory, cls_name):
    import diffusers

    ref = getattr(diffusers, cls_name).from_pretrained(str(directory))
    ref.set_progress_bar_config(disable=True)
    return ref


def _u8(images) -> np.ndarray:
    return (np.asarray(images) * 255).round().astype(np.uint8)


def test_detect_and_load(pixart_dir, tmp_path):
    assert pixart.detect(pixart_dir) == "diffusers" and dit.detect(pixart_dir) is None
    assert pixart.detect(tiny_checkpoint("dit")) is None
    bare = tmp_path / "no-index"
    shutil.copytree(pixart_dir, bare)
    (bare / "model_index.json").unlink()  # recognised by transformer/config.json + text_encoder/ + tokenizer/
    assert pixart.detect(bare) == "diffusers"
    enc = vfm.load_encoder(str(pixart_dir), device="cpu")
    assert isinstance(enc, pixart.PixArtEncoder) and enc.variant == "alpha" and enc.max_sequence_length == 120
    info = enc.info
    assert (info.family, info.backend, info.has_text) == ("pixart", "diffusers", False)
    assert (info.image_size, info.patch_size, info.width, info.num_layers) == ((16, 16), 4, 16, 2)
    specs = {m.name: m for m in vfm.list_models("pixart")}
    assert specs["pixart-alpha-512"].source == "PixArt-alpha/PixArt-XL-2-512x512"
    assert specs["pixart-sigma-1024"].source == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    with pytest.raises(TypeError, match="unknown option.*class_label"):
        vfm.load_encoder(str(pixart_dir), device="cpu", class_label=3)


def test_features_shape_determinism_and_batch_independence(pixart_dir, photos):
    enc = vfm.load_encoder(str(pixart_dir), device="cpu", ensemble=2)
    feats = enc.encode(photos[:3], layers=[0, -1])
    assert tuple(feats.patches.shape) == (3, 4, 4, 16) and tuple(feats.pooled.shape) == (3, 16)
    assert feats.grid == (4, 4) and sorted(feats.layers) == [0, 1]
    torch.testing.assert_close(feats.layers[enc.layer], feats.patches)
    again = enc.encode(photos[:3], layers=[0, -1])
    assert torch.equal(again.patches, feats.patches)  # same noise, same prompt: same features
    one = enc.encode(photos[1])
    torch.testing.assert_close(one.patches[0], feats.patches[1], atol=1e-5, rtol=1e-5)
    other = vfm.load_encoder(str(pixart_dir), device="cpu", ensemble=2, prompt="a red square")
    assert not torch.allclose(other.encode(photos[1]).patches, one.patches)  # the prompt conditions the features
    # differentiable in the image (the cached prompt embedding does not block autograd after encode())
    x = enc.preprocess(photos[0]).requires_grad_(True)
    enc(x).pooled.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg", [1.0, 4.5])
def test_equals_diffusers_pixart_alpha(gen, pixart_dir, cfg):
    ref = _reference(pixart_dir, "PixArtAlphaPipeline")
    prompts, n, seed = ["a red square", "A Blue circle on grass "], 2, 3
    want = ref(prompt=prompts, num_images_per_prompt=n, guidance_scale=cfg, num_inference_steps=4, output_type="np",
               use_resolution_binning=False, clean_caption=False,
               generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts) * n)]).images  # fmt: skip
    got = gen(prompts=prompts, num_images_per_prompt=n, guidance_scale=cfg, steps=4, seed=seed, output_type="np",
              progress=False)  # fmt: skip
    assert got.seeds == [3, 4, 5, 6] and got.prompts == [prompts[0]] * 2 + [prompts[1]] * 2
    assert got.labels == [-1] * 4 and got.names == [""] * 4
    assert np.abs(np.stack(got.images).astype(int) - _u8(want).astype(int)).max() <= 1


def test_equals_diffusers_pixart_sigma_with_negative_prompt(sigma_dir):
    sig = vfm.pipeline("generation", model=str(sigma_dir), device="cpu")
    assert sig.encoder.variant == "sigma" and sig.encoder.max_sequence_length == 300
    want = _reference(sigma_dir, "PixArtSigmaPipeline")(
        prompt="a green star", negative_prompt="a dog", guidance_scale=3.0, num_inference_steps=3, output_type="np",
        use_resolution_binning=False, clean_caption=False, generator=[torch.Generator("cpu").manual_seed(7)],
    ).images  # fmt: skip
    got = sig(prompts="a green star", negative_prompt="a dog", guidance_scale=3.0, steps=3, seed=7, output_type="np",
              progress=False)  # fmt: skip
    assert got.protocol["variant"] == "sigma" and got.protocol["negative_prompt"] == "a dog"
    assert np.abs(got.images[0].astype(int) - _u8(want)[0].astype(int)).max() <= 1


def test_batch_equals_one_by_one_and_prompts_matter(pixart_dir):
    one = vfm.pipeline("generation", model=str(pixart_dir), device="cpu", batch_size=1)
    many = vfm.pipeline("generation", model=str(pixart_dir), device="cpu", batch_size=8)
    kw = dict(num_images_per_prompt=2, guidance_scale=4.5, steps=3, seed=5, output_type="np", progress=False)
    a = one(prompts=["a red square", "a blue circle"], **kw)
    b = many(prompts=["a red square", "a blue circle"], **kw)
    assert len(a.images) == len(b.images) == 4  # 2 prompts x 2 images
    for i, (x, y) in enumerate(zip(a.images, b.images, strict=True)):
        assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).max() <= 1, i
    assert not np.array_equal(a.images[0], a.images[1])  # different seeds, different images
    c = many(prompts=["a blue circle"], **{**kw, "num_images_per_prompt": 1})  # seed 5, as a.images[0]
    assert np.abs(c.images[0].astype(int) - a.images[0].astype(int)).max() > 1  # the prompt changes the image


def test_presets_protocol_grid_and_errors(gen, pixart_dir):
    out = gen(prompts=["a red square", "a blue circle"], num_images_per_prompt=2, steps=2, progress=False)
    p = out.protocol
    assert (p["kind"], p["preset"], p["steps"], p["guidance_scale"]) == ("text-to-image", "quick", 2, 4.5)
    assert p["scheduler"] == "DPMSolverMultistepScheduler" and p["dtype"] == "float32" and p["seed"] == 0
    assert p["prompts"] == ["a red square", "a blue circle"] and p["resolution_binning"] is False
    assert len(out) == 4 and out.images[0].size == (16, 16) and out.grid().size == (32, 32)
    assert json.loads(json.dumps(out.to_dict()))["prompts"] == ["a red square"] * 2 + ["a blue circle"] * 2
    assert gen(prompts="a cat", progress=False).protocol["steps"] == 20  # the quick preset's default
    assert gen(prompts="a cat", steps=1, height=32, width=24, progress=False).images[0].size == (24, 32)
    with pytest.raises(ValueError, match="labels="):
        gen(labels=["goldfish"], steps=1)
    with pytest.raises(ValueError, match="labels="):
        gen("a red square", steps=1)
    with pytest.raises(ValueError, match="num_images_per_label="):
        gen(prompts=["a cat"], num_images_per_label=2, steps=1)
    with pytest.raises(ValueError, match="needs prompts="):
        gen(prompts=[], steps=1)
    with pytest.raises(ValueError, match="unknown preset 'paper'"):
        gen(prompts=["a cat"], preset="paper")
    with pytest.raises(ValueError, match="multiples of 4"):
        gen(prompts=["a cat"], steps=1, height=18)
    dit_gen = vfm.pipeline("generation", model=str(tiny_checkpoint("dit")), device="cpu")
    with pytest.raises(ValueError, match="prompts=.*class-conditional"):
        dit_gen(prompts=["a red square"], steps=1)
    with pytest.raises(ValueError, match="num_images_per_prompt="):
        dit_gen(labels=[1], num_images_per_prompt=2, steps=1)
    assert dit_gen(labels=[1], steps=1, progress=False).prompts == [""]
