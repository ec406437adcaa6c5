"""grounding pipeline, training-free backend: regions of the dense score map, SAM refinement, NMS, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_iou

import visionfm as vfm
from visionfm.data.masks import masks_to_boxes
from visionfm.pipelines.grounding import regions
from visionfm.testing import tiny_checkpoint

PHRASES = ["the red mug", "a laptop", "a cat"]


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(str(tiny_checkpoint("clip", "open_clip", root=tiny_root)), device="cpu")


def test_regions_are_connected_components_with_mean_probability():
    lm = torch.zeros(6, 8, dtype=torch.long)
    lm[0:2, 0:2] = 1  # two separate blobs of label 1
    lm[4:6, 5:8] = 1
    lm[3, 3] = 2  # one pixel of label 2
    probs = torch.rand(3, 6, 8, generator=torch.Generator().manual_seed(0))
    got = regions(lm, probs, first=1)
    assert [k for k, _, _ in got] == [1, 1, 2]
    assert torch.equal(got[0][1], lm.eq(1) & (torch.arange(6)[:, None] < 3))
    assert got[0][2] == pytest.approx(float(probs[1, 0:2, 0:2].mean()), abs=1e-6)
    assert got[2][2] == pytest.approx(float(probs[2, 3, 3]), abs=1e-6)
    assert len(regions(lm, probs, first=1, min_area=2)) == 2  # the single pixel is dropped
    diag = torch.zeros(3, 3, dtype=torch.long)
    diag[0, 0] = diag[1, 1] = 1
    assert len(regions(diag, probs[:, :3, :3], first=1)) == 1  # 8-connected


def test_training_free_results(clip, photos):
    gr = vfm.pipeline("grounding", model=clip, templates="single", nms_thresh=0.5)
    out = gr(photos[:2], phrases=PHRASES, threshold=0.0, cos_thresh=-1.0)
    assert len(out) == 2
    for img, r in zip(photos[:2], out):
        H, W = img.shape[:2]
        assert len(r) > 0 and r.masks.shape == (len(r), H, W)
        assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= W).all() and (r.boxes[:, 3] <= H).all()
        assert torch.equal(r.boxes, torch.from_numpy(masks_to_boxes(r.masks.numpy())).float())
        assert (r.labels >= 0).all() and (r.labels < len(PHRASES)).all()
        assert torch.all(r.scores[:-1] >= r.scores[1:]) or len(r) == 1
        for k in r.labels.unique():  # per-phrase NMS
            b = r.boxes[r.labels == k]
            iou = box_iou(b, b).fill_diagonal_(0)
            assert (iou <= 0.5 + 1e-6).all()
        d = json.loads(json.dumps(r.to_dict()))
        assert set(d[0]) == {"score", "label", "box", "mask"} and d[0]["label"] in PHRASES
        assert set(d[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert r.overlay(img).size == (W, H)
        assert r.protocol["backend"] == "training-free" and r.protocol["mode"] == "maskclip"
    none = gr(photos[0], phrases=PHRASES, threshold=1.01, cos_thresh=-1.0)
    assert len(none) == 0


def test_regions_match_the_zero_shot_seg_label_map(clip, photos):
    opts = dict(mode="sclip", templates="single")
    gr = vfm.pipeline("grounding", model=clip, nms_thresh=1.0, min_area=0.0, **opts)
    seg = vfm.pipeline("zero-shot-seg", model=clip, **opts)
    img = photos[3]
    g = gr(img, phrases=PHRASES, threshold=0.0, cos_thresh=0.0)
    s = seg(img, labels=PHRASES, background=True, cos_thresh=0.0)
    for k, phrase in enumerate(PHRASES):  # the union of a phrase's regions is its area in the label map
        union = g.masks[g.labels == k].any(0) if (g.labels == k).any() else torch.zeros(img.shape[:2], dtype=torch.bool)
        assert torch.equal(union, s.label_map == k + 1), phrase


@pytest.mark.parametrize("sam_kind", ["sam", "sam2", "edgetam"])  # SAM 2 / EdgeTAM as refine= (issue 19)
def test_sam_refinement_prompts_sam_with_the_boxes(clip, tiny_root, photos, sam_kind):
    sam = vfm.pipeline("mask-generation", model=str(tiny_checkpoint(sam_kind, root=tiny_root)), device="cpu")
    plain = vfm.pipeline("grounding", model=clip, templates="single", nms_thresh=1.0)
    refined = vfm.pipeline("grounding", model=clip, templates="single", nms_thresh=1.0, refine=sam)
    img = photos[1]
    a = plain(img, phrases=PHRASES, threshold=0.0, cos_thresh=-1.0)
    b = refined(img, phrases=PHRASES, threshold=0.0, cos_thresh=-1.0)
    want = sam(img, boxes=a.boxes.tolist())
    order = torch.argsort(a.scores * want.scores.clamp(0, 1), descending=True, stable=True)
    assert torch.equal(b.masks, want.masks[order])
    torch.testing.assert_close(b.scores, (a.scores * want.scores.clamp(0, 1))[order])
    assert b.protocol["refine"].startswith("sam:")


def test_errors(clip, photos):
    gr = vfm.pipeline("grounding", model=clip)
    with pytest.raises(ValueError, match="phrases"):
        gr(photos[0])
    with pytest.raises(ValueError, match="phrases"):
        gr(photos[0], phrases=[])
    with pytest.raises(ValueError, match="text_threshold"):
        gr(photos[0], phrases=PHRASES, text_threshold=0.3)
    with pytest.raises(ValueError, match="mode"):
        vfm.pipeline("grounding", model=clip, mode="nope")


@pytest.mark.parametrize("kind", ["owlv2", "grounding-dino"])
def test_detector_backend_equals_the_detector(kind, tiny_root, photos):
    from visionfm.foundation.detectors import OpenVocabDetector

    path = tiny_checkpoint(kind, root=tiny_root)
    gr = vfm.pipeline("grounding", model=str(path), device="cpu", nms_thresh=1.0)
    assert gr.protocol["backend"] == kind
    phrases = ["a cat", "a remote control"]
    got = gr(photos[:2], phrases=phrases, threshold=0.05)
    want = OpenVocabDetector.load(str(path)).detect(photos[:2], phrases, threshold=0.05)
    for g, w in zip(got, want):
        assert g.masks is None
        order = torch.argsort(w["scores"], descending=True, stable=True)
        torch.testing.assert_close(g.scores, w["scores"][order])
        torch.testing.assert_close(g.boxes, w["boxes"][order])
        assert torch.equal(g.labels, w["labels"][order])


def test_detector_boxes_refined_by_sam_and_rescored(tiny_root, photos):
    det_path = tiny_checkpoint("owlv2", root=tiny_root)
    sam = vfm.pipeline("mask-generation", model=str(tiny_checkpoint("sam", root=tiny_root)), device="cpu")
    plain = vfm.pipeline("grounding", model=str(det_path), device="cpu", nms_thresh=1.0)
    refined = vfm.pipeline("grounding", model=str(det_path), device="cpu", nms_thresh=1.0, refine=sam)
    img = photos[1]
    a = plain(img, phrases=["a cat"], threshold=0.0)
    b = refined(img, phrases=["a cat"], threshold=0.0)
    want = sam(img, boxes=a.boxes.tolist())
    rescored = a.scores * want.scores.clamp(0, 1)
    order = torch.argsort(rescored, descending=True, stable=True)
    assert b.masks.shape == (len(a), *img.shape[:2])
    assert torch.equal(b.masks, want.masks[order])
    torch.testing.assert_close(b.scores, rescored[order])
    with pytest.raises(ValueError, match="training-free"):
        plain(img, phrases=["a cat"], cos_thresh=0.2)
    with pytest.raises(ValueError, match="pamr"):
        vfm.pipeline("grounding", model=str(det_path), device="cpu", refine="pamr")


# -- input checks --------------------------------------------------------------------------------------
LONG_PHRASE = "a photo of " + "a very " * 40  # past CLIP's 77 tokens (and the tiny OWLv2's 16)


@pytest.fixture(scope="module")
def owl(tiny_root):
    return vfm.pipeline("grounding", model=str(tiny_checkpoint("owlv2", root=tiny_root)), device="cpu", nms_thresh=1.0)


def test_a_phrase_string_is_one_phrase(clip, owl, photos):
    gr = vfm.pipeline("grounding", model=clip, templates="single")
    one = gr(photos[0], phrases="the red mug", threshold=0.0, cos_thresh=-1.0)
    assert one.phrases == ["the red mug"] and len(one) > 0 and (one.labels == 0).all()
    det = owl(photos[0], phrases="a cat", threshold=0.0)
    assert det.phrases == ["a cat"] and len(det) > 0 and (det.labels == 0).all()


def test_duplicate_phrases_are_rejected(clip, owl, photos):
    gr = vfm.pipeline("grounding", model=clip, templates="single")
    with pytest.raises(ValueError, match=r"phrases must be unique.*'A Cat'"):
        gr(photos[0], phrases=["a cat", "a laptop", "A Cat"])
    with pytest.raises(ValueError, match=r"phrases must be unique.*'a cat'"):
        owl(photos[0], phrases=["a cat", "a cat"])


def test_phrases_too_long_for_the_text_tower_are_refused(clip, owl, photos):
    gr = vfm.pipeline("grounding", model=clip, templates="single")
    with pytest.raises(ValueError, match=r"77-token text context.*very red mug"):
        gr(photos[0], phrases=[LONG_PHRASE + "red mug", LONG_PHRASE + "blue mug"])
    with pytest.raises(ValueError, match=r"16-token text context.*very red mug"):
        owl(photos[0], phrases=[LONG_PHRASE + "red mug", "a cat"])


def test_bad_phrases_and_thresholds_are_named(clip, photos):
    gr = vfm.pipeline("grounding", model=clip, templates="single")
    with pytest.raises(ValueError, match=r"phrases\[1\] = ' ; ' has no class name"):
        gr(photos[0], phrases=["a cat", " ; "])
    with pytest.raises(ValueError, match=r"^cos_thresh must be in \[-1, 1\]"):
        gr(photos[0], phrases=PHRASES, cos_thresh=1.5)
