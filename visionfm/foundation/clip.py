"""CLIP and SigLIP: open_clip and transformers backends behind one ``Features`` contract.

Both backends return the same things for the same weights:

- ``pooled``: the projected image embedding, in the space ``encode_text`` maps texts to.
- ``patches``: final patch tokens after the last layer norm, before projection (open_clip's
  ``output_tokens`` convention; transformers' CLIP applies ``post_layernorm`` only to the class
  token, so it is applied here to the whole sequence).
- ``cls``: the class token after the last layer norm (CLIP); SigLIP has no class token.

:func:`convert_checkpoint` moves a CLIP checkpoint between the open_clip and transformers on-disk
formats, so the same weights run on either backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import find_weights, hf_model_type, read_json, read_state_dict
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, register_family, register_model

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_HF_CLIP_TYPES = ("clip", "siglip")


def _as_tensor(out: Any) -> torch.Tensor:
    """transformers 5 returns model outputs from ``get_*_features``; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _texts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_text expects a string or a non-empty list of strings")
    return texts


class _ClipBase(Encoder):
    """Shared text batching for both backends."""

    logit_scale: float
    logit_bias: float | None

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embed texts into the image-text space.

        Args:
            texts: one string or a list of strings.
            batch_size: texts per forward pass.

        Returns:
            ``[N, D]`` text embeddings (not normalised), ``D = info.embed_dim``.
        """
        texts = _texts(texts)
        with torch.inference_mode():
            return torch.cat(
                [self._embed_text_batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
            )


# ---------------------------------------------------------------------------------------------------
# open_clip backend
# ---------------------------------------------------------------------------------------------------
class OpenClipEncoder(_ClipBase):
    """An open_clip ``CLIP`` model with an open_clip ``VisionTransformer`` or ``ModifiedResNet`` image tower.

    For the ResNet tower (the OpenAI ``RN50``-style CNN with attention pooling), ``patches`` is the last
    stage's feature map (stride 32) before the attention pool, ``pooled`` the attention-pooled
    embedding, ``cls`` is ``None``, and ``layers=[0..3]`` taps the four stages (each on its own grid).
    """

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str) -> None:
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        visual = model.visual
        self.is_resnet = isinstance(visual, ModifiedResNet)
        if not (self.is_resnet or isinstance(visual, VisionTransformer)):
            raise ValueError(
                f"{name!r}: the open_clip backend supports open_clip's own ViT and ModifiedResNet image towers, not "
                f"{type(visual).__name__}; use a transformers checkpoint of this model instead"
            )
        if self.is_resnet:
            width, patch, n_layers = visual.layer4[-1].conv3.out_channels, 32, 4
        else:
            width, patch, n_layers = visual.conv1.out_channels, visual.patch_size[0], len(visual.transformer.resblocks)
        info = EncoderInfo(
            family="clip",
            backend="open_clip",
            name=name,
            embed_dim=int(visual.output_dim),
            width=int(width),
            patch_size=int(patch),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=True,
            num_layers=int(n_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        self.logit_bias = float(model.logit_bias.detach()) if getattr(model, "logit_bias", None) is not None else None

    def _forward_resnet(self, pixel_values: torch.Tensor, idx: list[int]) -> Features:
        v = self.model.visual
        x = v.stem(pixel_values)
        taps = {}
        for i, stage in enumerate((v.layer1, v.layer2, v.layer3, v.layer4)):
            x = stage(x)
            if i in idx:
                taps[i] = x.permute(0, 2, 3, 1)
        patches = x.permute(0, 2, 3, 1)
        return Features(pooled=v.attnpool(x), patches=patches, grid=tuple(patches.shape[1:3]), layers=taps)

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        """exp of the learned temperature (the multiplier on cosine similarities)."""
        return float(self.model.logit_scale.detach().exp())

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        v = self.model.visual
        idx = self._layer_indices(layers)
        if self.is_resnet:
            return self._forward_resnet(pixel_values, idx)
        grid = (pixel_values.shape[-2] // v.patch_size[0], pixel_values.shape[-1] // v.patch_size[1])
        x = v._embeds(pixel_values)
        with tap_blocks(v.transformer.resblocks, idx) as taps:
            x = v.transformer(x)
        pooled, tokens = v._pool(x)
        cls = pooled if v.pool_type == "tok" else None
        if v.proj is not None:
            pooled = pooled @ v.proj
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(tokens, grid),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=1) for i in idx},
        )

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)


def _open_clip_cfg(req: LoadRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) from ``open_clip_config.json`` or the open_clip tag's built-in config."""
    cfg_path = req.path / "open_clip_config.json"
    model_cfg: dict[str, Any] | None = None
    pp: dict[str, Any] = {}
    if cfg_path.is_file():
        raw = read_json(cfg_path)
        model_cfg = raw.get("model_cfg", raw)
        pp = dict(raw.get("preprocess_cfg", {}))
    arch = req.extra.get("open_clip_arch")
    pcfg = dict(req.extra.get("open_clip_pretrained_cfg") or {})
    if model_cfg is None:
        if not arch:
            raise ValueError(f"{req.path} has no open_clip_config.json")
        import open_clip

        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"open_clip has no config for {arch!r}")
    model_cfg = dict(model_cfg)
    if pcfg.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    for key in ("mean", "std", "interpolation", "resize_mode"):
        if key in pcfg and key not in pp:
            pp[key] = pcfg[key]
    pp.setdefault("size", model_cfg["vision_cfg"].get("image_size", 224))
    return model_cfg, pp


def _build_open_clip(req: LoadRequest) -> OpenClipEncoder:
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP

    model_cfg, pp = _open_clip_cfg(req)
    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    model = (CustomTextCLIP if custom else CLIP)(**cfg)
    weights = find_weights(
        req.path,
        ["open_clip_model.safetensors", "model.safetensors"],
        ["open_clip_pytorch_model.bin", "pytorch_model.bin"],
        allow_pickle=req.allow_pickle,
    )
    if weights.suffix != ".safetensors":
        read_state_dict(weights, allow_pickle=req.allow_pickle)  # fails fast on a malicious pickle
    open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
    arch = req.extra.get("open_clip_arch")
    tokenizer = open_clip.get_tokenizer(arch) if arch and not (req.path / "open_clip_config.json").is_file() else None
    if tokenizer is None:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{req.path}")
    return OpenClipEncoder(model, tokenizer, PreprocessConfig.from_open_clip(pp), req.name)


# ---------------------------------------------------------------------------------------------------
# transformers backend (CLIP and SigLIP)
# ---------------------------------------------------------------------------------------------------
class HFClipEncoder(_ClipBase):
    """A transformers ``CLIPModel`` or ``SiglipModel``."""

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        self.kind = cfg.model_type
        vcfg = cfg.vision_config
        embed_dim = cfg.projection_dim if self.kind == "clip" else vcfg.hidden_size
        info = EncoderInfo(
            family="clip",
            backend="transformers",
            name=name,
            embed_dim=int(embed_dim),
            width=int(vcfg.hidden_size),
            patch_size=int(vcfg.patch_size),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=True,
            num_layers=int(vcfg.num_hidden_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach()) if bias is not None else None
        self.text_max_length = int(cfg.text_config.max_position_embeddings)

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        """exp of the learned temperature (the multiplier on cosine similarities)."""
        return float(self.model.logit_scale.detach().exp())

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        vm = self.model.vision_model
        idx = self._layer_indices(layers)
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        with tap_blocks(vm.encoder.layers, idx) as taps:
            out = vm(pixel_values=pixel_values, return_dict=True)
        last = out.last_hidden_state
        if self.kind == "clip":
            normed = vm.post_layernorm(last)
            pooled = self.model.visual_projection(out.pooler_output)
            prefix, cls = 1, normed[:, 0]
        else:  # siglip: last_hidden_state is already normed; attention-pool head gives pooler_output
            normed, pooled, prefix, cls = last, out.pooler_output, 0, None
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(normed, grid, prefix=prefix),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Model text inputs, as the checkpoint's tokenizer declares them (``model_input_names``).

        SigLIP is trained on texts padded to the maximum length, so it is always padded that way.
        """
        pad = dict(padding="max_length") if self.kind == "siglip" else dict(padding=True)
        enc = self.tokenizer(texts, max_length=self.text_max_length, truncation=True, return_tensors="pt", **pad)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        return _as_tensor(self.model.get_text_features(**self.tokenize(texts)))


def _build_hf(req: LoadRequest) -> HFClipEncoder:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(req.path, use_safetensors=None if req.allow_pickle else True)
    tokenizer = AutoTokenizer.from_pretrained(req.path)
    kind = model.config.model_type
    pp = PreprocessConfig.from_hf_dir(req.path, "SiglipImageProcessor" if kind == "siglip" else "CLIPImageProcessor")
    if pp is None:
        size = int(model.config.vision_config.image_size)
        logger.warning("%s has no preprocessor_config.json; using the %s defaults", req.path, model.config.model_type)
        if model.config.model_type == "siglip":
            pp = PreprocessConfig(resize="exact", crop_size=(size, size), mean=(0.5,) * 3, std=(0.5,) * 3)  # type: ignore[arg-type]
        else:
            pp = PreprocessConfig(resize_size=size, crop_size=(size, size))
    return HFClipEncoder(model, tokenizer, pp, req.name)


# ---------------------------------------------------------------------------------------------------
# family
# ---------------------------------------------------------------------------------------------------
def _detect(path: Path) -> str | None:
    if (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
        return "open_clip"
    if hf_model_type(path) in _HF_CLIP_TYPES:
        return "transformers"
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    return None


def _build(req: LoadRequest) -> Encoder:
    fmt = req.extra.get("format", req.backend)
    if req.backend != fmt:
        raise ValueError(
            f"{req.name!r} is a {fmt} checkpoint; to run it on the {req.backend} backend convert it once with "
            f"`visionfm convert {req.path} OUT_DIR --to {req.backend}` (visionfm.foundation.clip.convert_checkpoint)"
        )
    return _build_open_clip(req) if req.backend == "open_clip" else _build_hf(req)


register_family(
    Family(
        name="clip",
        backends=("open_clip", "transformers"),
        detect=_detect,
        build=_build,
        description="CLIP and SigLIP image-text encoders (open_clip or transformers weights)",
    )
)
for _name, _src, _desc in [
    ("clip-vit-b-32", "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32, 224px"),
    ("clip-vit-b-16", "openai/clip-vit-base-patch16", "OpenAI CLIP ViT-B/16, 224px"),
    ("clip-vit-l-14", "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14, 224px"),
    ("clip-vit-l-14-336", "openai/clip-vit-large-patch14-336", "OpenAI CLIP ViT-L/14, 336px"),
    ("openclip-vit-b-16-openai", "ViT-B-16/openai", "OpenAI CLIP ViT-B/16 via open_clip (QuickGELU)"),
    ("openclip-vit-b-16-laion2b", "ViT-B-16/laion2b_s34b_b88k", "open_clip ViT-B/16 trained on LAION-2B"),
    ("openclip-vit-l-14-laion2b", "ViT-L-14/laion2b_s32b_b82k", "open_clip ViT-L/14 trained on LAION-2B"),
    ("openclip-vit-h-14-laion2b", "ViT-H-14/laion2b_s32b_b79k", "open_clip ViT-H/14 trained on LAION-2B"),
    ("siglip-base", "google/siglip-base-patch16-224", "SigLIP ViT-B/16, 224px (sigmoid loss)"),
    ("siglip-base-384", "google/siglip-base-patch16-384", "SigLIP ViT-B/16, 384px"),
    ("siglip-large", "google/siglip-large-patch16-384", "SigLIP ViT-L/16, 384px"),
    ("siglip-so400m", "google/siglip-so400m-patch14-384", "SigLIP So400m/14, 384px"),
]:
    _backend = "open_clip" if _src.startswith("ViT-") else "transformers"
    register_model(ModelSpec(name=_name, family="clip", source=_src, backend=_backend, description=_desc))


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
