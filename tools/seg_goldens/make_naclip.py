#!/usr/bin/env python
"""Golden outputs of NACLIP's own code on visionfm's tiny ``clip-b16`` weights.

Reference: github.com/sinahmr/NACLIP @ 0cac3a651f753b11315ea799cfbfabf79da1bd76 (WACV 2025),
checked out (unmodified) at REF_DIR/naclip/src by fetch_refs.py (REF_DIR: ref_paths.py).
mmseg / mmengine are replaced by the minimal stand-ins in stubs/naclip (see its README):
NACLIP's methods (``__init__``, ``forward_feature``, ``forward_slide``, ``predict``,
``postprocess_result``), its clip fork and its PAMR run unmodified.

One command (from the repository root, in the venv of README.md; 2 CPU threads max; uses one):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_naclip.py

Writes OUT/work/naclip/tiny_b16.pt (the tiny state dict, OpenAI CLIP keys), the two class files next to it, and
OUT/naclip.safetensors (+ its metadata; every tensor is described there); OUT = $VISIONFM_GOLDEN_OUT, default a
temporary folder (ref_paths.py).

Only deviation from their runtime path: ``clip.model.convert_weights`` is turned into a no-op while
the main model is built, so the weights stay exact float32 (their ``build_model`` casts the module to
fp16 *before* ``load_state_dict``, and ``clip.load`` casts back with ``.float()`` on CPU, which rounds
every weight to fp16). A diagnostic tensor computed with the unpatched loader is included.
"""

import hashlib
import json
import os
import sys
from collections import OrderedDict

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

torch.set_num_threads(1)

import ref_paths  # noqa: E402

REPO = "sinahmr/NACLIP"
COMMIT = "0cac3a651f753b11315ea799cfbfabf79da1bd76"
WORK = str(ref_paths.work_dir("naclip"))
SRC = str(ref_paths.check_src("naclip", COMMIT))
STUBS = str(ref_paths.STUBS_DIR / "naclip")
sys.path.insert(0, STUBS)
sys.path.insert(0, SRC)
CKPT = os.path.join(WORK, "tiny_b16.pt")
CLS_BG = os.path.join(WORK, "cls_tiny_bg.txt")
CLS_NOBG = os.path.join(WORK, "cls_tiny_nobg.txt")
OUT = str(ref_paths.out_dir() / "naclip.safetensors")

import clip.model as clip_model  # noqa: E402  (their fork)
import cv2  # noqa: E402  (mmcv's Resize backend)
import naclip as naclip_mod  # noqa: E402  (their segmentor)
import skimage.data  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402  (stub)
from safetensors.torch import save_file  # noqa: E402


def write_tiny_ckpt():
    """visionfm's tiny clip-b16 (OpenAI CLIP keys) -> torch.save'd state dict for clip.load."""
    sys.path.insert(0, str(ref_paths.REPO_ROOT))
    from safetensors.torch import load_file

    from visionfm.testing import tiny_checkpoint

    d = tiny_checkpoint("clip-b16")
    sd = load_file(os.path.join(str(d), "open_clip_model.safetensors"))
    torch.save(OrderedDict(sd), CKPT)
    return str(d), sd


def write_class_files():
    # their format: one class per line, synonyms separated by ', ' ; no trailing newline (like theirs)
    with open(CLS_BG, "w") as f:
        f.write("background, sky, wall\nperson, man\ncup, mug\nrocket\ntable")
    with open(CLS_NOBG, "w") as f:
        f.write("sky\nwall\nperson, man\ncup, mug\nrocket\ntable")


def mmseg_load_resize(rgb, scale=(2048, 336)):
    """LoadImageFromFile (cv2 -> BGR) + mmcv Resize(scale, keep_ratio=True) + PackSegInputs.

    mmcv.imrescale: f = min(max(scale)/max(h, w), min(scale)/min(h, w));
    new (w, h) = (int(w*f + 0.5), int(h*f + 0.5)); cv2.resize(..., INTER_LINEAR) on uint8.
    """
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    nw, nh = int(w * float(f) + 0.5), int(h * float(f) + 0.5)
    res = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    chw = torch.from_numpy(np.ascontiguousarray(res.transpose(2, 0, 1)))  # uint8, BGR, CHW
    meta = dict(
        ori_shape=(h, w),
        img_shape=(nh, nw),
        pad_shape=(nh, nw),
        scale_factor=(nw / w, nh / h),
        padding_size=[0, 0, 0, 0],
        img_path="skimage",
    )
    return chw, meta, np.ascontiguousarray(res[..., ::-1])  # resized RGB uint8 HWC


def build(name_path, slide_crop=224, prob_thd=0.0, pamr_steps=10, exact_fp32=True):
    """NACLIP(...) exactly as their configs build it (defaults from naclip.py:20-22)."""
    orig = clip_model.convert_weights
    if exact_fp32:
        clip_model.convert_weights = lambda model: None
    try:
        m = naclip_mod.NACLIP(
            clip_path=CKPT,
            name_path=name_path,
            device=torch.device("cpu"),
            arch="reduced",
            attn_strategy="naclip",
            gaussian_std=5.0,
            pamr_steps=pamr_steps,
            pamr_stride=(8, 16),
            prob_thd=prob_thd,
            logit_scale=40,
            slide_stride=112,
            slide_crop=slide_crop,
        )
    finally:
        clip_model.convert_weights = orig
    return m.eval()


def run_predict(model, chw, meta):
    """model.test_step equivalent: data_preprocessor(data, False) -> predict(inputs, data_samples).

    Returns (data_sample, input tensor, seg_logits at model-input res, logits entering postprocess).
    """
    captured = {}
    orig_post = model.postprocess_result
    orig_slide = model.forward_slide
    orig_feat = model.forward_feature

    def post(seg_logits, data_samples):
        captured["post_in"] = seg_logits.detach().clone()
        return orig_post(seg_logits, data_samples)

    def slide(*a, **k):
        out = orig_slide(*a, **k)
        captured["in_res"] = out.detach().clone()
        return out

    def feat(*a, **k):
        out = orig_feat(*a, **k)
        if "in_res" not in captured and model.slide_crop <= 0:
            captured["in_res"] = out.detach().clone()
        return out

    model.postprocess_result, model.forward_slide, model.forward_feature = post, slide, feat
    try:
        sample = SegDataSample(metainfo=meta)
        data = model.data_preprocessor(dict(inputs=[chw], data_samples=[sample]), False)
        with torch.no_grad():
            out = model.predict(data["inputs"], data["data_samples"])
    finally:
        del model.postprocess_result, model.forward_slide, model.forward_feature
    return out[0], data["inputs"], captured["in_res"], captured["post_in"]


def patch_logits(model, img):
    """forward_feature without its final bilinear upsample (checked against forward_feature)."""
    with torch.no_grad():
        tokens = model.net.encode_image(img, return_all=True)
        feats = tokens[:, 1:]
        feats = feats / feats.norm(dim=-1, keepdim=True)
        lg = feats @ model.query_features.T
        p = model.net.visual.patch_size
        gh, gw = img.shape[-2] // p, img.shape[-1] // p
        lg = lg.permute(0, 2, 1).reshape(-1, lg.shape[-1], gh, gw)
        full = model.forward_feature(img)
    up = F.interpolate(lg, size=img.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(up, full, atol=1e-6, rtol=0), (up - full).abs().max()
    return tokens[0], lg[0]


def main():
    ckpt_dir, sd = write_tiny_ckpt()
    write_class_files()
    sha = hashlib.sha256(open(CKPT, "rb").read()).hexdigest()
    T, D = OrderedDict(), {}

    def put(name, t, desc):
        t = t.detach().contiguous()
        if t.dtype.is_floating_point:
            t = t.float()
        T[name] = t.cpu()
        D[name] = desc

    images = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee()}
    prep = {k: mmseg_load_resize(v) for k, v in images.items()}
    for k, (_chw, meta, rgb) in prep.items():
        put(
            f"input/{k}_rgb_u8",
            torch.from_numpy(rgb),
            f"skimage.data.{k}() {meta['ori_shape']} after mmcv Resize(scale=(2048,336), keep_ratio=True) "
            f"[cv2 INTER_LINEAR on uint8, size int(x*f+0.5)] -> {meta['img_shape']} HWC uint8 RGB. Model input = "
            f"(x - [122.771,116.746,104.094]) / [68.501,66.632,70.323] per RGB channel, float32, NCHW.",
        )

    m_bg = build(CLS_BG, slide_crop=224, prob_thd=0.0, pamr_steps=0)
    m_nobg = build(CLS_NOBG, slide_crop=224, prob_thd=0.0, pamr_steps=0)
    assert torch.allclose(m_nobg.query_features, m_bg.query_features[1:], atol=1e-6)
    put(
        "text/query_features",
        m_bg.query_features,
        "NACLIP.query_features for cls_tiny_bg.txt (9 queries: background, sky, wall, person, man, cup, mug, "
        "rocket, table): per query, encode_text of the 80 openai_imagenet_template prompts, L2-normalise each, "
        "mean, L2-normalise. cls_tiny_nobg.txt's 8 queries are rows 1..8 (checked).",
    )
    put("text/query_idx", m_bg.query_idx, "class index of each query for cls_tiny_bg.txt")

    # ---- backbone pieces -------------------------------------------------------------------------
    vis = m_bg.net.visual
    put(
        "vit/pos_embed_14x21",
        vis.interpolate_pos_encoding(torch.zeros(1, 14 * 21 + 1, vis.width), 224, 336)[0],
        "VisionTransformer.interpolate_pos_encoding for a 224x336 (HxW) input: row 0 = class pos-embed "
        "unchanged, rows 1.. = 14x21 row-major grid, bicubic(align_corners=False) of the 14x14 table with "
        "scale_factor=((14+0.1)/14, (21+0.1)/14), recompute_scale_factor=False.",
    )
    win = vis.gaussian_window(5, 7, std=5.0)
    put(
        "vit/attn_addition_3x4",
        vis.get_attention_addition(3, 4, win),
        "VisionTransformer.get_attention_addition for a 3x4 patch grid, sigma=5 (window 5x7): 13x13, row/col 0 "
        "(class token) zero, [1+i*4+j, 1+k*4+l] = exp(-((i-k)^2+(j-l)^2)/(2*25)).",
    )

    x_ast = m_bg.data_preprocessor(dict(inputs=[prep["astronaut"][0]]), False)["inputs"]
    x_cof = m_bg.data_preprocessor(dict(inputs=[prep["coffee"][0]]), False)["inputs"]
    crop = x_ast[:, :, 0:224, 0:224]
    tok, lg = patch_logits(m_bg, crop)
    put(
        "crop224/tokens",
        tok,
        "astronaut model input [:, :, 0:224, 0:224] (the first slide window): net.encode_image(x, "
        "return_all=True)[0] = ln_post(all 197 tokens) @ proj, before normalisation (row 0 = class token).",
    )
    put(
        "crop224/patch_logits",
        lg,
        "same crop: cosine(patch token, query_features) on the 14x14 grid, [9,14,14]; forward_feature = "
        "bilinear(align_corners=False) upsample of this to 224x224 (checked).",
    )
    _, lg = patch_logits(m_bg, x_ast)
    put(
        "astronaut336/patch_logits",
        lg,
        "whole astronaut model input 336x336 (21x21 grid, pos-embed interpolated): patch-text cosine [9,21,21]",
    )
    _, lg = patch_logits(m_bg, x_cof[:, :, 0:224, 0:336])
    put(
        "coffee224x336/patch_logits",
        lg,
        "coffee model input [:, :, 0:224, 0:336] (HxW 224x336, grid 14x21): patch-text cosine [9,14,21]",
    )
    _, lg = patch_logits(m_bg, x_cof)
    put(
        "coffee336x504/patch_logits",
        lg,
        "whole coffee model input 336x504: conv1 floors to a 21x31 grid "
        "(last 8 px columns unused), pos-embed interpolated to 21x31: patch-text cosine [9,21,31]",
    )

    m16 = build(CLS_BG, pamr_steps=0, exact_fp32=False)
    _, lg16 = patch_logits(m16, crop)
    put(
        "diag/crop224_patch_logits_fp16_rounded_weights",
        lg16,
        "diagnostic only: crop224/patch_logits with their unpatched clip.load (weights rounded to fp16 by "
        "convert_weights before load_state_dict, then .float() on CPU)",
    )
    fp16_diff = float((lg16 - T["crop224/patch_logits"]).abs().max())
    del m16

    # ---- slide vs whole raw logits, PAMR -------------------------------------------------------------
    m_bg_whole = build(CLS_BG, slide_crop=0, prob_thd=0.0, pamr_steps=0)
    m_bg_pamr = build(CLS_BG, slide_crop=224, prob_thd=0.0, pamr_steps=10)
    m_bg_whole_pamr = build(CLS_BG, slide_crop=0, prob_thd=0.0, pamr_steps=10)
    for k, (chw, meta, _) in prep.items():
        for mode, mm, mp in (("slide", m_bg, m_bg_pamr), ("whole", m_bg_whole, m_bg_whole_pamr)):
            _, _, in_res, raw = run_predict(mm, chw, meta)
            _, _, _, pam = run_predict(mp, chw, meta)
            how = (
                "forward_slide(crop 224, stride 112; crops averaged by count)"
                if mode == "slide"
                else "forward_feature on the whole resized image (slide_crop=0)"
            )
            put(
                f"{k}/{mode}/seg_logits_in_s16",
                in_res[0, :, ::16, ::16],
                f"{k}: {how} output at model-input res {tuple(in_res.shape[-2:])}, before resize; "
                f"cls_tiny_bg queries (9); stored [..., ::16, ::16]",
            )
            put(
                f"{k}/{mode}/seg_logits_ori_s16",
                raw[0, :, ::16, ::16],
                f"{k}: same, bilinear(align_corners=False) resized to ori_shape {tuple(raw.shape[-2:])} = the "
                f"logits entering postprocess when PAMR is off; stored [..., ::16, ::16]",
            )
            put(
                f"{k}/{mode}/pamr_ori_s16",
                pam[0, :, ::16, ::16],
                f"{k}: PAMR(num_iter=10, dilations=(8,16)) of the ori-res logits, guided by the normalised "
                f"model input bilinear-resized to ori_shape; = logits entering postprocess with PAMR on "
                f"(before x40 and softmax); stored [..., ::16, ::16]",
            )
    del m_bg_pamr, m_bg_whole_pamr

    # ---- postprocess variants -------------------------------------------------------------------------
    # max postprocess prob (bg file, whole, PAMR) to pick a threshold that actually bites on random weights
    probe = build(CLS_BG, slide_crop=0, prob_thd=0.0, pamr_steps=10)
    mx = []
    for _k, (chw, meta, _) in prep.items():
        s, _, _, post_in = run_predict(probe, chw, meta)
        p = torch.softmax(post_in[0] * 40, 0)
        cls = torch.stack([p[probe.query_idx == c].max(0)[0] for c in range(5)])
        mx.append(cls.max(0)[0].flatten())
    thd_probe = float(torch.quantile(torch.cat(mx), 0.3))
    thd_probe = round(thd_probe, 3)
    del probe

    variants = OrderedDict(
        [
            (
                "voc21",
                dict(
                    name=CLS_BG,
                    slide_crop=0,
                    prob_thd=0.1,
                    pamr_steps=10,
                    d="their VOC21 config: whole image, prob_thd=0.1, background = class 0, PAMR on",
                ),
            ),
            (
                "voc21_nopamr",
                dict(name=CLS_BG, slide_crop=0, prob_thd=0.1, pamr_steps=0, d="VOC21 config with --pamr off"),
            ),
            (
                "thd_probe",
                dict(
                    name=CLS_BG,
                    slide_crop=0,
                    prob_thd=thd_probe,
                    pamr_steps=10,
                    d=f"VOC21 config but prob_thd={thd_probe} (30% quantile of the max class prob here) "
                    f"so the background threshold changes labels on these random weights",
                ),
            ),
            (
                "ctx60",
                dict(
                    name=CLS_BG,
                    slide_crop=224,
                    prob_thd=0.1,
                    pamr_steps=10,
                    d="Context60 / COCO-Object style: slide 224/112, prob_thd=0.1, background class 0, PAMR on",
                ),
            ),
            (
                "ade",
                dict(
                    name=CLS_NOBG,
                    slide_crop=224,
                    prob_thd=0.0,
                    pamr_steps=10,
                    d="ADE20K / Context59 / COCO-Stuff / Cityscapes style: slide 224/112, no background line "
                    "(cls_tiny_nobg.txt, 8 queries, 6 classes), prob_thd=0, PAMR on",
                ),
            ),
            (
                "ade_nopamr",
                dict(name=CLS_NOBG, slide_crop=224, prob_thd=0.0, pamr_steps=0, d="ADE style with --pamr off"),
            ),
        ]
    )
    stats = {}
    for vname, v in variants.items():
        mdl = build(v["name"], slide_crop=v["slide_crop"], prob_thd=v["prob_thd"], pamr_steps=v["pamr_steps"])
        for k, (chw, meta, _) in prep.items():
            s, _, _, _ = run_predict(mdl, chw, meta)
            lab = s.pred_sem_seg.data[0]
            probs = s.seg_logits.data
            put(
                f"{vname}/{k}/label_s4",
                lab[::4, ::4].to(torch.uint8),
                f"{v['d']}: {k} pred_sem_seg (argmax after max-over-synonyms, thresholded) at ori res "
                f"{tuple(lab.shape)}, stored [::4, ::4] as uint8",
            )
            put(
                f"{vname}/{k}/probs_s16",
                probs[:, ::16, ::16],
                f"{v['d']}: {k} data_sample.seg_logits = per-class max over its queries of softmax(40*logits) "
                f"over all queries, renormalised to sum 1 over classes; ori res {tuple(probs.shape[-2:])}, "
                f"stored [..., ::16, ::16]",
            )
            stats[f"{vname}/{k}"] = {int(c): int(n) for c, n in zip(*torch.unique(lab, return_counts=True))}
        del mdl

    meta = {
        "repo": REPO,
        "commit": COMMIT,
        "command": "OMP_NUM_THREADS=1 python tools/seg_goldens/make_naclip.py",
        "weights": f"visionfm.testing.tiny_checkpoint('clip-b16') ({ckpt_dir}) open_clip_model.safetensors, "
        f"saved as tiny_b16.pt sha256={sha}; loaded with their clip.load(path, "
        f"device='cpu', jit=False) but exact float32 (convert_weights no-op'd; see diag tensor)",
        "class_files": json.dumps({"cls_tiny_bg.txt": open(CLS_BG).read(), "cls_tiny_nobg.txt": open(CLS_NOBG).read()}),
        "model_args": "arch=reduced attn_strategy=naclip gaussian_std=5 logit_scale=40 slide_stride=112 "
        "slide_crop=224|0 pamr_steps=10|0 pamr_stride=(8,16) prob_thd per variant",
        "preprocess": "RGB image -> BGR (cv2 loader) -> mmcv Resize(scale=(2048,336), keep_ratio=True, bilinear cv2) "
        "-> CHW -> SegDataPreProcessor(mean=[122.771,116.746,104.094], std=[68.501,66.632,70.323], "
        "rgb_to_bgr=True): flip back to RGB, float, (x-mean)/std; no padding",
        "label_stats": json.dumps(stats),
        "fp16_weight_rounding_maxdiff_crop224_patch_logits": f"{fp16_diff:.3e}",
        "versions": f"torch {torch.__version__}, opencv {cv2.__version__}, numpy {np.__version__}",
        "descriptions": json.dumps(D),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(T, OUT, metadata=meta)
    size = os.path.getsize(OUT)
    print(f"wrote {OUT} ({size / 1e6:.3f} MB, {len(T)} tensors); thd_probe={thd_probe}; fp16 diff {fp16_diff:.3e}")
    for k, v in T.items():
        print(f"  {k:50s} {str(tuple(v.shape)):18s} {v.dtype}")
    print(json.dumps(stats, indent=0))


if __name__ == "__main__":
    main()
