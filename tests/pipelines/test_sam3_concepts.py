"""SAM 3 concept segmentation (visionfm.pipelines.sam3_concepts) on the tiny random SAM 3 checkpoint:

- ``segment_concepts`` against transformers as users run it today (one ``Sam3Processor`` + ``Sam3Model`` call per
  (image, phrase), then ``post_process_instance_segmentation``), and the shared work (one vision pass per image, one
  text pass per phrase set);
- ``sam3_semantic`` against SegEarth-OV3's own fusion code (tests/pipelines/golden/segearth_ov3.safetensors, made by
  tools/seg_goldens/make_segearth_ov3.py);
- ``segment_everything``'s labelling and cross-class NMS.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.pipelines.sam3_concepts import ConceptResult, sam3_semantic, segment_concepts
from visionfm.testing import tiny_checkpoint

PHRASES = ["a person", "a cat", "a cup of coffee", "camera"]
GOLDEN = Path(__file__).parent / "golden" / "segearth_ov3.safetensors"
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


def _reference_instances(reference, image, phrase, threshold):
    """transformers as users run it: one processor + model call for this (image, phrase), then the post-processing;
    instances sorted best first (stable), as visionfm returns them."""
    processor, model = reference
    inputs = processor(images=image, text=phrase, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    res = processor.post_process_instance_segmentation(
        out, threshold=threshold, mask_threshold=0.5, target_sizes=inputs["original_sizes"].tolist()
    )[0]
    order = torch.sort(res["scores"], descending=True, stable=True).indices
    presence = float(out.presence_logits.sigmoid())
    return res["scores"][order], res["boxes"][order], res["masks"][order].bool(), presence


def test_instances_match_transformers(enc, reference, photos):
    """Every (image, phrase) pair of 4 photos x 4 phrases equals transformers' instances: scores and boxes within
    1e-4, masks equal on >= 99.9% of pixels, presence within 1e-5.

    The tiny random weights score every query near 0.25 (sigmoid(logit) * presence, logits near 0, presence near
    0.45), so transformers' default threshold 0.3 would keep nothing: 0.25 is used, which keeps some queries and drops
    others; the test asserts both happen, so the comparison is not vacuous."""
    th = 0.25
    results = segment_concepts(enc, photos, PHRASES, threshold=th, phrase_batch=3, progress=False)
    assert len(results) == len(photos)
    kept = dropped = 0
    for i, image in enumerate(photos):
        res = results[i]
        assert res.phrases == PHRASES and res.masks.shape[1:] == image.shape[:2]
        assert torch.all(res.scores[:-1] >= res.scores[1:])  # best first
        for k, phrase in enumerate(PHRASES):
            scores, boxes, masks, presence = _reference_instances(reference, image, phrase, th)
            mine = res.instances(phrase)
            assert len(mine) == len(scores), (i, phrase)
            kept += len(scores)
            dropped += 16 - len(scores)  # the tiny model has 16 queries
            assert abs(mine.presence - presence) < 1e-5 and abs(float(res.presence[k]) - presence) < 1e-5
            if len(scores):
                torch.testing.assert_close(mine.scores, scores, atol=1e-4, rtol=0)
                torch.testing.assert_close(mine.boxes, boxes, atol=1e-4, rtol=0)
                assert (mine.masks == masks).float().mean() >= 0.999
                assert mine.masks.any()
    assert kept > 0 and dropped > 0


def test_single_image_and_threshold_zero(enc, reference, photos):
    """One image gives one result; threshold 0 keeps every query of every phrase."""
    res = segment_concepts(enc, photos[1], PHRASES[:2], threshold=0.0, progress=False)
    assert isinstance(res, ConceptResult) and len(res) == 2 * 16
    scores, boxes, masks, _ = _reference_instances(reference, photos[1], PHRASES[1], 0.0)
    mine = res.instances(1)
    torch.testing.assert_close(mine.scores, scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(mine.boxes, boxes, atol=1e-4, rtol=0)
    assert (mine.masks == masks).float().mean() >= 0.999


def test_one_vision_pass_per_image_and_one_text_pass_per_phrase_set(enc, photos):
    model = enc.model
    calls = {"vision": 0, "images": 0, "text": 0, "heads": 0}

    def vision_hook(_m, args, _out):
        calls["vision"] += 1
        calls["images"] += args[0].shape[0]

    hooks = [
        model.vision_encoder.backbone.register_forward_hook(vision_hook),
        model.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1)),
        model.detr_decoder.register_forward_hook(lambda *a: calls.__setitem__("heads", calls["heads"] + 1)),
    ]
    try:
        enc.clear_phrase_cache()
        a = segment_concepts(enc, photos, PHRASES, threshold=0.25, batch_size=3, phrase_batch=3, progress=False)
        assert calls == {"vision": 2, "images": 4, "text": 1, "heads": 4 * 2}
        b = segment_concepts(enc, photos, PHRASES, threshold=0.25, batch_size=4, phrase_batch=1, progress=False)
        assert calls["text"] == 1 and calls["images"] == 8  # the phrase set's embeddings came from the cache
    finally:
        for h in hooks:
            h.remove()
    for x, y in zip(a, b):  # batching changes nothing
        assert torch.equal(x.labels, y.labels) and torch.equal(x.masks, y.masks)
        torch.testing.assert_close(x.scores, y.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(x.boxes, y.boxes, atol=1e-4, rtol=0)


def test_to_dict_and_overlay(enc, photos):
    res = segment_concepts(enc, photos[0], PHRASES[:2], threshold=0.25, progress=False)
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["detections"]) == len(res) > 0 and set(d["presence"]) == set(PHRASES[:2])
    assert {"score", "label", "box", "mask"} <= set(d["detections"][0])
    assert res.overlay(photos[0]).size == (photos[0].shape[1], photos[0].shape[0])


def test_errors_name_the_bad_input(enc, photos, tiny_root):
    with pytest.raises(ValueError, match="phrases must be unique"):
        segment_concepts(enc, photos[0], ["cat", "Cat"])
    with pytest.raises(ValueError, match="threshold must be in"):
        segment_concepts(enc, photos[0], ["cat"], threshold=1.5)
    with pytest.raises(ValueError, match="phrase_batch must be a positive integer"):
        segment_concepts(enc, photos[0], ["cat"], phrase_batch=0)
    dino = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    with pytest.raises(TypeError, match="needs a SAM 3 encoder.*got dinov2"):
        segment_concepts(dino, photos[0], ["cat"])
    with pytest.raises(ValueError, match="'background' is a reserved label"):
        sam3_semantic(enc, photos[0], ["background", "cat"], background=True)
    with pytest.raises(ValueError, match="instances=True or semantic=True"):
        sam3_semantic(enc, photos[0], ["cat"], instances=False, semantic=False)


# -- sam3_semantic against SegEarth-OV3's own code ----------------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _golden_labels(meta):
    """SegEarth-OV3's class file (line 0 the background words, commas between synonyms) in zero-shot-seg's form."""
    lines = [[w.strip() for w in line.split(",")] for line in json.loads(meta["classes"])]
    return lines[0], ["; ".join(words) for words in lines[1:]]


@pytest.mark.parametrize("config", ["all", "no_sem"])
def test_semantic_matches_segearth_ov3(enc, golden, config):
    """``sam3_semantic`` = SegEarth-OV3's fusion (their code, fed with the same ``Sam3Model`` outputs): class maps
    within 1e-4 and the label map equal on >= 99.9% of pixels, on two photos. "all" is every released config's flags
    (semantic head + instances + presence); "no_sem" leaves the semantic head out, so that the instance branch decides
    the map (on random weights the semantic head's ~0.5 would otherwise win every pixel over instance scores of ~0.25).
    The settings make both the threshold background and at least two classes appear in every map."""
    tensors, meta = golden
    assert meta["repo"] == "earth-insights/SegEarth-OV-3"
    assert meta["commit"] == "87e5cc18c8bc9c0b4713b975587281ac1c97c79a"
    cfg = json.loads(meta["configs"])[config]
    bg, labels = _golden_labels(meta)
    for name in ("astronaut", "coffee"):
        image = tensors[f"{name}/image"].numpy()
        res = sam3_semantic(
            enc, image, labels, background=bg, prob_thresh=cfg["prob_thd"],
            confidence_threshold=cfg["confidence_threshold"], semantic=cfg.get("use_sem_seg", True), progress=False,
        )  # fmt: skip
        ref_probs, ref_pred = tensors[f"{name}/{config}/seg_logits"], tensors[f"{name}/{config}/pred"]
        assert res.labels == ["background", "person", "cup", "cat", "table"]
        assert res.protocol["reference"].endswith(meta["commit"])
        torch.testing.assert_close(res.probs, ref_probs, atol=1e-4, rtol=0)
        assert (res.label_map == ref_pred).float().mean() >= 0.999
        present = torch.unique(ref_pred).tolist()
        assert 0 in present and len(present) >= 3  # background by threshold and several classes: non-trivial
        assert (ref_probs.amax(0) < cfg["prob_thd"]).any()  # some pixels go to the background by the threshold


def _slow_fusion(reference, image, texts, conf, instances=True, semantic=True, presence=True):
    """SegEarth-OV3's per-text fusion written plainly from the paper's description, one transformers call per text."""
    import torch.nn.functional as F

    processor, model = reference
    h, w = image.shape[:2]
    maps = []
    for t in texts:
        inputs = processor(images=image, text=t, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        pres = out.presence_logits.sigmoid()[0, 0]
        score = out.pred_logits.sigmoid()[0] * pres
        fused = torch.zeros(h, w)
        for q in range(score.shape[0]):
            if instances and score[q] > conf:
                m = F.interpolate(out.pred_masks[:, q : q + 1], (h, w), mode="bilinear", align_corners=False)
                fused = torch.maximum(fused, m[0, 0].sigmoid() * score[q])
        if semantic:
            s = F.interpolate(out.semantic_seg, (h, w), mode="bilinear", align_corners=False)[0, 0].sigmoid()
            fused = torch.maximum(fused, s)
        maps.append(fused * pres if presence else fused)
    return torch.stack(maps)


def test_semantic_background_modes(enc, reference, photos):
    """zero-shot-seg's background forms: none, by threshold alone (a zero row that never wins), and words."""
    image = photos[1][::4, ::4].copy()
    texts = ["cat", "sofa", "couch"]
    ref = _slow_fusion(reference, image, texts, conf=0.25, presence=False)
    cat, sofa = ref[0], torch.maximum(ref[1], ref[2])  # "sofa; couch": a class takes its best synonym

    none = sam3_semantic(enc, image, ["cat", "sofa; couch"], confidence_threshold=0.25, presence=False)
    assert none.labels == ["cat", "sofa"]
    torch.testing.assert_close(none.probs, torch.stack([cat, sofa]), atol=1e-4, rtol=0)
    assert torch.equal(none.label_map, torch.stack([cat, sofa]).argmax(0))

    th = float(torch.maximum(cat, sofa).median())
    by_threshold = sam3_semantic(
        enc, image, ["cat", "sofa; couch"], background=True, prob_thresh=th, confidence_threshold=0.25,
        presence=False,
    )  # fmt: skip
    assert by_threshold.labels == ["background", "cat", "sofa"] and not by_threshold.probs[0].any()
    expect = torch.where(torch.maximum(cat, sofa) < th, 0, torch.stack([cat, sofa]).argmax(0) + 1)
    assert torch.equal(by_threshold.label_map, expect) and (expect == 0).any() and (expect > 0).any()

    words = sam3_semantic(enc, image, ["cat"], background=["sofa", "couch"], confidence_threshold=0.25, presence=False)
    assert words.labels == ["background", "cat"]
    torch.testing.assert_close(words.probs, torch.stack([sofa, cat]), atol=1e-4, rtol=0)
    scores = [words.probs[k][words.label_map == k].mean() if (words.label_map == k).any() else 0.0 for k in (0, 1)]
    torch.testing.assert_close(words.scores, torch.tensor(scores, dtype=torch.float32), atol=1e-5, rtol=0)


def test_semantic_batch_equals_single(enc, photos):
    small = [p[::4, ::4].copy() for p in photos]
    batch = sam3_semantic(enc, small, ["cat", "person"], background=True, batch_size=3, phrase_batch=1)
    for img, res in zip(small, batch):
        one = sam3_semantic(enc, img, ["cat", "person"], background=True)
        assert torch.equal(one.label_map, res.label_map)
        torch.testing.assert_close(one.probs, res.probs, atol=1e-5, rtol=0)
    assert np.asarray(batch[0].overlay(small[0])).shape == small[0].shape


# -- segment_everything ------------------------------------------------------------------------------------------
def test_segment_everything_labels_and_nms(enc, photos):
    """Each instance takes the class of the text that found it; greedy mask-IoU NMS across classes, checked against a
    plain numpy NMS. The tiny random weights give large, much-overlapping masks (median pairwise IoU ~0.65), so the
    threshold is 0.8, where some masks are dropped and several kept."""
    from visionfm.pipelines.sam3_concepts import segment_everything

    labels = ["person; astronaut", "cup; mug", "cat"]
    texts = ["person", "astronaut", "cup", "mug", "cat"]
    owner = torch.tensor([0, 0, 1, 1, 2])
    image = photos[0][::2, ::2].copy()
    raw = segment_concepts(enc, image, texts, threshold=0.25, progress=False)
    everything = segment_everything(enc, image, labels, threshold=0.25, nms_thresh=1.0, progress=False)
    assert everything.phrases == ["person", "cup", "cat"] and len(everything) == len(raw) > 0
    assert torch.equal(everything.labels, owner[raw.labels]) and torch.equal(everything.masks, raw.masks)
    torch.testing.assert_close(everything.presence, torch.stack([raw.presence[:2].max(), raw.presence[2:4].max(),
                                                                 raw.presence[4]]))  # fmt: skip

    res = segment_everything(enc, image, labels, threshold=0.25, nms_thresh=0.8, progress=False)
    m = raw.masks.reshape(len(raw), -1).numpy()
    inter = m.astype(np.float64) @ m.T.astype(np.float64)
    area = m.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1)
    keep: list[int] = []
    for i in range(len(raw)):  # raw is sorted best first
        if all(iou[i, j] <= 0.8 for j in keep):
            keep.append(i)
    assert 1 < len(keep) < len(raw)  # non-trivial: some kept, some suppressed
    assert torch.equal(res.masks, raw.masks[keep]) and torch.equal(res.labels, owner[raw.labels[keep]])
    torch.testing.assert_close(res.scores, raw.scores[keep])
    assert res.protocol["nms"] == "mask IoU, across classes" and res.protocol["nms_thresh"] == 0.8
