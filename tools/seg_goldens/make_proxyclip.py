#!/usr/bin/env python
"""Golden outputs of ProxyCLIP (mc-lan/ProxyCLIP, ECCV 2024) computed by THEIR code on visionfm's tiny weights.

One command (from the repository root, in the venv of README.md; CPU, ~1-2 min, 1 thread):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_proxyclip.py

Writes (OUT = $VISIONFM_GOLDEN_OUT, default a temporary folder; ref_paths.py)
    OUT/proxyclip.safetensors                   the goldens (+ metadata: repo, commits, tensor descriptions)
    OUT/work/proxyclip/tiny_dino_b8.safetensors tiny DINO v1 ViT (patch 8) state dict, facebookresearch/dino key names
    OUT/work/proxyclip/tiny_dino_b8_hf/         the same weights as a transformers ViTModel (its pos-embed interpolation
                                                differs from DINO's, so features differ slightly: stats hf_vit_dino_*)
    OUT/work/proxyclip/tiny_dinov2_reg.safetensors  tiny DINOv2-with-registers state dict, facebookresearch/dinov2 names
    OUT/work/proxyclip/tiny_dinov2_hf/          the same weights as transformers Dinov2WithRegistersModel
                                                (identical model: same interpolation, checked below)
    OUT/work/proxyclip/model_configs/tiny-clip-b16.json  visionfm's tiny clip-b16 model_cfg, for their open_clip
    OUT/work/proxyclip/cls_golden.txt           the class file, in their format

How their code is run (nothing of theirs is edited; everything is imported from the checkouts of fetch_refs.py,
REF_DIR in ref_paths.py):
  * REF_DIR/proxyclip/src = mc-lan/ProxyCLIP @ PROXYCLIP_COMMIT
  * REF_DIR/dino/src      = facebookresearch/dino @ DINO_COMMIT (vision_transformer.py, utils.py, hubconf.py)
  * REF_DIR/dinov2/src    = facebookresearch/dinov2 @ DINOV2_COMMIT
  * stubs/proxyclip       = minimal mmseg / mmengine stand-ins (import surface + SegDataPreProcessor test path)
  * runtime substitutions (monkeypatches, no source edits):
      - proxyclip_segmentor.create_model -> builds THEIR open_clip CLIP from the tiny config (their factory) and
        loads visionfm's tiny open_clip_model.safetensors (their loader only reads torch pickles);
      - torch.hub.load -> returns the tiny DINO / DINOv2 module built from the fetched hub code;
      - fp32 instead of their fp16: create_model gets precision='fp32', and Tensor.half / Module.half are made
        identity while their segmentor runs (they run everything in fp16 on CUDA). A separate fp16 pass is tried
        for information only (agreement recorded in the metadata).
      - device=torch.device('cpu') is passed to their constructor (default 'cuda').
Preprocessing reproduces their configs' test pipeline exactly: LoadImageFromFile (BGR uint8) -> mmcv Resize
(scale=(2048, 336), keep_ratio=True: cv2.INTER_LINEAR, size int(x*s+0.5)) -> PackSegInputs (HWC->CHW) ->
SegDataPreProcessor(mean=[122.771,116.746,104.094], std=[68.501,66.632,70.323], bgr_to_rgb=True).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XFORMERS_DISABLED", "1")  # dinov2 falls back to plain SDPA attention

import hashlib
import importlib.util
import json
import math
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

import ref_paths  # noqa: E402

WORK = ref_paths.work_dir("proxyclip")  # what this script writes besides the golden
SRC, STUBS = ref_paths.src("proxyclip"), ref_paths.STUBS_DIR / "proxyclip"
DINO_SRC, DINOV2_SRC = ref_paths.src("dino"), ref_paths.src("dinov2")
GOLDEN = ref_paths.out_dir() / "proxyclip.safetensors"
CLASS_FILE = WORK / "cls_golden.txt"

PROXYCLIP_REPO, PROXYCLIP_COMMIT = "mc-lan/ProxyCLIP", "e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1"
DINO_REPO, DINO_COMMIT = "facebookresearch/dino", "7c446df5b9f45747937fb0d72314eb9f7b66930a"
DINOV2_REPO, DINOV2_COMMIT = "facebookresearch/dinov2", "b8931f7bf91576930313be2c6d6af376033b35f0"
SOURCES = {"proxyclip": PROXYCLIP_COMMIT, "dino": DINO_COMMIT, "dinov2": DINOV2_COMMIT}
PERTURB = 0.1  # after each hub model's own init (seed 0), every parameter += 0.1 * randn (like visionfm's tiny dinov2)
CLASS_LINES = ["background; sky; wall", "person; man", "cup; mug", "rocket", "table"]


# --------------------------------------------------------------------------------------------- sources
def ensure_sources() -> None:
    for name, commit in SOURCES.items():  # fetched by fetch_refs.py
        ref_paths.check_src(name, commit)
    if not CLASS_FILE.exists():
        CLASS_FILE.write_text("\n".join(CLASS_LINES))  # their format: one class a line, synonyms split by '; '


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- preprocessing
def mmseg_test_pipeline(rgb: np.ndarray, scale=(2048, 336)):
    """LoadImageFromFile + Resize(scale, keep_ratio=True) + PackSegInputs, as mmcv 2.0.1 does them.

    Returns (bgr_resized_uint8_chw_tensor, ori_shape, resized_rgb_uint8_hwc)."""
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])  # cv2.imdecode gives BGR
    h, w = bgr.shape[:2]
    s = min(max(scale) / max(h, w), min(scale) / min(h, w))  # mmcv rescale_size
    new_w, new_h = int(w * float(s) + 0.5), int(h * float(s) + 0.5)  # mmcv _scale_size
    out = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)  # mmcv imresize, 'bilinear'
    chw = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))  # PackSegInputs
    return chw, (h, w), np.ascontiguousarray(out[..., ::-1])


class SegDataSample:  # the part of mmseg.structures.SegDataSample that ProxyCLIP's predict() uses
    def __init__(self, metainfo):
        self.metainfo = dict(metainfo)

    def set_data(self, data):
        for k, v in data.items():
            setattr(self, k, v)


# --------------------------------------------------------------------------------------------- tiny models
def load_dino_module():
    sys.path.insert(0, str(DINO_SRC))  # its vision_transformer does `from utils import trunc_normal_`
    try:
        spec = importlib.util.spec_from_file_location("dino_vision_transformer", DINO_SRC / "vision_transformer.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(DINO_SRC))
    return mod


def build_tiny_dino():
    """facebookresearch/dino VisionTransformer as hubconf.dino_vitb8 builds it (vit_base(patch_size=8,
    num_classes=0): qkv_bias=True, LayerNorm eps 1e-6, mlp_ratio 4, img_size [224] -> 28x28 pos grid), scaled
    down to embed_dim 64, depth 2, heads 2."""
    dvit = load_dino_module()
    torch.manual_seed(0)
    m = dvit.VisionTransformer(
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0,
    )
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * PERTURB)
    return m.eval()


def build_tiny_dinov2_reg():
    """facebookresearch/dinov2 hub dinov2_vitb14_reg (hub/backbones.py: img_size 518, patch 14, init_values 1.0,
    ffn 'mlp', block_chunks 0, 4 registers, interpolate_antialias=True, interpolate_offset=0.0; vit_base uses
    Block with MemEffAttention), scaled down to embed_dim 64, depth 2, heads 2."""
    sys.path.insert(0, str(DINOV2_SRC))
    from dinov2.layers import MemEffAttention
    from dinov2.layers import NestedTensorBlock as Block
    from dinov2.models.vision_transformer import DinoVisionTransformer

    torch.manual_seed(0)
    m = DinoVisionTransformer(
        img_size=518,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=4,
        init_values=1.0,
        ffn_layer="mlp",
        block_chunks=0,
        num_register_tokens=4,
        interpolate_antialias=True,
        interpolate_offset=0.0,
        block_fn=partial(Block, attn_class=MemEffAttention),
    )
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * PERTURB)
    return m.eval()


def dinov2_to_hf(sd: dict, hf_model) -> dict:
    """facebookresearch/dinov2 state dict -> transformers (5.23) Dinov2WithRegistersModel state dict."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"],
        "embeddings.register_tokens": sd["register_tokens"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3, 0)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3, 0)
        out.update(
            {
                h + "norm1.weight": sd[b + "norm1.weight"],
                h + "norm1.bias": sd[b + "norm1.bias"],
                h + "attention.q_proj.weight": q,
                h + "attention.q_proj.bias": qb,
                h + "attention.k_proj.weight": k,
                h + "attention.k_proj.bias": kb,
                h + "attention.v_proj.weight": v,
                h + "attention.v_proj.bias": vb,
                h + "attention.o_proj.weight": sd[b + "attn.proj.weight"],
                h + "attention.o_proj.bias": sd[b + "attn.proj.bias"],
                h + "layer_scale1.lambda1": sd[b + "ls1.gamma"],
                h + "norm2.weight": sd[b + "norm2.weight"],
                h + "norm2.bias": sd[b + "norm2.bias"],
                h + "mlp.fc1.weight": sd[b + "mlp.fc1.weight"],
                h + "mlp.fc1.bias": sd[b + "mlp.fc1.bias"],
                h + "mlp.fc2.weight": sd[b + "mlp.fc2.weight"],
                h + "mlp.fc2.bias": sd[b + "mlp.fc2.bias"],
                h + "layer_scale2.lambda1": sd[b + "ls2.gamma"],
            }
        )
    assert set(out) == set(hf_model.state_dict()), set(out) ^ set(hf_model.state_dict())
    return out


def dino_to_hf_vit(sd: dict, hf_model) -> dict:
    """facebookresearch/dino state dict -> transformers (5.23) ViTModel(add_pooling_layer=False) state dict."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"layers.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3, 0)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3, 0)
        out.update(
            {
                h + "layernorm_before.weight": sd[b + "norm1.weight"],
                h + "layernorm_before.bias": sd[b + "norm1.bias"],
                h + "attention.q_proj.weight": q,
                h + "attention.q_proj.bias": qb,
                h + "attention.k_proj.weight": k,
                h + "attention.k_proj.bias": kb,
                h + "attention.v_proj.weight": v,
                h + "attention.v_proj.bias": vb,
                h + "attention.o_proj.weight": sd[b + "attn.proj.weight"],
                h + "attention.o_proj.bias": sd[b + "attn.proj.bias"],
                h + "layernorm_after.weight": sd[b + "norm2.weight"],
                h + "layernorm_after.bias": sd[b + "norm2.bias"],
                h + "mlp.fc1.weight": sd[b + "mlp.fc1.weight"],
                h + "mlp.fc1.bias": sd[b + "mlp.fc1.bias"],
                h + "mlp.fc2.weight": sd[b + "mlp.fc2.weight"],
                h + "mlp.fc2.bias": sd[b + "mlp.fc2.bias"],
            }
        )
    assert set(out) == set(hf_model.state_dict()), set(out) ^ set(hf_model.state_dict())
    return out


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    from safetensors.torch import load_file, save_file
    from skimage import data as skdata

    ensure_sources()
    sys.path[:0] = [str(STUBS), str(SRC)]  # their open_clip fork must shadow the installed open_clip
    import open_clip
    from open_clip import factory as oc_factory

    assert Path(open_clip.__file__).resolve().is_relative_to(SRC.resolve()), open_clip.__file__
    import proxyclip_segmentor as ps

    from visionfm.testing import tiny_checkpoint

    clip_dir = Path(tiny_checkpoint("clip-b16"))
    clip_cfg = json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    cfg_dir = WORK / "model_configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "tiny-clip-b16.json").write_text(json.dumps(clip_cfg, indent=2))
    oc_factory.add_model_config(cfg_dir / "tiny-clip-b16.json")
    clip_sd = load_file(str(clip_dir / "open_clip_model.safetensors"))

    calls = {}

    def tiny_create_model(model_name, pretrained=None, precision="fp32", **kw):
        calls["create_model"] = dict(model_name=model_name, pretrained=pretrained, precision=precision)
        m = oc_factory.create_model("tiny-clip-b16", pretrained=None, precision=calls.get("force_precision", "fp32"))
        m.load_state_dict(clip_sd, strict=True)
        return m

    dino = build_tiny_dino()
    dinov2 = build_tiny_dinov2_reg()
    save_file({k: v.contiguous() for k, v in dino.state_dict().items()}, str(WORK / "tiny_dino_b8.safetensors"))
    save_file({k: v.contiguous() for k, v in dinov2.state_dict().items()}, str(WORK / "tiny_dinov2_reg.safetensors"))

    def fake_hub_load(repo, name, *a, **k):
        calls.setdefault("hub", []).append((repo, name))
        if (repo, name) == ("facebookresearch/dino:main", "dino_vitb8"):
            return dino
        if (repo, name) == ("facebookresearch/dinov2", "dinov2_vitb14_reg"):
            return dinov2
        raise KeyError((repo, name))

    ps.create_model = tiny_create_model
    torch.hub.load = fake_hub_load

    # ---- inputs, as their test pipeline makes them (VOC/COCO/Context configs: scale=(2048, 336))
    preproc = ps.SegDataPreProcessor(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323], bgr_to_rgb=True)
    images = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee()}
    inputs, resized, ori = {}, {}, {}
    for name, rgb in images.items():
        chw, ori_shape, rs = mmseg_test_pipeline(rgb)
        inputs[name] = preproc(dict(inputs=[chw]))["inputs"]
        resized[name], ori[name] = rs, ori_shape

    half_t, half_m = torch.Tensor.half, nn.Module.half

    def fp32_patch(self, *a, **k):
        return self

    def make_seg(vfm, prob_thd):
        return ps.ProxyCLIPSegmentation(
            clip_type="openai",
            model_type="ViT-B/16",
            vfm_model=vfm,
            name_path=str(CLASS_FILE),
            device=torch.device("cpu"),
            prob_thd=prob_thd,
        )

    tensors, desc, stats = {}, {}, {}
    torch.Tensor.half, nn.Module.half = fp32_patch, fp32_patch
    try:
        for vfm in ("dino", "dinov2"):
            seg = make_seg(vfm, prob_thd=0.2)  # VOC21 config value
            if vfm == "dino":
                tensors["text_embeddings"] = seg.query_features.float().clone()
                tensors["query_idx"] = seg.query_idx.clone()
            # (a) one crop = the whole resized astronaut (336x336): proxy-grid logits, and what the proxy attention saw
            grab = {}
            enc = seg.clip.encode_image

            def spy(image, external_feats, beta, gamma, normalize=False, _enc=enc):
                grab["ex_feats"] = external_feats  # noqa: B023  (called in this iteration only)
                out = _enc(image, external_feats, beta, gamma, normalize)
                grab["image_features"] = out.clone()  # noqa: B023
                return out

            seg.clip.encode_image = spy
            crop = inputs["astronaut"]
            assert crop.shape[-2:] == (336, 336)
            I = crop.shape[-2] // (8 if vfm == "dino" else 14)  # noqa: E741
            crop_logits = seg.forward_feature(crop, logit_size=(I, I))[0]  # bilinear (I,I)->(I,I) is the identity
            crop_up = seg.forward_feature(crop)[0]
            seg.clip.encode_image = enc
            q = F.normalize(grab["ex_feats"].flatten(2, 3), dim=1)
            S = torch.einsum("bcm,bcn->bmn", q, q)
            A = (S - S.mean() * seg.beta) * seg.gamma
            stats[vfm] = dict(
                proxy_grid=[I, I],
                proxy_dim=int(grab["ex_feats"].shape[1]),
                sim_mean=float(S.mean()),
                masked_fraction=float((A < 0).float().mean()),
                min_kept_per_row=int((A >= 0).sum(-1).min()),
            )
            p = f"{vfm}/astronaut_crop"
            tensors[p + "/logits_proxy_grid"] = crop_logits.float().clone()
            tensors[p + "/logits_crop_s8"] = crop_up[:, ::8, ::8].float().clone()
            desc[p + "/logits_proxy_grid"] = (
                f"[Q={crop_logits.shape[0]}, {I}, {I}] forward_feature(crop, logit_size=({I},{I})) on the whole 336x336 "
                "preprocessed astronaut: cosine(text, L2-normalised image token) BEFORE logit_scale, on the proxy grid"
            )
            desc[p + "/logits_crop_s8"] = (
                "forward_feature(crop)[:, ::8, ::8]: the same logits after their bilinear upsample (align_corners=False) "
                "to the 336x336 crop, sampled every 8th pixel"
            )
            # (b) slide inference per image, (c) label maps
            for name in images:
                ds = SegDataSample(dict(ori_shape=ori[name], img_shape=tuple(inputs[name].shape[-2:])))
                logits = seg.forward_slide(inputs[name], [ds.metainfo], seg.slide_stride, seg.slide_crop)[0]
                pfx = f"{vfm}/{name}"
                tensors[pfx + "/seg_logits_s8"] = logits[:, ::8, ::8].float().clone()
                desc[pfx + "/seg_logits_s8"] = (
                    f"forward_slide output (crop 336, stride 112, overlap-averaged, bilinear-resized to the original "
                    f"{ori[name][0]}x{ori[name][1]}), cosine logits BEFORE logit_scale/softmax, [Q, ::8, ::8]"
                )
                for style, thd in (("voc", 0.2), ("ade", 0.0)):
                    seg.prob_thd = thd
                    out = seg.predict(inputs[name], [SegDataSample(ds.metainfo)])[0]
                    lab = out.pred_sem_seg.data[0]
                    assert lab.shape == ori[name]
                    tensors[f"{pfx}/labels_{style}_s4"] = lab[::4, ::4].to(torch.uint8).clone()
                    stats.setdefault(f"{vfm}/{name}", {})[f"{style}_label_counts"] = torch.bincount(
                        lab.flatten(), minlength=5
                    ).tolist()
                    stats[f"{vfm}/{name}"][f"{style}_full_label_sha256"] = hashlib.sha256(
                        lab.to(torch.uint8).numpy().tobytes()
                    ).hexdigest()
                    if style == "voc":
                        probs = out.seg_logits.data
                        stats[f"{vfm}/{name}"]["max_prob_quantiles_10_50_90"] = [
                            float(x)
                            for x in torch.quantile(probs.max(0)[0].flatten()[::7], torch.tensor([0.1, 0.5, 0.9]))
                        ]
                seg.prob_thd = 0.2

        # ---- sensitivity (information for tolerances): swap one pos-embed interpolation for the size-based
        # bicubic that open_clip>=2.x / transformers use, keep everything else
        seg = make_seg("dino", prob_thd=0.2)
        crop = inputs["astronaut"]
        base = seg.forward_feature(crop, logit_size=(42, 42))

        def size_based(pos, grid_hw, n_prefix_dims):
            cls, patch = (pos[:1], pos[1:]) if n_prefix_dims == 2 else (pos[:, :1], pos[:, 1:])
            dim = patch.shape[-1]
            g = int(math.sqrt(patch.reshape(-1, dim).shape[0]))
            patch = (
                F.interpolate(
                    patch.reshape(1, g, g, dim).permute(0, 3, 1, 2), size=grid_hw, mode="bicubic", align_corners=False
                )
                .permute(0, 2, 3, 1)
                .reshape(1, -1, dim)
            )
            return torch.cat([cls.reshape(1, 1, dim), patch], dim=1)

        vis = seg.clip.visual
        vis.interpolate_pos_encoding = lambda x, w, h: size_based(vis.positional_embedding, (w // 16, h // 16), 2)
        alt = seg.forward_feature(crop, logit_size=(42, 42))
        del vis.interpolate_pos_encoding
        stats["sensitivity_clip_pos_size_based_crop_logits_maxabs"] = float((alt - base).abs().max())
        stats["sensitivity_clip_pos_size_based_crop_argmax_agreement"] = float(
            (alt.argmax(1) == base.argmax(1)).float().mean()
        )
        vfm = seg.vfm
        vfm.interpolate_pos_encoding = lambda x, w, h: size_based(vfm.pos_embed, (w // 8, h // 8), 3)
        alt = seg.forward_feature(crop, logit_size=(42, 42))
        del vfm.interpolate_pos_encoding
        stats["sensitivity_dino_pos_size_based_crop_logits_maxabs"] = float((alt - base).abs().max())
        stats["sensitivity_dino_pos_size_based_crop_argmax_agreement"] = float(
            (alt.argmax(1) == base.argmax(1)).float().mean()
        )
        stats["crop_logits_range"] = [float(base.min()), float(base.max())]
    finally:
        torch.Tensor.half, nn.Module.half = half_t, half_m

    # ---- fp16 pass (their real precision), information only
    try:
        calls["force_precision"] = "fp16"
        dino_h = build_tiny_dino()
        torch.hub.load = lambda repo, name, *a, **k: dino_h
        seg16 = make_seg("dino", prob_thd=0.2)
        ds = SegDataSample(dict(ori_shape=ori["astronaut"]))
        lab16 = seg16.predict(inputs["astronaut"], [ds])[0].pred_sem_seg.data[0]
        ref = None
        # recompute the fp32 full-res VOC labels for the agreement figure
        torch.Tensor.half, nn.Module.half = fp32_patch, fp32_patch
        calls["force_precision"] = "fp32"
        dino_f = build_tiny_dino()
        torch.hub.load = lambda repo, name, *a, **k: dino_f
        seg32 = make_seg("dino", prob_thd=0.2)
        ref = seg32.predict(inputs["astronaut"], [SegDataSample(dict(ori_shape=ori["astronaut"]))])[0]
        stats["fp16_vs_fp32_dino_astronaut_voc_label_agreement"] = float(
            (ref.pred_sem_seg.data[0] == lab16).float().mean()
        )
    except Exception as e:  # CPU half kernels may be missing
        stats["fp16_vs_fp32"] = f"not run: {type(e).__name__}: {e}"[:300]
    finally:
        torch.Tensor.half, nn.Module.half = half_t, half_m
        calls.pop("force_precision", None)

    # ---- transformers conversions (what visionfm can load) and their parity with the hub modules
    from transformers import AutoModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig, ViTModel

    x = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    hf2 = Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_ratio=4,
            patch_size=14,
            image_size=518,
            num_register_tokens=4,
            layerscale_value=1.0,
            layer_norm_eps=1e-6,
            qkv_bias=True,
            hidden_act="gelu",
        )
    )
    hf2.load_state_dict(dinov2_to_hf(dinov2.state_dict(), hf2), strict=True)
    hf2.save_pretrained(WORK / "tiny_dinov2_hf", safe_serialization=True)
    hf2 = AutoModel.from_pretrained(WORK / "tiny_dinov2_hf").eval()
    with torch.no_grad():
        ref2 = dinov2.get_intermediate_layers(x, reshape=True)[0]  # what ProxyCLIP takes
        got2 = hf2(pixel_values=x).last_hidden_state[:, 1 + 4 :].reshape(1, 24, 24, 64).permute(0, 3, 1, 2)
    stats["hf_dinov2_reg_vs_hub_maxabs_336"] = float((ref2 - got2).abs().max())

    hf1 = ViTModel(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=256,
            patch_size=8,
            image_size=224,
            layer_norm_eps=1e-6,
            qkv_bias=True,
            hidden_act="gelu",
        ),
        add_pooling_layer=False,
    )
    hf1.load_state_dict(dino_to_hf_vit(dino.state_dict(), hf1), strict=True)
    hf1.save_pretrained(WORK / "tiny_dino_b8_hf", safe_serialization=True)
    hf1 = ViTModel.from_pretrained(WORK / "tiny_dino_b8_hf", add_pooling_layer=False).eval()
    with torch.no_grad():
        ref1 = dino.get_intermediate_layers(x)[0][:, 1:]
        got1 = hf1(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        x224 = x[..., :224, :224]
        same224 = float((dino.get_intermediate_layers(x224)[0] - hf1(pixel_values=x224).last_hidden_state).abs().max())
    stats["hf_vit_dino_vs_hub_maxabs_224_no_interp"] = same224
    stats["hf_vit_dino_vs_hub_maxabs_336_interp"] = float((ref1 - got1).abs().max())

    # ---- inputs and descriptions
    for name in images:
        tensors[f"input/{name}_resized_rgb_uint8"] = torch.from_numpy(resized[name]).clone()
        desc[f"input/{name}_resized_rgb_uint8"] = (
            f"[H, W, 3] RGB uint8 after their test pipeline's Resize(scale=(2048, 336), keep_ratio=True) "
            f"(cv2.INTER_LINEAR) of skimage.data.{name}() {ori[name][0]}x{ori[name][1]}; the model input is "
            "(x - [122.771,116.746,104.094]) / [68.501,66.632,70.323] of this, CHW, float32"
        )
    desc["text_embeddings"] = (
        "[Q=9, 64] query_features: per query word, mean over the 80 openai_imagenet_template "
        "prompts of L2-normalised encode_text, re-normalised; query order = class file order, "
        "synonyms split by '; '"
    )
    desc["query_idx"] = "[Q] class index of each query (background;sky;wall -> 0, person;man -> 1, cup;mug -> 2, ...)"
    for vfm in ("dino", "dinov2"):
        for name in images:
            for style, thd in (("voc", 0.2), ("ade", 0.0)):
                desc[f"{vfm}/{name}/labels_{style}_s4"] = (
                    f"final label map (their predict -> postprocess_result: softmax(40 * logits) over queries, max "
                    f"over each class's synonyms, argmax; pixels whose max class prob < {thd} -> 0) at the original "
                    f"resolution, sampled [::4, ::4]; {style.upper()}-style prob_thd={thd}"
                )
    meta = {
        "repo": PROXYCLIP_REPO,
        "commit": PROXYCLIP_COMMIT,
        "dino_repo": DINO_REPO,
        "dino_commit": DINO_COMMIT,
        "dinov2_repo": DINOV2_REPO,
        "dinov2_commit": DINOV2_COMMIT,
        "generator": "tools/seg_goldens/make_proxyclip.py",
        "note": "tools/seg_goldens/README.md",
        "clip": f"visionfm tiny_checkpoint('clip-b16') {clip_dir} (open_clip_model.safetensors sha256 "
        f"{sha256(clip_dir / 'open_clip_model.safetensors')}), built with ProxyCLIP's own open_clip fork",
        "proxy_dino": "tiny facebookresearch/dino VisionTransformer(patch 8, dim 64, depth 2, heads 2, qkv_bias, "
        f"LN eps 1e-6, img_size 224), seed 0 + {PERTURB}*randn on every parameter; "
        "tiny_dino_b8.safetensors (hub key names), tiny_dino_b8_hf/ (transformers ViTModel)",
        "proxy_dinov2": "tiny facebookresearch/dinov2 DinoVisionTransformer as hub dinov2_vitb14_reg (patch 14, 4 "
        "registers, img_size 518, init_values 1.0, antialias pos interp, offset 0) dim 64, depth 2, "
        f"heads 2, seed 0 + {PERTURB}*randn; tiny_dinov2_reg.safetensors, "
        "tiny_dinov2_hf/ (transformers Dinov2WithRegistersModel)",
        "class_file": "\n".join(CLASS_LINES),
        "settings": "ProxyCLIPSegmentation defaults: logit_scale 40, beta 1.2, gamma 3.0, slide_crop 336, "
        "slide_stride 112; precision fp32 (theirs fp16); device cpu",
        "calls": json.dumps({k: v for k, v in calls.items()}),
        "stats": json.dumps(stats),
        "tensors": json.dumps(desc, indent=0),
    }
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(GOLDEN), metadata=meta)
    print(json.dumps(stats, indent=1))
    print("calls:", calls)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(tensors)} tensors)")
    for k, v in tensors.items():
        print(f"  {k:45s} {tuple(v.shape)} {v.dtype}")


if __name__ == "__main__":
    main()
