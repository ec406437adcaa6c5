"""AIMv2 family: parity with transformers' own processor, model and PEFT on tiny random checkpoints.

Two kinds: ``aimv2`` (``Aimv2Model``, image and text towers, as ``apple/aimv2-large-patch14-224-lit``) and
``aimv2-vision`` (``Aimv2VisionModel`` without a pooling head, as the released ``apple/aimv2-*`` image encoders).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm import adapters
from visionfm.foundation import aimv2  # registers the family until families.py imports it
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
KINDS = ["aimv2", "aimv2-vision"]
TEXTS = ["a photo of a cat", "an astronaut in a white suit on the moon", "coffee", "a black and white photograph"]
GRID = (4, 4)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def path(kind, tiny_root):
    return tiny_checkpoint(kind, root=tiny_root)


@pytest.fixture(scope="module")
def lit_path(tiny_root):
    return tiny_checkpoint("aimv2", root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


@pytest.fixture(scope="module")
def reference(path):
    from transformers import AutoImageProcessor, AutoModel

    return AutoImageProcessor.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def ref_out(reference, photos):
    """Reference pixel values and image-tower output (hidden states included) for all photos in one batch."""
    processor, model = reference
    pixels = processor(images=photos, return_tensors="pt")["pixel_values"]
    vm = model.vision_model if model.config.model_type == "aimv2" else model
    with torch.no_grad():
        out = vm(pixel_values=pixels, output_hidden_states=True)
    return pixels, out


def _grid_of(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], *GRID, tokens.shape[-1])


def test_detect_and_info(enc, path, kind, tmp_path):
    assert aimv2.detect(path) == "transformers"
    assert aimv2.detect(tmp_path) is None
    text = kind == "aimv2"
    assert isinstance(enc, aimv2.Aimv2TextEncoder if text else aimv2.Aimv2VisionEncoder)
    i = enc.info
    assert (i.family, i.backend, i.name) == ("aimv2", "transformers", str(path))
    assert (i.embed_dim, i.width, i.patch_size, i.image_size) == ((24 if text else 32), 32, 14, (56, 56))
    assert i.mean == pytest.approx(aimv2.OPENAI_MEAN) and i.std == pytest.approx(aimv2.OPENAI_STD)
    assert (i.has_text, i.num_layers, i.num_registers) == (text, 2, 0)
    assert not enc.training


def test_checkpoint_loads_with_transformers_auto_classes(lit_path):
    from transformers import Aimv2Model, AutoProcessor, CLIPImageProcessor, CLIPProcessor

    proc = AutoProcessor.from_pretrained(lit_path)
    assert isinstance(proc, CLIPProcessor) and isinstance(proc.image_processor, CLIPImageProcessor)
    assert type(vfm.load_encoder(lit_path, device="cpu").model) is Aimv2Model


def test_pixel_values_match_processor(enc, ref_out, photos):
    ours = enc.preprocess(photos)
    assert ours.shape == ref_out[0].shape == (4, 3, 56, 56)
    torch.testing.assert_close(ours, ref_out[0], atol=1e-5, rtol=0)


def test_features_match_reference(enc, reference, ref_out, photos, kind):
    pixels, out = ref_out
    f = enc.encode(photos)
    assert f.grid == GRID and f.cls is None and f.registers is None and f.layers == {}
    assert out.last_hidden_state.shape[1] == 16  # no class token: every token is a patch
    torch.testing.assert_close(f.patches, _grid_of(out.last_hidden_state), atol=ATOL, rtol=0)
    model = reference[1]
    if kind == "aimv2":
        with torch.no_grad():
            ref = model.get_image_features(pixel_values=pixels)
        ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
        assert f.pooled.shape == (4, 24)
        torch.testing.assert_close(f.pooled, ref, atol=ATOL, rtol=0)
    else:  # the released image encoders have no head: transformers pools nothing, we average the patch tokens
        assert out.pooler_output is None
        torch.testing.assert_close(f.pooled, out.last_hidden_state.mean(1), atol=ATOL, rtol=0)


def test_layers_match_hidden_states(enc, ref_out, photos):
    _, out = ref_out
    hs = out.hidden_states
    assert len(hs) == enc.info.num_layers + 1  # embeddings, then each block's output
    f = enc.encode(photos[:2], layers=[0, -1])
    assert set(f.layers) == {0, 1}
    for i, t in f.layers.items():
        assert t.shape == (2, *GRID, 32)
        torch.testing.assert_close(t, _grid_of(hs[i + 1][:2]), atol=ATOL, rtol=0)
    assert not torch.allclose(f.layers[1], f.patches, atol=1e-3)  # raw block output, before the final RMS norm


def test_encode_text_and_logits_match_reference(lit_path, photos):
    from transformers import AutoModel, AutoProcessor

    enc = vfm.load_encoder(lit_path, device="cpu")
    proc, model = AutoProcessor.from_pretrained(lit_path), AutoModel.from_pretrained(lit_path).eval()
    inputs = proc(text=TEXTS, images=photos, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        ref = model(**inputs)
    ref_text = ref_text if isinstance(ref_text, torch.Tensor) else ref_text.pooler_output
    ours = enc.encode_text(TEXTS)
    assert ours.shape == (4, 24)
    torch.testing.assert_close(ours, ref_text, atol=ATOL, rtol=0)
    # the longest text alone (a batch with no padding) gives the same embedding, as transformers' eager attention
    # does; transformers' default SDPA path drops the causal mask for an unpadded batch (fixed in the encoder)
    alone = enc.encode_text(TEXTS[1])
    torch.testing.assert_close(alone, ours[1:2], atol=ATOL, rtol=0)
    eager = AutoModel.from_pretrained(lit_path, attn_implementation="eager").eval()
    one = proc(text=TEXTS[1:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref_alone = eager.get_text_features(**one)
    torch.testing.assert_close(alone, getattr(ref_alone, "pooler_output", ref_alone), atol=ATOL, rtol=0)
    logits = enc.logit_scale * F.normalize(enc.encode(photos).pooled, dim=-1) @ F.normalize(ours, dim=-1).T
    torch.testing.assert_close(logits, ref.logits_per_image, atol=ATOL, rtol=0)
    assert enc.logit_bias is None and enc.context_length == 77


def test_zero_shot_classification_pipeline(lit_path, photos):
    from transformers import AutoModel, AutoProcessor

    labels = ["cat", "astronaut", "coffee"]
    clf = vfm.pipeline("zero-shot-classification", model=str(lit_path), device="cpu")
    out = clf(photos, labels=labels, top_k=None)
    assert len(out) == 4 and all(sorted(r["label"] for r in o) == sorted(labels) for o in out)
    # the same scores as transformers' model on the same prompts (template "a photo of a {}."). They tokenize to
    # the same length (no padding), where transformers' SDPA path would attend bidirectionally: eager is causal
    proc = AutoProcessor.from_pretrained(lit_path)
    model = AutoModel.from_pretrained(lit_path, attn_implementation="eager").eval()
    inputs = proc(text=[f"a photo of a {x}." for x in labels], images=photos, return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(-1)
    for o, p in zip(out, probs):
        got = {r["label"]: r["score"] for r in o}
        assert [got[x] for x in labels] == pytest.approx(p.tolist(), abs=1e-4)


def test_vision_only_has_no_text(tiny_root):
    enc = vfm.load_encoder(tiny_checkpoint("aimv2-vision", root=tiny_root), device="cpu")
    with pytest.raises(TypeError, match="no text tower"):
        enc.encode_text("a cat")
    with pytest.raises(TypeError, match="text-capable"):
        vfm.pipeline("zero-shot-classification", model=enc)


# -- adapters ------------------------------------------------------------------------------------------
def test_peft_targets(enc, kind):
    pre = "vision_model." if kind == "aimv2" else ""
    att = adapters.target_modules(enc, "attention")
    mlp = adapters.target_modules(enc, "mlp")
    assert att == [
        f"{pre}encoder.layers.{i}.attention.{p}" for i in (0, 1) for p in ("k_proj", "v_proj", "q_proj", "out_proj")
    ]
    assert mlp == [f"{pre}encoder.layers.{i}.ffn.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")]


def _outputs(enc, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = enc(x)
    return torch.cat([f.pooled.flatten(), f.patches.flatten()])


def test_lora_adapter_loads_with_plain_peft(path, kind, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets="all")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    ours = _outputs(enc, x)
    out = adapters.save(enc, tmp_path / "adapter")

    base = AutoModel.from_pretrained(path).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        PeftModel.from_pretrained(base, str(out))  # injects the adapter into ``base`` in place
    pp, name = enc.preprocess_config, enc.info.name
    if kind == "aimv2":
        ref = aimv2.Aimv2TextEncoder(base, AutoTokenizer.from_pretrained(path), pp, name)
    else:
        ref = aimv2.Aimv2VisionEncoder(base, pp, name)
    before = _outputs(vfm.load_encoder(path, device="cpu"), x)
    assert (ours - before).abs().max() > 1e-3  # the adapter changes the outputs ...
    torch.testing.assert_close(_outputs(ref, x), ours, atol=1e-6, rtol=0)  # ... and PEFT reproduces them
    fresh = adapters.load_adapter(vfm.load_encoder(path, device="cpu"), out)
    assert torch.equal(_outputs(fresh, x), ours)


def test_native_resolution_processor_falls_back_to_the_config_size(tiny_root, tmp_path, caplog):
    """``apple/aimv2-large-patch14-native`` turns resize and crop off (images at their own size, not batchable):
    visionfm resizes to the config's ``image_size`` instead, keeping the processor's mean/std, and says so."""
    import json
    import shutil

    src = tiny_checkpoint("aimv2-vision", root=tiny_root)
    path = tmp_path / "native"
    shutil.copytree(src, path)
    pp = json.loads((path / "preprocessor_config.json").read_text())
    (path / "preprocessor_config.json").write_text(json.dumps({**pp, "do_resize": False, "do_center_crop": False}))
    with caplog.at_level("WARNING", logger="visionfm.foundation.aimv2"):
        enc = vfm.load_encoder(path, device="cpu")
    assert "native resolution" in caplog.text
    assert enc.info.image_size == (56, 56) and enc.info.mean == pytest.approx(aimv2.OPENAI_MEAN)
