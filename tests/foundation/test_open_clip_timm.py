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


# ---------------------------------------------------------------------------------------------------
# dense modes on timm towers, against timm's own forward with the last attention's output swapped
# ---------------------------------------------------------------------------------------------------
TOWERS = ("siglip2-map", "pe-core-rope", "vit-cls-qknorm", "conv-stem-vit")


def _timm_encoder(tiny_root, tower: str):
    """The tiny timm-tower CLIP with its trunk swapped for the tower under test (all width 96, patch 16, 160 px),
    the last block perturbed so that the modes differ."""
    import timm

    enc = vfm.load_encoder(tiny_checkpoint("clip-timm-vit", root=tiny_root), device="cpu")
    if tower == "pe-core-rope":  # Perception Encoder: EVA blocks, 2-D RoPE + learned positions, class token, map pool
        enc.model.visual.trunk = timm.create_model("vit_pe_core_base_patch16_224", num_classes=0, img_size=160,
                                                   embed_dim=96, depth=3, num_heads=3, attn_pool_num_heads=3,
                                                   ref_feat_shape=(10, 10)).eval()  # fmt: skip
    elif tower == "vit-cls-qknorm":  # MobileCLIP 2 ViT-style class-token pooling, with query/key norms
        enc.model.visual.trunk = timm.create_model("test_vit", num_classes=0, img_size=160, embed_dim=96,
                                                   num_heads=3, depth=3, global_pool="token",
                                                   qk_norm=True).eval()  # fmt: skip
    elif tower == "conv-stem-vit":  # visionfm's own toy tower: conv stem, no class token, average pooling
        from visionfm.foundation.towers import register

        register()
        enc.model.visual.trunk = timm.create_model("visionfm_conv_stem_vit", img_size=160, patch_size=16,
                                                   embed_dim=96, depth=3, num_heads=3).eval()  # fmt: skip
    trunk = enc.model.visual.trunk
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in trunk.blocks[-1].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.15)
    return enc


def _timm_reference(enc, x: torch.Tensor, mode: str, monkeypatch) -> torch.Tensor:
    """Dense tokens by timm's own modules: the blocks run by ``forward_features`` (embedding, RoPE, q/k norms as timm
    does them; the last attention's q, k, v are read off ``scaled_dot_product_attention``), the last attention output
    replaced by the mode's, and the pooled head applied to each token alone (the attention pool on a one-token
    sequence)."""
    import torch.nn.functional as F

    trunk = enc.model.visual.trunk
    last = trunk.blocks[-1]
    for blk in trunk.blocks:
        blk.attn.fused_attn = True
    calls, inputs = [], []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q, k, v))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    h = last.register_forward_pre_hook(lambda m, a, kw: inputs.append((a, kw)), with_kwargs=True)
    with torch.no_grad():
        trunk.forward_features(x)
    h.remove()
    q, k, v = calls[len(trunk.blocks) - 1]
    s = q.shape[-1] ** -0.5
    if mode == "vanilla":
        a = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v
    elif mode == "sclip":
        a = (torch.softmax(q @ q.transpose(-1, -2) * s, -1) + torch.softmax(k @ k.transpose(-1, -2) * s, -1)) @ v
    elif mode == "clearclip":
        a = torch.softmax(q @ q.transpose(-1, -2) * s, -1) @ v
    else:  # maskclip
        a = v
    b, heads, n, d = a.shape
    a = last.attn.proj(last.attn.norm(a.transpose(1, 2).reshape(b, n, heads * d)))
    with torch.no_grad():
        if mode in ("vanilla", "sclip"):  # the block's own residual, layer scale and MLP around the new attention
            monkeypatch.setattr(last.attn, "forward", lambda *args, **kwargs: a)
            args, kwargs = inputs[-1]
            out = last(*args, **kwargs)
            monkeypatch.undo()
        else:
            out = a
        out = trunk.norm(out)
        toks = []
        for i in range(n):
            t = out[:, i : i + 1]
            t = trunk.attn_pool(t) if trunk.attn_pool is not None else t[:, 0]
            toks.append(enc.model.visual.head(trunk.head(trunk.fc_norm(t))))
    return torch.stack(toks, dim=1)


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("mode", ["vanilla", "maskclip", "sclip", "clearclip"])
def test_dense_modes_on_timm_vit_towers_match_timm(tiny_root, photos, tower, mode, monkeypatch):
    from visionfm.foundation.dense import _dense_tokens

    enc = _timm_encoder(tiny_root, tower)
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        ours, prefix, grid = _dense_tokens(enc, x, mode)
    ref = _timm_reference(enc, x, mode, monkeypatch)
    assert grid == (10, 10) and prefix == enc.model.visual.trunk.num_prefix_tokens
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    if tower == "vit-cls-qknorm" and mode == "vanilla":  # the class token through the head is the pooled embedding
        torch.testing.assert_close(ours[:, 0], enc.encode(photos[:2]).pooled, atol=ATOL, rtol=0)


def test_dense_modes_differ_and_naclip_runs_on_timm(tiny_root, photos):
    from visionfm.foundation.dense import dense_features

    enc = _timm_encoder(tiny_root, "pe-core-rope")
    x = enc.preprocess(photos[:1])
    with torch.no_grad():
        outs = {m: dense_features(enc, x, m) for m in ("vanilla", "maskclip", "sclip", "clearclip", "naclip")}
        odd = dense_features(enc, torch.randn(1, 3, 144, 208), "sclip")  # a non-native, non-square grid
    assert odd.shape[1:3] == (9, 13) and torch.isfinite(odd).all()
    assert all(o.shape == (1, 10, 10, 96) for o in outs.values())
    for a, b in (("vanilla", "sclip"), ("maskclip", "clearclip"), ("clearclip", "naclip")):
        assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


def test_cnn_tower_dense_is_the_pooled_head_per_position(tiny_root, photos):
    from visionfm.foundation.dense import dense_features

    enc = vfm.load_encoder(tiny_checkpoint("clip-timm-cnn", root=tiny_root), device="cpu")
    x = enc.preprocess(photos[:2])
    feats = enc(x)
    trunk, v = enc.model.visual.trunk, enc.model.visual
    with torch.no_grad():
        dense = dense_features(enc, x, "vanilla")
        # the pooled path on the mean token: avg pooling commutes with taking the mean of the per-position tokens
        mean_tok = feats.patches.mean(dim=(1, 2))[:, :, None, None]
        pooled_from_mean = v.head(trunk.forward_head(mean_tok))
    assert dense.shape[1:3] == feats.grid and dense.shape[-1] == enc.info.embed_dim
    torch.testing.assert_close(pooled_from_mean, feats.pooled, atol=ATOL, rtol=0)
    tok = feats.patches[:, 1, 0][:, :, None, None]
    torch.testing.assert_close(dense[:, 1, 0], v.head(trunk.forward_head(tok)), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="mode='sclip'.*use mode='vanilla'"):
        dense_features(enc, x, "sclip")


@pytest.mark.parametrize("kind", ["clip-timm-vit", "clip-timm-cnn"])
def test_zero_shot_seg_runs_on_timm_towers(tiny_root, photos, kind):
    mode = "sclip" if kind.endswith("vit") else "vanilla"
    seg = vfm.pipeline("zero-shot-seg", model=str(tiny_checkpoint(kind, root=tiny_root)), mode=mode, device="cpu")
    out = seg(photos[0], labels=["person", "sky", "grass"])
    assert out.label_map.shape == photos[0].shape[:2]
    assert set(out.label_map.unique().tolist()) <= {0, 1, 2, 3}
