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
    with pytest.raises(ValueError, match="needs points"):
        sam(photos[0])
    with pytest.raises(ValueError, match=r"points must be \[N, 2\]"):
        sam(photos[0], points=[1, 2, 3])
    with pytest.raises(ValueError, match="point_labels shape"):
        sam(photos[0], points=[[1, 2], [3, 4]], point_labels=[1])
    with pytest.raises(TypeError, match="needs a SAM encoder"):
        vfm.pipeline("mask-generation", model=vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu"))
