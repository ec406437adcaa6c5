"""Tiny seeded DINO (v1) ViT built by facebookresearch/dino's own vision_transformer.py, and its conversion to a
transformers ``ViTModel`` directory (the format of facebook/dino-vitb16 on the hub). Used by make_trident.py
(patch 16) and make_corrclip.py (patch 8). (make_proxyclip.py builds its DINO proxy with its own recipe.)

DINO's code is imported from ref_paths.src("dino") (facebookresearch/dino @ REFS["dino"], fetched by fetch_refs.py).

The model: ``VisionTransformer(patch_size, embed_dim 64, depth 2, heads 2, mlp_ratio 4, qkv_bias, LayerNorm eps 1e-6,
num_classes 0)`` (hubconf's dino_vitb* at a tiny width; img_size [224] -> a 224/patch position grid), constructed
after ``torch.manual_seed(seed)``, then + 0.02 * randn (``torch.Generator().manual_seed(seed + 1000)``) on every
parameter in ``parameters()`` order (LayerNorms init to 1/0 and biases to 0: nothing stays trivial).

Key mapping DINO hub -> transformers ViTModel (add_pooling_layer=False). In-memory names of transformers 5.x
(the names the installed version loads with load_state_dict); the legacy 4.x on-disk names are in brackets:
  cls_token                      -> embeddings.cls_token
  pos_embed                      -> embeddings.position_embeddings
  patch_embed.proj.{w,b}         -> embeddings.patch_embeddings.projection.{w,b}
  blocks.i.norm1                 -> layers.i.layernorm_before              [encoder.layer.i.layernorm_before]
  blocks.i.attn.qkv (3D x D)     -> layers.i.attention.{q,k,v}_proj        [encoder.layer.i.attention.attention.{query,key,value}]
                                    (rows [0:D], [D:2D], [2D:3D] of qkv)
  blocks.i.attn.proj             -> layers.i.attention.o_proj              [encoder.layer.i.attention.output.dense]
  blocks.i.norm2                 -> layers.i.layernorm_after               [encoder.layer.i.layernorm_after]
  blocks.i.mlp.fc1 / fc2         -> layers.i.mlp.fc1 / fc2                 [encoder.layer.i.intermediate.dense / output.dense]
  norm                           -> layernorm
The transformers model interpolates position embeddings differently from DINO (which scales by (h/p + 0.1)/sqrt(N)),
so the two agree exactly only at the native 224 px grid (the parity printed by save_tiny_dino).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import ref_paths
import torch
import torch.nn as nn

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=4)
PERTURB = 0.02
DESCRIPTION = (
    "facebookresearch/dino {commit8} VisionTransformer patch{patch} embed64 depth2 heads2 seed{seed} "
    "(+0.02 randn, gen seed {gen_seed})"
)


def describe(patch_size: int, seed: int) -> str:
    """The one-line description the goldens' metadata carry under "dino"."""
    return DESCRIPTION.format(commit8=ref_paths.REFS["dino"][1][:8], patch=patch_size, seed=seed, gen_seed=seed + 1000)


def _vision_transformer():
    """DINO's vision_transformer module (it does ``from utils import trunc_normal_``: DINO's utils.py)."""
    if "vision_transformer" not in sys.modules:
        dino_src = str(ref_paths.src("dino"))
        sys.path.insert(0, dino_src)
        try:
            import vision_transformer  # noqa: F401  (DINO's own code)
        finally:
            sys.path.remove(dino_src)
    module = sys.modules["vision_transformer"]
    assert Path(module.__file__).resolve().parent == ref_paths.src("dino").resolve(), module.__file__
    return module


def build_tiny_dino(patch_size: int, seed: int) -> nn.Module:
    """The tiny DINO ViT of the module docstring, in eval mode. Note: reseeds torch's global RNG (seed)."""
    vits = _vision_transformer()
    torch.manual_seed(seed)
    model = vits.VisionTransformer(
        patch_size=patch_size, num_classes=0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **TINY
    )
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1000)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * PERTURB)
    return model.eval()


def dino_to_hf_state_dict(sd: dict, depth: int) -> dict:
    """facebookresearch/dino state dict -> transformers (5.x) ViTModel(add_pooling_layer=False) state dict."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    pairs = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for i in range(depth):
        s, t = f"blocks.{i}.", f"layers.{i}."
        d = sd[s + "attn.qkv.weight"].shape[1]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[t + f"attention.{name}.weight"] = sd[s + "attn.qkv.weight"][j * d : (j + 1) * d]
            out[t + f"attention.{name}.bias"] = sd[s + "attn.qkv.bias"][j * d : (j + 1) * d]
        for a, b in pairs.items():
            out[t + b + ".weight"] = sd[s + a + ".weight"]
            out[t + b + ".bias"] = sd[s + a + ".bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def save_tiny_dino(model: nn.Module, patch_size: int, out_dir: Path, native_name: str) -> None:
    """``out_dir/native_name`` (torch.save of the state dict, DINO key names) and ``out_dir/hf_vit/`` (transformers
    ViTModel: config.json + model.safetensors; no preprocessor_config.json)."""
    from transformers import ViTConfig, ViTModel

    out_dir.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    torch.save(sd, out_dir / native_name)
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    cfg = ViTConfig(
        hidden_size=TINY["embed_dim"],
        num_hidden_layers=TINY["depth"],
        num_attention_heads=TINY["num_heads"],
        intermediate_size=TINY["embed_dim"] * TINY["mlp_ratio"],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=grid * patch_size,
        patch_size=patch_size,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf = ViTModel(cfg, add_pooling_layer=False)
    hf.load_state_dict(dino_to_hf_state_dict(sd, TINY["depth"]), strict=True)
    hf.save_pretrained(out_dir / "hf_vit", safe_serialization=True)
    # parity at the native grid (no position interpolation): last-layer normed tokens
    x = torch.randn(1, 3, grid * patch_size, grid * patch_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model.get_intermediate_layers(x, n=1)[0]
        b = hf.eval()(pixel_values=x).last_hidden_state
    err = (a - b).abs().max().item()
    assert err < 1e-4, err
    print(f"[tiny_dino] HF ViTModel parity at {grid * patch_size}px: max abs err {err:.2e}")
