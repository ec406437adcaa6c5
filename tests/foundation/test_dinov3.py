"""DINOv3 family: parity with transformers' own processor and model on tiny random checkpoints (ViT and ConvNeXt),
PEFT adapters that load with plain ``peft``, and DINOv3 as ProxyCLIP's proxy."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import dinov3  # registers the family (until families.py imports it)
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
KINDS = ["dinov3", "dinov3-convnext"]
pytestmark = pytest.mark.usefixtures("one_thread")


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


def _is_vit(enc) -> bool:
    return isinstance(enc, dinov3.Dinov3ViTEncoder)


def test_detect_and_info(enc, path, kind, tmp_path):
    assert dinov3.detect(path) == "transformers"
    assert dinov3.detect(tmp_path) is None
    i = enc.info
    assert (i.family, i.backend, i.name) == ("dinov3", "transformers", str(path))
    assert i.mean == pytest.approx(dinov3.IMAGENET_MEAN) and i.std == pytest.approx(dinov3.IMAGENET_STD)
    assert not i.has_text and not enc.training
    if kind == "dinov3":
        assert isinstance(enc, dinov3.Dinov3ViTEncoder)
        assert (i.embed_dim, i.width, i.patch_size, i.image_size, i.num_layers, i.num_registers) == (
            32, 32, 16, (64, 64), 2, 4)  # fmt: skip
    else:
        assert isinstance(enc, dinov3.Dinov3ConvNextEncoder)
        assert (i.embed_dim, i.width, i.patch_size, i.image_size, i.num_layers, i.num_registers) == (
            32, 32, 32, (96, 96), 4, 0)  # fmt: skip


def test_pixel_values_match_processor(enc, ref_out, photos):
    from visionfm.foundation.preprocess import preprocess_uint8

    ours = enc.preprocess(photos)
    ref = ref_out[0]
    assert ours.shape == ref.shape == (4, 3, *enc.info.image_size)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert enc.preprocess_config.interpolation == "bilinear" and enc.preprocess_config.resize == "exact"
    # the processor rescales before resizing: resizing uint8 (the other families' order) is measurably different
    import dataclasses

    from visionfm.data.images import load_images

    assert enc.preprocess_config.rescale_before_resize
    other = dataclasses.replace(enc.preprocess_config, rescale_before_resize=False)
    uint8_order, _ = preprocess_uint8(load_images(photos), other)
    assert (uint8_order - ref).abs().max() > 1e-3


def test_features_match_reference(enc, ref_out, photos):
    _, out = ref_out
    last = out.last_hidden_state
    f = enc.encode(photos)
    assert f.layers == {}
    torch.testing.assert_close(f.pooled, out.pooler_output, atol=ATOL, rtol=0)
    if _is_vit(enc):
        assert f.grid == (4, 4) and f.pooled.shape == (4, 32) and f.patches.shape == (4, 4, 4, 32)
        assert last.shape[1] == 1 + 4 + 16
        torch.testing.assert_close(f.pooled, last[:, 0], atol=ATOL, rtol=0)  # pooler_output is the normed CLS
        torch.testing.assert_close(f.cls, last[:, 0], atol=ATOL, rtol=0)
        assert f.registers is not None and f.registers.shape == (4, 4, 32)
        torch.testing.assert_close(f.registers, last[:, 1:5], atol=ATOL, rtol=0)
        torch.testing.assert_close(f.patches, _grid_of(last, 5, (4, 4)), atol=ATOL, rtol=0)
        # the registers are distinct tokens, not patches: no patch equals any register
        assert not torch.isclose(f.patches.reshape(4, 16, 1, 32), f.registers.reshape(4, 1, 4, 32)).all(-1).any()
    else:
        assert f.grid == (3, 3) and f.pooled.shape == (4, 32) and f.patches.shape == (4, 3, 3, 32)
        assert f.cls is None and f.registers is None
        torch.testing.assert_close(f.patches, _grid_of(last, 1, (3, 3)), atol=ATOL, rtol=0)


def test_layers_match_hidden_states(enc, ref_out, photos):
    _, out = ref_out
    n = enc.info.num_layers
    f = enc.encode(photos[:2], layers=[0, -1])
    assert set(f.layers) == {0, n - 1}
    for i, t in f.layers.items():
        h = out.hidden_states[i + 1][:2]  # hidden_states[0] is the embedding (ViT) / the input (ConvNeXt)
        want = _grid_of(h, 5, (4, 4)) if _is_vit(enc) else h.permute(0, 2, 3, 1)
        assert t.shape == want.shape
        torch.testing.assert_close(t, want, atol=ATOL, rtol=0)
    if _is_vit(enc):  # raw block outputs: the last tap is before the final layer norm
        assert not torch.allclose(f.layers[n - 1], f.patches, atol=1e-3)
    else:  # each stage on its own grid and width
        assert f.layers[0].shape == (2, 24, 24, 8)
    with pytest.raises(ValueError, match="out of range"):
        enc.encode(photos[:1], layers=[n])


@pytest.mark.parametrize("size", [(64, 96), (96, 48), (128, 128)])
def test_any_resolution_matches_model(enc, reference, size):
    """Non-square and larger inputs run at their own resolution (RoPE: nothing resized) and match the model."""
    _, model = reference
    h, w = size if _is_vit(enc) else (size[0] * 3 // 2, size[1] * 3 // 2)
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(pixel_values=x)
        f = enc(x, layers=[0])
    grid = (h // enc.info.patch_size, w // enc.info.patch_size)
    assert f.grid == grid and f.patches.shape == (2, *grid, 32)
    prefix = 5 if _is_vit(enc) else 1
    torch.testing.assert_close(f.patches, _grid_of(out.last_hidden_state, prefix, grid), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.pooled, out.pooler_output, atol=ATOL, rtol=0)
    if _is_vit(enc):
        assert f.layers[0].shape == (2, *grid, 32)


def test_batching_is_consistent(enc, photos):
    one = enc.encode(photos, batch_size=1, layers=[1], progress=False)
    four = enc.encode(photos, batch_size=4, layers=[1])
    assert len(one) == len(four) == 4
    for name in ("pooled", "patches"):
        torch.testing.assert_close(getattr(one, name), getattr(four, name), atol=1e-5, rtol=0)
    torch.testing.assert_close(one.layers[1], four.layers[1], atol=1e-5, rtol=0)
    if _is_vit(enc):
        torch.testing.assert_close(one.registers, four.registers, atol=1e-5, rtol=0)


def test_gradients_flow(enc, photos):
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    assert f.pooled.requires_grad
    f.pooled.sum().backward()
    first = next(p for n, p in enc.model.named_parameters() if p.ndim == 4)  # the patch / stem convolution
    assert first.grad is not None and first.grad.abs().sum() > 0
    enc.zero_grad(set_to_none=True)


def test_missing_preprocessor_config_falls_back(path, tmp_path, caplog):
    d = tmp_path / "ckpt"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.dinov3"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "no preprocessor_config.json" in caplog.text
    assert enc.preprocess_config == dinov3.DEFAULT_PREPROCESS
    assert enc.info.image_size == (224, 224)


def test_shortest_edge_and_crop_config_matches_processor(path, tmp_path, photos):
    """A processor set to short-side resize + centre crop keeps the rescale-resize-crop-normalise order."""
    from transformers import AutoImageProcessor

    d = tmp_path / "crop"
    shutil.copytree(path, d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg.update(size={"shortest_edge": 72}, do_center_crop=True, crop_size={"height": 64, "width": 64}, resample=3)
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    enc = vfm.load_encoder(d, device="cpu")
    ref = AutoImageProcessor.from_pretrained(d)(images=photos, return_tensors="pt")["pixel_values"]
    assert enc.preprocess_config.resize == "shortest_edge" and enc.preprocess_config.crop_size == (64, 64)
    torch.testing.assert_close(enc.preprocess(photos), ref, atol=1e-5, rtol=0)


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models(family="dinov3")}
    for arch in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16"):
        assert specs[f"dinov3-{arch}"].source == f"facebook/dinov3-{arch}-pretrain-lvd1689m"
    for size in ("tiny", "small", "base", "large"):
        assert specs[f"dinov3-convnext-{size}"].source == f"facebook/dinov3-convnext-{size}-pretrain-lvd1689m"
    assert len(specs) == 10 and all(s.family == "dinov3" and s.description for s in specs.values())


# -- PEFT ---------------------------------------------------------------------------------------------
def _outputs(enc, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = enc(x)
    return torch.cat([f.pooled.flatten(), f.patches.flatten()])


def test_target_groups(enc):
    from visionfm import adapters

    if _is_vit(enc):
        att = adapters.target_modules(enc, "attention")
        mlp = adapters.target_modules(enc, "mlp")
        assert len(att) == 8 and {n.rsplit(".", 1)[1] for n in att} == {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert len(mlp) == 6 and {n.rsplit(".", 1)[1] for n in mlp} == {"gate_proj", "up_proj", "down_proj"}
        assert all(n.startswith("model.layer.") for n in att + mlp)
    else:
        mlp = adapters.target_modules(enc, "mlp")
        assert len(mlp) == 10 and {n.rsplit(".", 1)[1] for n in mlp} == {"pointwise_conv1", "pointwise_conv2"}
        with pytest.raises(ValueError, match="matches no module of dinov3 ConvNeXt"):
            adapters.target_modules(enc, "attention")


def test_lora_adapter_saves_and_loads_with_peft(enc, path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    from visionfm import adapters

    targets = "all" if _is_vit(enc) else "mlp"
    ours_enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets=targets)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the adapters away from identity
        for p in ours_enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(2, 3, *enc.info.image_size, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    ours = _outputs(ours_enc, x)
    assert (ours - _outputs(enc, x)).abs().max() > 1e-4
    out = adapters.save(ours_enc, tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"

    # reference: the transformers model with the adapter loaded by plain PEFT, in the same encoder class
    ref = type(enc)(AutoModel.from_pretrained(path).eval(), enc.preprocess_config, enc.info.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        PeftModel.from_pretrained(adapters.base_module(ref), str(out))
    torch.testing.assert_close(_outputs(ref, x), ours, rtol=0, atol=1e-6)

    fresh = adapters.load_adapter(vfm.load_encoder(path, device="cpu"), out)
    assert torch.equal(_outputs(fresh, x), ours)


# -- as ProxyCLIP's proxy -----------------------------------------------------------------------------
def test_zero_shot_seg_with_dinov3_proxy(path, tiny_root, photos):
    img = photos[3]  # 300x420
    seg = vfm.pipeline(
        "zero-shot-seg",
        model=str(tiny_checkpoint("clip", "open_clip", root=tiny_root)),
        mode="proxy",
        proxy=str(path),
        templates="single",
        device="cpu",
    )
    assert seg.proxy.info.family == "dinov3"
    out = seg(img, labels=["cat", "sofa", "sky"])
    assert out.label_map.shape == img.shape[:2]
    assert out.probs.shape == (3, *img.shape[:2]) and torch.isfinite(out.probs).all()
    assert out.protocol["proxy"] == str(path)
