"""zero-shot-seg pipeline: sliding windows, label scoring, background, refinement, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm.foundation.dense import dense_features
from visionfm.pipelines.seg_protocol import class_probs, pamr, window_grid
from visionfm.pipelines.zero_shot import text_classifier
from visionfm.testing import tiny_checkpoint

LABELS = ["cat", "sofa", "sky"]


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(str(tiny_checkpoint("clip", "open_clip", root=tiny_root)), device="cpu")


@pytest.fixture(scope="module")
def hf_clip(tiny_root):
    return vfm.load_encoder(str(tiny_checkpoint("clip", "transformers", root=tiny_root)), device="cpu")


@torch.inference_mode()
def _direct_cos(enc, x: torch.Tensor, labels, mode, templates="imagenet80"):
    """Cosine maps ``[K, h, w]`` of one normalised input ``x [3, h, w]`` computed directly: dense features on the
    floor grid, cosine to each label, bilinear to ``h x w``."""
    p = enc.info.patch_size
    gh, gw = x.shape[-2] // p, x.shape[-1] // p
    emb = F.normalize(dense_features(enc, x[None, :, : gh * p, : gw * p], mode, pos_interp="dino").float(), dim=-1)[0]
    w = text_classifier(enc, labels, templates)
    sim = torch.einsum("hwd,kd->khw", emb, w)
    return F.interpolate(sim[None], x.shape[-2:], mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize(
    ("size", "window", "stride"), [((48, 48), 48, 24), ((48, 100), 48, 16), ((20, 30), 48, 24), ((97, 50), 32, 32)]
)
def test_window_grid_covers_the_image(size, window, stride):
    boxes = window_grid(size, window, stride)
    cover = np.zeros(size, dtype=int)
    for y0, x0, y1, x1 in boxes:
        assert y1 - y0 == min(window, size[0]) and x1 - x0 == min(window, size[1])
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert max(b[2] for b in boxes) == size[0] and max(b[3] for b in boxes) == size[1]


@pytest.mark.parametrize("mode", ["vanilla", "maskclip", "sclip", "naclip"])
@pytest.mark.parametrize("which", ["clip", "hf_clip"])
def test_a_window_covering_the_image_is_whole_image_inference(request, which, mode, photos):
    enc = request.getfixturevalue(which)
    seg = vfm.pipeline("zero-shot-seg", model=enc, mode=mode, short_side=48, window=96, stride=48)
    x = seg.prepare(torch.from_numpy(photos[2]).permute(2, 0, 1))  # 48 x 72: one 96-px window covers it, unpadded
    w, _ = seg.text_weights([[lab] for lab in LABELS])
    got = seg.text_logits(x, w)
    torch.testing.assert_close(got, _direct_cos(enc, x, LABELS, mode), atol=1e-5, rtol=0)
    whole = vfm.pipeline("zero-shot-seg", model=enc, mode=mode, short_side=48, inference="whole")
    torch.testing.assert_close(whole.text_logits(x, w), got, atol=1e-6, rtol=0)


def test_tiles_equal_per_tile_inference(clip, photos):
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="sclip", short_side=96, window=48, stride=48)
    x = seg.prepare(torch.from_numpy(photos[0]).permute(2, 0, 1))  # 96 x 96: four tiles, no overlap
    w, _ = seg.text_weights([[lab] for lab in LABELS])
    got = seg.text_logits(x, w)
    for y0 in (0, 48):
        for x0 in (0, 48):
            want = _direct_cos(clip, x[:, y0 : y0 + 48, x0 : x0 + 48], LABELS, "sclip")
            torch.testing.assert_close(got[:, y0 : y0 + 48, x0 : x0 + 48], want, atol=1e-5, rtol=0)


def test_overlapping_windows_are_averaged(clip, photos):
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="maskclip", short_side=48, window=48, stride=24)
    x = seg.prepare(torch.from_numpy(photos[1]).permute(2, 0, 1))  # 48 x 72: windows at x = 0 and 24
    assert window_grid(tuple(x.shape[1:]), 48, 24) == [(0, 0, 48, 48), (0, 24, 48, 72)]
    w, _ = seg.text_weights([[lab] for lab in LABELS])
    got = seg.text_logits(x, w)
    a = _direct_cos(clip, x[:, :, :48], LABELS, "maskclip")
    b = _direct_cos(clip, x[:, :, 24:72], LABELS, "maskclip")
    torch.testing.assert_close(got[:, :, :24], a[:, :, :24], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:, :, 24:48], (a[:, :, 24:] + b[:, :, :24]) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:, :, 48:], b[:, :, 24:], atol=1e-5, rtol=0)


def test_result_shapes_background_and_outputs(clip, photos, tmp_path):
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="clearclip", templates="simple")
    img = photos[1]
    out = seg(img, labels=LABELS, background=True)
    assert out.label_map.shape == img.shape[:2] and out.label_map.dtype == torch.int64
    assert out.probs.shape == (4, *img.shape[:2])
    assert out.labels == ["background", *LABELS]
    assert set(out.masks) <= set(out.labels) and len(out.scores) == 4
    d = json.loads(json.dumps(out.to_dict()))
    assert d["protocol"]["mode"] == "clearclip" and d["protocol"]["window"] == 48
    assert d["protocol"]["short_side"] == 72 and d["protocol"]["templates"] == "simple"
    assert (
        d["protocol"]["resize"] == "cv2" and d["protocol"]["pos_interp"] == "dino" and d["protocol"]["preset"] is None
    )
    assert out.overlay(img).size == (img.shape[1], img.shape[0])
    none = seg(img, labels=LABELS, prob_thresh=1.0)  # no label of a random tiny CLIP is that sure: all background
    assert (none.label_map == 0).all()
    alls = seg(img, labels=LABELS, cos_thresh=-1.0)  # every cosine clears -1: no background
    assert (alls.label_map > 0).all()
    plain = seg([img, photos[0]], labels=LABELS)
    assert len(plain) == 2 and plain[0].labels == LABELS


def test_every_synonym_is_a_text_of_the_softmax(clip, photos):
    """The references' postprocess: softmax over all texts (synonyms included), a class takes its best synonym's
    probability. Checked against a direct computation."""
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="maskclip", templates="single", short_side=48)
    w, owner = seg.text_weights([["cat", "kitten"], ["sofa"]])
    px = torch.from_numpy(photos[0]).permute(2, 0, 1)
    cos = seg.scores(px, w)
    p = (40.0 * cos).softmax(0)
    want = torch.stack([torch.maximum(p[0], p[1]), p[2]])
    torch.testing.assert_close(class_probs(cos, owner, 2, 40.0), want, atol=1e-7, rtol=0)
    a = seg(photos[0], labels=["cat; kitten", "sofa"])
    b = seg(photos[0], labels=["cat", "sofa"], synonyms={"cat": ["kitten"]})
    assert torch.equal(a.label_map, b.label_map) and a.labels == ["cat", "sofa"]
    torch.testing.assert_close(a.probs, want, atol=1e-6, rtol=0)


def test_pamr_matches_a_direct_loop():
    """PAMR as 1-stage-wseg (SCLIP, NACLIP) writes it, pixel by pixel: sigma over the 3x3 neighbourhoods of every
    dilation including the centre, affinity -|dI| / (1e-8 + 0.1 sigma), softmax over the 8 * len(dilations)
    neighbours (centre excluded), replicate borders."""
    g = torch.Generator().manual_seed(0)
    img, logits = torch.rand(3, 9, 11, generator=g), torch.randn(2, 9, 11, generator=g)
    got = pamr(img, logits, iterations=2, dilations=(1, 3))
    ring = [(dy, dx) for d in (1, 3) for dy in (-d, 0, d) for dx in (-d, 0, d)]
    offs = [o for o in ring if o != (0, 0)]
    H, W = img.shape[1:]

    def at(i, j, dy, dx):
        return min(max(i + dy, 0), H - 1), min(max(j + dx, 0), W - 1)

    aff = torch.zeros(len(offs), H, W)
    for i in range(H):
        for j in range(W):
            sigma = torch.stack([img[:, a, b] for a, b in (at(i, j, dy, dx) for dy, dx in ring)], 1).std(1)
            cols = torch.stack([img[:, a, b] for a, b in (at(i, j, dy, dx) for dy, dx in offs)], 1)  # [3, P]
            aff[:, i, j] = (-((img[:, i, j][:, None] - cols).abs() / (1e-8 + 0.1 * sigma[:, None])).mean(0)).softmax(0)
    want = logits.clone()
    for _ in range(2):
        nxt = torch.zeros_like(want)
        for i in range(H):
            for j in range(W):
                nxt[:, i, j] = sum(aff[k, i, j] * want[:, a, b] for k, (a, b) in enumerate(at(i, j, *o) for o in offs))
        want = nxt
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_pamr_snaps_to_colour_edges():
    img = torch.zeros(3, 24, 24)
    img[:, :, 12:] = 1.0  # two flat regions
    probs = torch.full((2, 24, 24), 0.5)
    probs[0, :, :10], probs[1, :, :10] = 0.9, 0.1  # confident only away from the edge
    probs[0, :, 14:], probs[1, :, 14:] = 0.1, 0.9
    out = pamr(img, probs, dilations=(1, 2, 4)).argmax(0)
    assert (out[:, :12] == 0).all() and (out[:, 12:] == 1).all()


def test_refinement_and_proxy_run(clip, tiny_root, photos):
    sam_dir = tiny_checkpoint("sam", root=tiny_root)
    dino_dir = tiny_checkpoint("dinov2", root=tiny_root)
    img = photos[3]
    for sam_mode in ("auto", "box"):
        seg = vfm.pipeline(
            "zero-shot-seg",
            model=clip,
            mode="proxy",
            proxy=str(dino_dir),
            refine=["pamr", str(sam_dir)],
            sam_mode=sam_mode,
            sam_points_per_side=4,
            templates="single",
        )
        out = seg(img, labels=LABELS)
        assert out.label_map.shape == img.shape[:2]
        assert (
            out.protocol["proxy"]
            and out.protocol["refine"][0] == "pamr:10x[8, 16]"
            and "sam-" + sam_mode in out.protocol["refine"][1]
        )


@pytest.mark.parametrize("sam_kind", ["sam", "sam2"])  # SAM 2 as refine= (issue 19)
def test_sam_auto_refinement_gives_each_mask_one_label(clip, tiny_root, photos, sam_kind):
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="maskclip", templates="single")
    sam = vfm.pipeline("mask-generation", model=str(tiny_checkpoint(sam_kind, root=tiny_root)), device="cpu")
    probs = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0)).softmax(0)
    pixels = torch.from_numpy(photos[1]).permute(2, 0, 1)
    opts = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)  # a random tiny SAM passes no default filter
    seg.sam, seg.sam_mode, seg.sam_points_per_side, seg.sam_options = sam, "auto", 4, opts
    masks = sam.generate(pixels, points_per_side=4, **opts).masks
    assert len(masks) > 0
    out = seg._sam_refine(pixels, probs, 0).argmax(0)
    small = F.interpolate(masks[:, None].float(), (20, 30), mode="nearest")[:, 0] > 0.5
    small = small[small.flatten(1).any(1)]
    smallest = small[small.flatten(1).sum(1).argmin()]  # painted last: one label over all of it
    assert out[smallest].unique().numel() == 1


def test_errors(clip, tiny_root, photos):
    dino = str(tiny_checkpoint("dinov2", root=tiny_root))
    with pytest.raises(TypeError, match="CLIP"):
        vfm.pipeline("zero-shot-seg", model=dino, device="cpu")
    with pytest.raises(ValueError, match="mode"):
        vfm.pipeline("zero-shot-seg", model=clip, mode="nope")
    with pytest.raises(ValueError, match="proxy"):
        vfm.pipeline("zero-shot-seg", model=clip, mode="proxy")
    with pytest.raises(ValueError, match="smaller than the model's patch size"):
        vfm.pipeline("zero-shot-seg", model=clip, window=4)
    with pytest.raises(ValueError, match="unknown zero-shot-seg preset 'naclip-voc'"):
        vfm.pipeline("zero-shot-seg", model=clip, preset="naclip-voc")
    for opt, bad in (("inference", "tiles"), ("resize", "area"), ("pos_interp", "nearest")):
        with pytest.raises(ValueError, match=f"^{opt} must be one of"):
            vfm.pipeline("zero-shot-seg", model=clip, **{opt: bad})
    seg = vfm.pipeline("zero-shot-seg", model=clip)
    with pytest.raises(ValueError, match="needs labels"):
        seg(photos[0])
    with pytest.raises(ValueError, match="unique"):
        seg(photos[0], labels=["cat", "cat"])
    with pytest.raises(ValueError, match="reserved"):
        seg(photos[0], labels=["cat", "background"], background=True)


# -- input checks --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_seg(clip):
    return vfm.pipeline("zero-shot-seg", model=clip, mode="maskclip", templates="single", short_side=48)


def test_a_label_string_is_one_class(small_seg, photos):
    one = small_seg(photos[0], labels="cat; kitten", background=True)
    assert one.labels == ["background", "cat"]
    want = small_seg(photos[0], labels=["cat; kitten"], background=True)
    assert torch.equal(one.probs, want.probs)


def test_a_synonym_string_is_one_synonym(small_seg, photos):
    got = small_seg(photos[0], labels=["cat", "sofa"], synonyms={"cat": "kitten"})
    want = small_seg(photos[0], labels=["cat; kitten", "sofa"])
    assert got.labels == ["cat", "sofa"] and torch.equal(got.probs, want.probs)


@pytest.mark.parametrize(
    ("labels", "options", "named"),
    [
        (["cat", "sofa", "Cat"], {}, "'Cat'"),  # CLIP's tokenizer lower-cases: the same text twice
        (["sofa; couch", "couch"], {}, "'couch'"),  # a synonym of one class is another class
        (["sofa", "chair"], {"synonyms": {"sofa": ["seat"], "chair": ["seat"]}}, "'seat'"),
        (["sky", "cat"], {"background": "sky"}, "'sky'"),  # a background name is also a class
    ],
)
def test_the_same_text_for_two_classes_is_rejected(small_seg, photos, labels, options, named):
    with pytest.raises(ValueError, match=rf"labels must be unique.*{named}"):
        small_seg(photos[0], labels=labels, **options)


@pytest.mark.parametrize("labels", [[";"], ["cat", " ; "], ";;", ["cat", "; ;"]])
def test_a_label_of_only_separators_is_refused(small_seg, photos, labels):
    with pytest.raises(ValueError, match=r"labels\[\d\] = .* has no class name"):
        small_seg(photos[0], labels=labels)


def test_labels_whose_prompts_are_truncated_are_refused(small_seg, photos):
    long = "a photo of " + "a very " * 40
    with pytest.raises(ValueError, match=r"77-token text context.*very red cat"):
        small_seg(photos[0], labels=[long + "red cat", long + "blue cat"])
    with pytest.raises(ValueError, match=r"77-token text context.*very big sofa"):
        small_seg(photos[0], labels=["cat", "sofa"], synonyms={"sofa": [long + "big sofa"]})


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"prob_thresh": -0.1}, "prob_thresh"),
        ({"prob_thresh": 1.5}, "prob_thresh"),
        ({"prob_thresh": float("nan")}, "prob_thresh"),
        ({"cos_thresh": 1.5}, "cos_thresh"),
        ({"cos_thresh": -1.01}, "cos_thresh"),
        ({"stride": 0}, "stride"),
        ({"stride": -8}, "stride"),
        ({"window": 0}, "window"),
        ({"window": -48}, "window"),
        ({"short_side": 0}, "short_side"),
        ({"short_side": -10}, "short_side"),
    ],
)
def test_out_of_range_settings_are_refused_at_construction(clip, options, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        vfm.pipeline("zero-shot-seg", model=clip, **options)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"prob_thresh": 1.01}, "prob_thresh"),
        ({"prob_thresh": -1.0}, "prob_thresh"),
        ({"cos_thresh": 2.0}, "cos_thresh"),
    ],
)
def test_out_of_range_thresholds_are_refused_at_call_time(small_seg, photos, options, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        small_seg(photos[0], labels=LABELS, **options)


def test_method_options_and_region_masks_are_checked(clip, photos):
    with pytest.raises(ValueError, match="method_options are for the methods"):
        vfm.pipeline("zero-shot-seg", model=clip, mode="sclip", method_options={"dino": "x"})
    with pytest.raises(ValueError, match="unknown method_options \\['nope'\\] for mode='corrclip'"):
        vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", method_options={"nope": 1})
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="maskclip", templates="single")
    with pytest.raises(ValueError, match="region_masks are read by the methods"):
        seg(photos[0], labels=LABELS, region_masks=[np.zeros(photos[0].shape[:2], int)])
    corr = vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", templates="single")
    with pytest.raises(ValueError, match="2 masks for 1 images"):
        corr(photos[0], labels=LABELS, region_masks=[np.zeros(photos[0].shape[:2], int)] * 2)
    with pytest.raises(ValueError, match=r"region_masks\[0\] is \(3, 3\), images\[0\] is"):
        corr(photos[0], labels=LABELS, region_masks=[np.zeros((3, 3), int)])
