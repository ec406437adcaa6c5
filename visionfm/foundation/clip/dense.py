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
        if encoder.is_resnet:
            return _open_clip_resnet_tower(encoder, pixel_values, pos_interp)
        return _open_clip_vit_tower(encoder, pixel_values, pos_interp)
    if isinstance(encoder, HFClipEncoder):
        return _hf_tower(encoder, pixel_values, pos_interp)
    raise TypeError(f"expected an OpenClipEncoder or HFClipEncoder, got {type(encoder).__name__}")
