"""CorrCLIP (Zhang, Liu, Tang, ICCV 2025): ``pipeline("zero-shot-seg", mode="corrclip")``.

*CorrCLIP: Reconstructing Patch Correlations in CLIP for Open-Vocabulary Semantic Segmentation*, arXiv:2411.10086;
reference code github.com/zdk258/CorrCLIP at 6c1fd2c02ff90f071ed744a5998be0cda7ad75b4 (``corrclip_segmentor.py``,
``open_clip/transformer.py``: ``VisionTransformer.forward``). Written from that code's behaviour; none of it is copied.
``tests/pipelines/test_seg_corrclip.py`` checks every step against that code's outputs on the same tiny weights
(``tests/pipelines/golden/corrclip.safetensors``).

CorrCLIP keeps the shared protocol (rescale, sliding windows, resize back, softmax over all texts, threshold) and
changes how each window is scored. It needs three inputs per image: the CLIP image, a DINO model, and region masks
(SAM's in the paper; ``seg(image, labels=..., region_masks=[int [H, W] per image])``, any integer ids; the smallest
id present, normally 0, is the "unsegmented" set, as in the reference). Per window (:func:`corrclip_window`):

1. **DINO affinity.** The window, un-normalised with CLIP's mean/std and re-normalised with DINO's, goes through DINO
   at its own resolution (grid ``window / 8`` for ViT-B/8); ``F`` = query + key projections of DINO's last block (all
   heads, before attention), patch tokens only, L2-normalised; ``S = F Fᵀ``.
2. **Region merging.** The region ids are resized (nearest) to DINO's grid. When the window holds more than two ids,
   each region other than the first (smallest id) gets the L2-normalised mean of ``F`` over it, and DBSCAN
   (``min_samples=1``, ``eps=dbscan_eps``, on ``max(C) - C`` for their cosine matrix ``C``; :func:`dbscan_min1`)
   merges similar regions.
3. **Scope.** Patch ``i`` may attend to ``j`` when both lie in the same merged region; in the first (unsegmented)
   region, to and from any patch whose ``S_ij`` exceeds the mean of ``S`` over the window. ``A = softmax(tau · S)``
   over the allowed pairs (one attention map shared by every head).
4. **CLIP.** One "mask class token" per merged region (a copy of the class token after ``ln_pre``), put in front;
   every block but the last runs with an attention mask: class token and patches see each other (not the mask
   tokens), mask token ``k`` sees the class token and the patches of region ``k`` (on CLIP's grid) only.
   - *main*: the output of the second-to-last block; *spatial*: the mean output of ``num_spatial`` blocks ending
     with the third-to-last (5 of 12 for ViT-B: blocks 5..9);
   - each goes through the last block's value projection (after its ``ln_1``), CLIP's grid is resized bilinearly
     to DINO's, then ``A v`` and the attention output projection, without residual or MLP;
   - *semantic*: the whole last block (masked attention and MLP) on all tokens; each DINO-grid patch takes its
     region's mask-token output;
   - features ``= (ln_post(main) + alpha·ln_post(spatial) + beta·ln_post(semantic)) @ proj`` on DINO's grid.
5. Cosine to every text on DINO's grid, bilinear to the window; windows averaged, resized to the original size.

After classification, :func:`map_correction` gives every region of the original-size mask (all ids but the smallest)
its most frequent label (the smallest label among ties); unsegmented pixels keep their own.

As in CorrCLIP's configs: DINO ViT-B/8 (``dino="dino-vitb8"``), ``alpha=1``, ``beta=0.5``, ``tau=4``,
``dbscan_eps=0.2``, ``num_spatial`` 5 / 12 / 28 for 12 / 24 / 32-layer CLIPs (else layers - 4); with
``short_side=336, window=336, stride=112, pad_multiple=56, logit_scale=40`` on the pipeline and the benchmark's
``prob_thresh`` (VOC21 0.2), this is their protocol. Padded windows' region ids are padded with an id of their own
(the reference's 10000).

What differs from the reference:

- **Synonyms.** The reference merges texts into classes by taking the maximum over the first ``Q - K + 1`` texts
  and keeping the rest one text per class: right only when the first class is the only one with synonyms
  (``postprocess_result``). visionfm gives each class its own best synonym, always.
- **Any region ids.** The reference adds 10000 to merged clusters and pads with 10000; visionfm first renumbers the
  ids in order (the result is the same for ids below 10000, and any int64 ids work).
- **No region masks** (``region_masks`` not given): the whole image is one unsegmented region (logged once); the
  reference cannot run without masks.
- A patch may always attend to itself (the reference's rows would be all ``-inf``, NaN after the softmax, only if
  every ``S_ij`` of the window were equal; otherwise ``S_ii = 1 > mean(S)`` allows it anyway).
- **Precision.** The reference runs fp16 on CUDA; visionfm runs in the encoders' dtype (the golden is float32).
- One window per forward (``batch_size`` is not used): each window has its own number of mask tokens, as in the
  reference. ``inference="whole"`` scores the rescaled image as one window.
- Only open_clip ViT CLIPs and DINO (v1) / transformers ``ViTModel`` proxies are supported.
"""

from __future__ import annotations

import logging
import math
import numbers
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..foundation.dense import resize_pos_embed
from ..foundation.encoder import Encoder, restore_tokens
from .seg_methods import SegMethod, register_seg_method
from .seg_protocol import pad_to_multiple, to_size, window_grid

logger = logging.getLogger(__name__)

REFERENCE = "github.com/zdk258/CorrCLIP@6c1fd2c02ff90f071ed744a5998be0cda7ad75b4"
#: ``method_options`` defaults: the reference's constants (``VisionTransformer.forward``) and DINO ViT-B/8.
DEFAULTS: dict[str, Any] = {
    "dino": "dino-vitb8",
    "alpha": 1.0,
    "beta": 0.5,
    "tau": 4.0,
    "dbscan_eps": 0.2,
    "num_spatial": None,
}
OPTION_KEYS = tuple(DEFAULTS)


# -- options -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrCLIPOptions:
    """CorrCLIP's settings (``method_options``).

    Attributes:
        alpha: weight of the spatial branch (reference: 1.0).
        beta: weight of the semantic branch (reference: 0.5).
        tau: temperature of the DINO affinity, ``softmax(tau * cos)`` (reference: 4), > 0.
        dbscan_eps: DBSCAN radius on ``max(C) - C`` of the regions' cosine matrix ``C`` (reference: 0.2), >= 0.
        num_spatial: blocks averaged into the spatial branch; ``None``: the reference's choice for the layer count
            (:func:`default_num_spatial`).
    """

    alpha: float = 1.0
    beta: float = 0.5
    tau: float = 4.0
    dbscan_eps: float = 0.2
    num_spatial: int | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> CorrCLIPOptions:
        """Validated options from a ``method_options`` dict (missing keys take :data:`DEFAULTS`)."""
        opts = {**DEFAULTS, **dict(options)}
        vals = {}
        for key in ("alpha", "beta", "tau", "dbscan_eps"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise TypeError(f"corrclip option {key} must be a finite number, got {v!r}")
            vals[key] = float(v)
        if vals["tau"] <= 0:
            raise ValueError(f"corrclip option tau must be > 0, got {vals['tau']}")
        if vals["dbscan_eps"] < 0:
            raise ValueError(f"corrclip option dbscan_eps must be >= 0, got {vals['dbscan_eps']}")
        ns = opts["num_spatial"]
        if ns is not None and (isinstance(ns, bool) or not isinstance(ns, numbers.Integral) or ns < 1):
            raise ValueError(f"corrclip option num_spatial must be a positive integer or None, got {ns!r}")
        return cls(num_spatial=None if ns is None else int(ns), **vals)


def default_num_spatial(num_layers: int) -> int:
    """The reference's spatial-branch depth: 5, 12, 28 blocks for 12, 24, 32-layer CLIPs, else ``num_layers - 4``.

    Example:
        >>> [default_num_spatial(n) for n in (12, 24, 32, 16)]
        [5, 12, 28, 12]
    """
    return {12: 5, 24: 12, 32: 28}.get(int(num_layers), int(num_layers) - 4)


def spatial_blocks(num_layers: int, num_spatial: int | None = None) -> range:
    """Indices of the blocks whose outputs the spatial branch averages: the ``num_spatial`` blocks ending with the
    third-to-last (``num_layers - 2 - num_spatial .. num_layers - 3``).

    Raises:
        ValueError: when that range is empty or starts below block 0 (the reference needs >= 5 layers by default).

    Example:
        >>> list(spatial_blocks(12))
        [5, 6, 7, 8, 9]
    """
    n = default_num_spatial(num_layers) if num_spatial is None else int(num_spatial)
    start = num_layers - 2 - n
    if n < 1 or start < 0:
        raise ValueError(
            f"CorrCLIP's spatial branch needs 1 <= num_spatial <= layers - 2 (got num_spatial={n} for a "
            f"{num_layers}-layer CLIP; by default the reference needs at least 5 layers)"
        )
    return range(start, num_layers - 2)


# -- DBSCAN ------------------------------------------------------------------------------------------------------------
def dbscan_min1(dist: np.ndarray, eps: float) -> np.ndarray:
    """DBSCAN with ``min_samples=1`` on a precomputed distance matrix: labels as
    ``sklearn.cluster.DBSCAN(eps=eps, min_samples=1, metric="precomputed").fit_predict(dist)`` gives them.

    Point ``j`` is a neighbour of ``i`` when ``dist[i, j] <= eps`` (compared in ``dist``'s dtype). With one sample
    enough, every point with itself as a neighbour is a core point, so for a symmetric matrix with a zero diagonal the
    clusters are the connected components of the ``eps``-graph. Clusters are numbered in order of their first point;
    a point that is nobody's neighbour, not even its own (``dist[i, i] > eps``), is noise (-1).

    Args:
        dist: ``[n, n]`` float distances (row ``i`` lists ``i``'s neighbours).
        eps: neighbourhood radius.

    Returns:
        int64 ``[n]`` cluster labels (-1 for noise).

    Example:
        >>> d = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], np.float32)
        >>> dbscan_min1(d, 0.2).tolist()
        [0, 0, 1]
    """
    dist = np.asarray(dist)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dbscan_min1 needs a square distance matrix, got shape {dist.shape}")
    near = dist <= np.asarray(eps, dtype=dist.dtype if dist.dtype.kind == "f" else np.float64)
    neighbours = [np.flatnonzero(row) for row in near]
    core = np.array([len(nb) >= 1 for nb in neighbours], dtype=bool)
    labels = np.full(len(dist), -1, dtype=np.int64)
    cluster = 0
    for i in range(len(dist)):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i] = cluster
        stack = [i]
        while stack:
            p = stack.pop()
            for q in neighbours[p]:
                if labels[q] == -1:
                    labels[q] = cluster
                    if core[q]:
                        stack.append(q)
        cluster += 1
    return labels


# -- one window --------------------------------------------------------------------------------------------------------
@dataclass
class CorrCLIPWindow:
    """What :func:`corrclip_window` computes for one window.

    Attributes:
        features: ``[h, w, D]`` CorrCLIP image features on DINO's grid, in CLIP's joint space (not normalised).
        regions: int64 ``[h, w]`` merged region index on DINO's grid; 0 is the window's first (smallest-id,
            "unsegmented") region.
        clusters: the DBSCAN label of each region after the first, in id order, or ``None`` when the window holds at
            most two regions (nothing is merged).
    """

    features: torch.Tensor
    regions: torch.Tensor
    clusters: np.ndarray | None


def _nearest(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Integer map ``[h, w]`` (ranks, exact in float32 below 2**24) resized by nearest neighbour, picking the pixels
    ``F.interpolate(mode="nearest")`` picks, as the reference resizes its masks."""
    if tuple(ids.shape) == tuple(size):
        return ids
    return F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()


def dino_query_key(dino: Encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """CorrCLIP's DINO features: query + key projections of the last block's input (after its first layer norm),
    all heads concatenated, patch tokens only, L2-normalised.

    Args:
        dino: a DINO (v1) / transformers ``ViTModel`` encoder (:class:`visionfm.foundation.dino.DinoEncoder`).
        pixel_values: ``[B, 3, H, W]`` normalised for DINO; the grid is ``(H // patch, W // patch)``.

    Returns:
        ``[B, h*w, C]`` unit vectors, row-major over the grid.
    """
    if not (hasattr(dino, "embed") and hasattr(dino, "blocks")) or dino.info.family != "dino":
        raise TypeError(f"CorrCLIP's proxy must be a DINO (v1) / ViTModel encoder, got family {dino.info.family!r}")
    x = dino.embed(pixel_values)
    blocks = dino.blocks
    for blk in blocks[:-1]:
        out = blk(x, None)
        x = out[0] if isinstance(out, (tuple, list)) else out
    x = restore_tokens(blocks[-2], x) if len(blocks) > 1 else x
    last = blocks[-1]
    h = last.layernorm_before(x)
    attn = last.attention
    if hasattr(attn, "q_proj"):  # transformers >= 5
        q, k = attn.q_proj(h), attn.k_proj(h)
    else:  # transformers 4
        q, k = attn.attention.query(h), attn.attention.key(h)
    return F.normalize((q + k)[:, 1:], dim=-1)


def _merge_regions(ids: torch.Tensor, feats: torch.Tensor, eps: float) -> tuple[torch.Tensor, np.ndarray | None]:
    """Merged region index per patch (``[N]``, 0 = the first region) and the DBSCAN labels (or ``None``)."""
    values, inverse = torch.unique(ids, return_inverse=True)
    if len(values) <= 2:
        return inverse, None
    means = torch.stack([feats[inverse == r].mean(0) for r in range(len(values))])
    means = F.normalize(means, dim=-1)[1:]
    sim = means @ means.T
    clusters = dbscan_min1((sim.max() - sim).detach().float().cpu().numpy(), eps)
    n_clusters = int(clusters.max()) + 1 if (clusters >= 0).any() else 0
    new = np.where(clusters >= 0, 1 + clusters, 1 + n_clusters + np.arange(len(clusters)))  # noise keeps its own
    lut = torch.as_tensor(np.concatenate([[0], new]), device=ids.device)
    return lut[inverse], clusters


def _scope_attention(sim: torch.Tensor, regions: torch.Tensor, tau: float) -> torch.Tensor:
    """``softmax(tau * S)`` over the pairs CorrCLIP allows (see the module docstring), ``[N, N]``."""
    same = regions[:, None] == regions[None, :]
    first = regions == 0
    allowed = (same & ~first[:, None]) | ((first[:, None] | first[None, :]) & (sim > sim.mean()))
    allowed |= torch.eye(len(regions), dtype=torch.bool, device=sim.device)  # S_ii = 1 > mean(S) unless S is all 1s
    return (tau * sim).masked_fill(~allowed, -torch.inf).softmax(-1)


def _clip_tower(encoder: Encoder) -> Any:
    from open_clip.transformer import ResidualAttentionBlock

    from ..foundation.clip.encoders import OpenClipEncoder

    if not isinstance(encoder, OpenClipEncoder) or encoder.is_resnet:
        raise NotImplementedError("mode='corrclip' supports open_clip ViT CLIP encoders")
    v = encoder.model.visual
    blocks = v.transformer.resblocks
    if not all(isinstance(b, ResidualAttentionBlock) and b.attn.in_proj_weight is not None for b in blocks):
        raise NotImplementedError("mode='corrclip' supports open_clip's default ResidualAttentionBlock")
    if getattr(v, "attn_pool", None) is not None:
        raise NotImplementedError("mode='corrclip' does not support open_clip towers with an attentional pooler")
    return v


def corrclip_window(
    clip: Encoder,
    dino: Encoder,
    window: torch.Tensor,
    region_ids: torch.Tensor,
    options: CorrCLIPOptions | None = None,
    *,
    pos_interp: str = "dino",
) -> CorrCLIPWindow:
    """CorrCLIP's features of one window (steps 1-4 of the module docstring).

    Args:
        clip: an open_clip ViT CLIP encoder.
        dino: the DINO encoder (:func:`dino_query_key`).
        window: float ``[3, H, W]``, normalised for CLIP (mmseg constants); CLIP's grid is ``(H // 16, W // 16)``,
            DINO's ``(H // 8, W // 8)`` for patch sizes 16 and 8.
        region_ids: integer ``[H, W]`` region ids of the window; the smallest is the unsegmented set.
        options: CorrCLIP's settings (default: the reference's).
        pos_interp: how CLIP's position table is resized (:func:`visionfm.foundation.dense.resize_pos_embed`;
            the reference's is ``"dino"``).

    Returns:
        :class:`CorrCLIPWindow` on DINO's grid.
    """
    opts = options or CorrCLIPOptions()
    v = _clip_tower(clip)
    blocks = v.transformer.resblocks
    spatial = spatial_blocks(len(blocks), opts.num_spatial)
    dtype, device = clip.dtype, clip.device
    _, H, W = window.shape
    p = int(v.patch_size[0])
    grid = (H // p, W // p)
    if min(grid) < 1:
        raise ValueError(f"a {H}x{W} window is smaller than CLIP's patch size {p}")

    # 1. DINO q+k on the window, un-normalised with CLIP's statistics and normalised with DINO's.
    mean = torch.tensor(clip.info.mean, device=window.device).view(3, 1, 1)
    std = torch.tensor(clip.info.std, device=window.device).view(3, 1, 1)
    feats = dino_query_key(dino, dino.normalize((window.float() * std + mean)[None]))[0].to(dtype)
    dp = int(dino.info.patch_size)
    dgrid = (H // dp, W // dp)
    sim = feats @ feats.T

    # 2.-3. regions on DINO's grid, merged by DBSCAN; the attention map shared by the main and spatial branches.
    ids = _nearest(region_ids.to(feats.device).long(), dgrid).flatten()
    regions, clusters = _merge_regions(ids, feats, opts.dbscan_eps)
    attn = _scope_attention(sim, regions, opts.tau)

    # 4. CLIP with one mask class token per merged region (regions resized to CLIP's grid).
    x = v.conv1(window[None].to(device, dtype))
    x = x.reshape(1, x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.view(1, 1, -1).to(x.dtype), x], dim=1)
    x = x + resize_pos_embed(v.positional_embedding, 1, tuple(v.grid_size), grid, pos_interp).to(x.dtype)
    x = v.ln_pre(v.patch_dropout(x))[0]  # [1 + n, C]
    cgrid = _nearest(regions.view(dgrid), grid)
    values = torch.unique(cgrid)
    onehot = cgrid.flatten()[None] == values[:, None]  # [K, n] on CLIP's grid
    k = len(values)
    allowed = torch.zeros(k + len(x), k + len(x), dtype=torch.bool, device=x.device)
    allowed[k:, k:] = True
    allowed[:k, k] = True
    allowed[:k, k + 1 :] = onehot
    mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, -torch.inf)
    x = torch.cat([x[:1].expand(k, -1), x])[:, None]  # [L, 1, C] (sequence first)
    batch_first = getattr(v.transformer, "batch_first", True)

    def run(blk: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        return blk(t.transpose(0, 1), attn_mask=mask).transpose(0, 1) if batch_first else blk(t, attn_mask=mask)

    taps = []
    for i, blk in enumerate(blocks[:-1]):
        x = run(blk, x)
        if i in spatial:
            taps.append(x[k:, 0])
    last = blocks[-1]
    width = last.attn.embed_dim
    w_v = last.attn.in_proj_weight[2 * width :]
    b_v = last.attn.in_proj_bias[2 * width :] if last.attn.in_proj_bias is not None else None

    def branch(t: torch.Tensor) -> torch.Tensor:  # [1 + n, C] -> out_proj(A v) on DINO's grid, [h*w, C]
        val = F.linear(last.ln_1(t), w_v, b_v)[1:]
        val = val.T.reshape(1, -1, *grid)
        val = F.interpolate(val, size=dgrid, mode="bilinear", align_corners=False)
        return last.attn.out_proj(attn @ val.flatten(2)[0].T)

    main = branch(x[k:, 0])
    spat = branch(torch.stack(taps).mean(0))
    mct = run(last, x)[:k, 0]  # [K, C]
    expand = F.interpolate(onehot.view(k, 1, *grid).to(mct.dtype), size=dgrid, mode="nearest").flatten(1)
    sem = expand.T @ mct
    out = v.ln_post(main) + opts.alpha * v.ln_post(spat) + opts.beta * v.ln_post(sem)
    out = out @ v.proj if v.proj is not None else out
    return CorrCLIPWindow(features=out.view(*dgrid, -1), regions=regions.view(dgrid), clusters=clusters)


# -- the pipeline's hooks ----------------------------------------------------------------------------------------------
_DINO: weakref.WeakKeyDictionary[Any, dict[Any, Encoder]] = weakref.WeakKeyDictionary()
_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()


def load_dino(pipeline: Any, options: dict[str, Any]) -> Encoder:
    """The pipeline's DINO encoder: ``options["dino"]`` as given (an :class:`Encoder`), or loaded by name once per
    pipeline on CLIP's device and dtype."""
    spec = options.get("dino", DEFAULTS["dino"])
    if isinstance(spec, Encoder):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"corrclip option dino must be an encoder or a model name, got {spec!r}")
    cache = _DINO.setdefault(pipeline, {})
    if spec not in cache:
        cache[spec] = pipeline._load(spec)
    return cache[spec]


def _ranked(region_mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Region ids renumbered 0..R-1 in id order (int64 ``[H, W]``); all 0 when there is no mask."""
    if region_mask is None:
        return torch.zeros(size, dtype=torch.long)
    return torch.unique(torch.as_tensor(region_mask).long(), return_inverse=True)[1]


@torch.inference_mode()
def corrclip_cosine(
    pipeline: Any,
    pixels: torch.Tensor,
    x: torch.Tensor,
    weights: torch.Tensor,
    options: dict[str, Any],
    region_mask: torch.Tensor | None,
) -> torch.Tensor:
    """CorrCLIP's cosine maps of every text at the original size, ``[S, H, W]`` (float32, on the CPU).

    Windows of ``pipeline.window`` every ``pipeline.stride`` over the model input (mmseg's layout; ``inference=
    "whole"``: one window), each zero-padded (centred) to a multiple of ``pipeline.pad_multiple`` when set, its region
    ids padded with an id of their own; per window the cosine of :func:`corrclip_window`'s L2-normalised features
    and every text on DINO's grid, bilinear to the window, the padding cropped off; windows summed and divided by
    their count; bilinear to the original size.

    Args:
        pipeline: a ``ZeroShotSegPipeline`` (its encoder, window, stride, pad_multiple, inference, pos_interp).
        pixels: uint8 ``[3, H, W]`` original image.
        x: float ``[3, h, w]`` rescaled, normalised model input (``pipeline.prepare(pixels)``).
        weights: ``[S, D]`` unit-norm text embeddings.
        options: ``method_options`` (:class:`CorrCLIPOptions` keys and ``dino``).
        region_mask: integer ``[H, W]`` region ids at the original size, or ``None`` (one unsegmented region).

    Returns:
        float32 ``[S, H, W]`` cosine similarities (in [-1, 1]).
    """
    opts = CorrCLIPOptions.from_options(options)
    dino = load_dino(pipeline, options)
    size = tuple(pixels.shape[-2:])
    if region_mask is None and pipeline not in _WARNED:
        _WARNED.add(pipeline)
        logger.warning("mode='corrclip' without region_masks: each image is one unsegmented region (pass "
                       "region_masks=[...] per call, e.g. SAM's, for CorrCLIP proper)")  # fmt: skip
    ids = _ranked(region_mask, size)
    if tuple(ids.shape) != size:
        raise ValueError(f"region mask is {tuple(ids.shape)}, the image {size}")
    _, h, w = x.shape
    ids = _nearest(ids, (h, w))
    pad_id = int(ids.max()) + 1
    boxes = [(0, 0, h, w)] if pipeline.inference == "whole" else window_grid((h, w), pipeline.window, pipeline.stride)
    text = weights.float()
    out = torch.zeros(len(weights), h, w)
    count = torch.zeros(1, h, w)
    for y0, x0, y1, x1 in boxes:
        crop, crop_ids = x[:, y0:y1, x0:x1], ids[y0:y1, x0:x1]
        pad = pad_to_multiple(y1 - y0, x1 - x0, pipeline.pad_multiple) if pipeline.pad_multiple else (0, 0, 0, 0)
        if any(pad):
            crop = F.pad(crop, pad)  # zeros in normalised space
            crop_ids = F.pad(crop_ids, pad, value=pad_id)
        res = corrclip_window(pipeline.encoder, dino, crop, crop_ids, opts, pos_interp=pipeline.pos_interp)
        emb = F.normalize(res.features.float(), dim=-1)
        cos = torch.einsum("hwd,sd->shw", emb, text.to(emb.device))
        cos = F.interpolate(cos[None], size=tuple(crop.shape[-2:]), mode="bilinear", align_corners=False)[0]
        left, _, top, _ = pad
        out[:, y0:y1, x0:x1] += cos[:, top : top + y1 - y0, left : left + x1 - x0].cpu()
        count[:, y0:y1, x0:x1] += 1
    return to_size(out / count, size)


def map_correction(label_map: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """CorrCLIP's map correction: every region takes its most frequent label.

    Each id of ``region_mask`` but the smallest (the unsegmented set) gives all its pixels the label that covers most
    of them (the smallest such label on a tie, as ``torch.mode``); pixels of the smallest id keep theirs.

    Args:
        label_map: int64 ``[H, W]`` labels >= 0.
        region_mask: integer ``[H, W]`` region ids.

    Returns:
        int64 ``[H, W]`` corrected labels (a new tensor).

    Example:
        >>> labels = torch.tensor([[1, 2, 2], [3, 3, 1]])
        >>> regions = torch.tensor([[0, 5, 5], [7, 7, 7]])
        >>> map_correction(labels, regions).tolist()
        [[1, 2, 2], [3, 3, 3]]
    """
    if tuple(label_map.shape) != tuple(region_mask.shape):
        raise ValueError(f"label map {tuple(label_map.shape)} and region mask {tuple(region_mask.shape)} differ")
    ranks = torch.unique(region_mask.long(), return_inverse=True)[1].flatten().to(label_map.device)
    labels = label_map.flatten().long()
    n_regions, n_labels = int(ranks.max()) + 1, int(labels.max()) + 1
    votes = torch.bincount(ranks * n_labels + labels, minlength=n_regions * n_labels).view(n_regions, n_labels)
    best = votes.argmax(1)  # the first (smallest) label among the most frequent
    out = torch.where(ranks > 0, best[ranks], labels)
    return out.view(label_map.shape)


def _scores(pipeline: Any, pixels: torch.Tensor, x: torch.Tensor, weights: torch.Tensor,
            options: dict[str, Any]) -> torch.Tensor:  # fmt: skip
    return corrclip_cosine(pipeline, pixels, x, weights, options, getattr(pipeline, "_region_mask", None))


def _refine(pipeline: Any, pixels: torch.Tensor, label_map: torch.Tensor, probs: torch.Tensor,
            options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    mask = getattr(pipeline, "_region_mask", None)
    if mask is None:
        return label_map, probs
    return map_correction(label_map, mask), probs


register_seg_method(
    SegMethod(
        name="corrclip",
        scores=_scores,
        refine=_refine,
        option_keys=OPTION_KEYS,
        reference=REFERENCE,
        description="CorrCLIP (ICCV 2025): DINO affinity scoped by merged region masks, spatial and semantic branches, "
        "map correction",
        defaults=dict(DEFAULTS),
    )
)


__all__ = [
    "DEFAULTS",
    "REFERENCE",
    "CorrCLIPOptions",
    "CorrCLIPWindow",
    "corrclip_cosine",
    "corrclip_window",
    "dbscan_min1",
    "default_num_spatial",
    "dino_query_key",
    "load_dino",
    "map_correction",
    "spatial_blocks",
]
