"""SigLIP 2 (fixed-resolution ``SiglipModel`` + Gemma tokenizer, and NaFlex ``Siglip2Model``): parity with
transformers' processors and models on the same tiny weights and real photos, text defaults, dense features, LoRA."""

from __future__ import annotations

import warnings

import pytest
import torch

import visionfm as vfm
from visionfm import adapters
from visionfm.foundation.clip import HFClipEncoder, HFSiglip2Encoder
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
TEXTS = ["A Photo of a CAT", "a red circle and a BLUE star", "An astronaut"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixed_dir(tiny_root):
    return tiny_checkpoint("siglip2", root=tiny_root)


@pytest.fixture(scope="module")
def naflex_dir(tiny_root):
    return tiny_checkpoint("siglip2-naflex", root=tiny_root)


def _t(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_fixed_resolution_parity_with_siglip_processor_and_model(fixed_dir, photos):
    from transformers import AutoModel, AutoProcessor

    enc = vfm.load_encoder(fixed_dir, device="cpu")
    assert isinstance(enc, HFClipEncoder) and enc.kind == "siglip" and enc.siglip_version == 2
    model = AutoModel.from_pretrained(fixed_dir).eval()
    proc = AutoProcessor.from_pretrained(fixed_dir)
    assert type(proc.image_processor).__name__.startswith("SiglipImageProcessor")
    pixels = proc(images=photos, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(enc.preprocess(photos), pixels, atol=1e-5, rtol=0)
    feats = enc.encode(photos, layers=[0])
    with torch.no_grad():
        vis = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        img = _t(model.get_image_features(pixel_values=pixels))
    h, w = feats.grid
    torch.testing.assert_close(feats.pooled, img, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.patches, vis.last_hidden_state.reshape(len(photos), h, w, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(feats.layers[0], vis.hidden_states[1].reshape(len(photos), h, w, -1), atol=ATOL, rtol=0)
    # text: lower-cased and padded to 64, as SigLIP 2 was trained (what Siglip2Processor does)
    tok = proc.tokenizer([t.lower() for t in TEXTS], padding="max_length", max_length=64, truncation=True,
                         return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        txt = _t(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
    torch.testing.assert_close(enc.encode_text(TEXTS), txt, atol=ATOL, rtol=0)
    assert abs(enc.logit_scale - float(model.logit_scale.detach().exp())) < 1e-6
    assert abs(enc.logit_bias - float(model.logit_bias.detach())) < 1e-6


def test_text_default_matches_siglip2_processor(fixed_dir, naflex_dir):
    from transformers import AutoProcessor, Siglip2Processor, Siglip2Tokenizer

    for path in (fixed_dir, naflex_dir):
        enc = vfm.load_encoder(path, device="cpu")
        ref = Siglip2Processor(
            image_processor=AutoProcessor.from_pretrained(naflex_dir).image_processor,
            tokenizer=Siglip2Tokenizer.from_pretrained(path),
        )(text=TEXTS, return_tensors="pt")
        ours = enc.tokenize(TEXTS)
        assert ours["input_ids"].shape == (len(TEXTS), 64)
        assert torch.equal(ours["input_ids"], ref["input_ids"])
        assert torch.equal(ours["attention_mask"], ref["attention_mask"])
    # lower-casing matters for these ids (the tiny vocabulary has both cases)
    raw = enc.tokenizer.backend_tokenizer.model.tokenize("CAT")
    assert [t.value for t in raw] != [t.value for t in enc.tokenizer.backend_tokenizer.model.tokenize("cat")]


def test_naflex_parity_mixed_aspect_batch(naflex_dir, photos):
    from transformers import AutoModel, AutoProcessor

    enc = vfm.load_encoder(naflex_dir, device="cpu")
    assert isinstance(enc, HFSiglip2Encoder) and enc.kind == "siglip2"
    model = AutoModel.from_pretrained(naflex_dir).eval()
    proc = AutoProcessor.from_pretrained(naflex_dir)
    inputs = proc(images=photos, text=TEXTS, return_tensors="pt")
    feats, shapes = enc.encode_with_shapes(photos, batch_size=3, layers=[-1])  # two batches with different grids
    assert torch.equal(shapes, inputs["spatial_shapes"].long())
    assert len({tuple(s) for s in shapes.tolist()}) > 1  # the photos do get different grids
    grid = (int(shapes[:, 0].max()), int(shapes[:, 1].max()))
    assert feats.grid == grid and feats.patches.shape == (len(photos), *grid, enc.info.width)
    with torch.no_grad():
        vis = model.vision_model(
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            spatial_shapes=inputs["spatial_shapes"],
            output_hidden_states=True,
        )
        img = _t(model.get_image_features(pixel_values=inputs["pixel_values"],
                                          pixel_attention_mask=inputs["pixel_attention_mask"],
                                          spatial_shapes=inputs["spatial_shapes"]))  # fmt: skip
        txt = _t(model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
    torch.testing.assert_close(feats.pooled, img, atol=ATOL, rtol=0)
    mask = enc.patch_mask(shapes, grid)
    for b, (h, w) in enumerate(shapes.tolist()):
        ref = vis.last_hidden_state[b, : h * w].reshape(h, w, -1)
        torch.testing.assert_close(feats.patches[b, :h, :w], ref, atol=ATOL, rtol=0)
        tap = vis.hidden_states[-1][b, : h * w].reshape(h, w, -1)
        torch.testing.assert_close(feats.layers[enc.info.num_layers - 1][b, :h, :w], tap, atol=ATOL, rtol=0)
        assert mask[b].sum() == h * w
    assert (feats.patches[~mask] == 0).all()
    torch.testing.assert_close(enc.encode_text(TEXTS), txt, atol=ATOL, rtol=0)
    # each image alone gives the same features as in the mixed batch
    alone = enc.encode(photos[3])
    h, w = shapes[3].tolist()
    torch.testing.assert_close(alone.pooled[0], feats.pooled[3], atol=ATOL, rtol=0)
    torch.testing.assert_close(alone.patches[0], feats.patches[3, :h, :w], atol=ATOL, rtol=0)
    # forward on an ordinary [B, 3, H, W] batch is one grid, as transformers on the same patches
    x = enc.preprocess(photos[:2])
    f = enc(x)
    assert f.grid == (x.shape[-2] // 16, x.shape[-1] // 16) == (16, 16)
    with torch.no_grad():
        packed = enc.patchify(x)
        n = packed.shape[1]
        ref = model.vision_model(pixel_values=packed, pixel_attention_mask=torch.ones(2, n, dtype=torch.long),
                                 spatial_shapes=torch.tensor([f.grid] * 2))  # fmt: skip
    torch.testing.assert_close(f.pooled, ref.pooler_output, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which", ["fixed", "naflex"])
def test_dense_features_and_zero_shot_seg(which, fixed_dir, naflex_dir, photos):
    from visionfm.foundation.dense import dense_features

    path = fixed_dir if which == "fixed" else naflex_dir
    enc = vfm.load_encoder(path, device="cpu")
    x = enc.preprocess(photos[:2])
    grid = (x.shape[-2] // enc.info.patch_size, x.shape[-1] // enc.info.patch_size)
    for mode in ("vanilla", "maskclip", "sclip", "clearclip", "naclip"):
        d = dense_features(enc, x, mode=mode)
        assert d.shape == (2, *grid, enc.info.embed_dim) and torch.isfinite(d).all(), mode
    # vanilla: the unchanged tower, so its last-block tokens are the encoder's patches; the head maps each token alone
    vm = enc.model.vision_model
    with torch.no_grad():
        f = enc(x)
        one = vm.head(f.patches[:1, :1, :1].reshape(1, 1, -1))
    torch.testing.assert_close(dense_features(enc, x, mode="vanilla")[0, 0, 0], one[0], atol=ATOL, rtol=0)
    seg = vfm.pipeline("zero-shot-seg", model=str(path), device="cpu")
    out = seg(photos[0], labels=["cat", "person", "cup"])
    assert tuple(out.label_map.shape) == photos[0].shape[:2]
    assert int(out.label_map.max()) < 3


def test_lora_adapter_loads_with_plain_peft(naflex_dir, fixed_dir, photos, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    for path in (fixed_dir, naflex_dir):
        enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets="all")
        names = {n.split(".")[-1] for n, m in enc.named_modules() if hasattr(m, "lora_A")}
        assert names == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in enc.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g) * 0.2)
        x = enc.preprocess(photos[:2])
        with torch.no_grad():
            ours = enc(x)
        out = adapters.save(enc, tmp_path / path.name)
        ref = AutoModel.from_pretrained(path).eval()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            pm = PeftModel.from_pretrained(ref, str(out)).eval()
        with torch.no_grad():
            if isinstance(enc, HFSiglip2Encoder):
                packed = enc.patchify(x)
                kw = dict(pixel_values=packed, pixel_attention_mask=torch.ones(packed.shape[:2], dtype=torch.long),
                          spatial_shapes=torch.tensor([ours.grid] * 2))  # fmt: skip
            else:
                kw = dict(pixel_values=x)
            img = _t(pm.get_image_features(**kw))
        torch.testing.assert_close(img, ours.pooled, atol=1e-5, rtol=0)
        with torch.no_grad(), pm.disable_adapter():
            base = _t(pm.get_image_features(**kw))
        assert (base - img).abs().max() > 1e-3  # the adapter does change the reference's output
        if isinstance(enc, HFSiglip2Encoder):  # and on a mixed-aspect batch, through Siglip2Processor
            from transformers import AutoProcessor

            inputs = AutoProcessor.from_pretrained(path)(images=photos, return_tensors="pt")
            with torch.no_grad():
                img = _t(pm.get_image_features(**inputs))
            torch.testing.assert_close(img, enc.encode(photos).pooled, atol=1e-5, rtol=0)


def test_aliases_resolve_to_the_clip_family():
    from visionfm.foundation.registry import get_spec

    for name, src in [("siglip2-base", "google/siglip2-base-patch16-224"),
                      ("siglip2-base-naflex", "google/siglip2-base-patch16-naflex"),
                      ("siglip2-so400m-naflex", "google/siglip2-so400m-patch16-naflex")]:  # fmt: skip
        spec = get_spec(name)
        assert spec.family == "clip" and spec.source == src and spec.backend == "transformers"


def test_naflex_max_num_patches_option_matches_siglip2_processor(naflex_dir, photos):
    """``load_encoder(..., max_num_patches=64)``: the grids, pixels and features of ``Siglip2ImageProcessor`` with
    ``max_num_patches=64`` and ``Siglip2Model`` (the checkpoint's own processor config says 256)."""
    from transformers import AutoModel, Siglip2ImageProcessor

    from visionfm.data.images import load_images
    from visionfm.foundation.preprocess import preprocess_uint8

    n_max = 64
    default = vfm.load_encoder(naflex_dir, device="cpu")
    enc = vfm.load_encoder(naflex_dir, device="cpu", max_num_patches=n_max)
    assert default.max_num_patches == 256 and enc.max_num_patches == n_max
    model = AutoModel.from_pretrained(naflex_dir).eval()
    proc = Siglip2ImageProcessor.from_pretrained(naflex_dir, max_num_patches=n_max)
    assert proc.max_num_patches == n_max
    inputs = proc(images=photos, return_tensors="pt")
    assert inputs["pixel_values"].shape[1] == n_max
    feats, shapes = enc.encode_with_shapes(photos, batch_size=3, layers=[0])
    _, shapes_default = default.encode_with_shapes(photos)
    assert torch.equal(shapes, inputs["spatial_shapes"].long())
    assert (shapes.prod(-1) <= n_max).all() and (shapes.prod(-1) > n_max // 2).all()
    assert (shapes.prod(-1) < shapes_default.prod(-1)).all()  # smaller grids than the default 256
    # pixel values: each image resized to its NaFlex size, patchified in the processor's order
    p = enc.info.patch_size
    for b, t in enumerate(load_images(photos)):
        hh, ww = enc.naflex_size(int(t.shape[-2]), int(t.shape[-1]))
        assert (hh // p, ww // p) == tuple(shapes[b].tolist())
        cfg = enc.preprocess_config.with_overrides(resize="exact", crop_size=(hh, ww))
        seq = enc.patchify(preprocess_uint8([t], cfg)[0])[0]
        torch.testing.assert_close(seq, inputs["pixel_values"][b, : seq.shape[0]], atol=1e-5, rtol=0)
    with torch.no_grad():
        vis = model.vision_model(**inputs, output_hidden_states=True)
        img = _t(model.get_image_features(**inputs))
    torch.testing.assert_close(feats.pooled, img, atol=ATOL, rtol=0)
    for b, (h, w) in enumerate(shapes.tolist()):
        torch.testing.assert_close(feats.patches[b, :h, :w], vis.last_hidden_state[b, : h * w].reshape(h, w, -1),
                                   atol=ATOL, rtol=0)  # fmt: skip
        torch.testing.assert_close(feats.layers[0][b, :h, :w], vis.hidden_states[1][b, : h * w].reshape(h, w, -1),
                                   atol=ATOL, rtol=0)  # fmt: skip
    # the square preprocess() size follows the option too: isqrt(64) = 8 patches a side
    x = enc.preprocess(photos[:2])
    assert tuple(x.shape[-2:]) == (8 * p, 8 * p) and enc.info.image_size == (8 * p, 8 * p)
    assert enc(x).grid == (8, 8)


def test_max_num_patches_is_rejected_without_naflex(fixed_dir, tiny_root):
    # a family without the option: the generic unknown-option error, before anything is built
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['max_num_patches'\] for family 'dinov2'"):
        vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu", max_num_patches=64)
    # the clip family has it, but only its SigLIP 2 NaFlex checkpoints can use it
    open_clip_dir = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    for path, what in [
        (fixed_dir, "is a transformers 'siglip' checkpoint"),
        (open_clip_dir, "is in the open_clip format"),
    ]:
        with pytest.raises(ValueError, match=rf"max_num_patches=.*SigLIP 2 NaFlex.*family 'clip'.*{what}"):
            vfm.load_encoder(path, device="cpu", max_num_patches=64)
    naflex = tiny_checkpoint("siglip2-naflex", root=tiny_root)
    with pytest.raises(ValueError, match="max_num_patches= must be >= 1"):
        vfm.load_encoder(naflex, device="cpu", max_num_patches=0)
    with pytest.raises(TypeError, match="max_num_patches= must be an int"):
        vfm.load_encoder(naflex, device="cpu", max_num_patches=64.0)
