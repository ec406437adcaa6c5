"""The Features contract, the Encoder base (batching, taps, errors) and preprocessing details."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm.foundation.preprocess import PreprocessConfig, preprocess_uint8
from visionfm.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def enc(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("clip", "open_clip", root=tiny_root), device="cpu")


def _feats(b=2, h=3, w=4, c=5):
    return vfm.Features(
        pooled=torch.randn(b, 7), patches=torch.randn(b, h, w, c), grid=(h, w), layers={1: torch.randn(b, h, w, c)}
    )


def test_features_validation_and_ops():
    f = _feats()
    assert len(f) == 2
    g = vfm.Features.cat([f, f[1]])
    assert len(g) == 3 and torch.equal(g.patches[2], f.patches[1]) and torch.equal(g.layers[1][2], f.layers[1][1])
    assert f.to(torch.float16).pooled.dtype == torch.float16
    with pytest.raises(ValueError, match=r"\[B, h, w, C\]"):
        vfm.Features(pooled=torch.randn(2, 7), patches=torch.randn(2, 12, 5), grid=(3, 4))
    with pytest.raises(ValueError, match="grid"):
        vfm.Features(pooled=torch.randn(2, 7), patches=torch.randn(2, 3, 4, 5), grid=(4, 3))


def test_encode_accepts_every_input_kind(enc, photos, tmp_path):
    img = photos[1]
    path = tmp_path / "cat.png"
    Image.fromarray(img).save(path)
    ref = enc.encode(img).pooled
    variants = [Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1), str(path), path, [img], np.stack([img])]
    for v in variants:
        torch.testing.assert_close(enc.encode(v).pooled, ref, atol=1e-6, rtol=0)


def test_batching_is_invisible(enc, photos):
    a = enc.encode(photos, batch_size=1, layers=[0])
    b = enc.encode(photos, batch_size=4, layers=[0])
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.layers[0], b.layers[0], atol=1e-5, rtol=0)
    h, w = enc.info.image_size[0] // enc.info.patch_size, enc.info.image_size[1] // enc.info.patch_size
    assert a.patches.shape == (4, h, w, enc.info.width) and a.grid == (h, w)
    assert a.pooled.shape == (4, enc.info.embed_dim)


def test_layer_index_errors_and_normalisation(enc, photos):
    f = enc.encode(photos[:1], layers=[-1, 0, -2])
    assert sorted(f.layers) == [0, 1]
    with pytest.raises(ValueError, match="layer 5 is out of range.*2 blocks"):
        enc.encode(photos[:1], layers=[5])


def test_bad_image_names_the_batch_item(enc, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"image 1 of the batch.*broken.jpg"):
        enc.encode([photos[0], str(bad)])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(photos, batch_size=0)


def test_forward_is_differentiable(enc, photos):
    enc.zero_grad()
    enc(enc.preprocess(photos[:1])).pooled.sum().backward()
    assert enc.model.visual.conv1.weight.grad is not None and enc.model.visual.conv1.weight.grad.abs().sum() > 0


def test_progress_bar_for_long_inputs(enc, photos, capsys):
    enc.encode(photos, batch_size=1)
    assert "encode" in capsys.readouterr().err  # tqdm writes to stderr
    enc.encode(photos, batch_size=8)
    assert "encode" not in capsys.readouterr().err


def test_hf_config_roundtrip_and_crop_rounding():
    cfg = PreprocessConfig(resize="shortest_edge", resize_size=64, crop_size=(56, 56), interpolation="bilinear")
    assert PreprocessConfig.from_hf(cfg.to_hf()) == cfg
    # torchvision's CenterCrop rounds the offset (open_clip); transformers floors it: they differ on odd margins.
    img = torch.arange(3 * 5 * 5, dtype=torch.uint8).reshape(3, 5, 5)
    base = dict(resize="none", resize_size=None, crop_size=(2, 2), mean=(0.0,) * 3, std=(1.0,) * 3, rescale=1.0)
    floor = preprocess_uint8([img], PreprocessConfig(**base, crop_rounding="floor"))[0]
    rnd = preprocess_uint8([img], PreprocessConfig(**base, crop_rounding="round"))[0]
    assert floor[0, 0, 0, 0] == img[0, 1, 1] and rnd[0, 0, 0, 0] == img[0, 2, 2]


def test_grouped_resize_equals_per_image(photos):
    cfg = PreprocessConfig(resize_size=64, crop_size=(64, 64))
    tensors = [torch.from_numpy(p).permute(2, 0, 1).contiguous() for p in photos + photos[:2]]
    batch, sizes = preprocess_uint8(tensors, cfg)
    for i, t in enumerate(tensors):
        single, _ = preprocess_uint8([t], cfg)
        torch.testing.assert_close(batch[i], single[0])
    assert sizes[0] == (64, 64) and sizes[1] == (64, int(64 * 451 / 300))


def test_public_api_is_small():
    assert len(vfm.__all__) <= 15
    fams = {m.family for m in vfm.list_models()}
    assert fams == {
        "aimv2",
        "clip",
        "dino",
        "dinov2",
        "dinov3",
        "radio",
        "sam",
        "sam3",
        "dit",
        "pixart",
        "detector",
        "timm",
    }
