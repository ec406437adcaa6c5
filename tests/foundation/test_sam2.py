"""SAM 2 / 2.1 and EdgeTAM in the sam family: parity with transformers' ``Sam2ImageProcessor`` and
``Sam2Model`` / ``EdgeTamModel`` on tiny random checkpoints, the hub's ``*_video`` format, and PEFT adapters that
load with plain ``peft``."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest
import torch

import visionfm as vfm
from visionfm import adapters
from visionfm.foundation import sam
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
KINDS = ["sam2", "edgetam"]
MODEL_CLASS = {"sam2": "Sam2Model", "edgetam": "EdgeTamModel"}
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
def reference(kind, path):
    import transformers

    proc = transformers.AutoImageProcessor.from_pretrained(path)
    return proc, getattr(transformers, MODEL_CLASS[kind]).from_pretrained(path).eval()


@pytest.fixture(scope="module")
def ref_out(reference, photos):
    """The reference processor's output and ``get_image_embeddings`` (three levels, finest first)."""
    processor, model = reference
    inputs = processor(images=photos, return_tensors="pt")
    return inputs, model.get_image_embeddings(inputs["pixel_values"])


def test_detect_and_info(kind, enc, path, tmp_path):
    assert sam.detect(path) == "transformers"
    assert sam.detect(tmp_path) is None
    assert isinstance(enc, sam.Sam2Encoder) and isinstance(enc, sam.PromptableEncoder)
    assert enc.variant == kind and type(enc.model).__name__ == MODEL_CLASS[kind]
    i = enc.info
    assert (i.family, i.backend, i.name) == ("sam", "transformers", str(path))
    assert (i.embed_dim, i.width, i.patch_size, i.image_size) == (32, 32, 16, (128, 128))
    assert (i.has_text, i.num_registers) == (False, 0)
    assert i.num_layers == {"sam2": 5, "edgetam": 4}[kind]  # Hiera blocks / RepViT stages
    assert i.mean == pytest.approx(sam.SAM_MEAN) and i.std == pytest.approx(sam.SAM_STD)
    assert hasattr(enc.model, "prompt_encoder") and hasattr(enc.model, "mask_decoder")
    assert enc.auto_mask_defaults is sam.SAM2_AUTO_MASKS and enc.low_res_size == 32


def test_preprocess_config_is_a_square_resize(enc):
    pp = enc.preprocess_config
    assert (pp.resize, pp.crop_size, pp.pad_size, pp.interpolation) == ("exact", (128, 128), None, "bilinear")


def test_pixel_values_match_processor(enc, ref_out, photos):
    inputs, _ = ref_out
    ours, original, resized = enc.preprocess_with_sizes(photos)
    assert ours.shape == inputs["pixel_values"].shape == (4, 3, 128, 128)
    torch.testing.assert_close(ours, inputs["pixel_values"], atol=1e-5, rtol=0)
    assert original == [tuple(int(v) for v in s) for s in inputs["original_sizes"]]
    assert set(resized) == {(128, 128)}  # no aspect-preserving resize, no padding


def test_features_match_image_embeddings(enc, ref_out, photos):
    _, emb = ref_out
    assert [tuple(e.shape) for e in emb] == [(4, 4, 32, 32), (4, 8, 16, 16), (4, 32, 8, 8)]
    f = enc.encode(photos)
    assert f.grid == (8, 8) and f.patches.shape == (4, 8, 8, 32) and f.pooled.shape == (4, 32)
    assert f.cls is None and f.registers is None and f.layers == {}
    torch.testing.assert_close(f.patches, emb[-1].permute(0, 2, 3, 1), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.pooled, emb[-1].mean(dim=(2, 3)), atol=ATOL, rtol=0)


def test_decoder_inputs_are_get_image_embeddings(enc, ref_out):
    inputs, emb = ref_out
    with torch.inference_mode():
        ours = enc.decoder_inputs(inputs["pixel_values"])
    assert len(ours) == 3
    for a, b in zip(ours, emb, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_layers_tap_the_backbone(kind, enc, reference, ref_out, photos):
    _, model = reference
    x = ref_out[0]["pixel_values"][:2]
    f = enc.encode(photos[:2], layers=[0, -1])
    last = enc.info.num_layers - 1
    assert set(f.layers) == {0, last}
    with torch.no_grad():
        if kind == "sam2":  # hidden_states: the patch embedding, then every Hiera block
            want = model.vision_encoder(x, output_hidden_states=True).hidden_states[1:]
        else:  # the timm RepViT's four stages
            want = [s.permute(0, 2, 3, 1) for s in model.vision_encoder.backbone(x).last_hidden_state]
    assert len(want) == enc.info.num_layers
    for i, t in f.layers.items():
        torch.testing.assert_close(t, want[i], atol=ATOL, rtol=0)
    assert f.layers[0].shape[1:3] == (32, 32) and f.layers[last].shape[1:3] == (4, 4)  # each on its stage's grid
    with pytest.raises(ValueError, match="out of range"):
        enc.encode(photos[:1], layers=[enc.info.num_layers])


def test_batching_and_gradients(enc, photos):
    one = enc.encode(photos, batch_size=1, layers=[1], progress=False)
    four = enc.encode(photos, batch_size=4, layers=[1])
    torch.testing.assert_close(one.patches, four.patches, atol=1e-5, rtol=0)
    torch.testing.assert_close(one.layers[1], four.layers[1], atol=1e-5, rtol=0)
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    assert f.pooled.requires_grad  # no no_grad in forward (get_image_embeddings has one)
    f.pooled.sum().backward()
    grads = [p.grad for p in enc.model.vision_encoder.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    enc.zero_grad(set_to_none=True)


def test_hub_video_checkpoints_load(kind, path, tmp_path, photos):
    """facebook/sam2(.1)-hiera-* and yonigozlan/EdgeTAM-hf are ``*_video`` checkpoints: the image parts load."""
    import transformers

    image_model = getattr(transformers, MODEL_CLASS[kind]).from_pretrained(path)
    prefix = {"sam2": "Sam2Video", "edgetam": "EdgeTamVideo"}[kind]
    cfg = image_model.config.to_dict()
    sub = {
        k: {n: v for n, v in cfg[k].items() if n != "model_type"}
        for k in ("prompt_encoder_config", "mask_decoder_config")
    }
    vcfg = getattr(transformers, f"{prefix}Config")(
        vision_config=cfg["vision_config"], memory_attention_hidden_size=32, memory_encoder_hidden_size=32,
        memory_encoder_output_channels=16, mem_dim=16, **sub,
    )  # fmt: skip
    torch.manual_seed(1)
    video = getattr(transformers, f"{prefix}Model")(vcfg)
    d = tmp_path / "video"
    video.save_pretrained(d)
    for f in ("preprocessor_config.json", "processor_config.json"):
        shutil.copy(path / f, d / f)
    assert json.loads((d / "config.json").read_text())["model_type"] == f"{kind}_video"
    enc = vfm.load_encoder(d, device="cpu")
    assert isinstance(enc, sam.Sam2Encoder) and enc.variant == kind
    ref = getattr(transformers, MODEL_CLASS[kind]).from_pretrained(d).eval()  # how transformers' docs load them
    x = enc.preprocess(photos[:2])
    torch.testing.assert_close(enc.encode(photos[:2]).patches, ref.get_image_embeddings(x)[-1].permute(0, 2, 3, 1),
                               atol=ATOL, rtol=0)  # fmt: skip


def test_missing_processor_falls_back(path, tmp_path, caplog):
    d = tmp_path / "bare"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").unlink()
    (d / "processor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="visionfm.foundation.sam"):
        enc = vfm.load_encoder(d, device="cpu")
    assert "SAM 2's reference preprocessing" in caplog.text
    assert enc.preprocess_config == vfm.load_encoder(path, device="cpu").preprocess_config


def test_processor_of_another_size_is_refused(path, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(path, d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg["size"] = {"height": 96, "width": 96}
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"resized to 128x128"):
        vfm.load_encoder(d, device="cpu")


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models() if m.family == "sam"}
    for version in ("2", "2.1"):
        for size in ("tiny", "small", "base-plus", "large"):
            spec = specs[f"sam{version}-hiera-{size}"]
            assert spec.source == f"facebook/sam{version}-hiera-{size}" and spec.backend == "transformers"
    assert specs["edgetam"].source == "yonigozlan/EdgeTAM-hf"
    assert specs["sam-vit-base"].source == "facebook/sam-vit-base"  # SAM 1 unchanged


# -- PEFT ----------------------------------------------------------------------------------------------
def test_lora_targets_hiera_attention_and_mlp(tiny_root):
    enc = vfm.load_encoder(tiny_checkpoint("sam2", root=tiny_root), device="cpu")
    att = adapters.target_modules(enc, "attention")
    mlp = adapters.target_modules(enc, "mlp")
    n_blocks = len(enc.model.vision_encoder.backbone.blocks)
    assert len(att) == len(mlp) == 2 * n_blocks
    assert {n.rsplit(".", 1)[-1] for n in att} == {"qkv", "proj"}
    assert {n.rsplit(".", 1)[-1] for n in mlp} == {"proj_in", "proj_out"}
    assert all(n.startswith("vision_encoder.backbone.blocks.") for n in att + mlp)


def test_lora_on_the_sam2_image_encoder_loads_with_peft(tiny_root, photos, tmp_path):
    import transformers
    from peft import PeftModel

    path = tiny_checkpoint("sam2", root=tiny_root)
    enc = vfm.load_encoder(path, device="cpu")
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        before = enc(x).patches
    adapters.attach(enc, "lora", r=4, targets="attention")
    lora = [n for n, m in enc.model.named_modules() if hasattr(m, "lora_A")]
    assert len(lora) == 2 * len(enc.model.vision_encoder.backbone.blocks)
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).patches, before, atol=1e-6, rtol=0)  # identity at init
    enc(x).patches.square().sum().backward()
    assert all(p.grad is not None for _, p in trainable)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in trainable:
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
        ours = enc(x).patches
    assert (ours - before).abs().max() > 1e-4
    out = adapters.save(enc, tmp_path / "adapter")
    ref_model = transformers.Sam2Model.from_pretrained(path).eval()
    ref = sam.Sam2Encoder(ref_model, enc.preprocess_config, enc.info.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        PeftModel.from_pretrained(ref_model, str(out))
    with torch.no_grad():
        torch.testing.assert_close(ref(x).patches, ours, atol=1e-5, rtol=0)


def test_edgetam_adapters_go_on_repvit_mlps(tiny_root, photos, tmp_path):
    import transformers
    from peft import PeftModel

    path = tiny_checkpoint("edgetam", root=tiny_root)
    enc = vfm.load_encoder(path, device="cpu")
    with pytest.raises(ValueError, match="attention"):  # a CNN backbone: no attention to adapt
        adapters.target_modules(enc, "attention")
    mlp = adapters.target_modules(enc, "mlp")
    assert mlp and all(".timm_model.stages_" in n and n.endswith(("conv1.c", "conv2.c")) for n in mlp)
    assert {n.split(".")[-3] for n in mlp} == {"channel_mixer", "ffn"}
    x = enc.preprocess(photos[:1])
    with torch.no_grad():
        before = enc(x).patches
    adapters.attach(enc, "lora", r=2, targets="mlp")
    with torch.no_grad():
        torch.testing.assert_close(enc(x).patches, before, atol=1e-6, rtol=0)
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
        ours = enc(x).patches
    assert (ours - before).abs().max() > 1e-4
    out = adapters.save(enc, tmp_path / "adapter")
    ref_model = transformers.EdgeTamModel.from_pretrained(path).eval()
    ref_model.config.tie_word_embeddings = False  # what plain-peft users of EdgeTamModel set (see sam.untie_edgetam)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        PeftModel.from_pretrained(ref_model, str(out))
    ref = sam.Sam2Encoder(ref_model, enc.preprocess_config, enc.info.name)
    with torch.no_grad():
        torch.testing.assert_close(ref(x).patches, ours, atol=1e-5, rtol=0)
