"""Conversion between the open_clip and transformers CLIP on-disk formats (``visionfm convert``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..loading import find_weights, read_state_dict
from ..preprocess import PreprocessConfig
from ..registry import LoadRequest
from .encoders import _detect, _open_clip_cfg

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# conversion between open_clip and transformers CLIP checkpoints
# ---------------------------------------------------------------------------------------------------
_BLOCK_MAP = [  # (open_clip suffix, transformers suffix)
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
]
_TOP_MAP = [  # (open_clip key, transformers key, transpose)
    ("visual.class_embedding", "vision_model.embeddings.class_embedding", False),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", False),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", False),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", False),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", False),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight", False),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias", False),
    ("visual.proj", "visual_projection.weight", True),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight", False),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight", False),
    ("ln_final.weight", "text_model.final_layer_norm.weight", False),
    ("ln_final.bias", "text_model.final_layer_norm.bias", False),
    ("text_projection", "text_projection.weight", True),
    ("logit_scale", "logit_scale", False),
]
_TOWERS = [
    ("visual.transformer.resblocks", "vision_model.encoder.layers"),
    ("transformer.resblocks", "text_model.encoder.layers"),
]


def open_clip_state_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape an open_clip ``CLIP`` (ViT) state dict into transformers ``CLIPModel`` keys.

    The fused attention input projection ``in_proj_weight [3W, W]`` splits into q/k/v; the
    projection matrices ``[W, D]`` become ``nn.Linear`` weights ``[D, W]``.
    """
    out: dict[str, torch.Tensor] = {}
    for oc, hf, tr in _TOP_MAP:
        if oc not in sd:
            raise KeyError(f"open_clip state dict has no {oc!r}: not a standard ViT CLIP checkpoint")
        out[hf] = sd[oc].t().contiguous() if tr else sd[oc]
    for oc_pre, hf_pre in _TOWERS:
        n = 1 + max(int(k[len(oc_pre) + 1 :].split(".")[0]) for k in sd if k.startswith(oc_pre + "."))
        for i in range(n):
            a, b = f"{oc_pre}.{i}.", f"{hf_pre}.{i}."
            for s_oc, s_hf in _BLOCK_MAP:
                out[b + s_hf] = sd[a + s_oc]
            for kind in ("weight", "bias"):
                q, k, v = sd[a + f"attn.in_proj_{kind}"].chunk(3)
                out[b + f"self_attn.q_proj.{kind}"] = q.contiguous()
                out[b + f"self_attn.k_proj.{kind}"] = k.contiguous()
                out[b + f"self_attn.v_proj.{kind}"] = v.contiguous()
    extra = [k for k in sd if not _known_open_clip_key(k)]
    if extra:
        raise KeyError(f"open_clip keys with no transformers equivalent (unsupported variant): {extra[:5]}")
    return out


def _known_open_clip_key(k: str) -> bool:
    if k in {oc for oc, _, _ in _TOP_MAP} or k == "attn_mask":
        return True
    return any(k.startswith(p + ".") for p, _ in _TOWERS)


def hf_state_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`open_clip_state_to_hf`."""
    out: dict[str, torch.Tensor] = {}
    for oc, hf, tr in _TOP_MAP:
        out[oc] = sd[hf].t().contiguous() if tr else sd[hf]
    for oc_pre, hf_pre in _TOWERS:
        n = 1 + max(int(k[len(hf_pre) + 1 :].split(".")[0]) for k in sd if k.startswith(hf_pre + "."))
        for i in range(n):
            a, b = f"{oc_pre}.{i}.", f"{hf_pre}.{i}."
            for s_oc, s_hf in _BLOCK_MAP:
                out[a + s_oc] = sd[b + s_hf]
            for kind in ("weight", "bias"):
                out[a + f"attn.in_proj_{kind}"] = torch.cat([sd[b + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
    return out


def _hf_config_from_open_clip(model_cfg: dict[str, Any]) -> Any:
    from transformers import CLIPConfig

    v, t = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    unsupported = {"ls_init_value", "attentional_pool", "no_ln_pre", "final_ln_after_pool", "proj_bias"}
    bad = [k for k in unsupported if v.get(k)] + [
        k for k in ("ls_init_value", "proj_bias", "no_causal_mask") if t.get(k)
    ]
    if isinstance(v.get("layers"), (list, tuple)):
        bad.append("ResNet image tower")
    if bad or v.get("pool_type", "tok") != "tok" or t.get("pool_type", "argmax") != "argmax" or "timm_model_name" in v:
        raise ValueError(f"this open_clip variant has no transformers CLIPModel equivalent ({bad or 'pooling/tower'})")
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    vw = int(v["width"])
    tw = int(t["width"])
    return CLIPConfig(
        projection_dim=int(model_cfg["embed_dim"]),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=int(vw * v.get("mlp_ratio", 4.0)),
            num_hidden_layers=int(v["layers"]),
            num_attention_heads=vw // int(v.get("head_width", 64)),
            image_size=int(v["image_size"]),
            patch_size=int(v["patch_size"]),
            hidden_act=act,
            layer_norm_eps=1e-5,
            projection_dim=int(model_cfg["embed_dim"]),
        ),
        text_config=dict(
            vocab_size=int(t.get("vocab_size", 49408)),
            hidden_size=tw,
            intermediate_size=int(tw * t.get("mlp_ratio", 4.0)),
            num_hidden_layers=int(t["layers"]),
            num_attention_heads=int(t.get("heads", 8)),
            max_position_embeddings=int(t.get("context_length", 77)),
            hidden_act=act,
            layer_norm_eps=1e-5,
            projection_dim=int(model_cfg["embed_dim"]),
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
    )


def _open_clip_config_from_hf(cfg: Any) -> dict[str, Any]:
    v, t = cfg.vision_config, cfg.text_config
    if v.hidden_act not in ("gelu", "quick_gelu") or t.hidden_act != v.hidden_act:
        raise ValueError(f"activation {v.hidden_act!r}/{t.hidden_act!r} has no open_clip equivalent")
    return {
        "embed_dim": int(cfg.projection_dim),
        "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": int(v.image_size),
            "layers": int(v.num_hidden_layers),
            "width": int(v.hidden_size),
            "head_width": int(v.hidden_size // v.num_attention_heads),
            "mlp_ratio": v.intermediate_size / v.hidden_size,
            "patch_size": int(v.patch_size),
        },
        "text_cfg": {
            "context_length": int(t.max_position_embeddings),
            "vocab_size": int(t.vocab_size),
            "width": int(t.hidden_size),
            "heads": int(t.num_attention_heads),
            "layers": int(t.num_hidden_layers),
            "mlp_ratio": t.intermediate_size / t.hidden_size,
        },
    }


def write_clip_tokenizer_files(path: Path) -> None:
    """Write transformers ``vocab.json`` + ``merges.txt`` + tokenizer config for the CLIP BPE.

    They are derived from the BPE table that ships inside open_clip, so both backends tokenize the
    same way with no download.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    tok = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip's spelling
    vocab = {rename.get(k, k): v for k, v in tok.encoder.items()}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair, _ in merges) + "\n")
    CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"), model_max_length=77).save_pretrained(
        path
    )


def convert_checkpoint(src: str | Path, dst: str | Path, *, to: str) -> Path:
    """Convert a CLIP checkpoint directory between on-disk formats.

    Args:
        src: an open_clip directory (``open_clip_config.json`` + weights) or a transformers
            ``CLIPModel`` directory.
        dst: output directory (created).
        to: ``"transformers"`` or ``"open_clip"``.

    Returns:
        ``dst``, loadable by ``load_encoder`` and by the target reference library.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    fmt = _detect(src)
    if fmt is None:
        raise ValueError(f"{src} is not a CLIP checkpoint directory")
    if to not in ("transformers", "open_clip"):
        raise ValueError(f"to must be 'transformers' or 'open_clip', got {to!r}")
    if fmt == to:
        raise ValueError(f"{src} is already in {to} format")
    dst.mkdir(parents=True, exist_ok=True)
    if to == "transformers":
        from transformers import CLIPImageProcessor, CLIPModel

        model_cfg, pp = _open_clip_cfg(LoadRequest(path=src, name=str(src), backend="open_clip", options={}))
        sd = read_state_dict(find_weights(src, ["open_clip_model.safetensors"], [], allow_pickle=False))
        model = CLIPModel(_hf_config_from_open_clip(model_cfg))
        missing, unexpected = model.load_state_dict(open_clip_state_to_hf(sd), strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.save_pretrained(dst)
        CLIPImageProcessor(**PreprocessConfig.from_open_clip(pp).to_hf()).save_pretrained(dst)
        write_clip_tokenizer_files(dst)
    else:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(src, use_safetensors=True)
        if model.config.model_type != "clip":
            raise ValueError("only CLIP (not SigLIP) transformers checkpoints convert to open_clip")
        pp = PreprocessConfig.from_hf_dir(src, "CLIPImageProcessor")
        if pp is None:
            raise ValueError(f"{src} has no preprocessor_config.json to carry over")
        cfg = {
            "model_cfg": _open_clip_config_from_hf(model.config),
            "preprocess_cfg": {
                "size": pp.image_size[0],
                "mode": "RGB",
                "mean": list(pp.mean),
                "std": list(pp.std),
                "interpolation": pp.interpolation,
                "resize_mode": "shortest" if pp.resize == "shortest_edge" else "squash",
            },
        }
        (dst / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
        sd = hf_state_to_open_clip({k: v.detach().contiguous() for k, v in model.state_dict().items()})
        save_file(sd, str(dst / "open_clip_model.safetensors"))
    logger.info("converted %s (%s) -> %s (%s)", src, fmt, dst, to)
    return dst
