"""ONNX export (visionfm export) and the onnxruntime encoder: parity with PyTorch within 1e-4 on tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.foundation.onnx_export import DENSE_EXPORT_MODES, export_onnx
from visionfm.foundation.onnx_runtime import OnnxEncoder
from visionfm.testing import tiny_checkpoint

IMAGES = [np.random.default_rng(i).integers(0, 255, (50, 70, 3), dtype=np.uint8) for i in range(3)]
TEXTS = ["a cat", "a red square on the left of a blue circle", "dog"]
#: every encoder family's tiny kinds (generators, detectors and the kinds tested for refusal below aside)
VISION_KINDS = [("clip", "open_clip"), ("clip", "transformers"), ("clip-resnet", None), ("clip-timm-vit", None),
                ("clip-timm-cnn", None), ("siglip", None), ("siglip2", None), ("metaclip2", None),
                ("aimv2-vision", None), ("dino", None), ("dinov2", None), ("dinov2-registers", None), ("dinov3", None),
                ("dinov3-convnext", None), ("radio", None), ("timm-vit", None), ("student", None), ("sam", None),
                ("sam2", None), ("edgetam", None), ("sam3", None)]  # fmt: skip


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    dense = {("clip", "open_clip"), ("clip", "transformers")}  # the dense graphs take a while: two towers suffice
    return {(k, b): export_onnx(tiny_checkpoint(k, b), root / f"{k}-{b}", dense=(k, b) in dense)
            for k, b in VISION_KINDS}  # fmt: skip


@pytest.mark.parametrize(("kind", "backend"), VISION_KINDS)
def test_vision_graph_matches_pytorch(exports, kind, backend):
    torch_enc = vfm.load_encoder(tiny_checkpoint(kind, backend), device="cpu")
    onnx_enc = OnnxEncoder(exports[(kind, backend)])
    a, b = torch_enc.encode(IMAGES), onnx_enc.encode(IMAGES, batch_size=2)  # batches of 2 and 1: dynamic batch
    assert b.grid == a.grid and b.pooled.shape == a.pooled.shape
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-4, rtol=0)
    torch.testing.assert_close(b.patches, a.patches, atol=1e-4, rtol=0)
    assert onnx_enc.info.backend == "onnxruntime" and onnx_enc.info.family == torch_enc.info.family


@pytest.mark.parametrize(("kind", "backend"), [("clip", "open_clip"), ("clip", "transformers"), ("siglip", None)])
def test_text_graph_keeps_labels_editable(exports, kind, backend):
    torch_enc = vfm.load_encoder(tiny_checkpoint(kind, backend), device="cpu")
    onnx_enc = OnnxEncoder(exports[(kind, backend)])
    for texts in (TEXTS, ["one new label"], [f"label number {i}" for i in range(7)]):  # any labels, any count
        torch.testing.assert_close(onnx_enc.encode_text(texts), torch_enc.encode_text(texts), atol=1e-4, rtol=0)
    assert onnx_enc.logit_scale == pytest.approx(torch_enc.logit_scale)
    # zero-shot classification on the exported graphs gives the torch pipeline's labels
    a = vfm.pipeline("zero-shot-classification", model=torch_enc)(IMAGES, labels=["cat", "dog", "car"])
    b = vfm.pipeline("zero-shot-classification", model=onnx_enc)(IMAGES, labels=["cat", "dog", "car"])
    assert [r[0]["label"] for r in a] == [r[0]["label"] for r in b]


def test_manifest_records_preprocessing_shapes_and_versions(exports):
    m = json.loads((exports[("clip", "open_clip")] / "manifest.json").read_text())
    assert m["format"] == "visionfm-onnx" and m["visionfm"] == vfm.__version__
    assert set(m["graphs"]) == {"vision", "text"} | {f"dense_{mode}" for mode in DENSE_EXPORT_MODES}
    h, w = m["info"]["image_size"]
    assert m["graphs"]["vision"]["inputs"]["pixel_values"] == [None, 3, h, w]
    assert m["graphs"]["vision"]["outputs"]["pooled"] == [None, m["info"]["embed_dim"]]
    assert m["preprocess"]["mean"] == list(m["info"]["mean"])
    assert "open_clip_config.json" in m["text"]["tokenizer_files"]
    vision_only = json.loads((exports[("dinov2", None)] / "manifest.json").read_text())
    assert set(vision_only["graphs"]) == {"vision"} and "text" not in vision_only


def test_bad_inputs_and_exports_fail_clearly(exports, tmp_path):
    enc = OnnxEncoder(exports[("dinov2", None)])
    with pytest.raises(ValueError, match="pixel_values must be"):
        enc(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no layer taps"):
        enc(torch.zeros(1, 3, *enc.info.image_size), layers=[0])
    with pytest.raises(TypeError, match="no text graph"):
        enc.encode_text(["a"])
    with pytest.raises(FileNotFoundError, match="not a visionfm ONNX export"):
        OnnxEncoder(tmp_path)


@pytest.mark.parametrize(("kind", "match"), [("siglip2-naflex", "NaFlex"), ("aimv2", "text tower has no ONNX")])
def test_families_not_yet_exportable_say_so(kind, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        export_onnx(tiny_checkpoint(kind), tmp_path / kind)


def test_cli_export(tmp_path):
    from visionfm.cli import main

    assert main(["export", str(tiny_checkpoint("dinov2")), str(tmp_path / "x"), "--format", "onnx"]) == 0
    assert (tmp_path / "x" / "vision.onnx").is_file() and (tmp_path / "x" / "manifest.json").is_file()


@pytest.mark.parametrize("mode", ["vanilla", "maskclip"])
@pytest.mark.parametrize(("kind", "backend"), [("clip", "open_clip"), ("clip", "transformers")])
def test_zero_shot_seg_runs_on_the_exported_dense_graphs(exports, kind, backend, mode):
    from visionfm.foundation.dense import dense_features

    torch_enc = vfm.load_encoder(tiny_checkpoint(kind, backend), device="cpu")
    onnx_enc = OnnxEncoder(exports[(kind, backend)])
    x = torch_enc.normalize(torch.rand(2, 3, *torch_enc.info.image_size))
    with torch.no_grad():
        torch.testing.assert_close(dense_features(onnx_enc, x, mode), dense_features(torch_enc, x, mode),
                                   atol=1e-4, rtol=0)  # fmt: skip
    labels = ["cat", "dog", "red square"]
    a = vfm.pipeline("zero-shot-seg", model=torch_enc, mode=mode)(IMAGES, labels=labels)
    b = vfm.pipeline("zero-shot-seg", model=onnx_enc, mode=mode)(IMAGES, labels=labels)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.label_map == rb.label_map).float().mean() > 0.999
        torch.testing.assert_close(torch.as_tensor(rb.probs), torch.as_tensor(ra.probs), atol=1e-3, rtol=0)


def test_dense_modes_refuse_what_was_not_exported(exports):
    from visionfm.foundation.dense import dense_features

    enc = OnnxEncoder(exports[("clip", "open_clip")])
    x = torch.zeros(1, 3, *enc.info.image_size)
    with pytest.raises(ValueError, match="'proxy' was not exported"):
        dense_features(enc, x, "proxy")
    with pytest.raises(ValueError, match="default settings only"):
        dense_features(enc, x, "naclip", naclip_sigma=3.0)
    with pytest.raises(ValueError, match="native size"):
        dense_features(enc, torch.zeros(1, 3, 32, 48), "maskclip")


def test_pipeline_runtime_onnx_exports_once_and_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONFM_CACHE", str(tmp_path))
    path = tiny_checkpoint("clip")
    labels = ["cat", "dog", "car"]
    a = vfm.pipeline("zero-shot-classification", model=path)(IMAGES, labels=labels)
    onnx_pipe = vfm.pipeline("zero-shot-classification", model=path, runtime="onnx")
    assert isinstance(onnx_pipe.encoder, OnnxEncoder)
    b = onnx_pipe(IMAGES, labels=labels)
    assert [r[0]["label"] for r in a] == [r[0]["label"] for r in b]
    exported = list((tmp_path / "onnx").iterdir())
    assert len(exported) == 1
    again = vfm.pipeline("zero-shot-classification", model=path, runtime="onnx")  # reuses the export
    assert again.encoder.path == exported[0]
    with pytest.raises(ValueError, match="runtime='tensorrt' is not supported"):
        vfm.pipeline("zero-shot-classification", model=path, runtime="tensorrt")


# -- SAM, SAM 2, EdgeTAM: image encoder + prompt decoder -------------------------------------------------------------
SAM_KINDS = ["sam", "sam2", "edgetam"]


def _prompt_cases(enc, B=2, N=3):
    """(name, decode_masks kwargs) for points, boxes, both, and mask prompts alone and with points or boxes."""
    g = torch.Generator().manual_seed(0)
    S, s = enc.info.image_size[0], enc.low_res_size
    pts = torch.rand(B, N, 2, 2, generator=g) * S
    labels = torch.tensor([1, 0]).expand(B, N, 2).clone()
    labels[0, 0, 1] = -10  # a padding point
    boxes = torch.sort(torch.rand(B, N, 2, 2, generator=g) * S, dim=2).values.reshape(B, N, 4)
    masks = torch.randn(B, 1, s, s, generator=g)
    return [("points", {"points": pts, "labels": labels}), ("boxes", {"boxes": boxes}),
            ("points+boxes", {"points": pts, "labels": labels, "boxes": boxes}), ("mask", {"masks": masks}),
            ("points+mask", {"points": pts[:, :1], "labels": labels[:, :1], "masks": masks}),
            ("boxes+mask", {"boxes": boxes[:, :1], "masks": masks})]  # fmt: skip


@pytest.mark.parametrize("kind", SAM_KINDS)
def test_prompt_tokens_decode_as_the_model_does(kind):
    """decode_tokens (the fixed signature the graph is traced from) gives decode_masks' masks for every prompt kind."""
    from visionfm.foundation.sam.prompting import prompt_tokens

    enc = vfm.load_encoder(tiny_checkpoint(kind), device="cpu")
    with torch.no_grad():
        tensors = enc.decoder_inputs(enc.normalize(torch.rand(2, 3, *enc.info.image_size)))
        for name, kw in _prompt_cases(enc):
            masks = kw.get("masks")
            coords, labels = prompt_tokens(enc.prompt_variant, kw.get("points"), kw.get("labels"), kw.get("boxes"),
                                           (2, 1))  # fmt: skip
            for multimask in (False, True):
                a = enc.decode_masks(tensors, multimask=multimask, **kw)
                mask_input = masks if masks is not None else torch.zeros(2, 1, enc.low_res_size, enc.low_res_size)
                has_mask = torch.ones(1) if masks is not None else torch.zeros(1)
                b = enc.decode_tokens(tensors, coords, labels, mask_input, has_mask, multimask)
                assert b[0].shape == a[0].shape, name
                torch.testing.assert_close(b[0], a[0], atol=1e-6, rtol=0, msg=name)
                torch.testing.assert_close(b[1], a[1], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("kind", SAM_KINDS)
def test_prompt_decoder_graphs_match_pytorch(exports, kind):
    from visionfm.foundation.onnx_runtime import OnnxPromptableEncoder, load_onnx_encoder

    enc = vfm.load_encoder(tiny_checkpoint(kind), device="cpu")
    onnx_enc = load_onnx_encoder(exports[(kind, None)])
    assert isinstance(onnx_enc, OnnxPromptableEncoder) and onnx_enc.low_res_size == enc.low_res_size
    assert onnx_enc.auto_mask_defaults == enc.auto_mask_defaults
    x = enc.normalize(torch.rand(2, 3, *enc.info.image_size))
    with torch.no_grad():
        tensors = enc.decoder_inputs(x)
        exported = onnx_enc.decoder_inputs(x)
        assert len(exported) == len(tensors)
        for a, b in zip(tensors, exported, strict=True):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
        for name, kw in _prompt_cases(enc):  # the torch image tensors: the decoder graph alone is compared
            for multimask in (False, True):
                a = enc.decode_masks(tensors, multimask=multimask, **kw)
                b = onnx_enc.decode_masks(tensors, multimask=multimask, **kw)
                assert b[0].shape == a[0].shape, name
                torch.testing.assert_close(b[0], a[0], atol=1e-4, rtol=0, msg=name)
                torch.testing.assert_close(b[1], a[1], atol=1e-4, rtol=0, msg=name)
    m = json.loads((exports[(kind, None)] / "manifest.json").read_text())
    assert {"vision", "prompt_decoder", "prompt_decoder_multimask"} <= set(m["graphs"])
    assert m["sam"]["variant"] == enc.prompt_variant


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_mask_generation_gives_the_same_masks_on_both_runtimes(exports, kind):
    a = vfm.pipeline("mask-generation", model=tiny_checkpoint(kind), device="cpu")
    b = vfm.pipeline("mask-generation", model=exports[(kind, None)], runtime="onnx")
    prompts = {"points": [[10, 12], [40, 30]], "boxes": [[5, 5, 30, 40], [20, 10, 60, 45]]}
    for ra, rb in zip(a(IMAGES, **prompts), b(IMAGES, **prompts), strict=True):
        assert ra.masks.shape == rb.masks.shape == (2, 50, 70)
        assert torch.equal(ra.masks, rb.masks)
        torch.testing.assert_close(rb.scores, ra.scores, atol=1e-4, rtol=0)
    opts = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # random weights: keep all
    ga, gb = a.generate(IMAGES[0], **opts), b.generate(IMAGES[0], **opts)
    assert len(ga) > 0 and len(gb) == len(ga)
    assert torch.equal(ga.masks, gb.masks)
    torch.testing.assert_close(gb.scores, ga.scores, atol=1e-4, rtol=0)


def test_memory_arena_is_off_unless_asked(exports):
    from visionfm.foundation.onnx_runtime import load_onnx_encoder

    off = load_onnx_encoder(exports[("dinov2", None)])
    on = load_onnx_encoder(exports[("dinov2", None)], memory_arena=True)
    assert off._vision.get_session_options().enable_cpu_mem_arena is False
    assert on._vision.get_session_options().enable_cpu_mem_arena is True
    torch.testing.assert_close(on.encode(IMAGES).pooled, off.encode(IMAGES).pooled, atol=0, rtol=0)
