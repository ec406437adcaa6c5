#!/usr/bin/env python
"""Golden outputs of the SCLIP and ClearCLIP reference code on visionfm's tiny ViT-B/16-shaped CLIP.

One command (from the repository root; CPU only, ~1-2 min on one thread; README.md: the venv, REF_DIR, OUT):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_sclip_clearclip.py

The interpreter is a venv with visionfm installed under constraints.txt plus opencv-python-headless==4.10.0.84
(mmcv's Resize backend); torch, visionfm, skimage, ftfy, regex and safetensors come with visionfm.

Their code is imported, unmodified, from the fetched sources (fetch_refs.py; REF_DIR in ref_paths.py):
  REF_DIR/sclip/src      wangf3014/SCLIP   (clip/, clip_segmentor.py, pamr.py, prompts/)
  REF_DIR/clearclip/src  mc-lan/ClearCLIP  (open_clip/ fork, clearclip_segmentor.py, prompts/, gem/)
mmseg / mmengine / pkg_resources are replaced by the stand-ins in stubs/sclip_clearclip (README.md there).
Each method runs in its own subprocess (both repos have top-level `prompts`/`custom_datasets` modules).

Writes (OUT = $VISIONFM_GOLDEN_OUT, default a temporary folder; ref_paths.py)
  OUT/work/sclip/tiny_b16.pt                torch.save(state_dict) of tiny_checkpoint("clip-b16")
  OUT/sclip_clearclip_labels.txt            the label file (their 'name1, name2' per-class format)
  OUT/{sclip,clearclip}.safetensors         outputs (float32 / int64), metadata describes every tensor
  OUT/{sclip,clearclip}_inputs.safetensors  the pipeline-resized uint8 RGB images fed to them

Only two things are done around their code, both documented in the metadata:
  * weights: their loader (clip.load -> build_model / open_clip load_openai_model ->
    build_model_from_openai_state_dict) builds the model and loads our file, but it converts Linear/Conv/MHA/proj
    weights to fp16 *before* load_state_dict (harmless for real OpenAI checkpoints, which are stored in fp16).
    To pin the outputs to the exact fp32 tiny weights, the loader is wrapped to load the fp32 state dict back
    right after it returns (before the segmentor encodes the text queries).
  * precision: everything runs in fp32 on CPU. ClearCLIP's predict() does `inputs.half()` (fp16 model on GPU);
    so for ClearCLIP its own forward_slide() and postprocess_result() are called directly (predict() is only
    meta handling + that cast). SCLIP's predict() runs unmodified through the stub test_step().
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

import ref_paths

SCLIP_SRC = str(ref_paths.src("sclip"))
CLEAR_SRC = str(ref_paths.src("clearclip"))
STUBS = str(ref_paths.STUBS_DIR / "sclip_clearclip")
GOLDEN = str(ref_paths.out_dir())
TINY_PT = str(ref_paths.work_dir("sclip") / "tiny_b16.pt")
LABELS = f"{GOLDEN}/sclip_clearclip_labels.txt"
LABEL_LINES = ["background, sky, wall", "person, man", "cup, mug", "rocket", "table"]
COMMITS = {
    "sclip": ("github.com/wangf3014/SCLIP", "b56bd3014b9e8a3ee3450bcfc53700a67d627b7a"),
    "clearclip": ("github.com/mc-lan/ClearCLIP", "ad68a404d55d48d27330b93554eb64a234ff717f"),
}
COMPARE = (
    "full-resolution maps are stored at rows_<image> x cols_<image> only; floats agree to ~1e-5 in fp32; "
    "the tiny random CLIP gives near-ties (stats.min_top2_margin_* ~1e-7), so compare labels only where "
    "the top-2 margin of the stored probs exceeds ~1e-4 (and labels 0 from prob_thd where max prob is "
    "not within 1e-4 of prob_thd)"
)
SUB = 8  # spatial subsampling stride of stored full-resolution maps (last row/col always included)


def _idx(n, step=SUB):
    import torch

    i = torch.arange(0, n, step)
    if i[-1] != n - 1:
        i = torch.cat([i, torch.tensor([n - 1])])
    return i


def _sub(t, rows, cols):
    """t[..., rows, :][..., cols] for a [..., H, W] tensor."""
    return t.index_select(-2, rows).index_select(-1, cols).contiguous()


def tiny_state_dict():
    import torch
    from safetensors.torch import load_file

    from visionfm.testing import tiny_checkpoint

    d = tiny_checkpoint("clip-b16")
    path = os.path.join(d, "open_clip_model.safetensors")
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    sd = load_file(path)
    ok = False
    if os.path.exists(TINY_PT):
        old = torch.load(TINY_PT, map_location="cpu")
        ok = old.keys() == sd.keys() and all(torch.equal(old[k], sd[k]) for k in sd)
    if not ok:  # (re)write atomically: other scripts may read it
        tmp = f"{TINY_PT}.tmp{os.getpid()}"
        torch.save(sd, tmp)
        os.replace(tmp, TINY_PT)
    return sd, sha


def pipeline(rgb, short):
    """mmseg test_pipeline of their configs: LoadImageFromFile (BGR uint8) -> Resize(scale=(2048, short),
    keep_ratio=True) = mmcv.imrescale (cv2 INTER_LINEAR, size int(x*s+0.5)) -> PackSegInputs (CHW uint8)."""
    import cv2
    import numpy as np
    import torch

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    scale = (2048, short)
    s = min(max(scale) / max(h, w), min(scale) / min(h, w))  # mmcv rescale_size
    new_w, new_h = int(w * float(s) + 0.5), int(h * float(s) + 0.5)  # mmcv _scale_size
    out = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    chw = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
    meta = dict(
        ori_shape=(h, w),
        img_shape=(new_h, new_w),
        pad_shape=(new_h, new_w),
        scale_factor=(new_w / w, new_h / h),
        keep_ratio=True,
    )
    return chw, meta


def images():
    import skimage.data

    return {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee()}


def write_labels():
    os.makedirs(GOLDEN, exist_ok=True)
    with open(LABELS, "w") as f:
        f.write("\n".join(LABEL_LINES))  # no trailing newline, like their cls_*.txt


def save(path, tensors, meta):
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
    print(f"wrote {path}: {os.path.getsize(path) / 1e6:.3f} MB, {len(tensors)} tensors")


# ----------------------------------------------------------------------------------------------------------
def run_sclip():
    import torch

    torch.set_num_threads(1)
    ref_paths.check_src("sclip", COMMITS["sclip"][1])
    sys.path[:0] = [SCLIP_SRC, STUBS]
    import clip
    import clip_segmentor
    from mmengine.structures import SegDataSample

    sd, sha = tiny_state_dict()

    real_load = clip.load

    def load_exact(name, device="cpu", jit=False, **kw):
        model, pre = real_load(name, device=device, jit=jit, **kw)  # their build_model (fp16-rounds weights)
        model.load_state_dict({k: v.clone() for k, v in sd.items()})  # back to the exact fp32 tensors
        assert all(p.dtype == torch.float32 for p in model.parameters())
        return model, pre

    clip_segmentor.clip.load = load_exact

    def make(**kw):
        m = clip_segmentor.CLIPForSegmentation(clip_path=TINY_PT, name_path=LABELS, device=torch.device("cpu"), **kw)
        return m.eval()

    voc = dict(logit_scale=65, prob_thd=0.1, area_thd=0.1)  # cfg_voc21.py
    ade = dict()  # cfg_ade20k.py: all constructor defaults
    pamr = dict(voc, pamr_steps=10)  # PAMR(10, dilations=(8, 16)); no config uses it
    m_voc, m_ade, m_pamr = make(**voc), make(**ade), make(**pamr)
    assert m_ade.logit_scale == 40 and m_ade.prob_thd == 0.0 and m_ade.area_thd is None
    assert (m_ade.slide_crop, m_ade.slide_stride) == (224, 112)
    net = m_voc.net
    T, D, M = {}, {}, {}

    T["query_features"] = m_voc.query_features.float()
    D["query_features"] = (
        "[Q=9, 64] text embeddings, one per query (synonym): 80 openai_imagenet_template "
        "prompts -> encode_text -> L2-normalise each -> mean -> L2-normalise"
    )
    T["query_idx"] = m_voc.query_idx.clone()
    D["query_idx"] = "[Q] int64 class index of each query (line of sclip_clearclip_labels.txt)"

    inp, raw = {}, {}
    with torch.no_grad():
        for name, rgb in images().items():
            chw, meta = pipeline(rgb, 336)
            raw[name] = chw[[2, 1, 0]]  # RGB uint8 for the inputs file
            ds = [SegDataSample(metainfo=meta)]
            data = m_voc.data_preprocessor(dict(inputs=[chw], data_samples=ds), False)
            inp[name] = (data["inputs"], meta)

        # (a) one native 224 crop, (b) non-native sizes: their encode_image / forward_feature
        a336 = inp["astronaut"][0]
        c336 = inp["coffee"][0]
        crops = {
            "a224": a336[:, :, :224, :224],
            "a336": a336,
            "c224x336": c336[:, :, :224, :336],
            "c200x224": c336[:, :, :200, :224],
        }
        for k, x in crops.items():
            gh, gw = x.shape[-2] // 16, x.shape[-1] // 16
            feats = net.encode_image(x, return_all=True, csa=True)
            T[f"dense_feats_{k}"] = feats.float()
            D[f"dense_feats_{k}"] = (
                f"[1, 1+{gh}*{gw}, 64] net.encode_image(x, return_all=True, csa=True): "
                f"ln_post(all tokens incl. CLS at 0) @ proj, NOT normalised; x = {k} input "
                f"{tuple(x.shape[-2:])}, grid {gh}x{gw} row-major"
            )
            T[f"patch_logits_{k}"] = m_voc.forward_feature(x, logit_size=(gh, gw)).float()
            D[f"patch_logits_{k}"] = (
                f"[1, Q, {gh}, {gw}] forward_feature(x, logit_size=grid): cosine(patch, "
                f"query) before logit_scale (bilinear resize to the same grid = identity)"
            )
        T["pos_embed_interp_14x21"] = net.visual.interpolate_pos_encoding(
            torch.zeros(1, 1 + 14 * 21, 128), 224, 336
        ).float()
        T["pos_embed_interp_12x14"] = net.visual.interpolate_pos_encoding(
            torch.zeros(1, 1 + 12 * 14, 128), 200, 224
        ).float()
        for g in ("14x21", "12x14"):
            D[f"pos_embed_interp_{g}"] = (
                f"[1, 1+{g}, 128] visual.interpolate_pos_encoding for a {g} grid: CLS "
                "row unchanged; patch rows bicubic with scale_factor=((gh+0.1)/14, "
                "(gw+0.1)/14), recompute_scale_factor unset"
            )

        for name, (x, meta) in inp.items():
            H, W = meta["ori_shape"]
            rows, cols = _idx(H), _idx(W)
            T[f"rows_{name}"], T[f"cols_{name}"] = rows, cols
            D[f"rows_{name}"] = D[f"cols_{name}"] = (
                f"int64 indices into the original {H}x{W} grid at which every "
                f"full-resolution map of {name} is stored (stride {SUB} + last)"
            )
            # (c) slide inference (raw averaged cosine logits, before logit_scale/softmax), original size
            logits = m_voc.forward_slide(x, [meta], 112, 224)
            T[f"slide_logits_{name}"] = _sub(logits, rows, cols).float()
            D[f"slide_logits_{name}"] = (
                f"[1, Q, len(rows), len(cols)] forward_slide(crop 224, stride 112) on the "
                f"{meta['img_shape']} pipeline input, bilinear to ori_shape {H}x{W}; "
                f"cosine logits, no logit_scale, no softmax"
            )
            # (e) PAMR on
            logits_p = m_pamr.forward_slide(x, [meta], 112, 224)
            T[f"slide_logits_pamr_{name}"] = _sub(logits_p, rows, cols).float()
            D[f"slide_logits_pamr_{name}"] = (
                "as slide_logits but with pamr_steps=10, pamr_stride=(8, 16): PAMR on "
                "the cosine logits at ori_shape, guided by the normalised input "
                "bilinearly resized to ori_shape"
            )
            # (d) postprocess under VOC21 / ADE20K settings, (e) VOC21 + PAMR: their predict via test_step
            for tag, m in (("voc", m_voc), ("ade", m_ade), ("voc_pamr", m_pamr)):
                out = m.test_step(dict(inputs=[raw[name][[2, 1, 0]]], data_samples=[SegDataSample(metainfo=meta)]))
                probs = out[0].seg_logits.data
                pred = out[0].pred_sem_seg.data
                T[f"probs_{tag}_{name}"] = _sub(probs, rows, cols).float()
                T[f"labels_{tag}_{name}"] = _sub(pred, rows, cols).to(torch.uint8)
                top2 = probs.topk(2, dim=0).values
                M[f"min_top2_margin_{tag}_{name}"] = float((top2[0] - top2[1]).min())
                M[f"label_hist_{tag}_{name}"] = torch.bincount(pred.flatten(), minlength=5).tolist()
        for tag, s in (
            ("voc", voc),
            ("ade", {"logit_scale": 40, "prob_thd": 0.0, "area_thd": None}),
            ("voc_pamr", pamr),
        ):
            D[f"probs_{tag}_<image>"] = (
                f"[C=5, len(rows), len(cols)] data_samples[0].seg_logits after "
                f"postprocess_result with {s}: softmax(logit_scale * slide logits) over "
                f"all Q queries, max over each class's queries, area_thd zeroing"
            )
            D[f"labels_{tag}_<image>"] = (
                f"[1, len(rows), len(cols)] pred_sem_seg (stored as uint8) with {s}: argmax, "
                f"then 0 where max prob < prob_thd"
            )

        # edge case: image smaller than the crop and not a multiple of 16 (no padding in SCLIP)
        xe = c336[:, :, :200, :300]
        me = dict(ori_shape=(200, 300))
        le = m_voc.forward_slide(xe, [me], 112, 224)
        re_, ce = _idx(200, 4), _idx(300, 4)
        T["edge_rows"], T["edge_cols"] = re_, ce
        T["slide_logits_edge"] = _sub(le, re_, ce).float()
        D["slide_logits_edge"] = (
            "[1, Q, len(edge_rows), len(edge_cols)] forward_slide on coffee input[:, :, :200, "
            ":300] (ori_shape (200,300)), crop 224 stride 112 -> windows (0:200,0:224) and "
            "(0:200,76:300), each 200x224 -> 12x14 grid; stored at stride 4 + last"
        )

    meta = {
        "repo": COMMITS["sclip"][0],
        "commit": COMMITS["sclip"][1],
        "weights": f'visionfm tiny_checkpoint("clip-b16") open_clip_model.safetensors sha256={sha}, loaded '
        f"through their clip.load({TINY_PT}) then the exact fp32 tensors loaded back",
        "labels_file": "\n".join(LABEL_LINES),
        "inputs": "skimage.data.astronaut() 512x512, skimage.data.coffee() 400x600 (RGB); pipeline: RGB->BGR "
        "uint8, mmcv imrescale to scale (2048, 336) keep_ratio (cv2 4.10 INTER_LINEAR; astronaut "
        "336x336, coffee 336x504), CHW; SegDataPreProcessor: BGR->RGB, float, (x-mean)/std with "
        "mean [122.771,116.746,104.094] std [68.501,66.632,70.323]. Exact uint8 RGB inputs in "
        "sclip_inputs.safetensors",
        "settings": {
            "voc": voc,
            "ade": "defaults: logit_scale 40, prob_thd 0.0, area_thd None",
            "voc_pamr": pamr,
            "slide": "crop 224 stride 112 (constructor defaults, no config overrides them)",
        },
        "precision": "fp32 CPU (their GPU runs are fp16)",
        "compare": COMPARE,
        "tensors": D,
        "stats": M,
    }
    save(f"{GOLDEN}/sclip.safetensors", T, meta)
    save(
        f"{GOLDEN}/sclip_inputs.safetensors",
        {f"rgb_{k}": v.permute(1, 2, 0).contiguous() for k, v in raw.items()},
        {
            "repo": meta["repo"],
            "commit": meta["commit"],
            "description": "uint8 [h, w, 3] RGB images after the mmseg Resize(scale=(2048, 336), keep_ratio=True) "
            "step (cv2 INTER_LINEAR on the BGR image), i.e. before SegDataPreProcessor",
        },
    )


# ----------------------------------------------------------------------------------------------------------
def run_clearclip():
    import torch

    torch.set_num_threads(1)
    ref_paths.check_src("clearclip", COMMITS["clearclip"][1])
    sys.path[:0] = [f"{STUBS}/clearclip_extra", CLEAR_SRC, STUBS]
    import clearclip_segmentor
    import open_clip
    from mmengine.structures import SegDataSample

    assert open_clip.__file__.startswith(CLEAR_SRC), open_clip.__file__
    sd, sha = tiny_state_dict()

    def create_exact(model_name, pretrained=None, precision="fp32", **kw):
        # their call: create_model('ViT-B/16', pretrained='openai', precision='fp16') -> load_openai_model(...)
        assert pretrained == "openai" and model_name == "ViT-B/16", (model_name, pretrained)
        model = open_clip.load_openai_model(TINY_PT, precision="fp32", device="cpu")
        model.load_state_dict({k: v.clone() for k, v in sd.items()})
        assert all(p.dtype == torch.float32 for p in model.parameters())
        return model

    clearclip_segmentor.create_model = create_exact

    def make(model_type="ClearCLIP", **kw):
        m = clearclip_segmentor.ClearCLIPSegmentation(
            clip_type="CLIP",
            vit_type="ViT-B/16",
            model_type=model_type,
            name_path=LABELS,
            device=torch.device("cpu"),
            ignore_residual=True,
            **kw,
        )
        return m.eval()

    voc = dict(prob_thd=0.5)  # cfg_voc21.py (logit_scale 50, crop 448, stride 224 = constructor defaults)
    ade = dict()  # cfg_ade20k.py: all defaults (prob_thd 0.0)
    m_voc, m_ade, m_van = make(**voc), make(**ade), make("vanilla")
    assert (m_voc.logit_scale, m_voc.slide_crop, m_voc.slide_stride) == (50, 448, 224)
    net = m_voc.net
    T, D, M = {}, {}, {}

    # ClearCLIP splits on ',' (not ', '): queries keep a leading space; check the tokens are unaffected
    tok = clearclip_segmentor.tokenizer.tokenize
    from prompts.imagenet_template import openai_imagenet_template as tpl

    words, _ = clearclip_segmentor.get_cls_idx(LABELS)
    assert words[1] == " sky"
    for w in words:
        assert torch.equal(tok([t(w) for t in tpl]), tok([t(w.strip()) for t in tpl]))
    M["leading_space_tokens_identical"] = True

    T["query_features"] = m_voc.query_features.float()
    D["query_features"] = (
        "[Q=9, 64] text embeddings (same recipe as SCLIP; open_clip fork encode_text); "
        'queries split on "," so they carry a leading space, which the tokenizer drops'
    )
    T["query_idx"] = m_voc.query_idx.clone()
    D["query_idx"] = "[Q] int64 class index of each query"

    inp, raw = {}, {}
    with torch.no_grad():
        for name, rgb in images().items():
            chw, meta = pipeline(rgb, 448)
            raw[name] = chw[[2, 1, 0]]
            data = m_voc.data_preprocessor(dict(inputs=[chw], data_samples=[SegDataSample(metainfo=meta)]), False)
            inp[name] = (data["inputs"], meta)

        a448, c448 = inp["astronaut"][0], inp["coffee"][0]
        crops = {"a224": a448[:, :, :224, :224], "a448": a448[:, :, :448, :448], "c224x336": c448[:, :, :224, :336]}
        for k, x in crops.items():
            gh, gw = x.shape[-2] // 16, x.shape[-1] // 16
            T[f"dense_feats_{k}"] = net.encode_image(x, "ClearCLIP", True).float()
            D[f"dense_feats_{k}"] = (
                f'[1, {gh}*{gw}, 64] net.encode_image(x, "ClearCLIP", ignore_residual=True): '
                f"ln_post(out_proj(softmax(q q^T * d^-1/2) v)) @ proj for the patch tokens "
                f"(CLS dropped), NOT normalised; x = {k} {tuple(x.shape[-2:])}"
            )
            T[f"patch_logits_{k}"] = m_voc.forward_feature(x, logit_size=(gh, gw)).float()
            D[f"patch_logits_{k}"] = f"[1, Q, {gh}, {gw}] forward_feature(x, logit_size=grid): cosine logits"
        T["dense_feats_a224_vanilla"] = m_van.net.encode_image(crops["a224"], "vanilla", True).float()
        D["dense_feats_a224_vanilla"] = (
            'model_type="vanilla" (what configs/base_config.py ships): last block '
            "out_proj(softmax(q k^T * d^-1/2) v), no residual, no FFN"
        )
        T["patch_logits_a224_vanilla"] = m_van.forward_feature(crops["a224"], logit_size=(14, 14)).float()
        D["patch_logits_a224_vanilla"] = "forward_feature of the vanilla-mode segmentor on a224"
        T["pos_embed_interp_28x28"] = net.visual.interpolate_pos_encoding(
            torch.zeros(1, 1 + 28 * 28, 128), 448, 448
        ).float()
        D["pos_embed_interp_28x28"] = "visual.interpolate_pos_encoding for 448x448 (same code as SCLIP)"

        for name, (x, meta) in inp.items():
            H, W = meta["ori_shape"]
            rows, cols = _idx(H), _idx(W)
            T[f"rows_{name}"], T[f"cols_{name}"] = rows, cols
            D[f"rows_{name}"] = D[f"cols_{name}"] = f"indices into the original {H}x{W} grid (stride {SUB} + last)"
            logits = m_voc.forward_slide(x, [meta], 224, 448)
            T[f"slide_logits_{name}"] = _sub(logits, rows, cols).float()
            D[f"slide_logits_{name}"] = (
                f"[1, Q, len(rows), len(cols)] forward_slide(crop 448, stride 224) on the "
                f"{meta['img_shape']} pipeline input, bilinear to ori_shape; cosine logits"
            )
            for tag, m in (("voc", m_voc), ("ade", m_ade)):
                ds = [SegDataSample(metainfo=meta)]
                out = m.postprocess_result(m.forward_slide(x, [meta], m.slide_stride, m.slide_crop), ds)
                probs, pred = out[0].seg_logits.data, out[0].pred_sem_seg.data
                T[f"probs_{tag}_{name}"] = _sub(probs, rows, cols).float()
                T[f"labels_{tag}_{name}"] = _sub(pred, rows, cols).to(torch.uint8)
                top2 = probs.topk(2, dim=0).values
                M[f"min_top2_margin_{tag}_{name}"] = float((top2[0] - top2[1]).min())
                M[f"label_hist_{tag}_{name}"] = torch.bincount(pred.flatten(), minlength=5).tolist()
        for tag, s in (("voc", "logit_scale 50, prob_thd 0.5"), ("ade", "logit_scale 50, prob_thd 0.0")):
            D[f"probs_{tag}_<image>"] = (
                f"[C=5, len(rows), len(cols)] postprocess_result ({s}): softmax(logit_scale"
                f" * slide logits) over all queries, max over each class's queries"
            )
            D[f"labels_{tag}_<image>"] = (
                f"[1, len(rows), len(cols)] pred_sem_seg (uint8) ({s}): argmax, 0 where max < prob_thd"
            )

        # edge case: image smaller than the 448 crop and not a multiple of 16 -> centred zero-pad to 208x304
        xe = c448[:, :, :200, :300]
        le = m_voc.forward_slide(xe, [dict(ori_shape=(200, 300))], 224, 448)
        re_, ce = _idx(200, 4), _idx(300, 4)
        T["edge_rows"], T["edge_cols"] = re_, ce
        T["slide_logits_edge"] = _sub(le, re_, ce).float()
        D["slide_logits_edge"] = (
            "forward_slide on coffee input[:, :, :200, :300]: one window 200x300, padded "
            "(l,r,t,b)=(2,2,4,4) with zeros to 208x304 (13x19 grid), logits upsampled to "
            "208x304 then cut back to 200x300; stored at stride 4 + last"
        )
        T["patch_logits_edge_padded"] = m_voc.forward_feature(
            torch.nn.functional.pad(xe, m_voc.compute_padsize(200, 300, 16)), logit_size=(13, 19)
        ).float()
        D["patch_logits_edge_padded"] = "[1, Q, 13, 19] forward_feature on the padded 208x304 window"

    meta = {
        "repo": COMMITS["clearclip"][0],
        "commit": COMMITS["clearclip"][1],
        "weights": f'visionfm tiny_checkpoint("clip-b16") sha256={sha}, through their open_clip '
        f'load_openai_model({TINY_PT}, precision="fp32") then the exact fp32 tensors loaded back',
        "labels_file": "\n".join(LABEL_LINES),
        "method": 'model_type="ClearCLIP", ignore_residual=True (README/paper method; the committed '
        'base_config.py says model_type="vanilla")',
        "inputs": "as SCLIP but Resize scale (2048, 448): astronaut 448x448, coffee 448x672; exact uint8 RGB "
        "in clearclip_inputs.safetensors; same mean/std (bgr_to_rgb=True, same flip as SCLIP)",
        "settings": {
            "voc": "logit_scale 50, prob_thd 0.5, crop 448, stride 224",
            "ade": "logit_scale 50, prob_thd 0.0, crop 448, stride 224",
            "pamr": "not supported",
        },
        "calls": "forward_slide + postprocess_result called directly (predict() would cast inputs to fp16)",
        "precision": "fp32 CPU (their runs: fp16 model and inputs)",
        "compare": COMPARE,
        "tensors": D,
        "stats": M,
    }
    save(f"{GOLDEN}/clearclip.safetensors", T, meta)
    save(
        f"{GOLDEN}/clearclip_inputs.safetensors",
        {f"rgb_{k}": v.permute(1, 2, 0).contiguous() for k, v in raw.items()},
        {
            "repo": meta["repo"],
            "commit": meta["commit"],
            "description": "uint8 [h, w, 3] RGB images after Resize(scale=(2048, 448), keep_ratio=True), cv2 "
            "INTER_LINEAR on the BGR image",
        },
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["sclip", "clearclip", "all"], default="all")
    a = ap.parse_args()
    if a.method == "all":
        write_labels()
        tiny_state_dict()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for m in ("sclip", "clearclip"):
            subprocess.run(
                [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--method", m], check=True, env=env
            )
    elif a.method == "sclip":
        run_sclip()
    else:
        run_clearclip()


if __name__ == "__main__":
    main()
