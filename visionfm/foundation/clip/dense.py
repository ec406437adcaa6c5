"""CLIP's dense-attention parts: each backend's image tower reduced to a :class:`~visionfm.foundation.dense.DenseTower`
(the tokens entering the last attention, its projections, the rest of the block and the head), which
:func:`visionfm.foundation.dense.dense_features` applies the training-free modes to. See that module's docstring for
what each backend's "last block" and head are.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from ..dense import DenseTower, patch_grid, resize_pos_embed
from ..encoder import restore_tokens
from .encoders import HFClipEncoder, HFSiglip2Encoder, OpenClipEncoder


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _open_clip_vit_tower(encoder: OpenClipEncoder, pixel_values: torch.Tensor, pos_interp: str) -> DenseTower:
    from open_clip.transformer import ResidualAttentionBlock

    v = encoder.model.visual
    if getattr(v, "attn_pool", None) is not None:
        raise NotImplementedError("dense_features does not support open_clip towers with an attentional pooler")
    last = v.transformer.resblocks[-1]
    if not isinstance(last, ResidualAttentionBlock) or last.attn.in_proj_weight is None:
        raise NotImplementedError(
            f"dense_features supports open_clip's default ResidualAttentionBlock, not {type(last).__name__}"
        )
    grid = patch_grid(pixel_values, int(v.patch_size[0]))
    # Same steps as VisionTransformer._embeds, with the position table resized to the input grid.
    x = v.conv1(pixel_values.to(v.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1)
    x = x + resize_pos_embed(v.positional_embedding, 1, tuple(v.grid_size), grid, pos_interp).to(x.dtype)
    x = v.ln_pre(v.patch_dropout(x))
    batch_first = getattr(v.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    x = restore_tokens(v.transformer.resblocks[-2], x) if len(v.transformer.resblocks) > 1 else x
    if not batch_first:
        x = x.transpose(0, 1)

    attn = last.attn
    bias = attn.in_proj_bias
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = bias.chunk(3) if bias is not None else (None, None, None)

    def tail(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = x + last.ls_1(a)
        return x + last.ls_2(last.mlp(last.ln_2(x)))

    def head(t: torch.Tensor) -> torch.Tensor:
        t = v.ln_post(t)
        return t @ v.proj if v.proj is not None else t

    return DenseTower(x, 1, grid, last.ln_1, (wq, bq, wk, bk, wv, bv), attn.out_proj, int(attn.num_heads), tail, head)


def _open_clip_resnet_tower(encoder: OpenClipEncoder, pixel_values: torch.Tensor, pos_interp: str) -> DenseTower:
    v = encoder.model.visual
    pool = v.attnpool
    grid = patch_grid(pixel_values, 32)
    x = v.stem(pixel_values.to(v.conv1.weight.dtype))
    x = v.layer4(v.layer3(v.layer2(v.layer1(x))))
    if tuple(x.shape[-2:]) != grid:
        raise ValueError(f"ResNet feature map {tuple(x.shape[-2:])} does not match the expected grid {grid}")
    # Same steps as AttentionPool2d.forward (batch first): mean token in front, then the position table, which
    # the tower hands over separately (MaskCLIP's R50 head, c_proj(v_proj(x)), does not add it).
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
    side = math.isqrt(pool.positional_embedding.shape[0] - 1)
    pos = resize_pos_embed(pool.positional_embedding, 1, (side, side), grid, pos_interp).to(x.dtype)
    qkv = (pool.q_proj.weight, pool.q_proj.bias, pool.k_proj.weight, pool.k_proj.bias)
    qkv += (pool.v_proj.weight, pool.v_proj.bias)
    return DenseTower(x, 1, grid, _identity, qkv, pool.c_proj, int(pool.num_heads), None, _identity, pos=pos)


def _timm_attention_parts(attn: torch.nn.Module, width: int) -> tuple:
    """(q/k/v weights and biases, out projection, heads) of a timm attention module: ``Attention`` (ViT), ``EvaAttention``
    or ``AttentionRope`` (EVA / Perception Encoder), fused ``qkv`` or separate projections."""
    name = type(attn).__name__
    heads = int(attn.num_heads)
    if getattr(attn, "gate", None) is not None or int(getattr(attn, "num_kv_heads", heads)) != heads:
        raise NotImplementedError(f"dense_features does not support gated or grouped-query attention ({name})")
    if heads * int(attn.head_dim) != width:
        raise NotImplementedError(f"dense_features needs the attention width to equal the token width ({name})")
    if getattr(attn, "qkv", None) is not None:
        wq, wk, wv = attn.qkv.weight.chunk(3)
        if attn.qkv.bias is not None:
            bq, bk, bv = attn.qkv.bias.chunk(3)
        elif getattr(attn, "q_bias", None) is not None:  # EVA: q and v biases, no k bias
            bq, bk, bv = attn.q_bias, getattr(attn, "k_bias", None), attn.v_bias
        else:
            bq = bk = bv = None
    else:
        wq, bq = attn.q_proj.weight, attn.q_proj.bias
        wk, bk = attn.k_proj.weight, attn.k_proj.bias
        wv, bv = attn.v_proj.weight, attn.v_proj.bias
    scale_norm = getattr(attn, "norm", None) or _identity

    def out_proj(o: torch.Tensor) -> torch.Tensor:
        return attn.proj(scale_norm(o))

    return (wq, bq, wk, bk, wv, bv), out_proj, heads


def _timm_qk_post(attn: torch.nn.Module, rope: torch.Tensor | None):
    """The attention's query/key norms, then its rotary embedding on the patch tokens (not the prefix), as timm's
    ``Attention`` / ``EvaAttention`` / ``AttentionRope`` forward does; ``None`` when both are identities."""
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    has_norm = any(m is not None and not isinstance(m, torch.nn.Identity) for m in (q_norm, k_norm))
    if not has_norm and rope is None:
        return None
    from timm.layers import apply_rot_embed_cat

    npt = int(getattr(attn, "num_prefix_tokens", 0))
    half = bool(getattr(attn, "rotate_half", False))

    def post(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = (q_norm or _identity)(q), (k_norm or _identity)(k)
        if rope is not None:
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(q)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(k)
        return q, k

    return post


def _timm_embed(trunk: torch.nn.Module, pixel_values: torch.Tensor, stride: int,
                pos_interp: str) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:  # fmt: skip
    """A timm ViT's ``patch_embed`` + ``_pos_embed`` + ``norm_pre`` at any input size: (tokens, rope, grid).

    The learned position table is resized by ``pos_interp`` to the input grid (left as is at the native grid); the
    rotary table (EVA / PE) comes from the trunk's own ``rope.get_embed(shape=grid)``."""
    pe = trunk.patch_embed
    grid = patch_grid(pixel_values, stride)
    pixel_values = pixel_values[..., : grid[0] * stride, : grid[1] * stride]
    if getattr(pe, "backbone", None) is not None:  # HybridEmbed (MobileCLIP 2's MCi ViTs): conv stem, then proj
        f = pe.backbone(pixel_values.to(pe.proj.weight.dtype))
        x = pe.proj(f[-1] if isinstance(f, (list, tuple)) else f)
    else:
        x = pe.proj(pixel_values.to(next(pe.proj.parameters()).dtype))  # a conv or a conv stem
    if tuple(x.shape[-2:]) != grid:
        raise ValueError(f"patch embedding gave a {tuple(x.shape[-2:])} grid, expected {grid}")
    x = x.flatten(2).transpose(1, 2)
    x = (getattr(pe, "norm", None) or _identity)(x)
    prefix = int(trunk.num_prefix_tokens)
    to_cat = [t.expand(x.shape[0], -1, -1).to(x.dtype) for t in (trunk.cls_token, trunk.reg_token) if t is not None]
    table = getattr(trunk, "pos_embed", None)
    pos = None
    if table is not None:
        table_prefix = 0 if trunk.no_embed_class else prefix
        native = tuple(int(g) for g in pe.grid_size)
        pos = resize_pos_embed(table[0], table_prefix, native, grid, pos_interp).to(x.dtype)
    if trunk.no_embed_class or pos is None:
        x = x + pos if pos is not None else x
        x = torch.cat([*to_cat, x], dim=1)
    else:
        x = torch.cat([*to_cat, x], dim=1) + pos
    rope = _timm_rope(trunk, grid)
    x = trunk.norm_pre(trunk.pos_drop(x))
    return x, rope, grid


def _timm_rope(trunk: torch.nn.Module, grid: tuple[int, int]) -> torch.Tensor | None:
    """The trunk's rotary table for ``grid``: its cached table at the native grid, else rebuilt from its frequency
    bands for ``grid`` (what timm's ``dynamic_img_size`` path does); ``None`` for towers without RoPE."""
    rope = getattr(trunk, "rope", None)
    if rope is None:
        return None
    if getattr(trunk, "rope_mixed", False):
        raise NotImplementedError("dense_features does not support depth-dependent (mixed) RoPE towers")
    cached = getattr(rope, "feat_shape", None)
    if cached is None or tuple(int(g) for g in cached) == grid:
        return rope.get_embed(shape=list(grid))
    if not hasattr(rope, "_build_embed_cat"):
        raise NotImplementedError(f"{type(rope).__name__} has no table for a {grid} grid; use the native input size")
    return rope._build_embed_cat(list(grid), rope.bands)


def _timm_vit_tower(encoder: OpenClipEncoder, pixel_values: torch.Tensor, pos_interp: str) -> DenseTower:
    v = encoder.model.visual
    trunk = v.trunk
    last = trunk.blocks[-1]
    if not (hasattr(last, "norm1") and hasattr(last, "attn") and hasattr(last, "mlp")):
        raise NotImplementedError(f"dense_features supports pre-norm timm blocks, not {type(last).__name__}")
    x, rope, grid = _timm_embed(trunk, pixel_values, encoder.info.patch_size, pos_interp)
    is_eva = "rope" in inspect.signature(last.forward).parameters
    for blk in trunk.blocks[:-1]:
        x = blk(x, rope=rope) if is_eva else blk(x)
    x = restore_tokens(trunk.blocks[-2], x) if len(trunk.blocks) > 1 else x
    qkv, out_proj, heads = _timm_attention_parts(last.attn, x.shape[-1])

    def scaled(name: str, a: torch.Tensor) -> torch.Tensor:
        ls = getattr(last, name, None)  # Block: ls1/ls2 modules; EvaBlock: gamma_1/gamma_2 tensors
        if ls is None:
            return a
        return ls * a if isinstance(ls, torch.Tensor) else ls(a)

    def tail(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = x + scaled("gamma_1" if hasattr(last, "gamma_1") else "ls1", a)
        return x + scaled("gamma_2" if hasattr(last, "gamma_2") else "ls2", last.mlp(last.norm2(x)))

    pool = getattr(trunk, "attn_pool", None)
    if pool is not None and type(pool).__name__ != "AttentionPoolLatent":
        raise NotImplementedError(f"dense_features does not support the {type(pool).__name__} pooling head")

    def head(t: torch.Tensor) -> torch.Tensor:
        t = trunk.norm(t)
        if pool is not None:  # the attention pool's value path and MLP, as for transformers SigLIP
            width = t.shape[-1]
            t = F.linear(t, pool.kv.weight[width:], pool.kv.bias[width:] if pool.kv.bias is not None else None)
            t = pool.proj(t)
            if pool.mlp is not None:
                t = t + pool.mlp(pool.norm(t))
        return v.head(trunk.head(trunk.fc_norm(t)))

    return DenseTower(x, int(trunk.num_prefix_tokens), grid, last.norm1, qkv, out_proj, heads, tail, head,
                      qk_post=_timm_qk_post(last.attn, rope))  # fmt: skip


def _timm_cnn_tower(encoder: OpenClipEncoder, pixel_values: torch.Tensor, pos_interp: str) -> DenseTower:
    """A timm CNN with an average-pooling head: the last feature map, and the pooled head applied per position (a
    ``1 x 1`` map through ``forward_head``, so the head's norm, pooling and projections are the trunk's own)."""
    v = encoder.model.visual
    trunk = v.trunk
    x = trunk.forward_features(pixel_values.to(next(trunk.parameters()).dtype))
    if x.ndim != 4:
        raise NotImplementedError(f"expected an NCHW feature map from {type(trunk).__name__}")
    grid = (int(x.shape[2]), int(x.shape[3]))
    tokens = x.flatten(2).transpose(1, 2)  # [B, h*w, C]

    def head(t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        out = v.head(trunk.forward_head(t.reshape(b * n, c, 1, 1)))
        return out.reshape(b, n, -1)

    return DenseTower(tokens, 0, grid, _identity, (), _identity, 0, None, head)


def _run_hf_layer(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One transformers encoder layer, across the 4.x (tuple out, causal mask arg) and 5.x signatures."""
    kwargs = {}
    if "causal_attention_mask" in inspect.signature(layer.forward).parameters:
        kwargs["causal_attention_mask"] = None
    out = layer(x, None, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _hf_tower(encoder: HFClipEncoder, pixel_values: torch.Tensor, pos_interp: str) -> DenseTower:
    vm = encoder.model.vision_model
    siglip = encoder.kind in ("siglip", "siglip2")
    if siglip and not getattr(vm, "use_head", False):
        raise NotImplementedError("dense_features needs SigLIP's attention-pooling head (vision_use_head=True)")
    grid = patch_grid(pixel_values, encoder.info.patch_size)
    if isinstance(encoder, HFSiglip2Encoder):  # NaFlex: the model always resizes its table to the grid itself
        packed = encoder.patchify(pixel_values)
        shapes = torch.tensor([grid] * packed.shape[0], dtype=torch.long, device=packed.device)
        x = vm.embeddings(packed, shapes)
    elif pos_interp == "size":  # transformers' own position interpolation (bicubic, size=); native: the plain table
        x = vm.embeddings(pixel_values, interpolate_pos_encoding=True)
    else:
        x = _hf_embeddings(vm.embeddings, pixel_values, 0 if siglip else 1, grid, pos_interp)
    if not siglip:
        x = vm.pre_layrnorm(x)
    for layer in vm.encoder.layers[:-1]:
        x = _run_hf_layer(layer, x)
    x = restore_tokens(vm.encoder.layers[-2], x) if len(vm.encoder.layers) > 1 else x
    last = vm.encoder.layers[-1]
    sa = last.self_attn
    qkv = (sa.q_proj.weight, sa.q_proj.bias, sa.k_proj.weight, sa.k_proj.bias, sa.v_proj.weight, sa.v_proj.bias)

    def tail(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = x + a
        return x + last.mlp(last.layer_norm2(x))

    if siglip:
        map_head = vm.head
        width = map_head.attention.embed_dim
        w_v = map_head.attention.in_proj_weight[2 * width :]
        b_v = map_head.attention.in_proj_bias[2 * width :] if map_head.attention.in_proj_bias is not None else None

        def head(t: torch.Tensor) -> torch.Tensor:
            a = map_head.attention.out_proj(F.linear(vm.post_layernorm(t), w_v, b_v))
            return a + map_head.mlp(map_head.layernorm(a))

        prefix = 0
    else:

        def head(t: torch.Tensor) -> torch.Tensor:
            return encoder.model.visual_projection(vm.post_layernorm(t))

        prefix = 1
    return DenseTower(x, prefix, grid, last.layer_norm1, qkv, sa.out_proj, int(sa.num_heads), tail, head)


def _hf_embeddings(emb: torch.nn.Module, pixel_values: torch.Tensor, prefix: int, grid: tuple[int, int],
                   pos_interp: str) -> torch.Tensor:  # fmt: skip
    """transformers CLIP/SigLIP ``embeddings(pixel_values)`` with the position table resized by ``pos_interp``."""
    x = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
    if prefix:
        x = torch.cat([emb.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    table = emb.position_embedding.weight
    side = math.isqrt(table.shape[0] - prefix)
    return x + resize_pos_embed(table, prefix, (side, side), grid, pos_interp).to(x.dtype)


def dense_tower(
    encoder: OpenClipEncoder | HFClipEncoder, pixel_values: torch.Tensor, *, pos_interp: str = "size"
) -> DenseTower:
    """The CLIP family's ``dense_tower``: the open_clip ViT or ModifiedResNet tower, or transformers CLIP/SigLIP/SigLIP 2.

    ``pos_interp`` is how the position table is resized to a non-native grid (see
    :func:`visionfm.foundation.dense.resize_pos_embed`). SigLIP 2 NaFlex (``Siglip2Model``) ignores it: the model
    resizes its position table to every input grid itself (bilinear, antialiased), and the input is run as one grid
    with no padding."""
    if isinstance(encoder, OpenClipEncoder):
        if encoder.is_timm:
            trunk = encoder.model.visual.trunk
            if not (hasattr(trunk, "blocks") and hasattr(trunk, "num_prefix_tokens")):
                return _timm_cnn_tower(encoder, pixel_values, pos_interp)
            return _timm_vit_tower(encoder, pixel_values, pos_interp)
        if encoder.is_resnet:
            return _open_clip_resnet_tower(encoder, pixel_values, pos_interp)
        return _open_clip_vit_tower(encoder, pixel_values, pos_interp)
    if isinstance(encoder, HFClipEncoder):
        return _hf_tower(encoder, pixel_values, pos_interp)
    raise TypeError(f"expected an OpenClipEncoder or HFClipEncoder, got {type(encoder).__name__}")
