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
