"""SAM 3 family: parity with transformers' ``Sam3Processor`` + ``Sam3Model`` on the tiny random checkpoint (real
on-disk format), the split into vision embeddings / phrase embeddings / heads that concept prompting runs on, the
phrase-embedding cache, and PEFT adapters that load with plain ``peft``."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import sam3
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
PHRASES = ["a person", "a cat", "a cup of coffee", "camera"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(tiny_root):
    return tiny_checkpoint("sam3", root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


@pytest.fixture(scope="module")
def reference(path):
    from transformers import Sam3Model, Sam3Processor

    return Sam3Processor.from_pretrained(path), Sam3Model.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def ref_pixels(reference, photos):
    processor, _ = reference
    return processor(images=photos, return_tensors="pt")["pixel_values"]


def test_writer_is_the_real_format(path):
    from transformers import AutoModel, AutoProcessor, Sam3Config, Sam3Model, Sam3Processor

    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == Sam3Config().model_type == "sam3"
    assert isinstance(AutoProcessor.from_pretrained(path), Sam3Processor)
    assert isinstance(AutoModel.from_pretrained(path), Sam3Model)
    assert (path / "model.safetensors").is_file() and (path / "processor_config.json").is_file()


def test_detect_and_info(enc, path, tmp_path):
    assert sam3.detect(path) == "transformers"
    assert sam3.detect(tmp_path) is None
    i = enc.info
    assert (i.family, i.backend, i.name) == ("sam3", "transformers", str(path))
    assert (i.embed_dim, i.width, i.patch_size, i.image_size, i.num_layers) == (32, 32, 14, (112, 112), 2)
    assert i.mean == sam3.SAM3_MEAN and i.std == sam3.SAM3_STD and not i.has_text
    assert isinstance(enc, sam3.Sam3Encoder) and enc.model.__class__.__name__ == "Sam3Model" and not enc.training
    assert enc.preprocess_config.resize == "exact" and enc.preprocess_config.interpolation == "bilinear"


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models(family="sam3")}
    assert set(specs) == {"sam3"} and specs["sam3"].source == "facebook/sam3" and specs["sam3"].description


def test_pixel_values_match_processor(enc, ref_pixels, photos):
    torch.testing.assert_close(enc.preprocess(photos), ref_pixels, atol=1e-5, rtol=0)


def test_features_match_backbone(enc, reference, ref_pixels, photos):
    """patches: the backbone's last hidden state on the grid; layers: each block's output (the ViT's hidden
    states after block i)."""
    _, model = reference
    with torch.no_grad():
        ref = model.vision_encoder.backbone(ref_pixels, output_hidden_states=True)
    feats = enc.encode(photos, layers=[0, -1])
    b = len(photos)
    torch.testing.assert_close(feats.patches, ref.last_hidden_state.reshape(b, 8, 8, 32), atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.pooled, ref.last_hidden_state.mean(1), atol=ATOL, rtol=0)
    assert feats.grid == (8, 8) and feats.cls is None and feats.registers is None
    for i in (0, 1):
        torch.testing.assert_close(feats.layers[i], ref.hidden_states[i + 1].reshape(b, 8, 8, 32), atol=ATOL, rtol=0)


def test_decode_matches_model_per_phrase(enc, reference, ref_pixels, photos):
    """One vision pass and one batched head pass for all phrases = one ``Sam3Model`` call per (image, phrase)."""
    processor, model = reference
    with torch.inference_mode():
        vision = enc.vision_embeds(enc.preprocess(photos[:2]))
        emb = enc.phrase_embeds(PHRASES)
        for i in range(2):
            ours = enc.decode(enc.select_image(vision, i), emb)
            for k, phrase in enumerate(PHRASES):
                text = processor(text=phrase, return_tensors="pt")
                ref = model(pixel_values=ref_pixels[i : i + 1], **text)
                for name in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits", "semantic_seg"):
                    torch.testing.assert_close(getattr(ours, name)[k], getattr(ref, name)[0], atol=ATOL, rtol=0)


def test_tokenize_matches_processor(enc, reference):
    processor, _ = reference
    ids, mask = enc.tokenize(PHRASES)
    ref = processor(text=PHRASES, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    assert ids.shape == (4, sam3.TEXT_LENGTH)


def test_phrase_cache_runs_the_text_encoder_once(enc):
    calls = []
    hook = enc.model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        enc.clear_phrase_cache()
        with torch.inference_mode():
            a = enc.phrase_embeds(PHRASES)
            b = enc.phrase_embeds(tuple(PHRASES))
            assert a is b and len(calls) == 1 and enc.phrase_cache_size == 1
            enc.phrase_embeds(PHRASES[:2])  # another phrase set: another entry
            assert len(calls) == 2 and enc.phrase_cache_size == 2
            for n in range(sam3.PHRASE_CACHE_SIZE + 1):  # least recently used sets are dropped
                enc.phrase_embeds([f"thing {n}"])
            assert enc.phrase_cache_size == sam3.PHRASE_CACHE_SIZE
        enc.phrase_embeds(PHRASES[:1])  # under autograd: never cached (the result holds a graph)
        assert enc.phrase_cache_size == sam3.PHRASE_CACHE_SIZE
    finally:
        hook.remove()
        enc.clear_phrase_cache()
    assert enc.phrase_cache_size == 0


def test_overlong_phrase_is_refused(enc):
    with pytest.raises(ValueError, match="more than the 32 tokens"):
        enc.tokenize(["a " * 40 + "cat"])


def test_decode_takes_one_image(enc, photos):
    with torch.inference_mode():
        vision = enc.vision_embeds(enc.preprocess(photos[:2]))
        with pytest.raises(ValueError, match="vision embeddings of one image, got a batch of 2"):
            enc.decode(vision, enc.phrase_embeds(["cat"]))


def test_checkpoint_without_tokenizer_encodes_images_but_refuses_text(path, tmp_path, caplog, photos):
    d = tmp_path / "notok"
    shutil.copytree(path, d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (d / f).unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.sam3"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "no tokenizer files" in caplog.text
    assert enc.encode(photos[:1]).patches.shape == (1, 8, 8, 32)
    with pytest.raises(ValueError, match="has no tokenizer files"):
        enc.phrase_embeds(["cat"])


def test_missing_processor_falls_back(path, tmp_path, caplog, ref_pixels, photos):
    d = tmp_path / "noproc"
    shutil.copytree(path, d)
    (d / "processor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.sam3"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "SAM 3's reference preprocessing" in caplog.text
    torch.testing.assert_close(enc.preprocess(photos), ref_pixels, atol=1e-5, rtol=0)


def test_gradients_flow(enc, photos):
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    f.pooled.sum().backward()
    conv = enc.model.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0
    enc.zero_grad(set_to_none=True)


# -- PEFT ---------------------------------------------------------------------------------------------
def test_lora_adapter_saves_and_loads_with_peft(enc, path, tmp_path):
    from peft import PeftModel
    from transformers import Sam3Model

    from visionfm import adapters

    att, mlp = adapters.target_modules(enc, "attention"), adapters.target_modules(enc, "mlp")
    assert len(att) == 8 and {n.rsplit(".", 1)[1] for n in att} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(mlp) == 4 and all(n.startswith("vision_encoder.backbone.layers.") for n in att + mlp)
    ours_enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets="all")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the adapters away from identity
        for p in ours_enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    with torch.no_grad():
        ours = ours_enc(x).patches
        assert (ours - enc(x).patches).abs().max() > 1e-4
    out = adapters.save(ours_enc, tmp_path / "adapter")
    ref = sam3.Sam3Encoder(Sam3Model.from_pretrained(path).eval(), enc.preprocess_config, enc.info.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        PeftModel.from_pretrained(adapters.base_module(ref), str(out))
    with torch.no_grad():
        torch.testing.assert_close(ref(x).patches, ours, rtol=0, atol=1e-6)
