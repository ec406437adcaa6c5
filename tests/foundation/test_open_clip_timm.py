"""open_clip models whose image tower is a timm model (PE-Core, SigLIP 2, MobileCLIP 2 in open_clip 3.x):
parity with open_clip's own model and transform on tiny random weights and real photos, zero-shot, LoRA."""

from __future__ import annotations

import open_clip
import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm import adapters
from visionfm.testing import tiny_checkpoint

TEXTS = ["a photo of a cat", "A Red CIRCLE, and a blue-star!!", "an astronaut", "a cup of coffee on a table"]
ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["clip-timm-vit", "clip-timm-cnn"])
def timm_dir(request, tiny_root):
    return tiny_checkpoint(request.param, root=tiny_root)


def test_timm_tower_parity_with_open_clip(timm_dir, photos):
    enc = vfm.load_encoder(timm_dir, device="cpu")
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{timm_dir}")
    model.eval()
    ref_pixels = torch.stack([preprocess(Image.fromarray(p)) for p in photos])
    torch.testing.assert_close(enc.preprocess(photos), ref_pixels, atol=1e-5, rtol=0)
    feats = enc.encode(photos, layers=[0, -1])
    trunk = model.visual.trunk
    with torch.no_grad():
        ref_img = model.encode_image(ref_pixels)
        ref_txt = model.encode_text(open_clip.get_tokenizer(f"local-dir:{timm_dir}")(TEXTS))
        ref_feat = trunk.forward_features(ref_pixels)
    torch.testing.assert_close(feats.pooled, ref_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(enc.encode_text(TEXTS), ref_txt, atol=ATOL, rtol=0)
    assert abs(enc.logit_scale - float(model.logit_scale.detach().exp())) < 1e-6
    n = len(photos)
    if "vit" in timm_dir.name:  # SigLIP 2-style: one register token, no class token, 160 px / 16 = 10x10
        assert feats.grid == (10, 10) and feats.cls is None and enc.info.num_registers == 1
        assert enc.logit_bias == pytest.approx(-10.0)
        ref_patches = ref_feat[:, trunk.num_prefix_tokens :].reshape(n, 10, 10, -1)
        assert sorted(feats.layers) == [0, enc.info.num_layers - 1] and enc.info.num_layers == len(trunk.blocks)
        assert feats.layers[0].shape == ref_patches.shape
    else:  # CNN: the last feature map, stride 32
        assert feats.grid == (2, 2) and feats.cls is None and enc.info.patch_size == 32
        ref_patches = ref_feat.permute(0, 2, 3, 1)
        assert feats.layers[0].shape[1:3] == (16, 16)
        torch.testing.assert_close(feats.layers[enc.info.num_layers - 1], feats.patches, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.patches, ref_patches, atol=ATOL, rtol=0)
    assert feats.patches.shape[-1] == enc.info.width and feats.pooled.shape[-1] == enc.info.embed_dim


def test_zero_shot_classification_runs(timm_dir, photos):
    from visionfm.foundation.zero_shot import classify, text_classifier

    enc = vfm.load_encoder(timm_dir, device="cpu")
    w = text_classifier(enc, ["cat", "astronaut", "coffee"], "a photo of a {}.")
    probs = classify(enc, photos, w)
    assert probs.shape == (len(photos), 3) and torch.isfinite(probs).all()


def test_lora_on_timm_vit_blocks(tiny_root, photos, tmp_path):
    d = tiny_checkpoint("clip-timm-vit", root=tiny_root)
    for targets, expect in (("attention", {"qkv", "proj"}), ("mlp", {"fc1", "fc2"})):
        enc = adapters.attach(vfm.load_encoder(d, device="cpu"), "lora", r=4, targets=targets)
        hit = {n for n, m in enc.named_modules() if hasattr(m, "lora_A")}
        assert {n.split(".")[-1] for n in hit} == expect
        assert all(".trunk.blocks." in n for n in hit) and len(hit) == 2 * 9
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        tuned = enc(x).pooled
        base = vfm.load_encoder(d, device="cpu")(x).pooled
    # test_vit3's LayerScale starts at 1e-5, so the adapter moves the output by ~1e-5 of its LoRA update
    assert (tuned - base).abs().max() > 1e-6
    out = adapters.save(enc, tmp_path / "lora")
    again = adapters.load_adapter(vfm.load_encoder(d, device="cpu"), out)
    with torch.no_grad():
        torch.testing.assert_close(again(x).pooled, tuned, atol=1e-5, rtol=0)


def test_timm_aliases_point_at_real_open_clip_tags():
    from visionfm.foundation.registry import get_spec

    tags = {f"{a}/{t}" for a, t in open_clip.list_pretrained()}
    for alias in ("pe-core-b-16", "mobileclip2-s2", "mobileclip2-b", "openclip-siglip2-b-16",
                  "dfn5b-clip-vit-h-14", "metaclip2-vit-h-14"):  # fmt: skip
        spec = get_spec(alias)
        assert spec.backend == "open_clip" and spec.source in tags, alias
