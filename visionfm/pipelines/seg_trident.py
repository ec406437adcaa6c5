"""Trident (Shi, Dong, Xu, ICCV 2025): training-free open-vocabulary segmentation with CLIP, DINO and SAM.

``pipeline("zero-shot-seg", model=clip, mode="trident", method_options={...})`` scores an image the way Trident's
``get_trident_seg`` does (github.com/YuHengsss/Trident @ a93b346d1b1dc55bc6f547da5b7d361ad449ae44, ``trident.py``,
``open_clip/transformer.py``, ``seg_utils/utils.py``) and, unless ``sam_refine=False``, refines the label map with SAM
prompts as its ``sam_refinement`` does. The rest is the zero-shot-seg pipeline's shared part (rescale, prompt-ensembled
text embeddings, ``softmax(logit_scale * cos)`` over all texts, best synonym per class, ``prob_thresh``).

Scoring (:func:`trident_scores`), for the pipeline's rescaled, normalised image ``x`` (``[3, h, w]``):

1. SAM sees the *original* image, its sides rounded up to multiples of CLIP's patch size (OpenCV bilinear), then
   segment-anything's ``SamPredictor.set_image`` preprocessing (PIL bilinear to the long side 1024, mean/std on the
   0-255 scale, zero padding). From the last block of SAM's image encoder (a global-attention block) come its
   attention probabilities (softmax over all 64x64 keys, padding included) and values, both cropped to the valid grid
   ``(Hs, Ws) = resized size // 16`` (:func:`sam_image`).
2. ``x`` is brought to multiples of the patch size if it is not one already (Trident's ``preprocess_image``: long side
   rounded up, short side scaled and rounded up, each at least ``crop``; bilinear) and cut into ``crop`` windows every
   ``stride`` pixels (mmseg's layout, :func:`visionfm.pipelines.seg_protocol.window_grid`).
3. Each window goes through DINO (un-normalised from CLIP's mean/std, normalised with DINO's) at its own resolution;
   its final-norm patch tokens give the cosine similarities ``S``. CLIP runs every block but the last unchanged; the
   last block is replaced by ``out_proj(A v)``, no residual, no MLP, with ``v`` the block's values of the patch tokens
   (resized bilinearly to DINO's grid) and ``A = softmax((S - beta * mean(S)) * gamma)``, negative logits masked,
   **the mean taken over all windows of the image together** (as Trident), the same ``A`` for every head.
4. The windows' outputs are averaged where they overlap on a canvas of the image's patch grid (in feature space,
   before CLIP's head), resized bilinearly to SAM's valid grid, and aggregated by SAM: per head ``h`` the cosine
   similarity ``C_h`` of SAM's values; per query ``i`` a threshold ``t_i = min(cos_fac * mean_{h,j} C_h[i, j], 0.9)``
   (negative ``t_i`` become 0.6 when ``refine_neg_cos=False``); ``W = mean_h(attn_h * [C_h > t])``, each row divided
   by its sum; the aggregated tokens ``W @ canvas`` go through CLIP's head (``ln_post``, ``proj``), are L2-normalised,
   and their cosine similarity with each text, ``[S, Hs, Ws]``, is resized bilinearly to the original image.

Refinement (:func:`trident_refine`), on the thresholded label map and class probabilities ``[K, H, W]``:

1. both are halved (labels nearest, probabilities bilinear); pixels whose best probability is below ``coarse_thresh``
   take no part; for every class whose best half-resolution probability reaches ``coarse_thresh``, each 8-connected
   region of at least ``min_region_area`` half-resolution pixels becomes one SAM prompt: a positive point at the
   class's most probable pixel in the region, the region's box, and the class's probability map as mask prompt
   (longest side 256, ``sam_mask_coeff * p`` where ``p > coarse_thresh``, else 0);
2. prompts are mapped from the half-resolution frame to SAM's 1024 frame, each class's prompts decoded in one batch
   (one mask each); masks whose predicted IoU is at most ``sam_iou_thresh`` are dropped ("failed" regions);
3. per class, ``R_c = max over its masks of sigmoid(mask logit) * P_c`` inside the union of its masks (0 outside);
   the label is ``argmax_c R_c``, or the coarse label where every ``R_c`` is 0; inside failed regions
   ``R = max(R, P)``. The result's ``probs`` are ``R`` (scores, not probabilities), as in Trident. When no prompt is
   accepted, the coarse labels and probabilities are returned unchanged.

Reference quirks copied (so that the numbers match Trident's):

- the batch-global mean in step 3 of the scoring; the SAM attention rows are not renormalised before thresholding;
- Trident passes the mask prompt to segment-anything without a batch dimension, so the prompt encoder's convolutions
  run unbatched and its two ``LayerNorm2d`` normalise over the mask's *rows* instead of its channels; the dense
  prompt embedding here is computed the same way (:func:`mask_prompt_embedding`);
- point and box prompts are scaled from the half-resolution frame with segment-anything's ``ResizeLongestSide``
  of *that* size, the mask prompt from the original size, and predicted masks are resized back through SAM's
  (patch-rounded) input size, as Trident does.

Deviations from the reference (each only where the reference fails or is wrong):

- **synonyms**: Trident merges texts into classes by assuming only class 0 has synonyms (``postprocess_result``:
  channel 0 is the max over the first ``Q - K + 1`` texts, the others one text each), so a synonym on any other class
  shifts every class after it. visionfm takes each class's best synonym (the pipeline's shared step). Where only
  class 0 has synonyms (Trident's own class files) the two agree; the tests compare Trident's outputs on a label set
  with synonyms on three classes by passing visionfm the grouping Trident effectively used.
- the proxy attention keeps each token's affinity with itself (Trident would give NaN where a whole row is masked);
- windows need not be square: an image smaller than ``crop`` whose sides are multiples of the patch size (Trident
  pads such windows to multiples of 56 and then fails to splice them) is one window of its own size;
- Cityscapes' two-halves SAM pass (``dataset_type='CityscapesDataset'``) and PAMR (off in every Trident config) are
  not offered here; the pipeline's ``refine="pamr"`` still applies to the scores if asked for.

Everything runs in the encoders' dtypes (Trident: fp16 on CUDA, fp32 for SAM's prompt encoder and mask decoder;
the tests compare both in fp32). ``tests/pipelines/test_seg_trident.py`` compares every step above with the outputs
of Trident's own code on tiny CLIP / DINO / SAM weights (window logits, the SAM-aggregated tokens, the cosine maps,
the coarse and the refined labels and scores); the differences left are float-order ties of SAM's value-similarity
threshold and of mask logits at 0 (transformers' SAM and segment-anything agree to ~1e-6), described there. The encoders are ``dino`` and ``sam`` in ``method_options`` (visionfm encoders or
model names, loaded once per pipeline on CLIP's device and dtype); the defaults are Trident's: DINO ViT-B/16 and
SAM ViT-B.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..foundation.encoder import Encoder
from .seg_methods import SegMethod, register_seg_method
from .seg_protocol import rescale, to_size, window_grid

logger = logging.getLogger(__name__)

REFERENCE = "github.com/YuHengsss/Trident@a93b346d1b1dc55bc6f547da5b7d361ad449ae44"

#: Trident's settings (``configs/base_config.py``, VOC21 row; ``--sam_refine`` as every evaluation passes it).
DEFAULTS: dict[str, Any] = {
    "dino": "dino-vitb16",
    "sam": "sam-vit-base",
    "crop": 336,
    "stride": 224,
    "beta": 1.2,
    "gamma": 3.0,
    "cos_fac": 1.2,
    "refine_neg_cos": True,
    "sam_refine": True,
    "coarse_thresh": 0.2,
    "min_region_area": 225,
    "sam_iou_thresh": 0.8,
    "sam_mask_coeff": 0.005,
}

#: Query rows of SAM's attention computed at once (bounds memory: rows x heads x 4096 floats per chunk).
_ROWS_PER_CHUNK = 256


# ---------------------------------------------------------------------------------------------------------------------
# options and encoders
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TridentOptions:
    """Validated ``method_options`` (see :data:`DEFAULTS` for Trident's values).

    Attributes:
        dino: the DINO encoder (or model name) whose patch affinity replaces CLIP's last attention.
        sam: the SAM encoder (or model name): last-block attention for the aggregation, prompts for the refinement.
        crop: window side in pixels of the rescaled image, a multiple of CLIP's patch size.
        stride: window stride in pixels, a multiple of the patch size in ``(0, crop]``.
        beta: DINO similarities below ``beta`` times their mean (over all windows) are masked.
        gamma: scale of the DINO similarity logits.
        cos_fac: factor of the SAM value-similarity threshold (0 keeps every positive similarity).
        refine_neg_cos: ``False``: a negative threshold becomes 0.6 (Trident's ADE20K / Cityscapes setting).
        sam_refine: run the SAM prompt refinement after classification.
        coarse_thresh: in [0, 1]; pixels whose best probability is below it take no part in the refinement, and
            classes that never reach it get no prompt.
        min_region_area: smallest region (in half-resolution pixels) that becomes a prompt.
        sam_iou_thresh: in [0, 1]; masks whose predicted IoU is not above it are dropped.
        sam_mask_coeff: scale of the class probabilities given to SAM as mask-prompt logits.
    """

    dino: Any
    sam: Any
    crop: int
    stride: int
    beta: float
    gamma: float
    cos_fac: float
    refine_neg_cos: bool
    sam_refine: bool
    coarse_thresh: float
    min_region_area: int
    sam_iou_thresh: float
    sam_mask_coeff: float

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> TridentOptions:
        """Defaults from :data:`DEFAULTS`, overridden by ``options``; errors name the bad option.

        Example:
            >>> o = TridentOptions.parse({"cos_fac": 0.0, "stride": 112})  # Trident's VOC20 settings
            >>> (o.crop, o.stride, o.cos_fac, o.coarse_thresh, o.sam_iou_thresh)
            (336, 112, 0.0, 0.2, 0.8)
        """
        o = {**DEFAULTS, **dict(options)}
        unknown = sorted(set(o) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown trident options {unknown}; valid: {list(DEFAULTS)}")
        return cls(
            dino=_encoder_like("dino", o["dino"]),
            sam=_encoder_like("sam", o["sam"]),
            crop=_int("crop", o["crop"], 1),
            stride=_int("stride", o["stride"], 1),
            beta=_real("beta", o["beta"]),
            gamma=_real("gamma", o["gamma"]),
            cos_fac=_real("cos_fac", o["cos_fac"]),
            refine_neg_cos=_bool("refine_neg_cos", o["refine_neg_cos"]),
            sam_refine=_bool("sam_refine", o["sam_refine"]),
            coarse_thresh=_real("coarse_thresh", o["coarse_thresh"], 0.0, 1.0),
            min_region_area=_int("min_region_area", o["min_region_area"], 0),
            sam_iou_thresh=_real("sam_iou_thresh", o["sam_iou_thresh"], 0.0, 1.0),
            sam_mask_coeff=_real("sam_mask_coeff", o["sam_mask_coeff"], 0.0),
        )


def _encoder_like(name: str, v: Any) -> Any:
    if isinstance(v, Encoder) or (isinstance(v, str) and v.strip()):
        return v
    raise TypeError(f"method_options[{name!r}] must be a visionfm encoder or a model name, got {v!r}")


def _real(name: str, v: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(float(v)):
        raise TypeError(f"method_options[{name!r}] must be a number, got {v!r}")
    if not lo <= float(v) <= hi:
        raise ValueError(f"method_options[{name!r}] must be in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"method_options[{name!r}] must be an integer, got {v!r}")
    if v < lo:
        raise ValueError(f"method_options[{name!r}] must be >= {lo}, got {v}")
    return int(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"method_options[{name!r}] must be True or False, got {v!r}")
    return v


# Per pipeline: the loaded encoders and the last image's SAM pass (scores() computes it, refine() reuses it).
_STATE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _state(pipeline: Any) -> dict[str, Any]:
    if pipeline not in _STATE:
        _STATE[pipeline] = {"encoders": {}, "sam_image": None}
    return _STATE[pipeline]


def _resolve(pipeline: Any, value: Any, families: tuple[str, ...], role: str) -> Encoder:
    """An encoder for ``value`` (an encoder, or a model name loaded once per pipeline on CLIP's device and dtype)."""
    if isinstance(value, Encoder):
        enc = value
    else:
        cache = _state(pipeline)["encoders"]
        if value not in cache:
            from ..foundation.loading import load_encoder

            logger.info("trident: loading %s encoder %r", role, value)
            cache[value] = load_encoder(value, device=pipeline.encoder.device, dtype=pipeline.encoder.dtype)
        enc = cache[value]
    if enc.info.family not in families:
        raise TypeError(f"trident's {role} must be a {' or '.join(families)} encoder, got family {enc.info.family!r}")
    if role == "sam":
        from ..foundation.sam import SamEncoder

        if not isinstance(enc, SamEncoder):  # SAM 2 / EdgeTAM are in the sam family but have no ViT last block
            raise TypeError(
                f"trident's sam must be a SAM 1 encoder (Trident reads the attention of its last ViT block), got "
                f"{type(enc).__name__} {enc.info.name!r}"
            )
    return enc


# ---------------------------------------------------------------------------------------------------------------------
# SAM: last-block attention and values, image embedding
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class SamImage:
    """SAM's view of one image (segment-anything's ``SamPredictor.set_image`` state plus the last block's parts).

    Attributes:
        embedding: ``[1, C, g, g]`` image embedding (neck output) for the mask decoder; ``g`` = 64 for SAM.
        q, k, v: ``[heads, g*g, head_dim]`` the last (global-attention) block's queries, keys and values, float32.
        rel_h, rel_w: ``[heads, g*g, g]`` decomposed relative-position terms of every query against each key row /
            key column (the block's ``rel_pos_h`` / ``rel_pos_w`` applied to the unscaled queries).
        scale: the block's attention scale (``head_dim ** -0.5``).
        grid: ``g``.
        valid: ``(Hs, Ws)``: the grid cells covering the image (not the padding): resized size // patch.
        input_size: ``(h, w)`` of the image inside SAM's padded input (longest side = SAM's image size).
        original_size: ``(H', W')`` of the image SAM saw: the original sides rounded up to the CLIP patch size.
    """

    embedding: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    rel_h: torch.Tensor
    rel_w: torch.Tensor
    scale: float
    grid: int
    valid: tuple[int, int]
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    def attention_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``[heads, len(rows), Hs*Ws]`` of the given query tokens (indices into the full
        ``g*g`` grid): softmax over all ``g*g`` keys (padding included), then the keys cropped to the valid grid."""
        g = self.grid
        logits = (self.q[:, rows] * self.scale) @ self.k.transpose(1, 2)  # [heads, r, g*g]
        logits = logits.view(-1, len(rows), g, g) + self.rel_h[:, rows, :, None]
        logits = (logits + self.rel_w[:, rows, None, :]).view(-1, len(rows), g * g)
        probs = logits.softmax(dim=-1).view(-1, len(rows), g, g)
        hs, ws = self.valid
        return probs[..., :hs, :ws].reshape(probs.shape[0], len(rows), hs * ws)

    def valid_tokens(self) -> torch.Tensor:
        """Indices ``[Hs*Ws]`` (row-major) of the valid grid cells in the full ``g*g`` grid."""
        hs, ws = self.valid
        return (torch.arange(hs)[:, None] * self.grid + torch.arange(ws)[None, :]).flatten().to(self.q.device)


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """segment-anything's ``ResizeLongestSide.get_preprocess_shape``: ``(h, w)`` scaled so the long side is
    ``long_side``, each side rounded half up.

    Example:
        >>> preprocess_shape(400, 608, 1024)  # the coffee photo, 400x600 rounded up to 16s, in SAM's input
        (674, 1024)
    """
    s = long_side * 1.0 / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def sam_input(
    sam: Encoder, pixels: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """SAM's input for an image, as Trident prepares it.

    The sides are first rounded up to multiples of ``multiple`` (OpenCV bilinear, Trident's ``cv2.resize``), then
    resized so the long side is SAM's image size (PIL bilinear on uint8, segment-anything's ``ResizeLongestSide``),
    normalised ``(x - 255 * mean) / (255 * std)`` and zero-padded at the bottom / right.

    Args:
        sam: a SAM encoder (``info.image_size``, ``info.mean``, ``info.std`` are used).
        pixels: uint8 ``[3, H, W]`` RGB.
        multiple: the rounding of the sides (Trident: CLIP's patch size, 16).

    Returns:
        ``(pixel_values [1, 3, S, S] float32, input_size (h, w), original_size (H', W'))``.
    """
    from PIL import Image

    H, W = int(pixels.shape[-2]), int(pixels.shape[-1])
    rounded = (-(-H // multiple) * multiple, -(-W // multiple) * multiple)
    img = rescale(pixels, rounded, "cv2")
    side = int(sam.info.image_size[0])
    h, w = preprocess_shape(*rounded, side)
    arr = np.array(Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(arr).permute(2, 0, 1).float()
    mean = torch.tensor([round(255 * m, 3) for m in sam.info.mean]).view(3, 1, 1)
    std = torch.tensor([round(255 * s, 3) for s in sam.info.std]).view(3, 1, 1)
    x = F.pad((x - mean) / std, (0, side - w, 0, side - h))
    return x[None], (h, w), rounded


def sam_image(sam: Encoder, pixels: torch.Tensor, multiple: int = 16) -> SamImage:
    """Run SAM's image encoder on ``pixels`` (uint8 ``[3, H, W]``, prepared by :func:`sam_input`) and recompute its
    last block's attention parts from the block's own ``qkv`` and relative-position weights (eagerly, whatever
    attention implementation the model uses).

    Raises:
        ValueError: when SAM's last block uses windowed attention (every released SAM's last block is global).
    """
    vision = sam.model.vision_encoder
    last = vision.layers[-1]
    if getattr(last, "window_size", 0) != 0:
        raise ValueError("trident needs SAM's last image-encoder block to use global attention")
    px, input_size, original_size = sam_input(sam, pixels, multiple)
    seen: dict[str, torch.Tensor] = {}

    def grab(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handle = last.attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        emb = vision(px.to(sam.device, sam.dtype)).last_hidden_state
    finally:
        handle.remove()
    attn = last.attn
    hs = seen["x"]  # [1, g, g, C]: layer_norm1's output, the attention's input
    _, g, g2, _ = hs.shape
    heads = int(attn.num_attention_heads)
    qkv = attn.qkv(hs).reshape(1, g * g2, 3, heads, -1).permute(2, 0, 3, 1, 4).float()
    q, k, v = qkv.reshape(3, heads, g * g2, -1).unbind(0)
    if getattr(attn, "use_rel_pos", False):
        rh = attn.get_rel_pos(g, g, attn.rel_pos_h).float()  # [g (query row), g (key row), head_dim]
        rw = attn.get_rel_pos(g2, g2, attn.rel_pos_w).float()
        qg = q.reshape(heads, g, g2, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", qg, rh).reshape(heads, g * g2, g)
        rel_w = torch.einsum("bhwc,wkc->bhwk", qg, rw).reshape(heads, g * g2, g2)
    else:
        rel_h = q.new_zeros(heads, g * g2, g)
        rel_w = q.new_zeros(heads, g * g2, g2)
    p = int(sam.info.patch_size)
    return SamImage(
        embedding=emb,
        q=q,
        k=k,
        v=v,
        rel_h=rel_h,
        rel_w=rel_w,
        scale=float(attn.scale),
        grid=int(g),
        valid=(input_size[0] // p, input_size[1] // p),
        input_size=input_size,
        original_size=original_size,
    )


def sam_aggregate(si: SamImage, tokens: torch.Tensor, cos_fac: float, refine_neg_cos: bool = True) -> torch.Tensor:
    """Trident's SAM aggregation of tokens on SAM's valid grid (``get_sam_sim`` and the product after it).

    With ``C_h`` the cosine similarity of SAM's last-block values in head ``h`` and ``A_h`` its attention
    (:meth:`SamImage.attention_rows`), each query ``i`` keeps ``A_h[i, j]`` where ``C_h[i, j] > t_i``,
    ``t_i = min(cos_fac * mean_{h,j} C_h[i, j], 0.9)`` (a negative ``t_i`` becomes 0.6 if not ``refine_neg_cos``);
    the kept weights are averaged over heads and each row divided by its sum (the diagonal always survives:
    ``C_h[i, i] = 1 > t_i``). Computed in chunks of query rows.

    Args:
        si: :func:`sam_image`'s output.
        tokens: ``[Hs*Ws, D]`` tokens on the valid grid, row-major.
        cos_fac: threshold factor.
        refine_neg_cos: keep negative thresholds (Trident's default) or replace them by 0.6.

    Returns:
        ``[Hs*Ws, D]`` float32: ``W @ tokens``.
    """
    idx = si.valid_tokens()
    vn = F.normalize(si.v[:, idx], dim=-1)  # [heads, N, hd]
    tok = tokens.float().to(vn.device)
    out = []
    for s in range(0, len(idx), _ROWS_PER_CHUNK):
        rows = idx[s : s + _ROWS_PER_CHUNK]
        sim = vn[:, s : s + len(rows)] @ vn.transpose(1, 2)  # [heads, r, N]
        thr = cos_fac * sim.mean(dim=0, keepdim=True).mean(dim=-1, keepdim=True)  # [1, r, 1]
        if not refine_neg_cos:
            thr = torch.where(thr < 0.0, torch.full_like(thr, 0.6), thr)
        thr = torch.where(thr > 0.9, torch.full_like(thr, 0.9), thr)
        w = si.attention_rows(rows).masked_fill_(sim <= thr, 0.0).mean(dim=0)  # [r, N]: kept where sim > thr
        w = w / w.sum(dim=-1, keepdim=True)
        out.append(w @ tok)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------------
# CLIP with DINO proxy attention, spliced over windows
# ---------------------------------------------------------------------------------------------------------------------
def fit_to_patch(x: torch.Tensor, patch: int, crop: int) -> torch.Tensor:
    """Trident's ``preprocess_image`` on the normalised input ``[3, h, w]`` (or ``[B, 3, h, w]``).

    Unchanged when both sides are multiples of ``patch``. Otherwise the long side is rounded up to a multiple of
    ``patch``, the short side scaled by the same ratio (truncated), each rounded up to a multiple of ``patch`` and made
    at least ``crop``; bilinear, ``align_corners=False``.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % patch == 0 and w % patch == 0:
        return x
    long = max(h, w)
    dst = -(-long // patch) * patch
    nh, nw = int(h * dst / long), int(w * dst / long)
    nh, nw = max(-(-nh // patch) * patch, crop), max(-(-nw // patch) * patch, crop)
    y = F.interpolate(x[None] if x.ndim == 3 else x, (nh, nw), mode="bilinear", align_corners=False)
    return y[0] if x.ndim == 3 else y


def proxy_attention_global(dino_patches: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Trident's proxy attention over a batch of windows: ``softmax((S - beta * mean(S)) * gamma)`` per window, with
    ``S`` the cosine similarity of DINO's patch tokens and ``mean(S)`` taken over **all** windows' matrices together;
    negative logits are masked (each token's affinity with itself is kept).

    Args:
        dino_patches: ``[B, h, w, C]`` patch features of the windows.

    Returns:
        ``[B, h*w, h*w]`` float32, rows summing to 1.
    """
    f = F.normalize(dino_patches.flatten(1, 2).float(), dim=-1)
    sim = f @ f.transpose(1, 2)
    logits = (sim - sim.mean() * beta) * gamma
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill((logits < 0) & ~eye, float("-inf"))
    return logits.softmax(dim=-1)


@dataclass
class TridentFeatures:
    """Trident's intermediate results for one image (:func:`trident_features`).

    Attributes:
        boxes: the windows ``(y0, x0, y1, x1)`` in pixels of the patch-fitted input.
        input_size: ``(h, w)`` of the patch-fitted input.
        window_tokens: ``[B, gh', gw', W]`` each window's last-block output (proxy attention), on DINO's grid (or a
            multiple of CLIP's, see the module docstring), before CLIP's head.
        canvas: ``[W, Hc, Wc]`` the windows' outputs averaged where they overlap (image grid).
        tokens: ``[Hs, Ws, W]`` the canvas on SAM's valid grid after SAM's aggregation, before CLIP's head.
        embeddings: ``[Hs, Ws, D]`` ``head(tokens)``: in CLIP's image-text space, not normalised.
        head: CLIP's head (``ln_post``, ``proj``), ``[..., W] -> [..., D]``.
        sam: the SAM pass (:class:`SamImage`).
    """

    boxes: list[tuple[int, int, int, int]]
    input_size: tuple[int, int]
    window_tokens: torch.Tensor
    canvas: torch.Tensor
    tokens: torch.Tensor
    embeddings: torch.Tensor
    head: Callable[[torch.Tensor], torch.Tensor]
    sam: SamImage


def window_tokens(
    clip: Encoder, dino: Encoder, crops: torch.Tensor, batch_size: int, beta: float, gamma: float
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The windows' last-block outputs with DINO's proxy attention (Trident's ``custom_attn``), and CLIP's head.

    Args:
        clip: the CLIP encoder (a ViT with a ``dense_tower``).
        dino: the DINO encoder; it sees each window at the window's own resolution.
        crops: ``[B, 3, s, t]`` windows of the normalised CLIP input (all the image's windows: the proxy attention's
            mean is taken over all of them).
        batch_size: windows per encoder forward.
        beta, gamma: the proxy attention's shift and scale (:func:`proxy_attention_global`).

    Returns:
        ``([B, gh', gw', W] float32 tokens on DINO's grid, head)``; ``head`` maps ``[..., W]`` to CLIP's joint space.
    """
    from ..foundation.registry import get_family

    tower_of = get_family(clip.info.family).dense_tower
    if tower_of is None or getattr(clip, "is_resnet", False):
        raise TypeError(f"trident needs a CLIP ViT encoder, got {clip.info.name!r} (family {clip.info.family!r})")
    mean = torch.tensor(clip.info.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(clip.info.std, dtype=torch.float32).view(1, 3, 1, 1)
    pd = int(dino.info.patch_size)
    feats, values = [], []
    head = None
    for i in range(0, len(crops), batch_size):
        chunk = crops[i : i + batch_size].float()
        raw = chunk * std + mean  # CLIP's normalisation undone (Trident's UnNormalize), [0, 1]
        raw = raw[..., : raw.shape[-2] // pd * pd, : raw.shape[-1] // pd * pd]
        feats.append(dino(dino.normalize(raw.to(dino.device))).patches.float())
        tower = tower_of(clip, chunk.to(clip.device, clip.dtype), pos_interp="dino")
        hdn = tower.norm1(tower.tokens[:, tower.prefix :])
        v = F.linear(hdn, tower.qkv[4], tower.qkv[5])  # [b, gh*gw, W]: the last block's values of the patch tokens
        gh, gw = tower.grid
        values.append(v.float().transpose(1, 2).reshape(v.shape[0], -1, gh, gw))
        out_proj, head = tower.out_proj, tower.head
    dfeat = torch.cat(feats)  # [B, dh, dw, C']
    v = torch.cat(values).to(dfeat.device)  # [B, W, gh, gw]
    dgrid = tuple(dfeat.shape[1:3])
    if tuple(v.shape[-2:]) != dgrid:
        v = F.interpolate(v, size=dgrid, mode="bilinear", align_corners=False)
    attn = proxy_attention_global(dfeat, beta, gamma)  # [B, N, N]
    out = attn @ v.flatten(2).transpose(1, 2)  # [B, N, W]
    out = out_proj(out.to(clip.device, clip.dtype)).float()
    return out.reshape(out.shape[0], *dgrid, -1), head


def _splice(
    tokens: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: tuple[int, int], patch: int
) -> torch.Tensor:
    """Average the windows' token maps ``[B, gh', gw', W]`` where they overlap: ``[W, r*h/p, r*w/p]``, ``r`` DINO's
    grid over CLIP's."""
    t = tokens.permute(0, 3, 1, 2)  # [B, W, gh', gw']
    y0, x0, y1, x1 = boxes[0]
    gh, gw = (y1 - y0) // patch, (x1 - x0) // patch
    dh, dw = t.shape[-2:]
    if dh % gh == 0 and dw % gw == 0 and dh // gh == dw // gw:
        r = dh // gh
    else:  # Trident: DINO's grid is resized to the nearest multiple of CLIP's
        r = max(1, round(dh / gh))
        t = F.interpolate(t, size=(gh * r, gw * r), mode="bilinear", align_corners=False)
    canvas = t.new_zeros(t.shape[1], size[0] // patch * r, size[1] // patch * r)
    count = t.new_zeros(1, *canvas.shape[1:])
    for tb, (y0, x0, y1, x1) in zip(t, boxes, strict=True):
        sl = (slice(y0 // patch * r, y1 // patch * r), slice(x0 // patch * r, x1 // patch * r))
        canvas[:, sl[0], sl[1]] += tb
        count[:, sl[0], sl[1]] += 1
    return canvas / count


def trident_features(
    pipeline: Any, pixels: torch.Tensor, x: torch.Tensor, options: Mapping[str, Any]
) -> TridentFeatures:
    """Trident's dense CLIP embeddings of one image on SAM's valid grid, with the intermediate results.

    Args:
        pipeline: the zero-shot-seg pipeline (its ``encoder``, a CLIP ViT, and ``batch_size`` are used).
        pixels: uint8 ``[3, H, W]`` original image (SAM's input).
        x: ``[3, h, w]`` the pipeline's rescaled, normalised input (:meth:`ZeroShotSegPipeline.prepare`).
        options: ``method_options`` (see :class:`TridentOptions`).

    Returns:
        :class:`TridentFeatures`.
    """
    o = TridentOptions.parse(options)
    clip = pipeline.encoder
    p = int(clip.info.patch_size)
    if o.crop % p or o.stride % p:
        raise ValueError(f"trident's crop ({o.crop}) and stride ({o.stride}) must be multiples of the patch size {p}")
    if o.stride > o.crop:
        raise ValueError(f"trident's stride ({o.stride}) must not exceed crop ({o.crop})")
    dino = _resolve(pipeline, o.dino, ("dino", "dinov2"), "dino")
    sam = _resolve(pipeline, o.sam, ("sam",), "sam")
    si = _sam_image_cached(pipeline, sam, pixels, p)
    xp = fit_to_patch(x, p, o.crop)
    size = (int(xp.shape[-2]), int(xp.shape[-1]))
    boxes = window_grid(size, o.crop, o.stride)
    crops = torch.stack([xp[:, y0:y1, x0:x1] for y0, x0, y1, x1 in boxes])
    logger.debug("trident: input %s, %d windows, SAM grid %s", size, len(boxes), si.valid)
    wt, head = window_tokens(clip, dino, crops, int(pipeline.batch_size), o.beta, o.gamma)
    canvas = _splice(wt, boxes, size, p)
    hs, ws = si.valid
    grid = F.interpolate(canvas[None], size=(hs, ws), mode="bilinear", align_corners=False)[0]
    tokens = sam_aggregate(si, grid.flatten(1).T, o.cos_fac, o.refine_neg_cos)  # [Hs*Ws, W]
    emb = head(tokens.to(clip.device, clip.dtype)).float()
    return TridentFeatures(
        boxes=boxes,
        input_size=size,
        window_tokens=wt,
        canvas=canvas,
        tokens=tokens.reshape(hs, ws, -1),
        embeddings=emb.reshape(hs, ws, -1),
        head=head,
        sam=si,
    )


def _pixel_key(sam: Encoder, pixels: torch.Tensor, multiple: int) -> str:
    digest = hashlib.blake2b(pixels.cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    return f"{id(sam)}:{multiple}:{tuple(pixels.shape)}:{digest}"


def _sam_image_cached(pipeline: Any, sam: Encoder, pixels: torch.Tensor, multiple: int) -> SamImage:
    """:func:`sam_image`, reusing the pipeline's last SAM pass when it was for the same image and SAM."""
    st = _state(pipeline)
    key = _pixel_key(sam, pixels, multiple)
    if st["sam_image"] is None or st["sam_image"][0] != key:
        st["sam_image"] = (key, sam_image(sam, pixels, multiple))
    return st["sam_image"][1]


def trident_scores(
    pipeline: Any, pixels: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, options: Mapping[str, Any]
) -> torch.Tensor:
    """The :class:`~visionfm.pipelines.seg_methods.SegMethod` ``scores`` of Trident.

    Args:
        pipeline: the zero-shot-seg pipeline.
        pixels: uint8 ``[3, H, W]`` original image.
        x: ``[3, h, w]`` the rescaled, normalised model input.
        weights: ``[S, D]`` unit-norm text embeddings.
        options: ``method_options``.

    Returns:
        ``[S, H, W]`` float32 cosine similarities in [-1, 1]: computed on SAM's valid grid and resized bilinearly
        (``align_corners=False``) to the original size, as Trident's ``get_trident_seg`` returns them.
    """
    with torch.inference_mode():
        feats = trident_features(pipeline, pixels, x, options)
        emb = F.normalize(feats.embeddings, dim=-1)
        cos = torch.einsum("hwd,sd->shw", emb, weights.to(emb.device).float()).cpu()
    return to_size(cos, (int(pixels.shape[-2]), int(pixels.shape[-1])))


# ---------------------------------------------------------------------------------------------------------------------
# SAM refinement
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Region:
    """One connected region of a class on the half-resolution map, and its SAM prompt there.

    Attributes:
        cls: class index.
        mask: bool ``[h/2, w/2]``.
        point: ``(x, y)`` the class's most probable pixel in the region (the first in raster order on ties).
        box: ``(x0, y0, x1, y1)`` the region's box, inclusive pixel indices (torchvision's ``masks_to_boxes``).
    """

    cls: int
    mask: np.ndarray
    point: tuple[int, int]
    box: tuple[int, int, int, int]


def coarse_regions(
    label_map: torch.Tensor, probs: torch.Tensor, coarse_thresh: float, min_area: int
) -> tuple[list[Region], torch.Tensor]:
    """Trident's prompt regions (``sam_refinement`` / ``split_connected_regions``).

    Args:
        label_map: int ``[H, W]`` labels after the probability threshold.
        probs: float ``[K, H, W]`` class probabilities.
        coarse_thresh: pixels whose best half-resolution probability is below it belong to no region; classes whose
            best half-resolution probability is below it get none.
        min_area: smallest region in half-resolution pixels.

    Returns:
        ``(regions, probs_half)``: regions in class order, each class's in raster order of their first pixel
        (8-connected), and the half-resolution probabilities ``[K, H//2, W//2]`` (bilinear).
    """
    from scipy import ndimage

    K = probs.shape[0]
    h, w = int(label_map.shape[-2]) // 2, int(label_map.shape[-1]) // 2
    lab = F.interpolate(label_map.reshape(1, 1, *label_map.shape[-2:]).float(), (h, w), mode="nearest")[0, 0].long()
    half = F.interpolate(probs[None].float(), (h, w), mode="bilinear", align_corners=False)[0]
    if coarse_thresh > 0:
        lab[half.max(dim=0).values < coarse_thresh] = K
    lab_np = lab.numpy()
    eight = np.ones((3, 3), dtype=bool)
    regions = []
    for c in range(K):
        if float(half[c].max()) < coarse_thresh:
            continue
        comp, n = ndimage.label(lab_np == c, structure=eight)
        for r in range(1, n + 1):
            m = comp == r
            if int(m.sum()) < min_area:
                continue
            pos = int((half[c] * torch.from_numpy(m)).flatten().argmax())
            ys, xs = np.nonzero(m)
            regions.append(
                Region(c, m, (pos % w, pos // w), (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
            )
    return regions, half


def mask_prompt_embedding(prompt_encoder: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """SAM's dense prompt embedding of one ``[256, 256]`` mask-prompt, computed as Trident's call makes
    segment-anything compute it: the mask has no batch dimension, so the convolutions run unbatched and both
    ``LayerNorm2d`` normalise over dimension 1 of a ``[C, h, w]`` tensor, i.e. over the mask's rows, not its channels.

    Args:
        prompt_encoder: a transformers ``SamPromptEncoder`` (``mask_embed``: conv1, layer_norm1, conv2, layer_norm2,
            conv3).
        mask: ``[256, 256]`` mask logits.

    Returns:
        ``[1, C, 64, 64]`` dense embedding (``C`` = the prompt encoder's width).
    """
    me = prompt_encoder.mask_embed

    def norm_rows(t: torch.Tensor, ln: torch.nn.Module) -> torch.Tensor:
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        t = (t - u) / torch.sqrt(s + ln.eps)
        return ln.weight[:, None, None] * t + ln.bias[:, None, None]

    t = me.activation(norm_rows(me.conv1(mask[None]), me.layer_norm1))
    t = me.activation(norm_rows(me.conv2(t), me.layer_norm2))
    return me.conv3(t)[None]


def _scale_coords(xy: torch.Tensor, frame: tuple[int, int], side: int) -> torch.Tensor:
    """segment-anything's ``apply_coords_torch``: ``(x, y)`` in a ``frame = (h, w)`` image to SAM's input frame."""
    nh, nw = preprocess_shape(frame[0], frame[1], side)
    out = xy.clone().float()
    out[..., 0] = out[..., 0] * (nw / frame[1])
    out[..., 1] = out[..., 1] * (nh / frame[0])
    return out


def _decode(sam: Encoder, si: SamImage, points: torch.Tensor, boxes: torch.Tensor, dense: torch.Tensor):
    """One mask per prompt: low-res logits ``[n, 256, 256]`` and predicted IoU ``[n]`` (single-mask output)."""
    model = sam.model
    dev, dt = si.embedding.device, si.embedding.dtype
    sparse, _ = model.prompt_encoder(
        input_points=points[None, :, None, :].to(dev, dt),
        input_labels=torch.ones(1, len(points), 1, dtype=torch.long, device=dev),
        input_boxes=boxes[None].to(dev, dt),
        input_masks=None,
    )
    low, iou = model.mask_decoder(
        image_embeddings=si.embedding,
        image_positional_embeddings=model.get_image_wide_positional_embeddings(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense.to(dev, dt),
        multimask_output=False,
    )
    return low[0, :, 0].float(), iou[0, :, 0].float()


@dataclass
class Refinement:
    """The result of :func:`refine_with_sam`, with what decided it.

    Attributes:
        label_map: int64 ``[H, W]`` refined labels.
        scores: float ``[K, H, W]``: Trident's ``R`` (the coarse probabilities when no mask was accepted).
        regions: the prompt regions (:func:`coarse_regions`), in prompt order.
        accepted: one bool per region: its mask's predicted IoU was above ``sam_iou_thresh``.
        iou: ``[len(regions)]`` the predicted IoUs.
        mask_logits: ``{class: [n, H, W]}`` the accepted masks' logits at the original size (mask = logit > 0).
        label_scores: ``[K, H, W]`` ``R`` before the failed regions' update: the labels are its argmax.
    """

    label_map: torch.Tensor
    scores: torch.Tensor
    regions: list[Region]
    accepted: list[bool]
    iou: torch.Tensor
    mask_logits: dict[int, torch.Tensor]
    label_scores: torch.Tensor | None


def refine_with_sam(
    sam: Encoder,
    si: SamImage,
    label_map: torch.Tensor,
    probs: torch.Tensor,
    *,
    coarse_thresh: float,
    min_region_area: int,
    sam_iou_thresh: float,
    sam_mask_coeff: float,
) -> Refinement:
    """Trident's SAM refinement (see the module docstring).

    Args:
        sam: the SAM encoder of ``si``.
        si: :func:`sam_image` of the image.
        label_map: int64 ``[H, W]`` labels.
        probs: float ``[K, H, W]`` class probabilities.
        coarse_thresh, min_region_area, sam_iou_thresh, sam_mask_coeff: see :class:`TridentOptions`.

    Returns:
        :class:`Refinement`; its ``label_map`` and ``scores`` are the inputs unchanged when no mask is accepted.
    """
    K, H, W = probs.shape
    probs = probs.float().cpu()
    label_map = label_map.cpu()
    regions, half = coarse_regions(label_map, probs, coarse_thresh, min_region_area)
    side = int(sam.info.image_size[0])
    low_side = 4 * int(sam.model.prompt_encoder.image_embedding_size[0])
    frame = (half.shape[-2], half.shape[-1])
    mh, mw = preprocess_shape(H, W, low_side)
    kept: dict[int, torch.Tensor] = {}  # class -> accepted low-res logits [n, 256, 256]
    accepted: list[bool] = []
    ious = []
    failed = np.zeros(frame, dtype=bool)
    for c in sorted({r.cls for r in regions}):
        rs = [r for r in regions if r.cls == c]
        m = F.interpolate(half[c][None, None], (mh, mw), mode="bilinear", align_corners=False)[0, 0]
        m = F.pad(m, (0, low_side - mw, 0, low_side - mh))
        m = torch.where(m > coarse_thresh, sam_mask_coeff * m, torch.zeros_like(m))
        dense = mask_prompt_embedding(sam.model.prompt_encoder, m.to(si.embedding.device, si.embedding.dtype))
        points = _scale_coords(torch.tensor([r.point for r in rs]), frame, side)
        boxes = _scale_coords(torch.tensor([r.box for r in rs]).reshape(-1, 2, 2), frame, side).reshape(-1, 4)
        low, iou = _decode(sam, si, points, boxes, dense)
        ok = (iou > sam_iou_thresh).cpu()
        logger.debug("trident refine: class %d, %d prompts, %d accepted", c, len(rs), int(ok.sum()))
        for r, good in zip(rs, ok.tolist(), strict=True):
            accepted.append(good)
            if not good:
                failed |= r.mask
        ious.append(iou.cpu())
        if ok.any():
            kept[c] = low[ok.to(low.device)]
    iou_all = torch.cat(ious) if ious else torch.zeros(0)
    if not kept:
        return Refinement(label_map, probs, regions, accepted, iou_all, {}, None)
    refined = torch.zeros(K, H, W)
    logits: dict[int, torch.Tensor] = {}
    ih, iw = si.input_size
    for c, low in kept.items():
        up = F.interpolate(low[:, None], (side, side), mode="bilinear", align_corners=False)[..., :ih, :iw]
        up = F.interpolate(up, si.original_size, mode="bilinear", align_corners=False)
        if tuple(up.shape[-2:]) != (H, W):
            up = F.interpolate(up, (H, W), mode="bilinear", align_corners=False)
        up = up[:, 0].float().cpu()
        logits[c] = up
        inside = (up > 0).sum(dim=0).bool()
        refined[c] = (up.sigmoid() * probs[c]).max(dim=0).values * inside
    out = refined.argmax(dim=0)
    out = torch.where(refined.sum(dim=0) == 0, label_map, out)
    scores = refined
    if failed.any():
        area = F.interpolate(torch.from_numpy(failed)[None, None].float(), (H, W), mode="nearest")[0] != 0
        fp = area * probs
        scores = torch.where(fp > refined, fp, refined)
    return Refinement(out, scores, regions, accepted, iou_all, logits, refined)


def trident_refine(
    pipeline: Any, pixels: torch.Tensor, label_map: torch.Tensor, probs: torch.Tensor, options: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The :class:`~visionfm.pipelines.seg_methods.SegMethod` ``refine`` of Trident: :func:`refine_with_sam` with the
    image's SAM pass (reused from :func:`trident_scores`), or ``(label_map, probs)`` when ``sam_refine=False``.

    Args:
        pipeline: the zero-shot-seg pipeline.
        pixels: uint8 ``[3, H, W]`` original image.
        label_map: int64 ``[H, W]`` after classification (``prob_thresh`` applied).
        probs: float ``[K, H, W]`` class probabilities (each class its best synonym's).
        options: ``method_options``.

    Returns:
        ``(label_map [H, W], scores [K, H, W])``; the scores are Trident's ``R`` (see the module docstring).
    """
    o = TridentOptions.parse(options)
    if not o.sam_refine:
        return label_map, probs
    with torch.inference_mode():
        sam = _resolve(pipeline, o.sam, ("sam",), "sam")
        si = _sam_image_cached(pipeline, sam, pixels, int(pipeline.encoder.info.patch_size))
        r = refine_with_sam(
            sam,
            si,
            label_map,
            probs,
            coarse_thresh=o.coarse_thresh,
            min_region_area=o.min_region_area,
            sam_iou_thresh=o.sam_iou_thresh,
            sam_mask_coeff=o.sam_mask_coeff,
        )
    return r.label_map, r.scores


register_seg_method(
    SegMethod(
        name="trident",
        scores=trident_scores,
        refine=trident_refine,
        option_keys=tuple(DEFAULTS),
        reference=REFERENCE,
        description="Trident (ICCV 2025): CLIP with DINO proxy attention over windows, spliced and aggregated by "
        "SAM's last-block attention; SAM prompt refinement",
        defaults=dict(DEFAULTS),
    )
)
