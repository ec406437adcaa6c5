"""SAM mask-generation pipeline: parity with SamModel + SamProcessor.post_process_masks, embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def sam_dir(tiny_root):
    return tiny_checkpoint("sam", root=tiny_root)


@pytest.fixture(scope="module")
def sam(sam_dir):
    return vfm.pipeline("mask-generation", model=str(sam_dir), device="cpu")


def _reference(sam_dir, image, **prompts):
    from transformers import SamModel, SamProcessor

    proc = SamProcessor.from_pretrained(sam_dir)
    model = SamModel.from_pretrained(sam_dir).eval()
    inputs = proc(images=Image.fromarray(image), return_tensors="pt", **prompts)
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    masks = proc.image_processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    return masks[0][:, 0], out.iou_scores[0][:, 0]


def test_point_prompts_match_transformers(sam, sam_dir, photos):
    img = photos[1]  # non-square
    pts = [[100.0, 80.0], [300.0, 200.0], [50.0, 250.0]]
    got = sam(img, points=pts, point_labels=[1, 1, 1])
    ref_masks, ref_iou = _reference(sam_dir, img, input_points=[[[p] for p in pts]], input_labels=[[[1], [1], [1]]])
    assert got.masks.shape == (3, *img.shape[:2])
    assert torch.equal(got.masks, ref_masks)
    torch.testing.assert_close(got.scores, ref_iou, atol=1e-4, rtol=0)


def test_box_prompts_match_transformers(sam, sam_dir, photos):
    img = photos[2]
    boxes = [[50.0, 40.0, 300.0, 260.0], [10.0, 10.0, 100.0, 90.0]]
    got = sam(img, boxes=boxes)
    ref_masks, ref_iou = _reference(sam_dir, img, input_boxes=[boxes])
    assert torch.equal(got.masks, ref_masks)
    torch.testing.assert_close(got.scores, ref_iou, atol=1e-4, rtol=0)


def test_image_embedding_is_computed_once_per_image(sam_dir, photos):
    sam = vfm.pipeline("mask-generation", model=str(sam_dir), device="cpu")
    sam(photos[0], points=[[10, 10]])
    sam(photos[0], boxes=[[0, 0, 50, 50]])
    sam(photos[0].copy(), points=[[20, 20], [40, 40]])  # same pixels, different array
    assert sam.encoder_calls == 1
    sam(photos[1], points=[[10, 10]])
    assert sam.encoder_calls == 2


def test_outputs_are_json_and_drawable(sam, photos):
    res = sam(photos[0], points=[[100, 100], [200, 300]], multimask_output=True)
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["masks"]) == 2 and d["masks"][0]["size"] == list(photos[0].shape[:2])
    assert sum(d["masks"][0]["counts"]) == photos[0].shape[0] * photos[0].shape[1]
    for m, b in zip(res.masks, res.boxes):
        if m.any():
            ys, xs = np.nonzero(m.numpy())
            assert b.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    pic = res.overlay(photos[0])
    assert pic.size == (photos[0].shape[1], photos[0].shape[0])


def test_bad_prompts_are_clear(sam, photos):
    with pytest.raises(ValueError, match="apply to automatic mask generation"):
        sam(photos[0], points=[[1, 2]], points_per_side=4)
    with pytest.raises(ValueError, match=r"points must be \[N, 2\]"):
        sam(photos[0], points=[1, 2, 3])
    with pytest.raises(ValueError, match="point_labels shape"):
        sam(photos[0], points=[[1, 2], [3, 4]], point_labels=[1])
    with pytest.raises(TypeError, match="needs a SAM encoder"):
        vfm.pipeline("mask-generation", model=vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu"))


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


@pytest.mark.parametrize("image_index", [0, 1])
def test_automatic_masks_match_transformers_pipeline(sam_dir, photos, image_index):
    from transformers import pipeline as hf_pipeline

    img = photos[image_index]
    opts = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)  # a random tiny SAM is neither confident nor stable
    ours = vfm.pipeline("mask-generation", model=str(sam_dir), device="cpu")
    got = ours(img, points_per_side=8, points_per_batch=16, **opts)
    ref = hf_pipeline("mask-generation", model=str(sam_dir), device="cpu")
    want = ref(Image.fromarray(img), points_per_crop=8, points_per_batch=16, **opts)
    ref_masks = [torch.as_tensor(np.asarray(m)).bool() for m in want["masks"]]
    assert len(got) == len(ref_masks) > 0
    for m in got.masks:  # every mask of ours has its twin in theirs
        assert max(_mask_iou(m, r) for r in ref_masks) >= 0.98
    for r in ref_masks:
        assert max(_mask_iou(m, r) for m in got.masks) >= 0.98


def test_automatic_masks_for_a_batch(sam_dir, photos):
    sam = vfm.pipeline("mask-generation", model=str(sam_dir), device="cpu", batch_size=4)
    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    batch = sam(photos[:3], **opts)
    assert len(batch) == 3
    for img, res in zip(photos[:3], batch):
        alone = sam(img, **opts)
        assert torch.equal(alone.masks, res.masks) and res.masks.shape[1:] == img.shape[:2]


def test_stability_score_matches_transformers():
    from transformers.models.sam.image_processing_sam import _compute_stability_score

    from visionfm.pipelines.mask_generation import stability_score

    logits = torch.randn(6, 40, 50) * 3 + torch.linspace(-4, 4, 50)
    torch.testing.assert_close(stability_score(logits, 0.0, 1.0), _compute_stability_score(logits, 0.0, 1.0).float())
    sharp = torch.where(torch.rand(40, 50) > 0.5, 10.0, -10.0)[None]
    assert stability_score(sharp).item() == 1.0  # a confident mask does not move with the threshold
