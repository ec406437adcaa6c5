#!/usr/bin/env python
"""Golden outputs of CorrCLIP (zdk258/CorrCLIP, ICCV 2025) computed by THEIR code on visionfm's tiny weights.

One command (from the repository root, in the venv of README.md; CPU, about a minute, 1 thread):

    OMP_NUM_THREADS=1 python tools/seg_goldens/make_corrclip.py                       # both files
    OMP_NUM_THREADS=1 python tools/seg_goldens/make_corrclip.py --only corrclip_extra # one of them

Writes (OUT = $VISIONFM_GOLDEN_OUT, default a temporary folder; ref_paths.py)
    OUT/corrclip.safetensors                   the main goldens (+ metadata: repo, commit, settings, descriptions)
    OUT/corrclip_extra.safetensors             the cases the main goldens do not reach ("pad", "nozero", below)
    OUT/work/corrclip/clip_cache/clip-b16-12layer-open_clip-seed0/  visionfm's tiny_checkpoint("clip-b16-12layer")
    OUT/work/corrclip/clip_b16_12layer.pt      the same state dict as a torch pickle, for their load_checkpoint
    OUT/work/corrclip/dino/dino_vitb8_tiny.pth tiny DINO ViT/8 (tiny_dino.py, seed 1), facebookresearch/dino names
    OUT/work/corrclip/dino/hf_vit/             the same weights as a transformers ViTModel
    OUT/work/corrclip/region_masks/<img>.npz   the synthetic region masks (main goldens)
    OUT/work/corrclip/region_masks_extra/{pad,nozero}/<img>.npz   those of corrclip_extra
    OUT/work/corrclip/inputs/{astronaut,coffee}.png, names.txt   the images and the class file, in their format

How their code is run (nothing of theirs is edited; everything is imported from the checkouts of fetch_refs.py,
REF_DIR in ref_paths.py):
  * REF_DIR/corrclip/src = zdk258/CorrCLIP @ CORRCLIP_COMMIT (the ICCV code; the same files are CorrCLIPv1/ at
    their later HEAD 103bc18213e6d906e55a21b8491bc7b04cbf106b)
  * REF_DIR/dino/src     = facebookresearch/dino @ REFS["dino"] (the tiny DINO's vision_transformer.py)
  * stubs/corrclip       = minimal mmseg / mmengine stand-ins (import surface + SegDataPreProcessor test path)
  * runtime substitutions (monkeypatches, no source edits):
      - their open_clip's 'ViT-B-16-quickgelu' config -> CLIP_CFG (visionfm's clip-b16-12layer: ViT-B/16 geometry at
        width 128 / 64-wide heads with **12** vision layers: their VisionTransformer.forward picks NUM_SPATIAL from
        the layer count and needs >= 5 layers; 12 hits the ViT-B branch NUM_SPATIAL=5), and its 'metaclip_fullcc'
        download -> the tiny state dict (torch pickle) for their load_checkpoint;
      - torch.hub.load('facebookresearch/dino:main', 'dino_vitb8') -> the tiny DINO ViT/8 (tiny_dino.py);
      - float32 instead of their fp16: Tensor.half / Module.half and open_clip's convert_weights_to_lp /
        convert_weights_to_fp16 become no-ops;
      - device='cpu' is passed to their constructor (default 'cuda').
  * recorded by wrappers: CLIP.encode_image (per-crop features), CorrCLIPSegmentation.forward_slide (the per-query
    maps at the original size) and DBSCAN.fit_predict (the region merging of each crop).

Region masks (what differs from their main path, besides the tiny CLIP / DINO): mask_generator=None, i.e. their
paper-replication path that loads pre-generated SAM2 masks from <instance_mask_path>/<stem>.npz['instance_mask']
(their README's region_masks.zip). No SAM2 runs: the masks are synthetic, skimage.segmentation.slic(img,
n_segments=24, compactness=10, start_label=1) with every label divisible by 4 set to 0 (= "unsegmented", the
minimum value, as in SAM2's masks); they are stored in corrclip.safetensors (<img>/instance_mask, uint8).
corrclip_extra.safetensors runs the same model on
  pad    -- the images rescaled to a short side of 300 (mmcv imrescale (2048, 300)): windows 300 px high are padded
            (centred) to 336 with zeros, their region masks with 10000 (corrclip_segmentor.py:154-166);
            region masks = the main goldens' instance_mask (SLIC, every 4th label 0).
  nozero -- short side 336 as the main goldens, region mask = where(instance_mask == 0, 200, instance_mask) * 37: no
            id 0, ids not contiguous; each window's smallest id is a real region (quirk: it is treated as
            "unsegmented"), and map correction skips the image's smallest id (37).

Preprocessing reproduces their cfg_voc21 test pipeline: LoadImageFromFile (cv2, BGR uint8) -> mmcv Resize
(scale=(2048, 336), keep_ratio=True: cv2.INTER_LINEAR, size int(x*s+0.5)) -> PackSegInputs (HWC->CHW) ->
SegDataPreProcessor(mean=[122.771,116.746,104.094], std=[68.501,66.632,70.323], bgr_to_rgb=True) (the stub,
with the arguments their constructor passes; the generator calls it).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)

import ref_paths  # noqa: E402
import tiny_dino  # noqa: E402

WORK = ref_paths.work_dir("corrclip")  # what this script writes besides the goldens
SRC, STUBS = ref_paths.src("corrclip"), ref_paths.STUBS_DIR / "corrclip"
INPUTS, NAMES = WORK / "inputs", WORK / "names.txt"
CLIP_PT, DINO_PTH = WORK / "clip_b16_12layer.pt", WORK / "dino" / "dino_vitb8_tiny.pth"

REPO, CORRCLIP_COMMIT = "github.com/zdk258/CorrCLIP", "6c1fd2c02ff90f071ed744a5998be0cda7ad75b4"
SOURCES = {"corrclip": CORRCLIP_COMMIT, "dino": ref_paths.REFS["dino"][1]}

LABELS = ["background; sky; wall", "person; man", "cup; mug", "rocket", "table"]
IMAGES = ("astronaut", "coffee")
CFG = dict(  # base_config.py + cfg_voc21.py
    clip_type="metaclip_fullcc",
    model_type="ViT-B-16-quickgelu",
    dino_type="dino_vitb8",
    mask_generator=None,
    prob_thd=0.2,
    logit_scale=40,
    slide_stride=112,
    slide_crop=336,
)
CLIP_CFG = {  # = visionfm.testing.clip_deep.TINY_B16_12LAYER_CFG (checked against the written checkpoint)
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
DINO_PATCH, DINO_SEED = 8, 1
EXTRA_CASES = (("pad", (2048, 300)), ("nozero", (2048, 336)))  # case -> mmcv Resize scale


# --------------------------------------------------------------------------------------------- sources and inputs
def ensure_sources() -> None:
    for name, commit in SOURCES.items():  # fetched by fetch_refs.py
        ref_paths.check_src(name, commit)


def write_inputs() -> dict[str, np.ndarray]:
    """The images as PNG files (their predict takes a file path) and the class file in their format."""
    import cv2
    from skimage import data as skdata

    INPUTS.mkdir(parents=True, exist_ok=True)
    NAMES.write_text("\n".join(LABELS))  # one class a line, synonyms split by '; '
    images = {name: getattr(skdata, name)() for name in IMAGES}
    for name, rgb in images.items():
        cv2.imwrite(str(INPUTS / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return images


def make_masks(images: dict[str, np.ndarray]) -> tuple[Path, dict[str, np.ndarray]]:
    """The synthetic region masks of the main goldens, written as their pre-generated masks (<stem>.npz)."""
    from skimage.segmentation import slic

    mdir = WORK / "region_masks"
    mdir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, im in images.items():
        lab = slic(im, n_segments=24, compactness=10, start_label=1)
        lab[lab % 4 == 0] = 0  # "unsegmented" union (minimum value), as SAM2's instance_mask
        np.savez(mdir / f"{name}.npz", instance_mask=lab.astype(np.int64))
        out[name] = lab
    return mdir, out


def mmseg_load(path: Path, scale=(2048, 336)):
    """LoadImageFromFile + Resize(scale, keep_ratio=True) + PackSegInputs, as mmcv does them.

    Returns (bgr_resized_uint8_chw_tensor, ori_shape)."""
    import cv2

    img = cv2.imread(str(path))  # BGR, as mmcv LoadImageFromFile (cv2 backend)
    h, w = img.shape[:2]
    sf = min(max(scale) / max(h, w), min(scale) / min(h, w))  # mmcv rescale_size
    img = cv2.resize(img, (int(w * sf + 0.5), int(h * sf + 0.5)), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), (h, w)


class Sample:  # the part of mmseg's SegDataSample that CorrCLIP's predict / postprocess_result use
    def __init__(self, img_path, ori_shape, img_shape):
        self.img_path = str(img_path)
        self.metainfo = dict(ori_shape=ori_shape, img_shape=img_shape, img_path=str(img_path))

    def set_data(self, d):
        self.data = d


# --------------------------------------------------------------------------------------------- tiny models
def make_clip_and_dino() -> Path:
    """The tiny 12-layer CLIP (visionfm's clip-b16-12layer, seed 0) as a torch pickle, and the tiny DINO ViT/8."""
    from safetensors.torch import load_file

    from visionfm.testing import tiny_checkpoint

    clip_dir = Path(tiny_checkpoint("clip-b16-12layer", root=WORK / "clip_cache", seed=0))
    model_cfg = json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    assert model_cfg == CLIP_CFG, model_cfg
    torch.save(load_file(str(clip_dir / "open_clip_model.safetensors")), CLIP_PT)
    dino = tiny_dino.build_tiny_dino(patch_size=DINO_PATCH, seed=DINO_SEED)
    tiny_dino.save_tiny_dino(dino, DINO_PATCH, DINO_PTH.parent, DINO_PTH.name)
    return clip_dir


# --------------------------------------------------------------------------------------------- their code
def _purge_site_open_clip() -> None:
    """visionfm's tiny writers import site-packages open_clip; their vendored open_clip must win afterwards."""
    for m in [m for m in sys.modules if m == "open_clip" or m.startswith("open_clip.")]:
        del sys.modules[m]


def patch_environment() -> None:
    _purge_site_open_clip()
    sys.path[:0] = [str(STUBS), str(SRC)]
    # float32 run (theirs: fp16 on CUDA)
    torch.Tensor.half = lambda self, *a, **k: self if self.is_floating_point() else self.float()
    nn.Module.half = lambda self: self

    import open_clip
    import open_clip.factory
    import open_clip.model

    assert Path(open_clip.__file__).resolve().is_relative_to(SRC.resolve()), open_clip.__file__
    open_clip.model.convert_weights_to_lp = lambda *a, **k: None
    open_clip.model.convert_weights_to_fp16 = lambda *a, **k: None
    open_clip.factory.convert_weights_to_lp = lambda *a, **k: None
    open_clip.factory._MODEL_CONFIGS["ViT-B-16-quickgelu"] = json.loads(json.dumps(CLIP_CFG))
    open_clip.factory.download_pretrained = lambda cfg, *a, **k: str(CLIP_PT)

    def hub_load(repo, name, *a, **k):
        assert (repo, name) == ("facebookresearch/dino:main", "dino_vitb8"), (repo, name)
        m = tiny_dino.build_tiny_dino(patch_size=DINO_PATCH, seed=DINO_SEED)
        m.load_state_dict(torch.load(DINO_PTH))
        return m

    torch.hub.load = hub_load


def install_recorders(cap: dict) -> None:
    """Wrap CLIP.encode_image, CorrCLIPSegmentation.forward_slide and DBSCAN.fit_predict to record into `cap`."""
    import corrclip_segmentor as C
    import open_clip.model as ocm
    import open_clip.transformer as oct

    orig_enc = ocm.CLIP.encode_image

    def encode_image(self, image, dino_feats, feat_shape, instance_masks, normalize=False):
        out = orig_enc(self, image, dino_feats, feat_shape, instance_masks, normalize)
        cap["feats"].append((out.detach().clone(), tuple(feat_shape), tuple(image.shape[-2:])))
        return out

    ocm.CLIP.encode_image = encode_image
    orig_slide = C.CorrCLIPSegmentation.forward_slide

    def forward_slide(self, *a, **k):
        out = orig_slide(self, *a, **k)
        cap["slide"] = out.detach().clone()
        return out

    C.CorrCLIPSegmentation.forward_slide = forward_slide

    class RecDBSCAN(oct.DBSCAN):
        def fit_predict(self, X, y=None, **kw):
            r = super().fit_predict(X, y, **kw)
            cap["dbscan"].append(np.asarray(r).copy())
            return r

    oct.DBSCAN = RecDBSCAN


def run_image(model, cap: dict, name: str, scale) -> tuple:
    """Their predict on one image; returns (out, x, ori, crop0 logits on the DINO grid, crop0 DBSCAN labels)."""
    cap["feats"].clear()
    cap["dbscan"].clear()
    raw, ori = mmseg_load(INPUTS / f"{name}.png", scale=scale)
    x = model.data_preprocessor(raw)
    s = Sample(INPUTS / f"{name}.png", ori, tuple(x.shape[2:]))
    out = model.predict(x, [s])
    f0, fshape, _ = cap["feats"][0]
    f0 = f0[0] / f0[0].norm(dim=-1, keepdim=True)
    crop0_logits = (f0 @ model.query_features.T).T.reshape(-1, *fshape).contiguous()
    if cap["dbscan"]:
        dbscan = torch.from_numpy(cap["dbscan"][0].astype(np.int32))
    else:
        dbscan = torch.zeros(0, dtype=torch.int32)
    return out, x, ori, crop0_logits, dbscan


def make_main(C, cap: dict, mdir: Path, masks: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """corrclip.safetensors."""
    from safetensors.torch import save_file

    model = C.CorrCLIPSegmentation(name_path=str(NAMES), device="cpu", instance_mask_path=str(mdir), **CFG).eval()
    tensors = {"text_query_features": model.query_features.float().contiguous()}
    meta = {}
    for name in IMAGES:
        out, x, ori, crop0_logits, dbscan = run_image(model, cap, name, (2048, 336))
        tensors[f"{name}/crop0_logits"] = crop0_logits
        tensors[f"{name}/crop0_dbscan_labels"] = dbscan
        tensors[f"{name}/n_crops"] = torch.tensor([len(cap["feats"])], dtype=torch.int32)
        tensors[f"{name}/input_normalized_stride8"] = x[0][:, ::8, ::8].contiguous()
        tensors[f"{name}/instance_mask"] = torch.from_numpy(masks[name].astype(np.uint8))
        probs = out[0].data["seg_logit"].data
        pred = out[0].data["pred_sem_seg"].data
        tensors[f"{name}/seg_logits_queries_ori_stride8"] = cap["slide"][0][:, ::8, ::8].contiguous()
        tensors[f"{name}/probs_ori_stride8"] = probs[:, ::8, ::8].float().contiguous()
        tensors[f"{name}/pred"] = pred.to(torch.uint8).reshape(pred.shape[-2:]).contiguous()
        meta[f"{name}/shape"] = [list(ori), list(x.shape[2:])]
        print(
            name, "crops", len(cap["feats"]), "pred hist", torch.bincount(pred.flatten().long(), minlength=5).tolist()
        )

    desc = {
        "text_query_features": "(9, 64) L2-normalised text embeddings (80 OpenAI templates averaged), name-file order",
        "<img>/input_normalized_stride8": "mmseg-preprocessed CLIP input [:, ::8, ::8]; full size in meta shapes[1]",
        "<img>/instance_mask": "(H, W) uint8 region mask fed as the pre-generated SAM2 mask (0 = unsegmented)",
        "<img>/seg_logits_queries_ori_stride8": "(9, H/8, W/8) forward_slide output: per-query cosine logits, crops "
        "averaged at input resolution then bilinearly resized to the original size, [:, ::8, ::8]",
        "crop masks": "not stored: crop mask = F.interpolate(instance_mask[None,None].float(), input size, 'nearest') "
        "cropped (pad value 10000 if padded)",
        "<img>/crop0_dbscan_labels": "DBSCAN(eps=0.2, min_samples=1, precomputed max(S)-S) cluster id per region of "
        "crop 0 (regions sorted by value, first/minimum excluded)",
        "<img>/crop0_logits": "(9, 42, 42) crop 0 (top-left 336x336) final CorrCLIP features (main + spatial + 0.5 "
        "semantic, @proj) L2-normed @ text, DINO-grid resolution, no logit scale",
        "<img>/n_crops": "number of sliding-window crops (crop 336, stride 112)",
        "<img>/probs_ori_stride8": "(5, H/8, W/8) postprocess seg_logit: softmax(40*slide logits at original size) "
        "over 9 queries then their bg merge (channel 0 = max of the first 5 queries!), [:, ::8, ::8] -- before map "
        "correction",
        "<img>/pred": "(H, W) uint8 final label map: argmax, prob_thd 0.2 -> 0, then per-region mode (map correction)",
    }
    metadata = {
        "repo": REPO,
        "commit": CORRCLIP_COMMIT,
        "labels": json.dumps(LABELS),
        "config": json.dumps(CFG),
        # = tiny_checkpoint("clip-b16-12layer", seed=0) (same text as the committed file's)
        "clip": "open_clip CLIP(**CLIP_CFG) via visionfm.testing.clip.write_tiny_clip, torch.manual_seed(0): "
        + json.dumps(CLIP_CFG),
        "dino": tiny_dino.describe(DINO_PATCH, DINO_SEED),
        "masks": "skimage.segmentation.slic(img, n_segments=24, compactness=10, start_label=1); labels %4==0 -> 0",
        "generator": "tools/seg_goldens/make_corrclip.py",
        "note": "tools/seg_goldens/README.md",
        "precision": "float32 (their code runs fp16 on CUDA)",
        "shapes": json.dumps(meta),
        "tensors": json.dumps(desc),
    }
    golden = ref_paths.out_dir() / "corrclip.safetensors"
    save_file(tensors, str(golden), metadata=metadata)
    print(f"wrote {golden} ({golden.stat().st_size} bytes, {len(tensors)} tensors)")
    return tensors


def make_extra(C, cap: dict, masks: dict[str, np.ndarray]) -> None:
    """corrclip_extra.safetensors: the "pad" and "nozero" cases of the module docstring, on a fresh model."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    model = None
    for case, scale in EXTRA_CASES:
        cdir = WORK / "region_masks_extra" / case
        cdir.mkdir(parents=True, exist_ok=True)
        for name in IMAGES:
            m = masks[name].astype(np.uint8).astype(np.int64)  # as stored in corrclip.safetensors
            if case == "nozero":
                m = np.where(m == 0, 200, m) * 37
            np.savez(cdir / f"{name}.npz", instance_mask=m)
        if model is None:
            model = C.CorrCLIPSegmentation(name_path=str(NAMES), device="cpu", instance_mask_path=str(cdir), **CFG)
            model = model.eval()
        model.instance_mask_path = str(cdir)
        for name in IMAGES:
            out, x, ori, crop0_logits, dbscan = run_image(model, cap, name, scale)
            _, fshape, cshape = cap["feats"][0]
            k = f"{case}/{name}"
            tensors[f"{k}/crop0_logits"] = crop0_logits
            tensors[f"{k}/crop0_dbscan_labels"] = dbscan
            tensors[f"{k}/n_crops"] = torch.tensor([len(cap["feats"])], dtype=torch.int32)
            tensors[f"{k}/seg_logits_queries_ori_stride8"] = cap["slide"][0][:, ::8, ::8].contiguous()
            pred = out[0].data["pred_sem_seg"].data
            tensors[f"{k}/pred_stride2"] = pred.to(torch.uint8).reshape(pred.shape[-2:])[::2, ::2].contiguous()
            meta[k] = {
                "ori": list(ori),
                "input": list(x.shape[2:]),
                "crop0_padded": list(cshape),
                "dino_grid": list(fshape),
            }
            hist = torch.bincount(pred.flatten().long(), minlength=5).tolist()
            print(k, meta[k], "crops", len(cap["feats"]), "hist", hist)
    desc = {
        "<case>/<img>/crop0_logits": "(9, h, w) crop 0 (top-left window, padded) final CorrCLIP features L2-normed @ "
        "text on the DINO grid (no logit scale)",
        "<case>/<img>/crop0_dbscan_labels": "DBSCAN labels of crop 0's regions after the first (empty: no merging)",
        "<case>/<img>/n_crops": "sliding windows (336 / 112)",
        "<case>/<img>/seg_logits_queries_ori_stride8": "forward_slide output (9 per-query cosine maps at the original "
        "size), [:, ::8, ::8]",
        "<case>/<img>/pred_stride2": "final label map (reference postprocess, prob_thd 0.2, map correction), [::2, ::2]",
    }
    metadata = {
        "repo": REPO,
        "commit": CORRCLIP_COMMIT,
        "labels": json.dumps(LABELS),
        "config": json.dumps(CFG),
        "base_golden": "corrclip.safetensors (weights, images, instance_mask)",
        "shapes": json.dumps(meta),
        "tensors": json.dumps(desc),
        "precision": "float32 (their code runs fp16 on CUDA)",
        "generator": "tools/seg_goldens/make_corrclip.py (the pad / nozero cases are described in its docstring)",
        "note": "tools/seg_goldens/README.md",
    }
    golden = ref_paths.out_dir() / "corrclip_extra.safetensors"
    save_file(tensors, str(golden), metadata=metadata)
    print(f"wrote {golden} ({golden.stat().st_size} bytes, {len(tensors)} tensors)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("corrclip", "corrclip_extra"), help="write just this file (default: both)")
    only = ap.parse_args().only

    ensure_sources()
    images = write_inputs()
    make_clip_and_dino()
    mdir, masks = make_masks(images)
    patch_environment()

    import corrclip_segmentor as C

    assert Path(C.__file__).resolve().is_relative_to(SRC.resolve()), C.__file__
    cap = {"feats": [], "dbscan": []}
    install_recorders(cap)
    if only in (None, "corrclip"):
        make_main(C, cap, mdir, masks)
    if only in (None, "corrclip_extra"):
        make_extra(C, cap, masks)


if __name__ == "__main__":
    main()
