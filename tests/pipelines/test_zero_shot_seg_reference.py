"""zero-shot-seg against the reference implementations' own outputs (tests/pipelines/golden/README.md).

SCLIP, ClearCLIP, NACLIP and ProxyCLIP were run unmodified on the tiny ``clip-b16`` checkpoint; here visionfm runs the
same images through its pipeline, end to end from the original photos (rescale, windows, dense modes, resize back,
PAMR, softmax over synonyms, thresholds), and must give the same cosine maps (to 1e-5) and the same label maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.foundation.dense import dense_features, resize_pos_embed
from visionfm.pipelines.seg_presets import REFERENCES
from visionfm.testing import tiny_checkpoint

GOLDEN = Path(__file__).parent / "golden"
BG = ["background", "sky", "wall"]
LABELS = ["person; man", "cup; mug", "rocket", "table"]
TEXTS = [BG] + [lab.split("; ") for lab in LABELS]
ATOL = 1e-5


def _golden(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN / f"{name}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("clip-b16", root=tiny_root), device="cpu")


@pytest.fixture(scope="module")
def photos():
    skimage_data = pytest.importorskip("skimage.data")  # a dev dependency; present in CI
    return {"astronaut": skimage_data.astronaut(), "coffee": skimage_data.coffee()}


def _chw(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a)).permute(2, 0, 1).contiguous()


def _labels_agree(got: torch.Tensor, want: torch.Tensor, probs: torch.Tensor, thresh: float = 0.0) -> None:
    """Label maps equal wherever the reference's decision is not a near-tie (top-2 gap and threshold gap > 1e-4):
    a random tiny CLIP gives probability gaps of 1e-7 somewhere, where float order decides."""
    top2 = probs.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4
    if thresh > 0:
        clear &= (top2[0] - thresh).abs() > 1e-4
    assert clear.float().mean() > 0.9, "too few clear pixels for the comparison to mean anything"
    assert torch.equal(got[clear], want[clear].long()), f"{int((got != want.long())[clear].sum())} pixels differ"


@pytest.mark.parametrize("method", ["sclip", "clearclip", "naclip", "proxyclip"])
def test_goldens_name_their_reference(method):
    _, meta = _golden(method)
    assert meta["commit"] in REFERENCES[method] and meta["repo"].split("/")[-1].lower() in REFERENCES[method].lower()


def test_text_embeddings_match_every_reference(clip):
    seg = vfm.pipeline("zero-shot-seg", model=clip)
    w, owner = seg.text_weights(TEXTS)
    for method, key in (("sclip", "query_features"), ("clearclip", "query_features"),
                        ("naclip", "text/query_features"), ("proxyclip", "text_embeddings")):  # fmt: skip
        g, _ = _golden(method)
        torch.testing.assert_close(w, g[key], atol=1e-6, rtol=0)
    assert owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4]


# -- dense features at native and non-native sizes -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "mode", "key", "image", "crop"),
    [
        ("sclip", "sclip", "a224", "astronaut", (224, 224)),
        ("sclip", "sclip", "a336", "astronaut", (336, 336)),
        ("sclip", "sclip", "c224x336", "coffee", (224, 336)),
        ("sclip", "sclip", "c200x224", "coffee", (200, 224)),  # 200 is not a multiple of 16: the floor grid
        ("clearclip", "clearclip", "a224", "astronaut", (224, 224)),
        ("clearclip", "clearclip", "a448", "astronaut", (448, 448)),
        ("clearclip", "clearclip", "c224x336", "coffee", (224, 336)),
    ],
)
def test_dense_features_match_the_reference(clip, method, mode, key, image, crop):
    g, _ = _golden(method)
    inputs, _ = _golden(f"{method}_inputs")
    rgb = _chw(inputs[f"rgb_{image}"])  # the reference's resized image: prepare() must leave its size
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode=mode, short_side=min(rgb.shape[-2:]))
    x = seg.prepare(rgb)
    win = x[None, :, : crop[0], : crop[1]]
    gh, gw = crop[0] // 16, crop[1] // 16
    with torch.inference_mode():
        got = dense_features(clip, win[..., : gh * 16, : gw * 16], mode, pos_interp="dino")
    want = g[f"dense_feats_{key}"][0]
    want = want[1:] if want.shape[0] == gh * gw + 1 else want  # SCLIP keeps the class token in front
    torch.testing.assert_close(got[0].reshape(gh * gw, -1), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("method", "key", "grid"), [("sclip", "14x21", (14, 21)), ("sclip", "12x14", (12, 14)),
                                                     ("clearclip", "28x28", (28, 28))])  # fmt: skip
def test_position_embeddings_are_resized_as_the_references_do(clip, method, key, grid):
    g, _ = _golden(method)
    table = clip.model.visual.positional_embedding.detach()
    want = g[f"pos_embed_interp_{key}"][0]
    torch.testing.assert_close(resize_pos_embed(table, 1, (14, 14), grid, "dino"), want, atol=1e-6, rtol=0)
    assert (resize_pos_embed(table, 1, (14, 14), grid, "size") - want).abs().max() > 1e-3  # the other convention


def test_naclip_patch_logits_and_position_table(clip):
    g, _ = _golden("naclip")
    table = clip.model.visual.positional_embedding.detach()
    torch.testing.assert_close(resize_pos_embed(table, 1, (14, 14), (14, 21), "dino"), g["vit/pos_embed_14x21"],
                               atol=1e-6, rtol=0)  # fmt: skip
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="naclip")
    w, _ = seg.text_weights(TEXTS)
    x = seg.prepare(_chw(g["input/astronaut_rgb_u8"]))
    xc = seg.prepare(_chw(g["input/coffee_rgb_u8"]))
    with torch.inference_mode():
        for key, win in (("crop224", x[None, :, :224, :224]), ("astronaut336", x[None]),
                         ("coffee224x336", xc[None, :, :224, :336]), ("coffee336x504", xc[None])):  # fmt: skip
            emb = torch.nn.functional.normalize(seg._dense(win), dim=-1)[0]
            got = torch.einsum("hwd,sd->shw", emb, w)
            torch.testing.assert_close(got, g[f"{key}/patch_logits"], atol=ATOL, rtol=0)


# -- the whole protocol, from the original photos ----------------------------------------------------------------------
def _rowcol(g: dict, image: str) -> tuple[torch.Tensor, torch.Tensor]:
    return g[f"rows_{image}"], g[f"cols_{image}"]


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_sclip_protocol(clip, photos, image):
    g, _ = _golden("sclip")
    rows, cols = _rowcol(g, image)
    px = _chw(photos[image])
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="sclip")  # SCLIP's defaults: 336 / 224 / 112, scale 40
    w, _ = seg.text_weights(TEXTS)
    cos = seg.scores(px, w)
    torch.testing.assert_close(cos[:, rows][:, :, cols], g[f"slide_logits_{image}"][0], atol=ATOL, rtol=0)
    pam = vfm.pipeline("zero-shot-seg", model=clip, mode="sclip", refine="pamr", pamr_steps=10).scores(px, w)
    torch.testing.assert_close(pam[:, rows][:, :, cols], g[f"slide_logits_pamr_{image}"][0], atol=ATOL, rtol=0)
    for variant, opts in (("voc", {}), ("voc_pamr", {"refine": "pamr"})):
        voc = vfm.pipeline("zero-shot-seg", model=clip, mode="sclip", logit_scale=65, prob_thresh=0.1, area_thresh=0.1,
                           **opts)  # fmt: skip
        out = voc(photos[image], labels=LABELS, background=BG)
        want_p = g[f"probs_{variant}_{image}"]
        torch.testing.assert_close(out.probs[:, rows][:, :, cols], want_p, atol=ATOL, rtol=0)
        _labels_agree(out.label_map[rows][:, cols], g[f"labels_{variant}_{image}"][0], want_p, 0.1)
    ade = seg(photos[image], labels=["background; sky; wall", *LABELS])  # no background class, no thresholds
    _labels_agree(ade.label_map[rows][:, cols], g[f"labels_ade_{image}"][0], g[f"probs_ade_{image}"])
    torch.testing.assert_close(ade.probs[:, rows][:, :, cols], g[f"probs_ade_{image}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_clearclip_protocol(clip, photos, image):
    g, _ = _golden("clearclip")
    rows, cols = _rowcol(g, image)
    opts = {"mode": "clearclip", "short_side": 448, "window": 448, "stride": 224, "logit_scale": 50, "pad_multiple": 16}
    seg = vfm.pipeline("zero-shot-seg", model=clip, **opts)
    w, _ = seg.text_weights(TEXTS)
    cos = seg.scores(_chw(photos[image]), w)
    torch.testing.assert_close(cos[:, rows][:, :, cols], g[f"slide_logits_{image}"][0], atol=ATOL, rtol=0)
    out = vfm.pipeline("zero-shot-seg", model=clip, prob_thresh=0.5, **opts)(photos[image], labels=LABELS,
                                                                              background=BG)  # fmt: skip
    torch.testing.assert_close(out.probs[:, rows][:, :, cols], g[f"probs_voc_{image}"], atol=ATOL, rtol=0)
    _labels_agree(out.label_map[rows][:, cols], g[f"labels_voc_{image}"][0], g[f"probs_voc_{image}"], 0.5)
    ade = seg(photos[image], labels=["background; sky; wall", *LABELS])
    _labels_agree(ade.label_map[rows][:, cols], g[f"labels_ade_{image}"][0], g[f"probs_ade_{image}"])


@pytest.mark.parametrize(("method", "opts"), [("sclip", {"mode": "sclip"}),
                                              ("clearclip", {"mode": "clearclip", "pad_multiple": 16})])  # fmt: skip
def test_a_window_larger_than_the_image(clip, method, opts):
    """An image smaller than the window: SCLIP encodes it on the floor grid and stretches the scores, ClearCLIP pads
    it (centred, zeros after normalisation) to a multiple of 16 and crops the scores back."""
    g, _ = _golden(method)
    inputs, _ = _golden(f"{method}_inputs")
    small = _chw(inputs["rgb_coffee"])[:, :200, :300]
    window = 224 if method == "sclip" else 448
    seg = vfm.pipeline("zero-shot-seg", model=clip, short_side=200, window=window, stride=window // 2, **opts)
    w, _ = seg.text_weights(TEXTS)
    cos = seg.scores(small, w)  # short side already 200: no rescale
    got = cos[:, g["edge_rows"]][:, :, g["edge_cols"]]
    torch.testing.assert_close(got, g["slide_logits_edge"][0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
@pytest.mark.parametrize("inference", ["slide", "whole"])
def test_naclip_protocol(clip, photos, image, inference):
    g, _ = _golden("naclip")
    px = _chw(photos[image])
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="naclip", inference=inference)
    w, _ = seg.text_weights(TEXTS)
    x = seg.prepare(px)
    torch.testing.assert_close(seg.text_logits(x, w)[:, ::16, ::16], g[f"{image}/{inference}/seg_logits_in_s16"],
                               atol=ATOL, rtol=0)  # fmt: skip
    torch.testing.assert_close(seg.scores(px, w)[:, ::16, ::16], g[f"{image}/{inference}/seg_logits_ori_s16"],
                               atol=ATOL, rtol=0)  # fmt: skip
    pam = vfm.pipeline("zero-shot-seg", model=clip, mode="naclip", inference=inference, refine="pamr")
    torch.testing.assert_close(pam.scores(px, w)[:, ::16, ::16], g[f"{image}/{inference}/pamr_ori_s16"],
                               atol=ATOL, rtol=0)  # fmt: skip


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
@pytest.mark.parametrize(
    ("variant", "preset", "opts"),
    [
        ("voc21", "naclip-voc21", {}),  # whole image, PAMR, prob_thresh 0.1: NACLIP's VOC21 config
        ("voc21_nopamr", "naclip-voc21", {"refine": False}),
        ("thd_probe", "naclip-voc21", {"prob_thresh": 0.221}),  # a threshold that fires on the tiny model
        ("ctx60", "naclip-context60", {}),
        ("ade", "naclip-ade20k", {}),
        ("ade_nopamr", "naclip-ade20k", {"refine": False}),
    ],
)
def test_naclip_presets_give_the_reference_label_maps(clip, photos, image, variant, preset, opts):
    g, _ = _golden("naclip")
    seg = vfm.pipeline("zero-shot-seg", model=clip, preset=preset, **opts)
    with_bg = not variant.startswith("ade")
    out = (
        seg(photos[image], labels=LABELS, background=BG)
        if with_bg
        else seg(photos[image], labels=["sky", "wall", *LABELS])
    )
    probs = out.probs[:, ::4, ::4]
    want = g[f"{variant}/{image}/probs_s16"]  # the reference returns class probabilities renormalised to sum 1
    torch.testing.assert_close((out.probs / out.probs.sum(0, keepdim=True))[:, ::16, ::16], want, atol=ATOL, rtol=0)
    thresh = seg.prob_thresh if "prob_thresh" not in opts else opts["prob_thresh"]
    _labels_agree(out.label_map[::4, ::4], g[f"{variant}/{image}/label_s4"], probs, thresh)
    assert out.protocol["preset"] == preset and out.protocol["reference"].startswith(REFERENCES["naclip"])


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
@pytest.mark.parametrize(("proxy_name", "folder", "grid"), [("dino", "proxyclip_dino_b8", 42),
                                                            ("dinov2", "proxyclip_dinov2_reg", 24)])  # fmt: skip
def test_proxyclip_protocol(clip, photos, image, proxy_name, folder, grid):
    """ProxyCLIP with its default proxy (DINO ViT-B/8 shape: patch 8, the window at its own 336 px -> 42x42) and with
    DINOv2-with-registers (patch 14 -> 24x24)."""
    g, _ = _golden("proxyclip")
    proxy = vfm.load_encoder(str(GOLDEN / folder), device="cpu")
    preset = vfm.pipeline("zero-shot-seg", model=clip, preset="proxyclip-voc21", proxy=proxy)
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="proxy", proxy=proxy, window=336, stride=112, pad_multiple=56)
    assert {k: preset.protocol[k] for k in ("window", "stride", "pad_multiple", "short_side", "logit_scale")} == {
        k: seg.protocol[k] for k in ("window", "stride", "pad_multiple", "short_side", "logit_scale")
    }
    w, _ = seg.text_weights(TEXTS)
    x = seg.prepare(_chw(photos[image]))
    # One pair of DINO's coffee tokens sits on the proxy mask's threshold (a logit of 0 is kept, below 0 masked), so
    # float order moves those scores by 6e-5 there; everywhere else they agree to 2e-7.
    atol = 1e-4 if proxy_name == "dino" else ATOL
    if image == "astronaut":  # one 336 window: the proxy answers on its own grid
        with torch.inference_mode():
            emb = torch.nn.functional.normalize(seg._dense(x[None]), dim=-1)[0]
        assert tuple(emb.shape[:2]) == (grid, grid)
        torch.testing.assert_close(torch.einsum("hwd,sd->shw", emb, w),
                                   g[f"{proxy_name}/astronaut_crop/logits_proxy_grid"], atol=ATOL, rtol=0)  # fmt: skip
    cos = seg.scores(_chw(photos[image]), w)
    torch.testing.assert_close(cos[:, ::8, ::8], g[f"{proxy_name}/{image}/seg_logits_s8"], atol=atol, rtol=0)
    for variant in ("voc", "ade"):  # the preset's prob_thresh 0.2 with background; no background, no threshold
        labels, bg = (LABELS, BG) if variant == "voc" else (["background; sky; wall", *LABELS], False)
        out = (preset if variant == "voc" else seg)(photos[image], labels=labels, background=bg)
        assert torch.equal(out.label_map[::4, ::4], g[f"{proxy_name}/{image}/labels_{variant}_s4"].long())
    assert json.loads(json.dumps(out.protocol))["proxy_grid"] is True


def test_pamr_scores_do_not_depend_on_the_thread_count(clip, photos):
    """PAMR divides by local spreads that are rounding errors in flat regions; its guide and affinities are computed on
    one thread, so 1 and 2 threads agree (the refined maps differed by 1e-2 on the astronaut without that)."""
    seg = vfm.pipeline("zero-shot-seg", model=clip, mode="naclip", inference="whole", refine="pamr")
    w, _ = seg.text_weights(TEXTS)
    px = _chw(photos["astronaut"])
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = seg.scores(px, w)
        torch.set_num_threads(2)
        two = seg.scores(px, w)
    finally:
        torch.set_num_threads(n)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)
