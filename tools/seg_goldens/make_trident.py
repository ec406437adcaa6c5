#!/usr/bin/env python
"""Golden outputs of Trident (YuHengsss/Trident, ICCV 2025) computed by THEIR code on visionfm's tiny weights.

One command (from the repository root, in the venv of README.md; CPU, a few minutes, 1 thread):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_trident.py               # trident.safetensors (committed)
    OMP_NUM_THREADS=1 python tools/seg_goldens/make_trident.py --sam build_sam   # variant, not committed

Writes (OUT = $VISIONFM_GOLDEN_OUT, default a temporary folder; ref_paths.py)
    OUT/trident.safetensors                    the goldens (+ metadata: repo, commit, settings, tensor descriptions)
    OUT/work/trident/clip_cache/clip-b16-open_clip-seed0/  visionfm's tiny_checkpoint("clip-b16") (seed 0)
    OUT/work/trident/clip_b16_tiny_openai.pt   the same state dict as a torch pickle, for their load_openai_model
    OUT/work/trident/dino/dino_vitb16_tiny.pth tiny DINO ViT/16 (tiny_dino.py, seed 1), facebookresearch/dino names
    OUT/work/trident/dino/hf_vit/              the same weights as a transformers ViTModel
    OUT/work/trident/sam_small.pth             the small SAM (segment_anything classes, names)
    OUT/work/trident/sam_small_hf/             the same weights as a transformers SamModel (parity printed)
    OUT/work/trident/inputs/{astronaut,coffee}.png, names.txt   the images (their SAM step re-reads the file) and
                                               the class file, in their format
  with --sam build_sam: OUT/trident_build_sam.safetensors, OUT/work/trident/sam_tiny.pth, sam_tiny_hf/ instead.

How their code is run (nothing of theirs is edited; everything is imported from the checkouts of fetch_refs.py,
REF_DIR in ref_paths.py):
  * REF_DIR/trident/src = YuHengsss/Trident @ TRIDENT_COMMIT (trident.py, its open_clip fork, and its own copy of
    segment_anything, modified by them to keep the last block's attention: that copy is the one used)
  * REF_DIR/dino/src    = facebookresearch/dino @ REFS["dino"] (the tiny DINO's vision_transformer.py)
  * stubs/trident       = minimal mmseg / mmengine stand-ins (import surface + SegDataPreProcessor test path)
  * runtime substitutions (monkeypatches, no source edits):
      - open_clip.openai.download_pretrained_from_url -> the tiny clip-b16 state dict (torch pickle), which their
        load_openai_model rebuilds (OpenAI key names, heads = width // 64);
      - torch.hub.load('facebookresearch/dino:main', 'dino_vitb16') -> the tiny DINO ViT/16 (tiny_dino.py);
      - segment_anything.sam_model_registry['vit_b'] -> the small SAM (below), loading their `sam_ckpt` argument;
      - float32 instead of their fp16: Tensor.half / Module.half and open_clip's convert_weights_to_lp /
        convert_weights_to_fp16 become no-ops;
      - device='cpu' is passed to their constructor (default 'cuda').
  * recorded by forward wrappers: open_clip VisionTransformer.custom_attn (proxy attention of crop 0) and
    .guidance_attn (spliced, SAM-attention-aggregated tokens; the crop coordinates).

The SAM (what differs from their main path, besides the tiny CLIP / DINO): vit_b's geometry is kept where trident.py
hard-codes it (1024 input, patch 16 -> 64x64 grid, 12 heads, window 14, last block global), everything else is
shrunk so the checkpoint fits the repository (tests/pipelines/golden/trident_sam/, 1.4 MB). Their `_build_sam`
hard-codes a 256-wide neck / prompt encoder / mask decoder (mlp 2048), so the small SAM is assembled directly from
their segment_anything classes (ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer, Sam):
    image encoder: embed 48, depth 2, heads 12, global [1], neck out_chans 32
    prompt encoder: embed 32, mask_in_chans 16
    mask decoder: transformer_dim 32, TwoWayTransformer(depth 2, mlp 64, heads 8), iou head depth 3 / hidden 32
torch.manual_seed(2) at construction, then + 0.02 * randn (torch.Generator seed 3) on every parameter in
named_parameters() order, then + IOU_SHIFT (0.1) on the IoU head's last bias: a random decoder predicts IoU ~ -0.1 +-
0.04, so the shift makes the predicted IoUs straddle the refined run's threshold and both accepted and refused
prompts occur. The refined run uses sam_iou_thresh=0.0 instead of cfg_voc21's 0.80 (which a random SAM would never
pass); the coarse run is the config as it is, with sam_refinement off.
`--sam build_sam` is the first variant: their own `_build_sam(encoder_embed_dim=96, encoder_depth=2,
encoder_num_heads=12, encoder_global_attn_indexes=[1])` (256-wide neck / prompt encoder / decoder, ~22 MB), same
seeds, no IoU shift (its IoUs scatter around 0 already); its goldens are not committed.

Preprocessing reproduces their cfg_voc21 test pipeline: LoadImageFromFile (cv2, BGR uint8) -> mmcv Resize
(scale=(2048, 448), keep_ratio=True: cv2.INTER_LINEAR, size int(x*s+0.5)) -> PackSegInputs (HWC->CHW) ->
SegDataPreProcessor(mean=[122.771,116.746,104.094], std=[68.501,66.632,70.323], bgr_to_rgb=True) (the stub,
with the arguments their constructor passes; the generator calls it).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)

import ref_paths  # noqa: E402
import tiny_dino  # noqa: E402

WORK = ref_paths.work_dir("trident")  # what this script writes besides the golden
SRC, STUBS = ref_paths.src("trident"), ref_paths.STUBS_DIR / "trident"
INPUTS, NAMES = WORK / "inputs", WORK / "names.txt"
CLIP_PT, DINO_PTH = WORK / "clip_b16_tiny_openai.pt", WORK / "dino" / "dino_vitb16_tiny.pth"

REPO, TRIDENT_COMMIT = "github.com/YuHengsss/Trident", "a93b346d1b1dc55bc6f547da5b7d361ad449ae44"
SOURCES = {"trident": TRIDENT_COMMIT, "dino": ref_paths.REFS["dino"][1]}

LABELS = ["background; sky; wall", "person; man", "cup; mug", "rocket", "table"]
IMAGES = ("astronaut", "coffee")
# cfg_voc21.py over base_config.py (+ --sam_refine as in dist_test.sh)
CFG = dict(
    clip_type="openai",
    model_type="ViT-B/16",
    vfm_model="dino",
    beta=1.2,
    gamma=3.0,
    cos_fac=1.2,
    refine_neg_cos=True,
    slide_stride=224,
    slide_crop=336,
    sam_model_type="vit_b",
    sam_iou_thresh=0.80,
    coarse_thresh=0.2,
    minimal_area=225,
    prob_thd=0.2,
    logit_scale=40,
    sam_refinement=True,
)
REFINE_OVERRIDE = dict(sam_iou_thresh=0.0)  # a random SAM predicts IoU ~0: exercise both accepted and failed prompts
DINO_PATCH, DINO_SEED = 16, 1
SAM_SEED, SAM_PERTURB_SEED, SAM_PERTURB = 2, 3, 0.02
IOU_SHIFT = 0.1  # --sam small only
# --sam small (committed): the geometry of the module docstring
SAM_SMALL = dict(
    encoder_embed_dim=48,
    encoder_depth=2,
    encoder_num_heads=12,
    encoder_global_attn_indexes=[1],
    out_chans=32,
    prompt_embed_dim=32,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=64,
    decoder_heads=8,
    iou_head_depth=3,
    iou_head_hidden_dim=32,
)
# --sam build_sam: the arguments of their _build_sam; the rest is what _build_sam hard-codes
SAM_TINY = dict(encoder_embed_dim=96, encoder_depth=2, encoder_num_heads=12, encoder_global_attn_indexes=[1])
SAM_TINY_FULL = dict(
    SAM_TINY,
    out_chans=256,
    prompt_embed_dim=256,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_heads=8,
    iou_head_depth=3,
    iou_head_hidden_dim=256,
)
VARIANTS = {  # --sam -> (golden file name, SAM checkpoint stem, geometry)
    "small": ("trident.safetensors", "sam_small", SAM_SMALL),
    "build_sam": ("trident_build_sam.safetensors", "sam_tiny", SAM_TINY_FULL),
}


# --------------------------------------------------------------------------------------------- sources and inputs
def ensure_sources() -> None:
    for name, commit in SOURCES.items():  # fetched by fetch_refs.py
        ref_paths.check_src(name, commit)


def write_inputs() -> None:
    """The images as PNG files (their SAM step re-reads the file with cv2) and the class file in their format."""
    import cv2
    from skimage import data as skdata

    INPUTS.mkdir(parents=True, exist_ok=True)
    NAMES.write_text("\n".join(LABELS))  # one class a line, synonyms split by '; '
    for name in IMAGES:
        rgb = getattr(skdata, name)()
        cv2.imwrite(str(INPUTS / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def mmseg_load(path: Path, scale=(2048, 448)):
    """LoadImageFromFile + Resize(scale, keep_ratio=True) + PackSegInputs, as mmcv does them.

    Returns (bgr_resized_uint8_chw_tensor, ori_shape)."""
    import cv2

    img = cv2.imread(str(path))  # BGR, as mmcv LoadImageFromFile (cv2 backend)
    h, w = img.shape[:2]
    sf = min(max(scale) / max(h, w), min(scale) / min(h, w))  # mmcv rescale_size
    nw, nh = int(w * sf + 0.5), int(h * sf + 0.5)  # mmcv _scale_size
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), (h, w)


class Sample:  # the part of mmseg's SegDataSample that Trident's predict / postprocess_result use
    def __init__(self, img_path, ori_shape, img_shape):
        self.img_path = str(img_path)
        self.metainfo = dict(ori_shape=ori_shape, img_shape=img_shape, img_path=str(img_path))

    def set_data(self, d):
        self.data = d


# --------------------------------------------------------------------------------------------- tiny models
def make_clip_and_dino() -> Path:
    """The tiny CLIP (visionfm's clip-b16, seed 0) as a torch pickle, and the tiny DINO ViT/16."""
    from safetensors.torch import load_file

    from visionfm.testing import tiny_checkpoint

    clip_dir = Path(tiny_checkpoint("clip-b16", root=WORK / "clip_cache", seed=0))
    torch.save(load_file(str(clip_dir / "open_clip_model.safetensors")), CLIP_PT)
    dino = tiny_dino.build_tiny_dino(patch_size=DINO_PATCH, seed=DINO_SEED)
    tiny_dino.save_tiny_dino(dino, DINO_PATCH, DINO_PTH.parent, DINO_PTH.name)
    return clip_dir


def build_sam(geometry: dict, checkpoint=None):
    """Their segment_anything Sam at `geometry` (the SAM_SMALL / SAM_TINY_FULL keys), assembled as _build_sam does."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    s = geometry
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=s["encoder_depth"],
            embed_dim=s["encoder_embed_dim"],
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=s["encoder_num_heads"],
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=s["encoder_global_attn_indexes"],
            window_size=14,
            out_chans=s["out_chans"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=s["prompt_embed_dim"],
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=s["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=s["decoder_depth"],
                embedding_dim=s["prompt_embed_dim"],
                mlp_dim=s["decoder_mlp_dim"],
                num_heads=s["decoder_heads"],
            ),
            transformer_dim=s["prompt_embed_dim"],
            iou_head_depth=s["iou_head_depth"],
            iou_head_hidden_dim=s["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint))
    return sam


def sam_builder(variant: str):
    """What sam_model_registry['vit_b'] becomes: f(checkpoint=None) -> Sam."""
    if variant == "small":
        return partial(build_sam, SAM_SMALL)
    from segment_anything.build_sam import _build_sam

    return lambda checkpoint=None: _build_sam(checkpoint=checkpoint, **SAM_TINY)


def make_sam(variant: str) -> Path:
    """Build, seed, perturb (and for 'small' shift the IoU bias of) the SAM; save it and its transformers copy."""
    _, stem, geometry = VARIANTS[variant]
    sys.path.insert(0, str(SRC))  # their segment_anything copy
    try:
        torch.manual_seed(SAM_SEED)
        sam = sam_builder(variant)()
        with torch.no_grad():  # rel-pos / pos-embed tables init to zero: perturb everything
            g = torch.Generator().manual_seed(SAM_PERTURB_SEED)
            for _, p in sam.named_parameters():
                p.add_(torch.randn(p.shape, generator=g) * SAM_PERTURB)
            if variant == "small":
                # random decoders predict IoU ~ -0.1 +- 0.04: shift the IoU head so that predictions straddle the
                # refined run's threshold 0.0 and both accepted and failed prompts occur
                sam.mask_decoder.iou_prediction_head.layers[-1].bias.add_(IOU_SHIFT)
        ckpt = WORK / f"{stem}.pth"
        torch.save(sam.state_dict(), ckpt)
        convert_sam_to_hf(sam, geometry, WORK / f"{stem}_hf")
    finally:
        sys.path.remove(str(SRC))
    return ckpt


SAM_KEYMAP = [  # segment_anything -> transformers SamModel (substring replacements, in order)
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
]


def sam_to_hf_state_dict(sd: dict) -> dict:
    """segment_anything Sam state dict -> transformers (5.x) SamModel state dict (pixel_mean / pixel_std dropped)."""
    out = {}
    for k, v in sd.items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        for a, b in SAM_KEYMAP:
            k = k.replace(a, b)
        m = re.match(r"(.*)output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)\.(.*)", k)
        if m:
            name = {0: "proj_in", 1: "layers.0", 2: "proj_out"}[int(m.group(3))]
            k = f"{m.group(1)}output_hypernetworks_mlps.{m.group(2)}.{name}.{m.group(4)}"
        out[k] = v.contiguous().clone()
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def convert_sam_to_hf(sam, geometry: dict, out_dir: Path) -> None:
    """Save `sam` as a transformers SamModel directory (config.json + model.safetensors) and check its parity:
    image embeddings, last-block attention, and one prompted mask (points + box + a mask prompt)."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    s = geometry
    vision = SamVisionConfig(
        hidden_size=s["encoder_embed_dim"],
        num_hidden_layers=s["encoder_depth"],
        num_attention_heads=s["encoder_num_heads"],
        global_attn_indexes=s["encoder_global_attn_indexes"],
        image_size=1024,
        patch_size=16,
        window_size=14,
        output_channels=s["out_chans"],
        mlp_dim=s["encoder_embed_dim"] * 4,
        num_pos_feats=s["prompt_embed_dim"] // 2,
        layer_norm_eps=1e-6,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=s["prompt_embed_dim"], image_size=1024, patch_size=16, mask_input_channels=s["mask_in_chans"]
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=s["prompt_embed_dim"],
        mlp_dim=s["decoder_mlp_dim"],
        num_hidden_layers=s["decoder_depth"],
        num_attention_heads=s["decoder_heads"],
        iou_head_depth=s["iou_head_depth"],
        iou_head_hidden_dim=s["iou_head_hidden_dim"],
    )
    hf = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    res = hf.load_state_dict(sam_to_hf_state_dict(sam.state_dict()), strict=False)
    assert not res.unexpected_keys and not res.missing_keys, (res.unexpected_keys, res.missing_keys)
    hf.save_pretrained(out_dir, safe_serialization=True)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    hf_e = SamModel.from_pretrained(out_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        a = sam.image_encoder(x)
        o = hf_e.vision_encoder(pixel_values=x, output_attentions=True)
        pts = torch.tensor([[[300.0, 400.0]]])
        box = torch.tensor([[100.0, 200.0, 600.0, 700.0]])
        mask = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(1))
        sp, de = sam.prompt_encoder(points=(pts, torch.ones(1, 1)), boxes=box, masks=mask)
        lo, io = sam.mask_decoder(
            image_embeddings=a,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sp,
            dense_prompt_embeddings=de,
            multimask_output=False,
        )
        ho = hf_e(
            image_embeddings=o.last_hidden_state,
            input_points=pts[None],
            input_labels=torch.ones(1, 1, 1).long(),
            input_boxes=box[None],
            input_masks=mask,
            multimask_output=False,
        )
    err = (a - o.last_hidden_state).abs().max().item()
    att = (sam.image_encoder.last_attn - o.attentions[-1].reshape(sam.image_encoder.last_attn.shape)).abs().max().item()
    merr = (lo[:, 0] - ho.pred_masks[0, :, 0]).abs().max().item()
    ierr = (io[:, 0] - ho.iou_scores[0, :, 0]).abs().max().item()
    print(
        f"[sam] HF SamModel parity: embeddings {err:.2e}, last attention {att:.2e}, mask logits {merr:.2e}, iou {ierr:.2e}"
    )
    assert err < 1e-3 and merr < 1e-3, (err, merr)


# --------------------------------------------------------------------------------------------- their code
def _purge_site_open_clip() -> None:
    """visionfm's tiny writers import site-packages open_clip; their vendored open_clip must win afterwards."""
    for m in [m for m in sys.modules if m == "open_clip" or m.startswith("open_clip.")]:
        del sys.modules[m]


def patch_environment(variant: str) -> None:
    _purge_site_open_clip()
    sys.path[:0] = [str(STUBS), str(SRC)]
    # float32 run (theirs: fp16 on CUDA)
    torch.Tensor.half = lambda self, *a, **k: self if self.is_floating_point() else self.float()
    nn.Module.half = lambda self: self

    import open_clip
    import open_clip.factory
    import open_clip.model
    import open_clip.openai

    assert Path(open_clip.__file__).resolve().is_relative_to(SRC.resolve()), open_clip.__file__
    open_clip.model.convert_weights_to_lp = lambda *a, **k: None
    open_clip.model.convert_weights_to_fp16 = lambda *a, **k: None
    open_clip.factory.convert_weights_to_lp = lambda *a, **k: None
    open_clip.openai.download_pretrained_from_url = lambda url, cache_dir=None: str(CLIP_PT)

    def hub_load(repo, name, *a, **k):
        assert (repo, name) == ("facebookresearch/dino:main", "dino_vitb16"), (repo, name)
        m = tiny_dino.build_tiny_dino(patch_size=DINO_PATCH, seed=DINO_SEED)
        m.load_state_dict(torch.load(DINO_PTH))
        return m

    torch.hub.load = hub_load

    import segment_anything

    assert Path(segment_anything.__file__).resolve().is_relative_to(SRC.resolve()), segment_anything.__file__
    segment_anything.sam_model_registry["vit_b"] = sam_builder(variant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sam",
        choices=sorted(VARIANTS),
        default="small",
        help="small: the committed trident.safetensors (default); build_sam: their _build_sam at width 96",
    )
    variant = ap.parse_args().sam
    golden_name, _, geometry = VARIANTS[variant]
    golden = ref_paths.out_dir() / golden_name

    from safetensors.torch import save_file

    ensure_sources()
    write_inputs()
    make_clip_and_dino()
    sam_ckpt = make_sam(variant)
    patch_environment(variant)

    import trident as T
    from open_clip.transformer import VisionTransformer

    assert Path(T.__file__).resolve().is_relative_to(SRC.resolve()), T.__file__
    cap = {}
    orig_custom, orig_guid = VisionTransformer.custom_attn, VisionTransformer.guidance_attn

    def custom_attn(self, *a, **k):
        out = orig_custom(self, *a, **k)
        cap["custom_attn_out"] = out.detach().clone()
        return out

    def guidance_attn(self, attn_layer, norm_layer, x, token_size=(16, 16), **k):
        out = orig_guid(self, attn_layer, norm_layer, x, token_size=token_size, **k)
        cap["guidance_out"] = out.detach().clone()
        cap["dst_coords"] = torch.stack(k["dst_coords"]).clone()
        return out

    VisionTransformer.custom_attn, VisionTransformer.guidance_attn = custom_attn, guidance_attn

    tensors, meta = {}, {}
    for refine in (False, True):
        cfg = dict(CFG, sam_refinement=refine)
        if refine:
            cfg.update(REFINE_OVERRIDE)
        model = T.Trident(name_path=str(NAMES), device="cpu", sam_ckpt=str(sam_ckpt), **cfg)
        model.eval()
        tensors["text_query_features"] = model.query_features.float().contiguous()
        pre = model.data_preprocessor
        for name in IMAGES:
            raw, ori = mmseg_load(INPUTS / f"{name}.png")
            x = pre(raw)
            s = Sample(INPUTS / f"{name}.png", ori, tuple(x.shape[2:]))
            with torch.no_grad():
                if not refine:
                    # pre-postprocess logits (get_trident_seg output at ori_shape), per query
                    logits = model.get_trident_seg(x, s.img_path, [s.metainfo])
                    vt = model.clip.visual
                    crop0 = cap["custom_attn_out"][:, 0:1]  # (L_dino, 1, D) first crop after custom (proxy) attention
                    f = (vt.ln_post(crop0.permute(1, 0, 2)) @ vt.proj)[0]
                    f = f / f.norm(dim=-1, keepdim=True)
                    side = int(round(f.shape[0] ** 0.5))
                    tensors[f"{name}/crop0_proxy_logits"] = (
                        (f @ model.query_features.T).T.reshape(-1, side, side).contiguous()
                    )
                    tensors[f"{name}/spliced_sam_aggregated_feats_first4ch"] = cap["guidance_out"][
                        :, 0, :4
                    ].contiguous()
                    tensors[f"{name}/crop_coords_patch_units"] = cap["dst_coords"].to(torch.int32)
                    tensors[f"{name}/seg_logits_queries_ori_stride8"] = logits[0][:, ::8, ::8].contiguous()
                    tensors[f"{name}/input_normalized_stride8"] = x[0][:, ::8, ::8].contiguous()
                out = model.predict(x, [s])
            tag = "refined" if refine else "coarse"
            probs = out[0].data["seg_logits"].data
            pred = out[0].data["pred_sem_seg"].data
            tensors[f"{name}/{tag}/probs_ori_stride8"] = probs[:, ::8, ::8].float().contiguous()
            tensors[f"{name}/{tag}/pred"] = pred.to(torch.uint8).reshape(pred.shape[-2:]).contiguous()
            meta[f"{name}/shape"] = [list(ori), list(x.shape[2:])]
            print(name, tag, "pred hist", torch.bincount(pred.flatten().long(), minlength=5).tolist())

    desc = {
        "text_query_features": "(9, 64) L2-normalised text embeddings, 80 OpenAI ImageNet templates averaged, "
        "queries in name-file order",
        "<img>/input_normalized_stride8": "mmseg-preprocessed CLIP input (RGB, (x*255-mean)/std) [:, ::8, ::8]; "
        "full size in meta <img>/shape[1]",
        "<img>/crop0_proxy_logits": "(9, 21, 21) crop 0 (top-left 336x336): CLIP last block replaced by "
        "DINO-similarity proxy attention, ln_post@proj, L2-norm, @ text (no logit scale)",
        "<img>/spliced_sam_aggregated_feats_first4ch": "(Hs*Ws, 4) first 4 channels of the spliced + "
        "SAM-attention-aggregated tokens (before ln_post/proj)",
        "<img>/crop_coords_patch_units": "(n_crops, 4) [y1, x1, y2, x2] // 16 of each sliding crop",
        "<img>/seg_logits_queries_ori_stride8": "(9, H/8, W/8) get_trident_seg output: cosine logits per query "
        "bilinearly resized to the original image, [:, ::8, ::8]",
        "<img>/<coarse|refined>/probs_ori_stride8": "(5, H/8, W/8) postprocess: softmax(40*logits) over 9 queries, "
        "then their bg merge (channel 0 = max of the first 5 queries: background, sky, wall, person, man; channels "
        "1-4 = cup, mug, rocket, table), [:, ::8, ::8]; refined = after SAM prompt refinement (R, not probabilities)",
        "<img>/<coarse|refined>/pred": "(H, W) uint8 final label map at original resolution (prob_thd 0.2 -> 0)",
    }
    sam_seed = (
        f"torch.manual_seed({SAM_SEED}) at construction, + {SAM_PERTURB}*randn (torch.Generator seed "
        f"{SAM_PERTURB_SEED}) on every parameter"
    )
    if variant == "small":
        sam_meta = {
            "sam_small": json.dumps(SAM_SMALL),
            "sam_seed": sam_seed + f", then + {IOU_SHIFT} on the IoU head's last bias (predicted IoUs straddle 0)",
        }
    else:
        sam_meta = {"sam_tiny": json.dumps(SAM_TINY), "sam_seed": sam_seed + " (their _build_sam)"}
    metadata = {
        "repo": REPO,
        "commit": TRIDENT_COMMIT,
        "labels": json.dumps(LABELS),
        "config": json.dumps(CFG),
        "refined_config_override": json.dumps(REFINE_OVERRIDE),
        **sam_meta,
        "dino": tiny_dino.describe(DINO_PATCH, DINO_SEED),
        "clip": "visionfm tiny_checkpoint('clip-b16', seed=0) -> torch.save(state_dict) -> "
        "open_clip.openai.load_openai_model",
        "generator": f"tools/seg_goldens/make_trident.py --sam {variant}",
        "note": "tools/seg_goldens/README.md",
        "precision": "float32 (their code runs fp16 on CUDA)",
        "shapes": json.dumps(meta),
        "tensors": json.dumps(desc),
    }
    save_file(tensors, str(golden), metadata=metadata)
    print(f"wrote {golden} ({golden.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
