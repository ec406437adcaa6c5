"""Training-free dense CLIP features: attention surgery on the last block of the image tower.

CLIP's pooled embedding lives in the image-text space, but its patch tokens do not segment well: the
last block's query-key attention is spatially "global" (every patch attends to the same few tokens).
The training-free methods below change only that last attention (and whether its residual and FFN are
kept), then send every patch token through the head that maps the pooled token into the joint space.
All earlier blocks run unchanged. :func:`dense_features` does this for every CLIP backend here with
the method as a parameter, ``mode``.

Every backend is reduced to the same parts (a :class:`DenseTower`, which the family builds: its
``Family.dense_tower``; CLIP's is in :mod:`visionfm.foundation.clip.dense`): the tokens entering the last
attention, its pre-norm, its q/k/v/out projections and head count, the rest of the block (residual +
FFN) and the head (final norm + projection). The modes are then one piece of code.

Backends:

- open_clip ``VisionTransformer``: last block of ``visual.transformer.resblocks`` (``ln_1``,
  ``nn.MultiheadAttention``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``); head ``ln_post`` then ``@ proj``.
- open_clip ``ModifiedResNet``: the attention pool ``visual.attnpool`` is the "last block": tokens are
  the stride-32 map with the mean token in front, plus ``positional_embedding``; ``q/k/v_proj``,
  ``c_proj``; no norm, residual or FFN; ``c_proj`` already maps to the joint space (head = identity).
  In ``vanilla`` mode token 0 (the mean token) reproduces the pooled embedding exactly.
- transformers ``CLIPModel``: ``vision_model.encoder.layers[-1]``; head ``post_layernorm`` then
  ``visual_projection``.
- transformers ``SiglipModel``: ``vision_model.encoder.layers[-1]``; no class token. Its joint space is
  the output of the multi-head attention-pooling head (a learned probe attends over the tokens, then
  ``x + mlp(layernorm(x))``). There is no per-token version of a single-probe pool, so each token goes
  through the head's value path instead, as MaskCLIP does for CLIP's attention pool:
  ``a = out_proj(v_proj(post_layernorm(t)))``, then ``a + mlp(layernorm(a))``. That is exactly what the
  head returns for a one-token input, so a patch embedding is "the head applied to that patch alone".

- open_clip ``TimmModel`` ViTs (SigLIP 2 tags, PE-Core, MobileCLIP 2's ViTs): the last of ``trunk.blocks`` (timm
  ``Block`` or EVA's ``EvaBlock``: ``norm1``, attention with fused ``qkv`` or separate projections, layer scale,
  ``norm2``, ``mlp``). The attention's query/key norms and rotary embedding (PE's 2-D RoPE, patch tokens only) are
  applied to ``q`` and ``k`` before any logits (:attr:`DenseTower.qk_post`). Head: ``trunk.norm``, then the ``map``
  attention pool's value path and MLP (as for SigLIP) or, for class-token / average pooling, the token itself;
  then ``fc_norm``, the trunk's head and open_clip's projection.
- open_clip ``TimmModel`` CNNs with an average-pooling head (MobileCLIP 2's FastViT-MCi, ConvNeXt): no attention to
  change, so only ``vanilla`` applies: the pooled head on each position of the last feature map.

References (read for the formulas; no code was copied):

- MaskCLIP: Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022 (volgachen/MaskCLIP).
- SCLIP: Wang, Mei, Yuille, "SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference",
  arXiv 2312.01597 (wangf3014/SCLIP).
- ClearCLIP: Lan et al., "ClearCLIP: Decomposing CLIP Representations for Dense Vision-Language
  Inference", ECCV 2024 (mc-lan/ClearCLIP).
- NACLIP: Hajimiri, Ben Ayed, Dolz, "Pay Attention to Your Neighbours: Training-Free Open-Vocabulary
  Semantic Segmentation", WACV 2025 (sinahmr/NACLIP).
- ProxyCLIP: Lan et al., "ProxyCLIP: Proxy Attention Improves CLIP for Open-Vocabulary Segmentation",
  ECCV 2024 (mc-lan/ProxyCLIP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoder import Encoder
from .registry import families, get_family

logger = logging.getLogger(__name__)

DENSE_MODES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "proxy")
_DENSE_DEFAULTS = {"naclip_sigma": 5.0, "proxy_beta": None, "proxy_gamma": None, "proxy_grid": True}  # filled below
#: Modes that keep the last block's residual connection and FFN (where the tower has them).
_KEEPS_BLOCK = ("vanilla", "sclip")
#: ProxyCLIP's published defaults (``beta=1.2, gamma=3.0`` in mc-lan/ProxyCLIP).
PROXY_BETA = 1.2
PROXY_GAMMA = 3.0


def check_mode(mode: str) -> str:
    """Validate a dense mode name.

    Args:
        mode: one of :data:`DENSE_MODES`.

    Returns:
        ``mode`` unchanged.

    Raises:
        ValueError: for any other value, naming the valid modes.
    """
    if mode not in DENSE_MODES:
        raise ValueError(f"unknown dense mode {mode!r}; choose from {', '.join(DENSE_MODES)}")
    return mode


@dataclass
class DenseTower:
    """One vision tower reduced to what the last-block surgery needs.

    Attributes:
        tokens: ``[B, P + h*w, W]`` input of the last attention (prefix tokens first, then the patch grid
            row-major).
        prefix: ``P``, tokens before the patch grid (class token / ResNet mean token: 1; SigLIP: 0).
        grid: ``(h, w)`` patch grid.
        norm1: pre-attention norm (identity for the ResNet attention pool).
        qkv: ``(w_q, b_q, w_k, b_k, w_v, b_v)``; weights ``[W, W]``, biases ``[W]`` or ``None``.
        out_proj: attention output projection, ``[..., W] -> [..., W_out]``.
        num_heads: attention heads.
        block_tail: ``(x, attn_out) -> block output``: residual + FFN of the block; ``None`` if the
            tower has none (ResNet attention pool).
        head: block output ``[..., W_out]`` to the joint image-text space ``[..., D]``.
        pos: ``[P + h*w, W]`` position table the last block adds to ``tokens`` itself (the ResNet attention pool;
            ``maskclip`` leaves it out, as MaskCLIP's ResNet head ``c_proj(v_proj(x))`` does); ``None`` when the
            positions are already in ``tokens`` (ViTs).
        qk_post: ``(q, k) -> (q, k)`` on the per-head ``[B, heads, N, d]`` queries and keys before any attention
            logits are formed: the tower's query/key norms and rotary position embedding (timm ViTs with
            ``qk_norm``, Perception Encoder's RoPE); ``None`` when the tower has neither.

    A tower with no attention at all (a CNN whose head average-pools the last feature map) has ``qkv=()``:
    only ``vanilla`` applies, and it is ``head(tokens)``, the pooled head applied to each position.
    """

    tokens: torch.Tensor
    prefix: int
    grid: tuple[int, int]
    norm1: Callable[[torch.Tensor], torch.Tensor]
    qkv: tuple[torch.Tensor | None, ...]
    out_proj: Callable[[torch.Tensor], torch.Tensor]
    num_heads: int
    block_tail: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    head: Callable[[torch.Tensor], torch.Tensor]
    pos: torch.Tensor | None = None
    qk_post: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: How a learned position table is resized to another patch grid (:func:`resize_pos_embed`).
POS_INTERPOLATIONS = ("size", "dino")


def resize_pos_embed(
    pos: torch.Tensor, prefix: int, src: tuple[int, int], dst: tuple[int, int], method: str = "size"
) -> torch.Tensor:
    """Resize a learned position table to another patch grid (bicubic, ``align_corners=False``).

    Two conventions are in use, and they give different tables (up to ~0.2 apart at 14 -> 21 patches):

    - ``"size"``: ``F.interpolate(..., size=dst)``: sample positions follow the ratio ``dst / src``. This is
      transformers' ``interpolate_pos_encoding`` for CLIP.
    - ``"dino"``: DINO's ``interpolate_pos_encoding``: ``scale_factor=((dst + 0.1) / src)`` per axis, with the
      scale factor (not the output size) defining the sample positions (``recompute_scale_factor=False``). The
      SCLIP, ClearCLIP and NACLIP reference code resizes this way (``tests/pipelines/test_zero_shot_seg_reference.py``
      checks it against their outputs).

    Prefix rows (class / mean token) are kept as they are.

    Args:
        pos: ``[prefix + src_h*src_w, C]`` position embeddings.
        prefix: leading rows that are not on the grid.
        src: native grid ``(h, w)`` of ``pos``.
        dst: target grid ``(h, w)``.
        method: one of :data:`POS_INTERPOLATIONS`.

    Returns:
        ``[prefix + dst_h*dst_w, C]``; ``pos`` itself (no copy, bit-equal) when ``src == dst``.
    """
    if method not in POS_INTERPOLATIONS:
        raise ValueError(f"pos_interp must be one of {POS_INTERPOLATIONS}, got {method!r}")
    src, dst = (int(src[0]), int(src[1])), (int(dst[0]), int(dst[1]))
    if pos.shape[0] != prefix + src[0] * src[1]:
        raise ValueError(f"position table of {pos.shape[0]} rows is not {prefix} + {src[0]}x{src[1]}")
    if src == dst:
        return pos
    c = pos.shape[-1]
    grid = pos[prefix:].reshape(1, src[0], src[1], c).permute(0, 3, 1, 2).float()
    if method == "size":
        grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    else:
        factor = ((dst[0] + 0.1) / src[0], (dst[1] + 0.1) / src[1])
        grid = F.interpolate(
            grid, scale_factor=factor, mode="bicubic", align_corners=False, recompute_scale_factor=False
        )
        if tuple(grid.shape[-2:]) != dst:  # floor(src * (dst + 0.1) / src) is dst unless rounding goes astray
            raise RuntimeError(f"dino position interpolation gave {tuple(grid.shape[-2:])}, expected {dst}")
    grid = grid.permute(0, 2, 3, 1).reshape(dst[0] * dst[1], c).to(pos.dtype)
    return torch.cat([pos[:prefix], grid])


def patch_grid(pixel_values: torch.Tensor, patch: int) -> tuple[int, int]:
    """``(h, w)`` patch grid of ``pixel_values [B, 3, H, W]``; ``ValueError`` unless H and W are multiples of ``patch``."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}")
    h, w = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    if h % patch or w % patch or h < patch or w < patch:
        raise ValueError(f"input size {h}x{w} must be a positive multiple of the patch size {patch}")
    return h // patch, w // patch


def _tower(encoder: object, pixel_values: torch.Tensor, pos_interp: str = "size") -> DenseTower:
    info = getattr(encoder, "info", None)
    if info is None:
        raise TypeError(f"dense_features needs a visionfm encoder, got {type(encoder).__name__}")
    fn = get_family(info.family).dense_tower if info.family in families() else None
    if fn is None:
        have = sorted(n for n, f in families().items() if f.dense_tower is not None)
        raise TypeError(
            f"dense_features needs an encoder of a family with dense modes ({', '.join(have)}: CLIP and SigLIP), "
            f"got {type(encoder).__name__} (family {info.family!r})"
        )
    return fn(encoder, pixel_values, pos_interp=pos_interp)


# ---------------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------------
def gaussian_neighbourhood(grid: tuple[int, int], sigma: float, prefix: int = 0) -> torch.Tensor:
    """NACLIP's additive neighbourhood prior over a patch grid.

    Args:
        grid: ``(h, w)`` patch grid, tokens row-major.
        sigma: standard deviation in patches (> 0).
        prefix: leading non-grid tokens; their rows and columns are 0 (no prior), as in NACLIP.

    Returns:
        ``[P + h*w, P + h*w]`` float32, ``exp(-d^2 / (2 sigma^2))`` for grid distance ``d`` between patches.
    """
    if not sigma > 0:
        raise ValueError(f"naclip_sigma must be > 0, got {sigma}")
    h, w = grid
    rows = torch.arange(h, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32).repeat(h)
    d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    out = torch.zeros(prefix + h * w, prefix + h * w)
    out[prefix:, prefix:] = torch.exp(-d2 / (2.0 * sigma**2))
    return out


def proxy_attention(
    proxy_features: torch.Tensor, grid: tuple[int, int], *, beta: float = PROXY_BETA, gamma: float = PROXY_GAMMA
) -> torch.Tensor:
    """ProxyCLIP's attention from another encoder's patch affinity.

    The proxy features are resized to ``grid`` (bilinear, ``align_corners=False``), L2-normalised, and
    their cosine similarities ``S`` become logits ``(S - beta * mean(S)) * gamma`` (mean over the whole
    ``N x N`` matrix of each image); logits below 0 are masked out (``-inf``) before the softmax. A
    patch's affinity with itself is never masked, which only matters where the reference would return
    NaN (a row with every logit below 0); elsewhere it changes nothing, since self-similarity is the
    row's maximum.

    Args:
        proxy_features: ``[B, h', w', C']`` patch features (e.g. DINOv2 or SAM ``Features.patches``).
        grid: CLIP patch grid ``(h, w)``.
        beta: threshold on the similarity, relative to its mean (ProxyCLIP: 1.2).
        gamma: logit scale (ProxyCLIP: 3.0).

    Returns:
        ``[B, h*w, h*w]`` float32 attention weights, rows summing to 1.
    """
    if proxy_features.ndim != 4:
        raise ValueError(f"proxy_features must be [B, h', w', C'], got shape {tuple(proxy_features.shape)}")
    f = proxy_features.permute(0, 3, 1, 2).float()
    if tuple(f.shape[-2:]) != tuple(grid):
        f = F.interpolate(f, size=tuple(grid), mode="bilinear", align_corners=False)
    f = F.normalize(f.flatten(2), dim=1)  # [B, C', N]
    sim = f.transpose(1, 2) @ f  # [B, N, N] cosine similarities
    logits = (sim - beta * sim.mean(dim=(1, 2), keepdim=True)) * gamma
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill((logits < 0) & ~eye, float("-inf"))
    return torch.softmax(logits, dim=-1)


def _softmax(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1, dtype=torch.float32).to(like.dtype)


def _surgery(
    t: DenseTower,
    mode: str,
    *,
    proxy_features: torch.Tensor | None,
    naclip_sigma: float,
    proxy_beta: float,
    proxy_gamma: float,
    proxy_grid: bool = True,
) -> tuple[torch.Tensor, int]:
    """The last block under ``mode``; returns (``[B, P' + h*w, D]`` joint-space tokens, ``P'``)."""
    if not t.qkv:  # no attention (average-pooling CNN head): the head on each position is the only dense reading
        if mode != "vanilla":
            raise ValueError(
                f"mode={mode!r} changes the last attention, and this tower has none (a CNN with an average-pooling "
                "head); use mode='vanilla', which applies the pooled head at every position"
            )
        return t.head(t.tokens), t.prefix
    x = t.tokens if t.pos is None or mode == "maskclip" else t.tokens + t.pos
    hdn = t.norm1(x)
    b, n, width = hdn.shape
    heads = t.num_heads
    d = width // heads
    scale = d**-0.5
    wq, bq, wk, bk, wv, bv = t.qkv

    def split(w: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(hdn, w, bias).view(b, n, heads, d).transpose(1, 2)  # [B, heads, N, d]

    def qk(need_q: bool, need_k: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        q = split(wq, bq) if need_q or t.qk_post is not None else None
        k = split(wk, bk) if need_k or t.qk_post is not None else None
        if t.qk_post is not None:
            q, k = t.qk_post(q, k)
        return q, k

    v = split(wv, bv)
    prefix = t.prefix
    if mode == "maskclip":
        out = v
    elif mode == "proxy":
        assert proxy_features is not None  # checked by _check_proxy
        vp = v[:, :, prefix:]  # [B, heads, h*w, d]: the class token takes no part
        out_grid = tuple(proxy_features.shape[1:3]) if proxy_grid else t.grid
        if out_grid != t.grid:  # ProxyCLIP: the values go to the proxy grid (bilinear), the output stays there
            vmap = vp.transpose(2, 3).reshape(b, heads * d, *t.grid)
            vmap = F.interpolate(vmap, size=out_grid, mode="bilinear", align_corners=False)
            vp = vmap.reshape(b, heads, d, -1).transpose(2, 3)
        attn = proxy_attention(proxy_features.to(v.device), out_grid, beta=proxy_beta, gamma=proxy_gamma)
        out = attn.to(v.dtype).unsqueeze(1) @ vp  # same weights for every head
        x, prefix = x[:, prefix:], 0
    else:
        if mode == "vanilla":
            q, k = qk(True, True)
            attn = _softmax((q * scale) @ k.transpose(-1, -2), v)
        elif mode == "sclip":
            q, k = qk(True, True)
            attn = _softmax((q * scale) @ q.transpose(-1, -2), v) + _softmax((k * scale) @ k.transpose(-1, -2), v)
        elif mode == "clearclip":
            q, _ = qk(True, False)
            attn = _softmax((q * scale) @ q.transpose(-1, -2), v)
        else:  # naclip
            _, k = qk(False, True)
            prior = gaussian_neighbourhood(t.grid, naclip_sigma, prefix).to(device=k.device, dtype=k.dtype)
            attn = _softmax((k * scale) @ k.transpose(-1, -2) + prior, v)
        out = attn @ v
    out = t.out_proj(out.transpose(1, 2).reshape(b, -1, width))
    if mode in _KEEPS_BLOCK and t.block_tail is not None:
        out = t.block_tail(x, out)
    return t.head(out), prefix


def _check_proxy(mode: str, proxy_features: torch.Tensor | None, pixel_values: torch.Tensor) -> None:
    if mode != "proxy":
        if proxy_features is not None:
            raise ValueError(f"proxy_features is only used by mode='proxy', not mode={mode!r}")
        return
    if proxy_features is None:
        raise ValueError("mode='proxy' needs proxy_features: [B, h', w', C'] patch features of another encoder")
    if proxy_features.ndim != 4:
        raise ValueError(f"proxy_features must be [B, h', w', C'], got shape {tuple(proxy_features.shape)}")
    if proxy_features.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"proxy_features has batch size {proxy_features.shape[0]} but pixel_values has {pixel_values.shape[0]}"
        )


def _dense_tokens(
    encoder: object,
    pixel_values: torch.Tensor,
    mode: str = "maskclip",
    *,
    proxy_features: torch.Tensor | None = None,
    naclip_sigma: float = 5.0,
    proxy_beta: float = PROXY_BETA,
    proxy_gamma: float = PROXY_GAMMA,
    pos_interp: str = "size",
    proxy_grid: bool = True,
) -> tuple[torch.Tensor, int, tuple[int, int]]:
    """:func:`dense_features` with the prefix tokens kept: (``[B, P + h*w, D]``, ``P``, ``(h, w)``)."""
    check_mode(mode)
    _check_proxy(mode, proxy_features, pixel_values)
    tower = _tower(encoder, pixel_values, pos_interp)
    logger.debug("dense %s: grid %s, prefix %d", mode, tower.grid, tower.prefix)
    tokens, prefix = _surgery(
        tower,
        mode,
        proxy_features=proxy_features,
        naclip_sigma=naclip_sigma,
        proxy_beta=proxy_beta,
        proxy_gamma=proxy_gamma,
        proxy_grid=proxy_grid,
    )
    grid = tuple(proxy_features.shape[1:3]) if mode == "proxy" and proxy_grid else tower.grid
    return tokens, prefix, grid


def dense_features(
    encoder: Encoder,
    pixel_values: torch.Tensor,
    mode: str = "maskclip",
    *,
    proxy_features: torch.Tensor | None = None,
    naclip_sigma: float = 5.0,
    proxy_beta: float = PROXY_BETA,
    proxy_gamma: float = PROXY_GAMMA,
    pos_interp: str = "size",
    proxy_grid: bool = True,
) -> torch.Tensor:
    """Training-free dense patch embeddings in CLIP's image-text space.

    Only the last attention block of the image tower changes (see the module docstring for what that
    block is in each backend); earlier blocks run unchanged. With ``x`` the block input, ``h = ln_1(x)``
    and per-head ``q, k, v`` the block's own projections of ``h`` (scale ``s = head_dim ** -0.5``):

    - ``vanilla``: the unmodified block, ``x + attn(h)`` then ``+ mlp(ln_2(.))``, ``attn`` with
      ``softmax(q k^T s) v``.
    - ``maskclip`` (MaskCLIP): identity attention, ``out_proj(v)``; no residual, no FFN. This is the
      formulation used by the ViT ports of MaskCLIP (FeatUp, maskclip_onnx) and by the SCLIP, ClearCLIP and
      NACLIP baselines. The authors' mmseg ViT code keeps the residual and FFN
      (``x + out_proj(v)``, then the FFN); for the ResNet pool both give ``c_proj(v_proj(x))``.
    - ``sclip`` (SCLIP, correlative self-attention): ``(softmax(q q^T s) + softmax(k k^T s)) v`` (rows
      sum to 2, not halved), residual and FFN kept, as in the SCLIP reference code.
    - ``clearclip`` (ClearCLIP): ``softmax(q q^T s) v``, ``out_proj``; no residual, no FFN.
    - ``naclip`` (NACLIP): ``softmax(k k^T s + G) v``, ``out_proj``; no residual, no FFN (NACLIP's
      "reduced" architecture, its default). ``G`` is added to the logits and is the Gaussian kernel
      itself, ``exp(-d^2 / (2 naclip_sigma^2))`` over grid distance ``d`` in patches (values in (0, 1]),
      0 in the class-token row and column, as in the NACLIP reference (not ``log`` of the kernel).
    - ``proxy`` (ProxyCLIP): weights from the proxy encoder's patch affinity (:func:`proxy_attention`:
      cosine similarity ``S``, logits ``(S - proxy_beta * mean(S)) * proxy_gamma``, negatives masked),
      the same for every head, applied to the block's value embeddings of the patch tokens (the class
      token takes no part), ``out_proj``; no residual, no FFN. As in ProxyCLIP, the values are resized
      (bilinear) to the proxy's grid and the output is on that grid (``proxy_grid=True``); with
      ``proxy_grid=False`` the proxy features are resized to the CLIP grid instead, which answers on CLIP's grid.

    The block output then goes through the head that makes the pooled embedding: open_clip ``ln_post``
    and ``@ proj``; transformers CLIP ``post_layernorm`` and ``visual_projection``; the open_clip
    ResNet's ``c_proj`` is already that head; SigLIP: the attention-pool head's value path and MLP.

    For ViTs the position embeddings are resized (bicubic, ``pos_interp``) when the input grid differs from the
    native one; at the native size the table is used as is, so results are bit-equal to no resizing.
    Batch elements are independent (use an encoder in eval mode, as ``load_encoder`` returns it). Works
    with gradients and under ``torch.inference_mode``, on the encoder's device and dtype.

    Args:
        encoder: an ``OpenClipEncoder`` (ViT, ModifiedResNet or timm tower) or ``HFClipEncoder`` (CLIP, SigLIP,
            SigLIP 2).
        pixel_values: ``[B, 3, H, W]`` preprocessed (normalised) pixels; ``H`` and ``W`` multiples of the
            patch size (32 for the ResNet), not necessarily the native size.
        mode: one of :data:`DENSE_MODES`.
        proxy_features: ``[B, h', w', C']`` patch features of another encoder (DINOv2, SAM: their
            ``Features.patches``) for ``mode="proxy"``; resized to the CLIP grid inside. Only for that mode.
        naclip_sigma: standard deviation of NACLIP's Gaussian, in patches (NACLIP's default: 5).
        proxy_beta: ProxyCLIP's threshold ``beta``: affinities below ``beta`` times their mean are masked
            (default 1.2, ProxyCLIP's).
        proxy_gamma: ProxyCLIP's logit scale ``gamma`` (default 3.0, ProxyCLIP's).
        proxy_grid: ``mode="proxy"`` answers on the proxy's grid (ProxyCLIP's; ``h, w`` below are then the proxy
            features' grid) or, when ``False``, on CLIP's.
        pos_interp: how the position table is resized to a non-native grid, ``"size"`` (transformers') or
            ``"dino"`` (the SCLIP/ClearCLIP/NACLIP references'); see :func:`resize_pos_embed`.

    Returns:
        ``[B, h, w, D]`` patch embeddings, ``h = H // patch``, ``w = W // patch`` (``proxy``: the proxy's grid unless
        ``proxy_grid=False``), ``D = info.embed_dim``,
        in the space of ``encoder.encode_text`` and ``Features.pooled``; not normalised.

    Raises:
        ValueError: unknown mode, bad input shape, ``proxy`` without (or with mis-sized)
            ``proxy_features``, ``proxy_features`` with another mode.
        TypeError: an encoder that is not CLIP/SigLIP.
        NotImplementedError: open_clip towers with custom blocks or an attentional pooler.

    Example:
        >>> import torch, visionfm as vfm
        >>> from visionfm.testing import tiny_checkpoint
        >>> enc = vfm.load_encoder(tiny_checkpoint("clip"), device="cpu")
        >>> tuple(dense_features(enc, torch.randn(2, 3, 72, 48), "clearclip").shape)
        (2, 9, 6, 32)
    """
    onnx_dense = getattr(encoder, "onnx_dense", None)  # an ONNX export (visionfm.foundation.onnx_runtime)
    if onnx_dense is not None:
        changed = {k: v for k, v in dict(naclip_sigma=naclip_sigma, proxy_beta=proxy_beta, proxy_gamma=proxy_gamma,
                                         proxy_grid=proxy_grid).items() if v != _DENSE_DEFAULTS[k]}  # fmt: skip
        if proxy_features is not None or changed:
            raise ValueError(f"an ONNX export runs the dense modes with their default settings only; got "
                             f"{sorted(changed) + (['proxy_features'] if proxy_features is not None else [])}")  # fmt: skip
        return onnx_dense(pixel_values, mode)
    tokens, prefix, (h, w) = _dense_tokens(
        encoder,
        pixel_values,
        mode,
        proxy_features=proxy_features,
        naclip_sigma=naclip_sigma,
        proxy_beta=proxy_beta,
        proxy_gamma=proxy_gamma,
        pos_interp=pos_interp,
        proxy_grid=proxy_grid,
    )
    return tokens[:, prefix:].reshape(tokens.shape[0], h, w, tokens.shape[-1])


_DENSE_DEFAULTS.update(proxy_beta=PROXY_BETA, proxy_gamma=PROXY_GAMMA)
