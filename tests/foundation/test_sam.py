"""SAM family: parity with transformers' SamImageProcessor and SamModel on a tiny random checkpoint."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import sam
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4


@pytest.fixture(scope="module")
def path(tiny_root):
    return tiny_checkpoint("sam", root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


@pytest.fixture(scope="module")
def reference(path):
    from transformers import AutoImageProcessor, SamModel

    return AutoImageProcessor.from_pretrained(path), SamModel.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def ref_out(reference, photos):
    """Reference processor output, image embeddings ``[B, C, h, w]`` and vision hidden states."""
    processor, model = reference
    inputs = processor(images=photos, return_tensors="pt")
    emb = model.get_image_embeddings(inputs["pixel_values"])
    with torch.no_grad():
        hidden = model.vision_encoder(inputs["pixel_values"], output_hidden_states=True).hidden_states
    return inputs, emb, hidden


def test_detect_and_info(enc, path, tmp_path):
    assert sam.detect(path) == "transformers"
    assert sam.detect(tmp_path) is None
    assert isinstance(enc, sam.SamEncoder)
    i = enc.info
    assert (i.family, i.backend, i.name) == ("sam", "transformers", str(path))
    assert (i.embed_dim, i.width, i.patch_size, i.image_size) == (16, 16, 8, (64, 64))
    assert (i.has_text, i.num_layers, i.num_registers) == (False, 2, 0)
    assert i.mean == pytest.approx(sam.SAM_MEAN) and i.std == pytest.approx(sam.SAM_STD)
    # the whole SamModel is kept for prompting
    assert hasattr(enc.model, "prompt_encoder") and hasattr(enc.model, "mask_decoder")


def test_preprocess_config_from_processor(enc):
    pp = enc.preprocess_config
    assert (pp.resize, pp.resize_size, pp.interpolation) == ("longest_edge", 64, "bilinear")
    assert (pp.crop_size, pp.pad_size) == (None, (64, 64))


def test_pixel_values_match_processor(enc, ref_out, photos):
    inputs = ref_out[0]
    ours, original, resized = enc.preprocess_with_sizes(photos)
    assert ours.shape == inputs["pixel_values"].shape == (4, 3, 64, 64)
    torch.testing.assert_close(ours, inputs["pixel_values"], atol=1e-5, rtol=0)
    assert original == [tuple(int(v) for v in s) for s in inputs["original_sizes"]]
    assert resized == [tuple(int(v) for v in s) for s in inputs["reshaped_input_sizes"]]
    assert len(set(resized)) > 1  # the photos really have different aspect ratios, so padding differs


def test_features_match_image_embeddings(enc, ref_out, photos):
    _, emb, _ = ref_out
    f = enc.encode(photos)
    assert emb.shape == (4, 16, 8, 8)
    assert f.grid == (8, 8) and f.patches.shape == (4, 8, 8, 16) and f.pooled.shape == (4, 16)
    assert f.cls is None and f.registers is None and f.layers == {}
    torch.testing.assert_close(f.patches, emb.permute(0, 2, 3, 1), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.pooled, emb.mean(dim=(2, 3)), atol=ATOL, rtol=0)


def test_layers_match_hidden_states(enc, ref_out, photos):
    _, _, hidden = ref_out
    f = enc.encode(photos[:2], layers=[0, -1])
    assert set(f.layers) == {0, enc.info.num_layers - 1}
    for i, t in f.layers.items():
        assert t.shape == (2, 8, 8, 32)
        torch.testing.assert_close(t, hidden[i + 1][:2], atol=ATOL, rtol=0)
    assert not torch.allclose(f.layers[0], f.layers[1], atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        enc.encode(photos[:1], layers=[-3])


def test_forward_runs_the_vision_encoder_once(enc, photos):
    calls = []
    handle = enc.model.vision_encoder.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    try:
        enc.encode(photos[:2], layers=[0, 1])
    finally:
        handle.remove()
    assert len(calls) == 1


def test_batching_is_consistent(enc, photos):
    one = enc.encode(photos, batch_size=1, layers=[1], progress=False)
    four = enc.encode(photos, batch_size=4, layers=[1])
    assert len(one) == len(four) == 4
    torch.testing.assert_close(one.patches, four.patches, atol=1e-5, rtol=0)
    torch.testing.assert_close(one.pooled, four.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(one.layers[1], four.layers[1], atol=1e-5, rtol=0)


def test_gradients_flow(enc, photos):
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    assert f.pooled.requires_grad
    f.pooled.sum().backward()
    weight = enc.model.vision_encoder.patch_embed.projection.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    enc.zero_grad(set_to_none=True)


def test_processor_config_only(path, tmp_path, photos):
    """transformers 5 ``SamProcessor.save_pretrained`` writes only ``processor_config.json``."""
    d = tmp_path / "ckpt"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").unlink()
    assert "image_processor" in json.loads((d / "processor_config.json").read_text())
    enc = vfm.load_encoder(d, device="cpu")
    assert enc.preprocess_config == vfm.load_encoder(path, device="cpu").preprocess_config


def test_missing_processor_falls_back(path, tmp_path, caplog):
    d = tmp_path / "bare"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").unlink()
    (d / "processor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.sam"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "no preprocessor_config.json" in caplog.text
    pp = enc.preprocess_config
    assert (pp.resize, pp.resize_size, pp.interpolation, pp.pad_size) == ("longest_edge", 64, "bilinear", (64, 64))


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models() if m.family == "sam"}
    for size in ("base", "large", "huge"):
        spec = specs[f"sam-vit-{size}"]
        assert spec.source == f"facebook/sam-vit-{size}" and spec.family == "sam" and spec.description


def test_partial_preprocessor_config_uses_processor_defaults(path, tmp_path, photos):
    """Keys missing from the file (do_pad, resample, mean/std) take SamImageProcessor's class defaults."""
    from transformers import AutoImageProcessor

    d = tmp_path / "partial"
    shutil.copytree(path, d)
    (d / "processor_config.json").unlink()
    cfg = {
        "image_processor_type": "SamImageProcessor",
        "size": {"longest_edge": 64},
        "pad_size": {"height": 64, "width": 64},
    }
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    enc = vfm.load_encoder(d, device="cpu")
    ref = AutoImageProcessor.from_pretrained(d)(images=photos, return_tensors="pt")["pixel_values"]
    pp = enc.preprocess_config
    assert (pp.interpolation, pp.pad_size, pp.mean) == ("bilinear", (64, 64), sam.SAM_MEAN)
    torch.testing.assert_close(enc.preprocess(photos), ref, atol=1e-5, rtol=0)


def test_extreme_aspect_ratio_image_is_refused(enc, tmp_path):
    """A 1x10000 image used to reach the resize as a 0x64 image and crash with a raw RuntimeError."""
    import numpy as np
    from PIL import Image

    from visionfm.data.images import ImageLoadError

    path = tmp_path / "strip.png"
    Image.fromarray(np.full((1, 10000, 3), 128, np.uint8)).save(path)
    with pytest.raises(ImageLoadError, match=r"image 0 of the batch: .*strip\.png.*10000x1 pixels.*aspect ratio"):
        enc.encode([path])


def test_resize_to_an_empty_image_is_refused():
    from visionfm.data.images import ImageLoadError
    from visionfm.foundation.preprocess import PreprocessConfig, preprocess_uint8

    cfg = PreprocessConfig(resize="longest_edge", resize_size=32, interpolation="bilinear", crop_size=None,
                           pad_size=(32, 32), mean=sam.SAM_MEAN, std=sam.SAM_STD)  # fmt: skip
    strip = torch.zeros(3, 1, 100, dtype=torch.uint8)  # 100:1 passes the aspect limit; 1 * 32/100 rounds to 0
    with pytest.raises(ImageLoadError, match=r"image 0 of the batch: 100x1 pixels .*resized .* to 32x0 = an empty"):
        preprocess_uint8([strip], cfg)
