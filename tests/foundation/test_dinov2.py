"""DINOv2 family: parity with transformers' own processor and model on tiny random checkpoints."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import dinov2
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
KINDS = ["dinov2", "dinov2-registers"]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def path(kind, tiny_root):
    return tiny_checkpoint(kind, root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


@pytest.fixture(scope="module")
def reference(path):
    from transformers import AutoImageProcessor, AutoModel

    return AutoImageProcessor.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def ref_out(reference, photos):
    """Reference pixel values and model output for all photos in one batch."""
    processor, model = reference
    pixels = processor(images=photos, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return pixels, out


def _grid_of(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    return tokens[:, prefix:].reshape(tokens.shape[0], *grid, tokens.shape[-1])


def test_detect_and_info(enc, path, kind, tmp_path):
    assert dinov2.detect(path) == "transformers"
    assert dinov2.detect(tmp_path) is None
    assert isinstance(enc, dinov2.Dinov2Encoder)
    i = enc.info
    assert (i.family, i.backend, i.name) == ("dinov2", "transformers", str(path))
    assert (i.embed_dim, i.width, i.patch_size, i.image_size) == (32, 32, 14, (56, 56))
    assert i.mean == pytest.approx(dinov2.IMAGENET_MEAN) and i.std == pytest.approx(dinov2.IMAGENET_STD)
    assert (i.has_text, i.num_layers) == (False, 2)
    assert i.num_registers == (4 if kind == "dinov2-registers" else 0)
    assert not enc.training


def test_pixel_values_match_processor(enc, ref_out, photos):
    ours = enc.preprocess(photos)
    ref = ref_out[0]
    assert ours.shape == ref.shape == (4, 3, 56, 56)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_features_match_reference(enc, ref_out, photos):
    _, out = ref_out
    r = enc.info.num_registers
    f = enc.encode(photos)
    last = out.last_hidden_state
    assert f.grid == (4, 4)
    assert f.pooled.shape == (4, 32) and f.cls.shape == (4, 32) and f.patches.shape == (4, 4, 4, 32)
    torch.testing.assert_close(f.pooled, out.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(f.cls, last[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(f.patches, _grid_of(last, 1 + r, (4, 4)), atol=ATOL, rtol=0)
    assert f.layers == {}


def test_registers(tiny_root, photos):
    path = tiny_checkpoint("dinov2-registers", root=tiny_root)
    enc = vfm.load_encoder(path, device="cpu")
    from transformers import AutoImageProcessor, Dinov2WithRegistersModel

    pixels = AutoImageProcessor.from_pretrained(path)(images=photos, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        last = Dinov2WithRegistersModel.from_pretrained(path).eval()(pixel_values=pixels).last_hidden_state
    f = enc.encode(photos)
    assert last.shape[1] == 1 + 4 + 16
    assert f.registers is not None and f.registers.shape == (4, 4, 32)
    torch.testing.assert_close(f.registers, last[:, 1:5], atol=ATOL, rtol=0)
    torch.testing.assert_close(f.patches, _grid_of(last, 5, (4, 4)), atol=ATOL, rtol=0)
    # the registers are distinct tokens, not patches: no patch equals any register
    assert not torch.isclose(f.patches.reshape(4, 16, 1, 32), f.registers.reshape(4, 1, 4, 32)).all(-1).any()


def test_no_registers_is_none(tiny_root, photos):
    enc = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    assert enc.encode(photos[:1]).registers is None


def test_layers_match_hidden_states(enc, ref_out, photos):
    _, out = ref_out
    r = enc.info.num_registers
    f = enc.encode(photos[:2], layers=[0, -1])
    assert set(f.layers) == {0, enc.info.num_layers - 1}
    for i, t in f.layers.items():
        assert t.shape == (2, 4, 4, 32)
        torch.testing.assert_close(t, _grid_of(out.hidden_states[i + 1][:2], 1 + r, (4, 4)), atol=ATOL, rtol=0)
    # raw block outputs: the last tap is before the final layer norm
    assert not torch.allclose(f.layers[1], f.patches, atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        enc.encode(photos[:1], layers=[2])


def test_batching_is_consistent(enc, photos):
    one = enc.encode(photos, batch_size=1, layers=[1], progress=False)
    four = enc.encode(photos, batch_size=4, layers=[1])
    assert len(one) == len(four) == 4
    for name in ("pooled", "patches", "cls"):
        torch.testing.assert_close(getattr(one, name), getattr(four, name), atol=1e-5, rtol=0)
    torch.testing.assert_close(one.layers[1], four.layers[1], atol=1e-5, rtol=0)
    if enc.info.num_registers:
        torch.testing.assert_close(one.registers, four.registers, atol=1e-5, rtol=0)


def test_gradients_flow(enc, photos):
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    assert f.pooled.requires_grad
    f.pooled.sum().backward()
    weight = enc.model.embeddings.patch_embeddings.projection.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    enc.zero_grad(set_to_none=True)


def test_non_square_input_grid(enc):
    x = torch.randn(1, 3, 56, 84)
    f = enc(x, layers=[0])
    assert f.grid == (4, 6) and f.patches.shape == (1, 4, 6, 32) and f.layers[0].shape == (1, 4, 6, 32)


def test_missing_preprocessor_config_falls_back(path, tmp_path, caplog):
    d = tmp_path / "ckpt"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.dinov2"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "no preprocessor_config.json" in caplog.text
    assert enc.preprocess_config == dinov2.DEFAULT_PREPROCESS
    assert enc.info.image_size == (224, 224)


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models(family="dinov2")}
    for size in ("small", "base", "large", "giant"):
        assert specs[f"dinov2-{size}"].source == f"facebook/dinov2-{size}"
        assert specs[f"dinov2-{size}-reg"].source == f"facebook/dinov2-with-registers-{size}"
    assert all(s.family == "dinov2" and s.description for s in specs.values())
    assert {m.name for m in vfm.list_models() if m.family == "dinov2"} >= set(specs)


def test_partial_preprocessor_config_uses_processor_defaults(path, tmp_path, photos):
    """Keys missing from the file take BitImageProcessor's class defaults, as in transformers (int size = short side)."""
    from transformers import AutoImageProcessor

    d = tmp_path / "partial"
    shutil.copytree(path, d)
    cfg = {"image_processor_type": "BitImageProcessor", "size": 64, "crop_size": 56}
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    enc = vfm.load_encoder(d, device="cpu")
    ref = AutoImageProcessor.from_pretrained(d)(images=photos, return_tensors="pt")["pixel_values"]
    assert enc.preprocess_config.resize == "shortest_edge" and enc.preprocess_config.interpolation == "bicubic"
    torch.testing.assert_close(enc.preprocess(photos), ref, atol=1e-5, rtol=0)


def _strip_png(tmp_path, h: int = 1, w: int = 10000):
    """A 1x10000 PNG (a few hundred bytes on disk; 224-pixel short-side resizing would need gigabytes)."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "strip.png"
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)
    return path


def test_extreme_aspect_ratio_image_is_refused_quickly(enc, tmp_path):
    import resource
    import time

    from visionfm.data.images import ImageLoadError

    path = _strip_png(tmp_path)
    rss, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    pattern = r"image 0 of the batch: .*strip\.png.*10000x1 pixels.*aspect ratio 10000:1.*max_aspect_ratio=100"
    for call in (enc.encode, enc.preprocess):
        with pytest.raises(ImageLoadError, match=pattern):
            call([path])
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200 * 1024  # KiB: no large allocation


def test_preprocess_refuses_extreme_images_before_resizing():
    from visionfm.data.images import ImageLoadError
    from visionfm.foundation.preprocess import MAX_RESIZED_PIXELS, preprocess_uint8

    small = torch.zeros(3, 20, 20, dtype=torch.uint8)
    # a 1x10000 tensor handed straight to preprocessing, at DINOv2's reference 256/224 sizes
    with pytest.raises(ImageLoadError, match=r"image 1 of the batch: 10000x1 pixels.*aspect ratio 10000:1"):
        preprocess_uint8([small, torch.zeros(3, 1, 10000, dtype=torch.uint8)], dinov2.DEFAULT_PREPROCESS)
    # 100:1 is accepted at load, but a 600-pixel short side would make it 36M pixels
    cfg = dinov2.DEFAULT_PREPROCESS.with_overrides(resize_size=600)
    pattern = (
        r"image 1 of the batch: 1000x10 pixels .*would be resized \(shortest_edge 600\) to 60000x600 = 36000000 "
        rf"pixels, more than MAX_RESIZED_PIXELS={MAX_RESIZED_PIXELS}"
    )
    with pytest.raises(ImageLoadError, match=pattern):
        preprocess_uint8([small, torch.zeros(3, 10, 1000, dtype=torch.uint8)], cfg)
