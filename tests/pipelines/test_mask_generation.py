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


# A random tiny SAM is neither confident nor stable at SAM's defaults (0.88 / 0.95, offset 1): no mask survives.
# The filters are still compared: off, and with a loose stability filter under which some masks pass.
_AUTO_OPTS = [
    dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
    dict(pred_iou_thresh=0.0, stability_score_thresh=0.05, stability_score_offset=0.005),
]


@pytest.mark.parametrize(("image_index", "opts"), [(0, _AUTO_OPTS[0]), (1, _AUTO_OPTS[0]), (0, _AUTO_OPTS[1])])
def test_automatic_masks_match_transformers_pipeline(sam_dir, photos, image_index, opts):
    from transformers import pipeline as hf_pipeline

    img = photos[image_index]
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


def test_multi_crop_automatic_masks_match_transformers_pipeline(sam_dir, photos):
    from transformers import pipeline as hf_pipeline

    img = photos[1]  # non-square, so the crop layout is not symmetric
    opts = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, crops_n_layers=1)
    ours = vfm.pipeline("mask-generation", model=str(sam_dir), device="cpu")
    got = ours(img, points_per_side=4, points_per_batch=16, **opts)
    assert ours.encoder_calls == 5  # the whole image and 2 x 2 crops, each encoded once
    ref = hf_pipeline("mask-generation", model=str(sam_dir), device="cpu")
    want = ref(Image.fromarray(img), points_per_crop=4, points_per_batch=16, **opts)
    ref_masks = [torch.as_tensor(np.asarray(m)).bool() for m in want["masks"]]
    assert len(got) == len(ref_masks) > 0
    assert got.masks.shape[1:] == img.shape[:2]
    for m in got.masks:
        assert max(_mask_iou(m, r) for r in ref_masks) >= 0.98
    for r in ref_masks:
        assert max(_mask_iou(m, r) for m in got.masks) >= 0.98


def test_crop_layout_matches_transformers():
    from transformers.models.sam.image_processing_sam import _generate_per_layer_crops

    from visionfm.pipelines.mask_generation import crop_boxes

    for size in [(480, 640), (333, 500), (64, 64)]:
        for layers in (0, 1, 2):
            want, want_layers = _generate_per_layer_crops(layers, 512 / 1500, size)
            got = crop_boxes(size, layers, 512 / 1500)
            assert [list(b) for _, b in got] == [list(b) for b in want]
            assert [i for i, _ in got] == list(want_layers)


def test_mask_prompts_match_sam_model(sam, sam_dir, photos):
    from transformers import SamModel, SamProcessor

    img = photos[1]
    pts = [[100.0, 80.0], [300.0, 200.0]]
    first = sam(img, points=pts)
    low = 4 * sam.encoder.model.prompt_encoder.image_embedding_size[0]  # 256 for real SAMs, 32 for the tiny one
    assert first.logits.shape == (2, low, low)
    got = sam(img, points=pts, masks=first.logits)  # segment-anything's refinement loop: feed the logits back
    proc = SamProcessor.from_pretrained(sam_dir)
    model = SamModel.from_pretrained(sam_dir).eval()
    for i, p in enumerate(pts):  # the reference, one prompt at a time
        inputs = proc(images=Image.fromarray(img), input_points=[[[p]]], input_labels=[[[1]]], return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, input_masks=first.logits[i][None, None], multimask_output=False)
        ref = proc.image_processor.post_process_masks(
            out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0][0, 0]
        assert torch.equal(got.masks[i], ref)
        torch.testing.assert_close(got.scores[i], out.iou_scores[0, 0, 0], atol=1e-4, rtol=0)
    assert not torch.equal(got.logits, first.logits)  # the mask prompt changed the prediction


def test_full_size_mask_prompts(sam, photos):
    img = photos[2]
    H, W = img.shape[:2]
    m = np.zeros((1, H, W), dtype=bool)
    m[0, H // 4 : H // 2, W // 4 : W // 2] = True
    alone = sam(img, masks=m)
    assert alone.masks.shape == (1, H, W)
    with_box = sam(img, boxes=[[W / 4, H / 4, W / 2, H / 2]], masks=m)
    assert with_box.masks.shape == (1, H, W)
    with pytest.raises(ValueError, match="fit neither the image"):
        sam(img, masks=np.zeros((1, 10, 10), dtype=bool))
    with pytest.raises(ValueError, match="one mask per prompt"):
        sam(img, points=[[10, 10], [20, 20]], masks=m)


# -- input checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pred_iou_thresh", -0.1),
        ("pred_iou_thresh", 1.5),
        ("stability_score_thresh", 2.0),
        ("stability_score_thresh", float("nan")),
        ("nms_thresh", -0.5),
        ("nms_thresh", 1.01),
    ],
)
def test_automatic_thresholds_outside_0_1_are_refused(sam, photos, option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be in \[0, 1\]"):
        sam(photos[0], points_per_side=2, **{option: value})


_NAN = float("nan")


@pytest.mark.parametrize(
    ("prompt", "pattern"),
    [  # photos[1] is 300 (H) x 451 (W)
        (dict(points=[[10, 10], [452, 5]]), r"points\[1\] = \(452.0, 5.0\) is outside the 451 x 300 image"),
        (dict(points=[[-3, 5]]), r"points\[0\] = \(-3.0, 5.0\) is outside"),
        (dict(points=[[10, 10], [5, 300.5]]), r"points\[1\] .* is outside"),
        (dict(points=[[[10, 10], [20, 999]]], point_labels=[[1, 0]]), r"points\[0\]\[1\] = \(20.0, 999.0\) is outside"),
        (dict(points=[[10, 10], [10, _NAN]]), r"points\[1\] = \(10.0, nan\) is not finite"),
        (dict(boxes=[[0, 0, 50, 50], [60, 10, 20, 40]]), r"boxes\[1\] = \[60.0, 10.0, 20.0, 40.0\] is inverted"),
        (dict(boxes=[[0, 40, 50, 10]]), r"boxes\[0\] .* is inverted \(y1 < y0\)"),
        (dict(boxes=[[0, 0, _NAN, 10]]), r"boxes\[0\] .* is not finite"),
    ],
)
def test_bad_points_and_boxes_are_named(sam, photos, prompt, pattern):
    assert photos[1].shape[:2] == (300, 451)
    with pytest.raises(ValueError, match=pattern):
        sam(photos[1], **prompt)


def test_points_on_the_image_border_are_accepted(sam, photos):
    res = sam(photos[1], points=[[0, 0], [451, 300]], boxes=[[0, 0, 451, 300], [10, 10, 10, 40]])
    assert len(res) == 2  # the border is inside; a zero-width box is degenerate but not inverted
