"""SAM 3 behind the task pipelines: ``pipeline("grounding", model=<sam3>)`` and ``pipeline("zero-shot-seg",
model=<sam3>)`` on the tiny random SAM 3 checkpoint. Their numbers are those of ``segment_concepts`` /
``sam3_semantic`` (checked against transformers and SegEarth-OV3's code in test_sam3_concepts.py); here: the same
results through the pipelines, transformers as users call it today for grounding, the shared work, labels and presets
as zero-shot-seg takes them, and clear errors."""

from __future__ import annotations

import pytest
import torch

import visionfm as vfm
from visionfm.pipelines.sam3_concepts import Sam3SegPipeline, sam3_semantic
from visionfm.testing import tiny_checkpoint

PHRASES = ["a person", "a cat", "camera"]
TH = 0.25  # tiny random weights score every query near 0.25 (test_sam3_concepts.py): some kept, some dropped
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(tiny_root):
    return tiny_checkpoint("sam3", root=tiny_root)


def test_grounding_matches_transformers_per_phrase_with_one_vision_pass_per_image(path, photos):
    from transformers import Sam3Model, Sam3Processor

    gr = vfm.pipeline("grounding", model=str(path), device="cpu", batch_size=2)
    assert gr.protocol["backend"] == "sam3"
    calls = []
    h = gr.concepts.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    out = gr(photos[:3], phrases=PHRASES, threshold=TH)
    h.remove()
    assert len(calls) == 2  # 3 images, batch 2: two backbone passes, not 3 x 3
    proc, model = Sam3Processor.from_pretrained(path), Sam3Model.from_pretrained(path).eval()
    n_kept = 0
    for img, res in zip(photos[:3], out, strict=True):
        assert res.presence is not None and res.presence.shape == (len(PHRASES),)
        for k, phrase in enumerate(PHRASES):
            inputs = proc(images=img, text=phrase, return_tensors="pt")
            with torch.no_grad():
                ref_out = model(**inputs)
            ref = proc.post_process_instance_segmentation(ref_out, threshold=TH, mask_threshold=0.5,
                                                          target_sizes=inputs["original_sizes"].tolist())[0]  # fmt: skip
            ref_scores = torch.sort(ref["scores"], descending=True).values
            mine = res.labels == k
            assert int(mine.sum()) == len(ref_scores)
            torch.testing.assert_close(res.scores[mine], ref_scores, atol=1e-4, rtol=0)
            assert abs(float(res.presence[k]) - float(ref_out.presence_logits.sigmoid())) < 1e-4
            n_kept += len(ref_scores)
        assert res.masks.shape[1:] == img.shape[:2] and res.masks.dtype == torch.bool
        assert res.to_dict() and all(d["label"] in PHRASES for d in res.to_dict())
    assert n_kept > 0


def test_grounding_default_threshold_is_sam3_processors(path, photos):
    gr = vfm.pipeline("grounding", model=str(path), device="cpu")
    res = gr(photos[0], phrases=PHRASES)
    assert res.protocol["threshold"] == 0.3 and bool((res.scores >= 0.3).all())


def test_grounding_refuses_options_that_do_not_apply(path, photos, tiny_root):
    with pytest.raises(ValueError, match="do not apply to SAM 3"):
        vfm.pipeline("grounding", model=str(path), device="cpu", refine=str(tiny_checkpoint("sam", root=tiny_root)))
    gr = vfm.pipeline("grounding", model=str(path), device="cpu")
    with pytest.raises(ValueError, match="text_threshold / cos_thresh"):
        gr(photos[0], phrases=PHRASES, cos_thresh=0.2)
    clip = vfm.pipeline("grounding", model=str(tiny_checkpoint("clip", root=tiny_root)), device="cpu")
    with pytest.raises(ValueError, match="mask_threshold applies to the SAM 3 backend"):
        clip(photos[0], phrases=PHRASES, mask_threshold=0.4)


def test_zero_shot_seg_on_sam3_is_sam3_semantic(path, photos):
    seg = vfm.pipeline("zero-shot-seg", model=str(path), device="cpu", batch_size=2)
    assert isinstance(seg, Sam3SegPipeline)
    labels = ["person; man", "cat", "camera; tripod"]
    out = seg(photos[:2], labels=labels, background=["sky", "wall"])
    ref = sam3_semantic(seg.encoder, list(photos[:2]), labels, background=["sky", "wall"])
    for a, b in zip(out, ref, strict=True):
        assert a.labels == b.labels and a.labels[0] == "background" and a.labels[1] == "person"
        assert torch.equal(a.label_map, b.label_map)
        torch.testing.assert_close(a.probs, b.probs, atol=1e-6, rtol=0)
    assert out[0].label_map.shape == photos[0].shape[:2]


def test_zero_shot_seg_on_sam3_takes_a_presets_labels(path, photos):
    from visionfm.pipelines.seg_presets import get_preset

    seg = vfm.pipeline("zero-shot-seg", model=str(path), device="cpu", preset="sclip-voc21")
    res = seg(photos[0])
    preset = get_preset("sclip-voc21")
    assert len(res.labels) == 1 + len(preset.labels) == 21
    assert res.protocol["preset"] == "sclip-voc21"
    with pytest.raises(ValueError, match="needs labels"):
        vfm.pipeline("zero-shot-seg", model=str(path), device="cpu")(photos[0])
