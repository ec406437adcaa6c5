"""``mode="corrclip"`` against CorrCLIP's own code (github.com/zdk258/CorrCLIP @ 6c1fd2c) on the same tiny weights.

Goldens (``tests/pipelines/golden/``; each file's metadata names the repository, commit, settings and every tensor):

- ``corrclip.safetensors``: their code unmodified, in float32, on a 12-layer ViT-B/16-shaped tiny CLIP (``tiny_checkpoint(
  "clip-b16-12layer")`` at seed 0, bit-identical to the golden's weights: their code needs >= 5 layers) and a tiny
  DINO ViT/8 (``corrclip_dino_b8/``), VOC21's config (short side 336, windows 336 / 112, padding to 56, logit scale 40,
  prob_thd 0.2), SLIC superpixels with every 4th id set to 0 as region masks;
- ``corrclip_extra.safetensors``: the same harness on what that golden does not reach (the generator's source is in its
  metadata): ``pad`` (short side 300: windows padded 300 -> 336, region ids padded with their 10000) and ``nozero``
  (ids ``where(m == 0, 200, m) * 37``: no 0, each window's smallest id is a real region).

Everything the references compute exactly agrees to <= 1e-5 (measured <= 2e-7 for cosines, 7e-7 for probabilities),
DBSCAN's clusters and the final label maps are equal.

The reference merges synonyms by taking the max over the first ``Q - K + 1`` texts (right only when class 0 alone has
synonyms); with this label set its channel 0 is ``max(background, sky, wall, person, man)`` and its classes 1-4 are
``cup, mug, rocket, table``. visionfm gives every class its best synonym; the tests compare the raw per-text cosine maps,
and label maps with ``background=[background, sky, wall, person, man], labels=[cup, mug, rocket, table]``: the same
texts in the same order, grouped exactly as the reference groups them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm.pipelines import seg_corrclip as C
from visionfm.pipelines.seg_methods import seg_methods
from visionfm.pipelines.seg_protocol import class_probs, pad_to_multiple, window_grid
from visionfm.testing import tiny_checkpoint
from visionfm.testing.clip_deep import TINY_B16_12LAYER_CFG

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDEN = Path(__file__).parent / "golden"
QUERIES = ["background", "sky", "wall", "person", "man", "cup", "mug", "rocket", "table"]  # the name file's order
BUG_BG, BUG_LABELS = QUERIES[:5], QUERIES[5:]  # grouped as the reference's postprocess groups them
BG, LABELS = ["background", "sky", "wall"], ["person; man", "cup; mug", "rocket", "table"]  # the right grouping
ATOL = 1e-5
CASES = [("corrclip", "", 336), ("corrclip_extra", "pad/", 300), ("corrclip_extra", "nozero/", 336)]


def _golden(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN / f"{name}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def golden():
    return {name: _golden(name)[0] for name in ("corrclip", "corrclip_extra")}


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("clip-b16-12layer", root=tiny_root), device="cpu")


@pytest.fixture(scope="module")
def dino():
    return vfm.load_encoder(str(GOLDEN / "corrclip_dino_b8"), device="cpu")


@pytest.fixture(scope="module")
def images():
    skimage_data = pytest.importorskip("skimage.data")  # a dev dependency; present in CI
    return {"astronaut": skimage_data.astronaut(), "coffee": skimage_data.coffee()}


def _seg(clip, dino, short_side: int = 336, **kw):
    """CorrCLIP's VOC21 protocol (cfg_voc21.py over base_config.py)."""
    return vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", short_side=short_side, window=336, stride=112,
                        pad_multiple=56, logit_scale=40, prob_thresh=0.2, method_options={"dino": dino, **kw})  # fmt: skip


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a).permute(2, 0, 1).contiguous()


def _mask(golden, prefix: str, image: str) -> torch.Tensor:
    m = golden["corrclip"][f"{image}/instance_mask"].long()
    return torch.where(m == 0, 200, m) * 37 if prefix == "nozero/" else m


# -- provenance and inputs ---------------------------------------------------------------------------------------------
def test_goldens_name_the_reference_and_the_weights():
    method = seg_methods()["corrclip"]
    assert method.reference == C.REFERENCE and method.refine is not None
    for name in ("corrclip", "corrclip_extra"):
        _, meta = _golden(name)
        assert f"{meta['repo']}@{meta['commit']}" == C.REFERENCE
        assert json.loads(meta["labels"]) == ["background; sky; wall", "person; man", "cup; mug", "rocket", "table"]
    _, meta = _golden("corrclip")
    assert json.loads(meta["clip"].split(": ", 1)[1]) == TINY_B16_12LAYER_CFG  # the weights the test writes
    assert json.loads(meta["config"])["slide_crop"] == 336 and json.loads(meta["config"])["prob_thd"] == 0.2


def test_text_embeddings_and_input_match(clip, dino, golden, images):
    seg = _seg(clip, dino)
    w, _ = seg.text_weights([[q] for q in QUERIES])
    torch.testing.assert_close(w, golden["corrclip"]["text_query_features"], atol=1e-6, rtol=0)
    for image in images:
        x = seg.prepare(_chw(images[image]))
        torch.testing.assert_close(x[:, ::8, ::8], golden["corrclip"][f"{image}/input_normalized_stride8"], atol=ATOL,
                                   rtol=0)  # fmt: skip
        n = golden["corrclip"][f"{image}/n_crops"].item()
        assert len(window_grid(tuple(x.shape[-2:]), 336, 112)) == n


# -- one window: DBSCAN's clusters and the features on DINO's grid -----------------------------------------------------
@pytest.mark.parametrize(("file", "prefix", "short_side"), CASES)
@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_first_window_matches_the_reference(clip, dino, golden, images, file, prefix, short_side, image):
    g = golden[file]
    seg = _seg(clip, dino, short_side)
    w, _ = seg.text_weights([[q] for q in QUERIES])
    x = seg.prepare(_chw(images[image]))
    mask = _mask(golden, prefix, image)
    ids = C._nearest(C._ranked(mask, tuple(mask.shape)), tuple(x.shape[-2:]))
    y1, x1 = min(336, x.shape[1]), min(336, x.shape[2])
    pad = pad_to_multiple(y1, x1, 56)
    assert any(pad) == (prefix == "pad/")
    crop = F.pad(x[:, :y1, :x1], pad)
    crop_ids = F.pad(ids[:y1, :x1], pad, value=int(ids.max()) + 1)
    with torch.inference_mode():
        res = C.corrclip_window(clip, dino, crop, crop_ids)
    assert res.clusters is not None and res.clusters.tolist() == g[f"{prefix}{image}/crop0_dbscan_labels"].tolist()
    assert tuple(res.features.shape) == (42, 42, 64) and tuple(res.regions.shape) == (42, 42)
    logits = torch.einsum("hwd,sd->shw", F.normalize(res.features, dim=-1), w)
    torch.testing.assert_close(logits, g[f"{prefix}{image}/crop0_logits"], atol=ATOL, rtol=0)


# -- the whole image: per-text cosine maps, class probabilities, label maps after map correction ----------------------
@pytest.mark.parametrize(("file", "prefix", "short_side"), CASES)
@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_protocol_matches_the_reference(clip, dino, golden, images, file, prefix, short_side, image):
    g = golden[file]
    seg = _seg(clip, dino, short_side)
    w, _ = seg.text_weights([[q] for q in QUERIES])
    px = _chw(images[image])
    mask = _mask(golden, prefix, image)
    cos = C.corrclip_cosine(seg, px, seg.prepare(px), w, seg.method_options, mask)
    assert tuple(cos.shape) == (9, *px.shape[-2:]) and float(cos.abs().max()) <= 1
    torch.testing.assert_close(
        cos[:, ::8, ::8], g[f"{prefix}{image}/seg_logits_queries_ori_stride8"], atol=ATOL, rtol=0
    )

    out = seg(images[image], labels=BUG_LABELS, background=BUG_BG, region_masks=[mask.numpy()])
    assert out.labels == ["background", *BUG_LABELS]
    if prefix == "":
        torch.testing.assert_close(out.probs[:, ::8, ::8], g[f"{image}/probs_ori_stride8"], atol=ATOL, rtol=0)
        want = g[f"{image}/pred"].long()
    else:
        want = g[f"{prefix}{image}/pred_stride2"].long()
    # Map correction makes each region one label; the label maps are equal to the pixel (measured: 0 pixels differ).
    got = out.label_map if prefix == "" else out.label_map[::2, ::2]
    assert torch.equal(got, want), f"{int((got != want).sum())} pixels differ"
    assert out.protocol["method"] == C.REFERENCE and out.protocol["mode"] == "corrclip"


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_synonyms_are_merged_per_class_unlike_the_reference(clip, dino, golden, images, image):
    """visionfm: each class its best synonym (probabilities from the reference's own cosine maps, grouped right); the
    reference's background channel also takes 'person' and 'man', so it is >= visionfm's and larger somewhere."""
    g = golden["corrclip"]
    seg = _seg(clip, dino)
    out = seg(images[image], labels=LABELS, background=BG, region_masks=[g[f"{image}/instance_mask"].numpy()])
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 4])
    want = class_probs(g[f"{image}/seg_logits_queries_ori_stride8"], owner, 5, 40.0)
    torch.testing.assert_close(out.probs[:, ::8, ::8], want, atol=ATOL, rtol=0)
    ref_bg = g[f"{image}/probs_ori_stride8"][0]
    assert bool((ref_bg >= want[0] - 1e-6).all()) and float((ref_bg - want[0]).max()) > 1e-3


# -- the pieces, on their own ------------------------------------------------------------------------------------------
def test_dbscan_matches_sklearn():
    cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(0)
    eps32 = np.float32(0.2)
    for trial in range(60):
        n = int(rng.integers(1, 25))
        f = rng.normal(size=(n, 4)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        s = f @ f.T
        d = (s.max() - s).astype(np.float32)
        if trial % 3 == 1:  # ties on the radius, in float32
            d[rng.random((n, n)) < 0.2] = eps32
        if trial % 3 == 2:  # not symmetric, and points that are not their own neighbour (noise / border points)
            d = rng.uniform(0, 0.5, size=(n, n)).astype(np.float32)
        want = cluster.DBSCAN(eps=0.2, min_samples=1, metric="precomputed").fit_predict(d)
        assert C.dbscan_min1(d, 0.2).tolist() == want.tolist(), trial


def test_map_correction():
    labels = torch.tensor([[1, 1, 2, 2], [4, 2, 0, 3], [3, 3, 4, 4]])
    regions = torch.tensor([[9, 9, 9, 9], [5, 9, 5, 5], [7, 7, 7, 7]])  # 5, the smallest id, is "unsegmented"
    out = C.map_correction(labels, regions)
    # region 9: labels 1,1,2,2,2 -> 2; region 7: 3,3,4,4 -> a tie, the smaller label 3; 5 keeps 4, 0, 3
    assert out.tolist() == [[2, 2, 2, 2], [4, 2, 0, 3], [3, 3, 3, 3]]
    g = torch.Generator().manual_seed(0)
    lab, reg = torch.randint(0, 5, (40, 50), generator=g), torch.randint(0, 9, (40, 50), generator=g) * 11
    want = lab.clone()
    for v in torch.unique(reg)[1:]:  # the reference's loop: torch.mode per region
        want[reg == v] = torch.mode(lab[reg == v])[0]
    assert torch.equal(C.map_correction(lab, reg), want)


def test_spatial_blocks_and_layer_count(tiny_root, dino, images):
    assert [C.default_num_spatial(n) for n in (12, 24, 32, 16)] == [5, 12, 28, 12]
    assert list(C.spatial_blocks(12)) == [5, 6, 7, 8, 9] and list(C.spatial_blocks(24)) == list(range(10, 22))
    assert list(C.spatial_blocks(32)) == list(range(2, 30)) and list(C.spatial_blocks(12, 2)) == [8, 9]
    two = vfm.load_encoder(tiny_checkpoint("clip-b16", root=tiny_root), device="cpu")  # 2 layers
    seg = vfm.pipeline("zero-shot-seg", model=two, mode="corrclip", method_options={"dino": dino})
    with pytest.raises(ValueError, match="at least 5 layers"):
        seg(images["astronaut"], labels=["cup"])


def test_branch_weights_combine_linearly(clip, dino, golden, images):
    """features = (ln_post(main) + alpha ln_post(spatial) + beta ln_post(semantic)) @ proj."""
    seg = _seg(clip, dino)
    x = seg.prepare(_chw(images["astronaut"]))
    ids = C._nearest(golden["corrclip"]["astronaut/instance_mask"].long(), tuple(x.shape[-2:]))

    def feats(alpha, beta):
        with torch.inference_mode():
            return C.corrclip_window(clip, dino, x, ids, C.CorrCLIPOptions(alpha=alpha, beta=beta)).features

    main, spat, sem = feats(0, 0), feats(1, 0) - feats(0, 0), feats(0, 1) - feats(0, 0)
    torch.testing.assert_close(feats(1.0, 0.5), main + spat + 0.5 * sem, atol=ATOL, rtol=0)
    assert float(spat.abs().max()) > 1e-3 and float(sem.abs().max()) > 1e-3


def test_region_ids_are_only_an_order(clip, dino, golden, images):
    """Any integer ids (here up to 2**45): only their order and equality count."""
    seg = _seg(clip, dino)
    w, _ = seg.text_weights([[q] for q in QUERIES])
    px = _chw(images["coffee"])
    x = seg.prepare(px)
    m = golden["corrclip"]["coffee/instance_mask"].long()
    a = C.corrclip_cosine(seg, px, x, w, seg.method_options, m)
    b = C.corrclip_cosine(seg, px, x, w, seg.method_options, m * 2**40 + 5)
    assert torch.equal(a, b)


def test_without_region_masks_the_image_is_one_unsegmented_region(clip, dino, images, caplog):
    seg = _seg(clip, dino)
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        out = seg(images["astronaut"], labels=LABELS, background=BG)
        seg(images["astronaut"][:100, :100], labels=LABELS, background=BG)
    assert caplog.text.count("without region_masks") == 1  # once per pipeline
    zeros = seg(images["astronaut"], labels=LABELS, background=BG, region_masks=[np.zeros((512, 512), np.int64)])
    assert torch.equal(out.probs, zeros.probs) and torch.equal(out.label_map, zeros.label_map)


def test_whole_image_inference_is_one_window(clip, dino, golden, images):
    mask = [golden["corrclip"]["astronaut/instance_mask"].numpy()]
    slide = _seg(clip, dino)(images["astronaut"], labels=LABELS, background=BG, region_masks=mask)  # 336x336: 1 window
    whole = vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", inference="whole", pad_multiple=56,
                         prob_thresh=0.2, method_options={"dino": dino})(images["astronaut"], labels=LABELS,
                                                                          background=BG, region_masks=mask)  # fmt: skip
    assert torch.equal(slide.probs, whole.probs) and torch.equal(slide.label_map, whole.label_map)


def test_options_are_checked(clip, dino, images):
    with pytest.raises(ValueError, match="unknown method_options"):
        vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", method_options={"gamma": 1})
    for bad, err in (({"tau": 0}, ValueError), ({"alpha": "1"}, TypeError), ({"num_spatial": 0}, ValueError),
                     ({"dbscan_eps": -0.1}, ValueError), ({"dino": 3}, TypeError), ({"dino": clip}, TypeError)):  # fmt: skip
        seg = vfm.pipeline("zero-shot-seg", model=clip, mode="corrclip", method_options={"dino": dino, **bad})
        with pytest.raises(err):
            seg(images["astronaut"][:64, :64], labels=["cup"])
    assert seg_methods()["corrclip"].defaults == C.DEFAULTS and C.DEFAULTS["dino"] == "dino-vitb8"


def test_only_open_clip_vits(tiny_root, dino, images):
    hf = vfm.load_encoder(tiny_checkpoint("clip", "transformers", root=tiny_root), device="cpu")
    seg = vfm.pipeline("zero-shot-seg", model=hf, mode="corrclip", method_options={"dino": dino})
    with pytest.raises(NotImplementedError, match="open_clip ViT"):
        seg(images["astronaut"][:64, :64], labels=["cup"])
