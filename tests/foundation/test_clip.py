"""CLIP/SigLIP parity with open_clip and transformers on the same tiny weights and real photos."""

from __future__ import annotations

import open_clip
import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm.foundation.clip import convert_checkpoint
from visionfm.testing import tiny_checkpoint

TEXTS = ["a photo of a cat", "A Red CIRCLE, and a blue-star!!", "an astronaut", "a cup of coffee on a table"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def oc_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


@pytest.fixture(scope="module")
def hf_dir(tiny_root):
    return tiny_checkpoint("clip", "transformers", root=tiny_root)


@pytest.fixture(scope="module")
def siglip_dir(tiny_root):
    return tiny_checkpoint("siglip", root=tiny_root)


def test_open_clip_parity(oc_dir, photos):
    enc = vfm.load_encoder(oc_dir, device="cpu")
    assert enc.info.backend == "open_clip" and enc.info.has_text
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{oc_dir}")
    model.eval()
    ref_pixels = torch.stack([preprocess(Image.fromarray(p)) for p in photos])
    torch.testing.assert_close(enc.preprocess(photos), ref_pixels, atol=1e-5, rtol=0)
    feats = enc.encode(photos)
    with torch.no_grad():
        ref_img = model.encode_image(ref_pixels)
        model.visual.output_tokens = True  # open_clip's own switch for (pooled, patch tokens)
        ref_pooled, ref_tokens = model.visual(ref_pixels)
        ref_txt = model.encode_text(open_clip.get_tokenizer(f"local-dir:{oc_dir}")(TEXTS))
    torch.testing.assert_close(feats.pooled, ref_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.pooled, ref_pooled, atol=ATOL, rtol=0)
    g = feats.grid
    torch.testing.assert_close(feats.patches, ref_tokens.reshape(len(photos), g[0], g[1], -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(enc.encode_text(TEXTS), ref_txt, atol=ATOL, rtol=0)
    assert abs(enc.logit_scale - float(model.logit_scale.detach().exp())) < 1e-6


def test_transformers_clip_parity(hf_dir, photos):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    enc = vfm.load_encoder(hf_dir, device="cpu")
    assert enc.info.backend == "transformers"
    model = CLIPModel.from_pretrained(hf_dir).eval()
    pixels = CLIPImageProcessor.from_pretrained(hf_dir)(images=photos, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(enc.preprocess(photos), pixels, atol=1e-5, rtol=0)
    feats = enc.encode(photos, layers=[0, -1])
    tok = AutoTokenizer.from_pretrained(hf_dir)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(**tok)
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    torch.testing.assert_close(feats.pooled, img, atol=ATOL, rtol=0)
    normed = model.vision_model.post_layernorm(out.last_hidden_state)
    torch.testing.assert_close(feats.cls, normed[:, 0], atol=ATOL, rtol=0)
    h, w = feats.grid
    torch.testing.assert_close(feats.patches, normed[:, 1:].reshape(len(photos), h, w, -1), atol=ATOL, rtol=0)
    assert sorted(feats.layers) == [0, enc.info.num_layers - 1]
    for i, t in feats.layers.items():
        torch.testing.assert_close(t, out.hidden_states[i + 1][:, 1:].reshape(len(photos), h, w, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(enc.encode_text(TEXTS), txt, atol=ATOL, rtol=0)


def test_siglip_parity_and_text_padding(siglip_dir, photos):
    from transformers import AutoProcessor, SiglipModel

    enc = vfm.load_encoder(siglip_dir, device="cpu")
    model = SiglipModel.from_pretrained(siglip_dir).eval()
    inputs = AutoProcessor.from_pretrained(siglip_dir)(
        images=photos, text=TEXTS, padding="max_length", truncation=True, return_tensors="pt"
    )
    torch.testing.assert_close(enc.preprocess(photos), inputs["pixel_values"], atol=1e-5, rtol=0)
    feats = enc.encode(photos)
    with torch.no_grad():
        vis = model.vision_model(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")})
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    assert feats.cls is None  # SigLIP has no class token
    torch.testing.assert_close(feats.pooled, vis.pooler_output, atol=ATOL, rtol=0)
    h, w = feats.grid
    torch.testing.assert_close(feats.patches, vis.last_hidden_state.reshape(len(photos), h, w, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(enc.encode_text(TEXTS), txt, atol=ATOL, rtol=0)
    # SigLIP pools the last position, so unpadded text would give a different (wrong) embedding.
    short = enc.tokenizer(TEXTS[:1], return_tensors="pt", return_attention_mask=False)["input_ids"]
    with torch.no_grad():
        unpadded = model.get_text_features(input_ids=short)
    unpadded = unpadded if isinstance(unpadded, torch.Tensor) else unpadded.pooler_output
    assert not torch.allclose(unpadded, enc.encode_text(TEXTS[:1]), atol=1e-3)


@pytest.mark.parametrize("direction", ["open_clip->transformers", "transformers->open_clip"])
def test_conversion_gives_same_embeddings(direction, oc_dir, hf_dir, tmp_path, photos):
    src = oc_dir if direction.startswith("open_clip") else hf_dir
    to = direction.split("->")[1]
    dst = convert_checkpoint(src, tmp_path / "converted", to=to)
    a, b = vfm.load_encoder(src, device="cpu"), vfm.load_encoder(dst, device="cpu")
    assert b.info.backend == to
    pixels = a.preprocess(photos)
    with torch.no_grad():
        fa, fb = a(pixels), b(pixels)
    for field in ("pooled", "patches", "cls"):
        torch.testing.assert_close(getattr(fa, field), getattr(fb, field), atol=ATOL, rtol=0)
    torch.testing.assert_close(a.encode_text(TEXTS), b.encode_text(TEXTS), atol=ATOL, rtol=0)
    assert abs(a.logit_scale - b.logit_scale) < 1e-6
    if to == "transformers":  # the reference library itself reads the converted directory
        from transformers import CLIPModel

        ref = CLIPModel.from_pretrained(dst).eval()
        with torch.no_grad():
            img = ref.get_image_features(pixel_values=pixels)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        torch.testing.assert_close(img, fa.pooled, atol=ATOL, rtol=0)
    else:
        ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{dst}")
        with torch.no_grad():
            torch.testing.assert_close(ref.eval().encode_image(pixels), fa.pooled, atol=ATOL, rtol=0)


def test_converted_tokenizers_agree(hf_dir, oc_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_dir)(TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    oc = open_clip.get_tokenizer(f"local-dir:{oc_dir}")(TEXTS)
    mask = hf["attention_mask"].bool()
    assert torch.equal(hf["input_ids"][mask], oc[mask])


def test_backend_mismatch_points_to_convert(oc_dir):
    with pytest.raises(ValueError, match="visionfm convert"):
        vfm.load_encoder(oc_dir, backend="transformers", device="cpu")


def test_text_input_validation(oc_dir):
    enc = vfm.load_encoder(oc_dir, device="cpu")
    assert enc.encode_text("a cat").shape == (1, enc.info.embed_dim)
    with pytest.raises(TypeError, match="strings"):
        enc.encode_text([1, 2])


def test_open_clip_resnet_tower_parity(tiny_root, photos):
    d = tiny_checkpoint("clip-resnet", root=tiny_root)
    enc = vfm.load_encoder(d, device="cpu")
    assert enc.info.patch_size == 32 and enc.info.num_layers == 4
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{d}")
    model.eval()
    pixels = torch.stack([preprocess(Image.fromarray(p)) for p in photos])
    feats = enc.encode(photos, layers=[0, 3])
    with torch.no_grad():
        ref = model.encode_image(pixels)
        v = model.visual
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(pixels)))))
    torch.testing.assert_close(feats.pooled, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.patches, fmap.permute(0, 2, 3, 1), atol=ATOL, rtol=0)
    assert feats.grid == (2, 2) and feats.cls is None
    assert feats.layers[0].shape[1:3] == (16, 16) and torch.equal(feats.layers[3], feats.patches)
    with pytest.raises(ValueError, match="no transformers CLIPModel equivalent"):
        convert_checkpoint(d, tiny_root / "rn-hf", to="transformers")


# -- texts longer than the text context -----------------------------------------------------------------
def _token_count(enc, text: str) -> int:
    """Tokens of ``text`` (special tokens included), from the backend's own tokenizer, without truncation."""
    if enc.info.backend == "open_clip":
        return len(enc.tokenizer.encode(text)) + 2  # <start> ... <end>
    return len(enc.tokenizer(text)["input_ids"])


@pytest.mark.parametrize(("which", "context"), [("open_clip", 77), ("transformers", 77), ("siglip", 64)])
def test_texts_longer_than_the_context_are_reported_and_warned(which, context, oc_dir, hf_dir, siglip_dir, caplog):
    import logging

    enc = vfm.load_encoder({"open_clip": oc_dir, "transformers": hf_dir, "siglip": siglip_dir}[which], device="cpu")
    assert enc.context_length == context
    n = 1
    while _token_count(enc, "a " * n + "cat") <= context:
        n += 1
    fits, over = "a " * (n - 1) + "cat", "a " * n + "cat"  # exactly the context, and one token more
    assert _token_count(enc, fits) == context and _token_count(enc, over) > context
    assert enc.overlong_texts([fits, over, "a cat"]) == [over]
    ours = "visionfm.foundation.clip.encoders"
    with caplog.at_level(logging.WARNING, logger=ours):
        caplog.clear()
        enc.encode_text([fits, "a cat"])
        assert not [r for r in caplog.records if r.name == ours]
        a = enc.encode_text([over, over + " and a dog"])
    assert torch.equal(a[0], a[1])  # both are cut inside the first: the same embedding, why it is reported
    (msg,) = [r.getMessage() for r in caplog.records if r.name == ours]
    assert f"2 of 2 texts are longer than the {context}-token text context" in msg and "truncated" in msg
    assert "'a a a a" in msg and "a a a cat'" in msg and "cat and a dog'" in msg


@pytest.mark.parametrize("which", ["open_clip", "transformers"])
def test_text_classifier_refuses_truncated_prompts(which, oc_dir, hf_dir):
    from visionfm.foundation.zero_shot import text_classifier

    enc = vfm.load_encoder(oc_dir if which == "open_clip" else hf_dir, device="cpu")
    long = "a photo of " + "a very " * 40
    with pytest.raises(ValueError, match=r"77-token text context of .*'a photo of a very.*red cat'"):
        text_classifier(enc, [long + "red cat", long + "blue cat", "a dog"], "a photo of a {}.")
    assert text_classifier(enc, ["red cat", "blue cat"], "a photo of a {}.").shape == (2, enc.info.embed_dim)
