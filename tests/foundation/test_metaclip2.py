"""MetaCLIP 2 through transformers (``MetaClip2Model``, model_type ``metaclip_2``): parity with the model and its
processor on tiny random weights and real photos, zero-shot, dense modes, and a LoRA adapter plain ``peft`` loads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor

import visionfm as vfm
from visionfm import adapters
from visionfm.testing import tiny_checkpoint

TEXTS = ["a photo of a cat", "An Astronaut", "a cup of coffee on a table, and a dog"]
ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(tiny_root):
    return tiny_checkpoint("metaclip2", root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


def test_detected_as_clip_family(enc, path):
    assert enc.info.family == "clip" and enc.info.backend == "transformers"
    assert enc.model_type == "metaclip_2" and enc.kind == "clip" and type(enc.model).__name__ == "MetaClip2Model"


def test_parity_with_metaclip2_model_and_processor(enc, path, photos):
    model = AutoModel.from_pretrained(path).eval()
    proc = CLIPImageProcessor.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ref_px = proc(images=list(photos), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(enc.preprocess(photos), ref_px, atol=1e-5, rtol=0)
    feats = enc.encode(photos, layers=[0])
    with torch.no_grad():
        out = model.vision_model(pixel_values=ref_px, output_hidden_states=True)
        ref_img = model.get_image_features(pixel_values=ref_px)
        ref_txt = model.get_text_features(**tok(TEXTS, padding=True, return_tensors="pt"))
    ref_img = getattr(ref_img, "pooler_output", ref_img)
    ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
    torch.testing.assert_close(feats.pooled, ref_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.cls, model.vision_model.post_layernorm(out.last_hidden_state)[:, 0], atol=ATOL,
                               rtol=0)  # fmt: skip
    grid = feats.grid
    assert grid == (6, 6)
    ref_patches = model.vision_model.post_layernorm(out.last_hidden_state)[:, 1:].reshape(len(photos), *grid, -1)
    torch.testing.assert_close(feats.patches, ref_patches, atol=ATOL, rtol=0)
    ref_l0 = out.hidden_states[1][:, 1:].reshape(len(photos), *grid, -1)
    torch.testing.assert_close(feats.layers[0], ref_l0, atol=ATOL, rtol=0)
    torch.testing.assert_close(enc.encode_text(TEXTS), ref_txt, atol=ATOL, rtol=0)


def test_zero_shot_and_dense(enc, path, photos):
    from visionfm.foundation.dense import dense_features
    from visionfm.foundation.zero_shot import classify, text_classifier

    probs = classify(enc, photos, text_classifier(enc, ["cat", "astronaut", "coffee"], "a photo of a {}."))
    assert probs.shape == (len(photos), 3) and torch.isfinite(probs).all()
    x = enc.preprocess(photos[:1])
    with torch.no_grad():
        dense = dense_features(enc, x, "vanilla")
    # vanilla dense equals the patch tokens through CLIP's head
    ref = enc.model.visual_projection(enc(x).patches)
    torch.testing.assert_close(dense, ref, atol=ATOL, rtol=0)
    seg = vfm.pipeline("zero-shot-seg", model=str(path), mode="sclip", device="cpu")
    assert seg(photos[0], labels=["person", "sky"]).label_map.shape == photos[0].shape[:2]


def test_lora_adapter_loads_with_plain_peft(path, photos, tmp_path):
    from peft import PeftModel

    enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets="attention")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        tuned = enc(x).pooled
    out = adapters.save(enc, tmp_path / "lora")
    base = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        plain = base.get_image_features(pixel_values=x)
        pm = PeftModel.from_pretrained(base, str(out)).eval()
        ref = pm.get_image_features(pixel_values=x)
    plain, ref = getattr(plain, "pooler_output", plain), getattr(ref, "pooler_output", ref)
    assert (tuned - plain).abs().max() > 1e-3
    torch.testing.assert_close(ref, tuned, atol=ATOL, rtol=0)


def test_alias_points_at_the_hub_id():
    from visionfm.foundation.registry import get_spec

    spec = get_spec("metaclip2-huge-hf")
    assert spec.family == "clip" and spec.backend == "transformers"
    assert spec.source == "facebook/metaclip-2-worldwide-huge-quickgelu"
