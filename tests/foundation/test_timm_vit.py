"""timm family: timm ViTs from timm's own on-disk format, checked against timm itself on the same directory."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

import visionfm as vfm
from visionfm.adapters import target_modules
from visionfm.foundation.loading import CheckpointError, PickleCheckpointError, detect_family
from visionfm.testing import tiny_checkpoint

CONV_STEM_ARGS = dict(dynamic_img_size=True, img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                      num_classes=0)  # fmt: skip


@pytest.fixture(scope="module")
def timm_dir(tiny_root) -> Path:
    return tiny_checkpoint("timm-vit", root=tiny_root)


@pytest.fixture(scope="module")
def enc(timm_dir):
    return vfm.load_encoder(timm_dir, device="cpu")


@pytest.fixture(scope="module")
def ref(timm_dir):
    """The same directory loaded by timm itself."""
    return timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()


@pytest.fixture(scope="module")
def conv_stem(tmp_path_factory):
    """A ``visionfm_conv_stem_vit`` (dynamic image size, patch 8, no class token, average pool) saved by timm's
    ``save_for_hf``, and the same model as timm reads it back (``local-dir:``)."""
    from visionfm.foundation.towers import register

    register()
    torch.manual_seed(0)
    model = timm.create_model("visionfm_conv_stem_vit", **CONV_STEM_ARGS).eval()
    path = tmp_path_factory.mktemp("timm") / "conv-stem"
    save_for_hf(model, str(path), model_args=dict(CONV_STEM_ARGS), safe_serialization=True)
    return path, timm.create_model(f"local-dir:{path}", pretrained=True).eval()


def test_the_directory_is_timms_format_and_loads_as_the_timm_family(timm_dir, enc):
    assert sorted(p.name for p in timm_dir.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]
    cfg = json.loads((timm_dir / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and "model_type" not in cfg and cfg["model_args"]["depth"] == 2
    assert detect_family(timm_dir) == ("timm", "timm")
    i = enc.info
    assert (i.family, i.backend, i.embed_dim, i.width, i.patch_size, i.image_size) == ("timm", "timm", 32, 32, 16,
                                                                                       (64, 64))  # fmt: skip
    assert i.mean == (0.5, 0.5, 0.5) and i.std == (0.5, 0.5, 0.5) and i.num_layers == 2 and not i.has_text


def test_features_equal_timm(enc, ref):
    """pooled = forward_head(forward_features(x), pre_logits=True); patches = the normed tokens after the class token;
    layers = timm's own (un-normed) intermediates."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = enc(x, layers=[0, -1])
        tokens = ref.forward_features(x)
        pooled = ref.forward_head(tokens, pre_logits=True)
        inter = ref.forward_intermediates(x, indices=[0, 1], intermediates_only=True, output_fmt="NCHW")
    torch.testing.assert_close(feats.pooled, pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.patches, tokens[:, 1:].reshape(2, 4, 4, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.cls, tokens[:, 0], atol=1e-6, rtol=0)
    assert feats.grid == (4, 4) and feats.registers is None and sorted(feats.layers) == [0, 1]
    for i in (0, 1):
        torch.testing.assert_close(feats.layers[i], inter[i].permute(0, 2, 3, 1), atol=1e-6, rtol=0)


def test_preprocessing_equals_timms_transform(enc, ref, photos):
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref))
    for photo in photos:
        want = transform(Image.fromarray(photo))
        torch.testing.assert_close(enc.preprocess(photo)[0], want, atol=1e-5, rtol=0)
    assert enc.preprocess_config.resize_size == 71  # floor(64 / crop_pct 0.9), then the centre 64 x 64


def test_encode_photos_matches_timm_end_to_end(enc, ref, photos):
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref))
    feats = enc.encode(photos, batch_size=2, layers=[1])
    with torch.inference_mode():
        x = torch.stack([transform(Image.fromarray(p)) for p in photos])
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(feats.pooled, want, atol=1e-4, rtol=0)
    assert feats.patches.shape == (4, 4, 4, 32) and feats.layers[1].shape == (4, 4, 4, 32)


def test_a_static_model_takes_its_native_size_only(enc):
    with pytest.raises(ValueError, match=r"takes 64x64 inputs only.*dynamic_img_size.*got 32x48"):
        enc(torch.zeros(1, 3, 32, 48))


def test_dynamic_conv_stem_vit(conv_stem):
    path, model = conv_stem
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architecture"] == "visionfm_conv_stem_vit" and cfg["model_args"]["dynamic_img_size"] is True
    enc = vfm.load_encoder(path, device="cpu")
    assert enc.info.family == "timm" and enc.info.patch_size == 8 and enc.dynamic
    for size, grid in ((64, (8, 8)), (32, (4, 4)), (48, (6, 6))):
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.inference_mode():
            feats = enc(x, layers=[1])
            tokens = model.forward_features(x)
            pooled = model.forward_head(tokens, pre_logits=True)
        assert feats.grid == grid and feats.patches.shape == (2, *grid, 32) and feats.layers[1].shape == (2, *grid, 32)
        assert feats.cls is None  # no class token: pooled is the average of the patches
        torch.testing.assert_close(feats.pooled, pooled, atol=1e-6, rtol=0)
        torch.testing.assert_close(feats.patches, tokens.reshape(2, *grid, 32), atol=1e-6, rtol=0)


def test_register_tokens(tmp_path):
    """A ViT with a class token and 2 registers (average-pooled): the registers are neither patches nor pooled."""
    args = dict(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, reg_tokens=2,
                global_pool="avg")  # fmt: skip
    model = timm.create_model("vit_tiny_patch16_224", **args).eval()
    save_for_hf(model, str(tmp_path / "reg"), model_args=args, safe_serialization=True)
    enc = vfm.load_encoder(tmp_path / "reg", device="cpu")
    assert enc.info.num_registers == 2
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = enc(x)
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(feats.cls, tokens[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.registers, tokens[:, 1:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.patches, tokens[:, 3:].reshape(2, 2, 2, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.pooled, pooled, atol=1e-6, rtol=0)


def test_a_non_vit_timm_model_is_refused_by_name(tmp_path):
    model = timm.create_model("test_resnet", num_classes=0)
    save_for_hf(model, str(tmp_path / "resnet"), safe_serialization=True)
    with pytest.raises(NotImplementedError, match=r"'test_resnet' builds a ResNet.*ViTs only"):
        vfm.load_encoder(tmp_path / "resnet", device="cpu")


def test_damaged_checkpoints_fail_clearly(timm_dir, tmp_path):
    trunc = tmp_path / "trunc"
    shutil.copytree(timm_dir, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a valid safetensors file"):
        vfm.load_encoder(trunc, device="cpu")
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(timm_dir, partial)
    state = load_file(str(partial / "model.safetensors"))
    state.pop("blocks.1.mlp.fc2.weight")
    state["pos_embed"] = state["pos_embed"][:, :5]
    save_file(state, str(partial / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) have the wrong shape.*pos_embed: \(1, 5, 32\)"):
        vfm.load_encoder(partial, device="cpu")
    state["pos_embed"] = torch.zeros(1, 17, 32)
    save_file(state, str(partial / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\).*blocks\.1\.mlp\.fc2\.weight"):
        vfm.load_encoder(partial, device="cpu")


def test_pickle_weights_only_on_request(timm_dir, enc, tmp_path):
    from safetensors.torch import load_file

    pkl = tmp_path / "pkl"
    pkl.mkdir()
    shutil.copy(timm_dir / "config.json", pkl / "config.json")
    torch.save(load_file(str(timm_dir / "model.safetensors")), pkl / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match="pytorch_model.bin"):
        vfm.load_encoder(pkl, device="cpu")
    other = vfm.load_encoder(pkl, device="cpu", allow_pickle=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(other(x).pooled, enc(x).pooled, atol=0, rtol=0)


def test_the_alias_routes_a_cached_hub_snapshot_to_the_family(timm_dir, tmp_path):
    """``timm-vit-small-dinov2`` is ``timm/vit_small_patch14_dinov2.lvd142m``: a snapshot of that repo in the Hugging
    Face cache (here holding the tiny files) is detected as this family, by alias and by hub id, offline."""
    spec = {m.name: m for m in vfm.list_models(family="timm")}["timm-vit-small-dinov2"]
    assert spec.source == "timm/vit_small_patch14_dinov2.lvd142m" and spec.backend == "timm"
    repo = tmp_path / f"models--{spec.source.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(timm_dir, repo / "snapshots" / commit, ignore=shutil.ignore_patterns(".complete"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in (spec.name, spec.source):
        e = vfm.load_encoder(name, device="cpu", cache_dir=tmp_path, local_files_only=True)
        assert (e.info.family, e.info.name) == ("timm", name)


def test_peft_targets(enc):
    assert target_modules(enc, "attention") == [f"blocks.{i}.attn.{p}" for i in (0, 1) for p in ("qkv", "proj")]
    assert target_modules(enc, "mlp") == [f"blocks.{i}.mlp.{p}" for i in (0, 1) for p in ("fc1", "fc2")]


def test_zero_shot_seg_with_a_timm_proxy(tiny_root, timm_dir, conv_stem, photos, caplog):
    """A static timm ViT as ProxyCLIP's proxy with windows of its native size (64), and a dynamic one at the tiny
    CLIP's own windows (48)."""
    clip = vfm.load_encoder(tiny_checkpoint("clip", "open_clip", root=tiny_root), device="cpu")
    img = photos[1]
    with caplog.at_level(logging.WARNING, logger="visionfm.pipelines.zero_shot_seg"):
        for proxy, window, grid in ((str(timm_dir), 64, 4), (str(conv_stem[0]), 48, 6)):
            seg = vfm.pipeline("zero-shot-seg", model=clip, mode="proxy", proxy=proxy, window=window,
                               templates="single")  # fmt: skip
            assert seg.proxy.info.family == "timm"
            out = seg(img, labels=["cat", "sofa", "sky"])
            assert out.label_map.shape == img.shape[:2] and out.protocol["proxy"] == proxy
            windows = torch.zeros(1, 3, window, window)
            assert seg._proxy_features(windows).shape == (1, grid, grid, 32)
    assert "proxy encoder of family" not in caplog.text
