"""AIMv2 through transformers' ``Aimv2Model`` (image and text towers, LiT) and ``Aimv2VisionModel`` (image only).

The transformers checkpoint directory is the on-disk format: ``config.json`` with ``model_type`` ``aimv2`` (the
CLIP-like image-text model, ``apple/aimv2-large-patch14-224-lit``) or ``aimv2_vision_model`` (the image encoders,
``apple/aimv2-{large,huge,1B,3B}-patch14-{224,336,448}`` and ``-native``), ``model.safetensors``,
``preprocessor_config.json`` and, for the image-text model, the CLIP BPE tokenizer files (``vocab.json``,
``merges.txt``, ``tokenizer_config.json``). Preprocessing reproduces the checkpoints' ``CLIPImageProcessor``
(short side resize, bicubic, centre crop, OpenAI CLIP mean/std).

AIMv2 has no class token: every output token is a patch token, and ``Features.cls`` is ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, TextEncoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

TEXT_MODEL_TYPE = "aimv2"  # Aimv2Model: image and text towers with projections (LiT)
VISION_MODEL_TYPE = "aimv2_vision_model"  # Aimv2VisionModel: the image tower alone
MODEL_TYPES = (TEXT_MODEL_TYPE, VISION_MODEL_TYPE)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers AIMv2 checkpoint (either model type), else ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt in MODEL_TYPES else None


def _patch(vcfg: Any) -> int:
    p = vcfg.patch_size
    if not isinstance(p, int):
        if p[0] != p[1]:
            raise ValueError(f"non-square patches {tuple(p)} are not supported")
        p = p[0]
    return int(p)


def load_preprocess_config(path: Path, image_size: int) -> PreprocessConfig:
    """The checkpoint's ``preprocessor_config.json`` (a ``CLIPImageProcessor``) as a :class:`PreprocessConfig`.

    Without the file, or when it fixes no input size (``apple/aimv2-large-patch14-native`` turns resize and crop
    off and feeds images at their own size, which cannot be batched), uses the fixed-resolution checkpoints'
    processor (short side ``image_size``, bicubic, centre crop ``image_size``, OpenAI mean/std) with a warning.
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "CLIPImageProcessor")
    fallback = PreprocessConfig(
        resize_size=image_size, crop_size=(image_size, image_size), mean=OPENAI_MEAN, std=OPENAI_STD
    )
    if pp is None:
        logger.warning(
            "%s has no preprocessor_config.json; using AIMv2's CLIPImageProcessor (shortest edge %d, bicubic, centre "
            "crop %d, OpenAI mean/std)", path, image_size, image_size,
        )  # fmt: skip
        return fallback
    if pp.resize == "none" and pp.crop_size is None and pp.pad_size is None:
        logger.warning(
            "%s: its processor feeds each image at its own size (native resolution), which visionfm cannot batch; "
            "resizing to shortest edge %d and centre-cropping %d instead", path, image_size, image_size,
        )  # fmt: skip
        return fallback.with_overrides(mean=pp.mean, std=pp.std, interpolation=pp.interpolation)
    return pp


class _Aimv2Vision:
    """The image-tower forward shared by both encoders."""

    def _vision_forward(
        self, vm: Any, pixel_values: torch.Tensor, idx: list[int]
    ) -> tuple[Any, torch.Tensor, tuple[int, int], dict[int, torch.Tensor]]:
        p = self._info.patch_size  # type: ignore[attr-defined]
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        with tap_blocks(vm.encoder.layers, idx) as taps:
            out = vm(pixel_values=pixel_values.to(self.dtype), return_dict=True)  # type: ignore[attr-defined]
        return out, tokens_to_grid(out.last_hidden_state, grid), grid, taps

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks (AIMv2 has no class token)."""
        model = self.model  # type: ignore[attr-defined]
        vm = getattr(model, "vision_model", model)
        return TokenMergingSites(blocks=vm.encoder.layers, prefix=0)


class Aimv2VisionEncoder(_Aimv2Vision, Encoder):
    """An AIMv2 image encoder (transformers ``Aimv2VisionModel``).

    ``Features``: ``patches`` the final RMS-normed tokens ``[B, h, w, C]`` (transformers' ``last_hidden_state``; no
    class token); ``pooled`` transformers' ``pooler_output`` (the attention-pooling head) when the checkpoint has a
    head (``use_head``), else the mean of ``patches`` over the grid (the released ``apple/aimv2-*`` image encoders
    have no head: ``pooler_output`` is ``None``); ``cls`` ``None``; ``layers`` raw block outputs, before the final
    norm.

    Args:
        model: a transformers ``Aimv2VisionModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        info = EncoderInfo(
            family="aimv2",
            backend="transformers",
            name=name,
            embed_dim=int(cfg.hidden_size),
            width=int(cfg.hidden_size),
            patch_size=_patch(cfg),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(cfg.num_hidden_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one model pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is ``(H // patch, W // patch)``.
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers``
            ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        out, patches, grid, taps = self._vision_forward(self.model, pixel_values, idx)
        pooled = out.pooler_output if out.pooler_output is not None else patches.mean(dim=(1, 2))
        return Features(
            pooled=pooled,
            patches=patches,
            grid=grid,
            layers={i: tokens_to_grid(taps[i], grid) for i in idx},
        )


def _make_text_tower_causal(model: Any) -> None:
    """Make every text-tower attention causal, also for a batch without padding.

    AIMv2's text tower is causal (the LiT checkpoint's config says ``is_causal``). transformers' ``Aimv2TextModel``
    builds the causal mask from ``attention_mask``, but its attention modules say ``is_causal = False``: when no text
    in a batch is padded, the SDPA and flash paths skip the (all-causal) mask and attend bidirectionally, so a
    text's embedding depends on the other texts in its batch. With ``is_causal = True`` they apply the causal mask
    in that case too; padded batches (and the eager path, which always builds the mask) are unchanged.
    """
    for layer in model.text_model.encoder.layers:
        layer.attention.is_causal = True


class Aimv2TextEncoder(_Aimv2Vision, TextEncoder):
    """The AIMv2 image-text model (transformers ``Aimv2Model``, the LiT checkpoint).

    ``Features``: ``pooled`` the projected image embedding (transformers' ``get_image_features``: attention-pooling
    head, then ``visual_projection``), in the space :meth:`encode_text` maps texts to; ``patches`` the final
    RMS-normed image tokens ``[B, h, w, C]`` before the head (no class token, ``cls`` is ``None``); ``layers`` raw
    block outputs. ``encode_text`` is ``get_text_features`` on the CLIP tokenizer's output (the text tower is
    causal and reads the first end-of-text token; see :func:`_make_text_tower_causal` for a transformers quirk this
    corrects, so that a text's embedding never depends on the other texts in its batch).

    Args:
        model: a transformers ``Aimv2Model``.
        tokenizer: the checkpoint's tokenizer (a ``CLIPTokenizer``).
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    logit_bias = None  # softmax-trained (contrastive), no sigmoid bias

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        vcfg = cfg.vision_config
        info = EncoderInfo(
            family="aimv2",
            backend="transformers",
            name=name,
            embed_dim=int(cfg.projection_dim),
            width=int(vcfg.hidden_size),
            patch_size=_patch(vcfg),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=True,
            num_layers=int(vcfg.num_hidden_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        self.text_max_length = int(cfg.text_config.max_position_embeddings)
        _make_text_tower_causal(model)

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        """The multiplier on cosine similarities: ``exp`` of the learned temperature, clamped to
        ``config.max_logit_scale`` as ``Aimv2Model.forward`` does."""
        return float(self.model.logit_scale.detach().clamp(0.0, self.model.max_log_logit_scale).exp())

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one model pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is ``(H // patch, W // patch)``.
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, D]`` (``D = info.embed_dim``), ``patches`` ``[B, h, w, C]`` and
            ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        out, patches, grid, taps = self._vision_forward(self.model.vision_model, pixel_values, idx)
        return Features(
            pooled=self.model.visual_projection(out.pooler_output),
            patches=patches,
            grid=grid,
            layers={i: tokens_to_grid(taps[i], grid) for i in idx},
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[N, L]``, padded to the longest text and truncated to the context.

        The attention mask is always passed: transformers' ``Aimv2TextModel`` applies its causal mask only with one.
        """
        enc = self.tokenizer(texts, max_length=self.text_max_length, truncation=True, padding=True, return_tensors="pt")
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    @property
    def context_length(self) -> int:  # type: ignore[override]
        """Tokens the text tower reads (``max_position_embeddings``, 77), special tokens included."""
        return self.text_max_length

    def _is_overlong(self, texts: list[str]) -> list[bool]:
        ids = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return [len(x) > self.text_max_length for x in ids]

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        """transformers' ``get_text_features`` (:meth:`encode_text` batches and warns about over-long texts)."""
        out = self.model.get_text_features(**self.tokenize(texts))
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 / 5


def build(req: LoadRequest) -> Encoder:
    """Build an :class:`Aimv2TextEncoder` (``model_type`` ``aimv2``) or :class:`Aimv2VisionEncoder`
    (``aimv2_vision_model``) from a transformers checkpoint directory."""
    from transformers import AutoModel

    model = load_hf_model(AutoModel, req.path, allow_pickle=req.allow_pickle)
    kind = model.config.model_type
    if kind not in MODEL_TYPES:
        raise ValueError(f"{req.path} holds a {kind!r} model, not AIMv2")
    vcfg = model.config.vision_config if kind == TEXT_MODEL_TYPE else model.config
    size = vcfg.image_size if isinstance(vcfg.image_size, int) else int(vcfg.image_size[0])
    pp = load_preprocess_config(req.path, int(size))
    if kind == VISION_MODEL_TYPE:
        return Aimv2VisionEncoder(model, pp, name=req.name)
    from transformers import AutoTokenizer

    return Aimv2TextEncoder(model, AutoTokenizer.from_pretrained(req.path), pp, name=req.name)


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in AIMv2 encoders (the family's ``peft_layout``): the image tower's blocks.

    ``Aimv2Model`` keeps the image tower under ``vision_model.`` (the text tower under ``text_model.`` is only
    adapted when named explicitly); ``Aimv2VisionModel`` is the image tower itself.
    """
    text = bool(encoder.info.has_text)
    pre = r"vision_model\." if text else ""
    return TargetLayout(
        description=f"aimv2 ({'image-text' if text else 'image'}, transformers)",
        image_roots=("vision_model", "visual_projection") if text else ("",),
        attention=(rf"{pre}encoder\.layers\.{_B}\.attention\.(q_proj|k_proj|v_proj|out_proj)",),
        mlp=(rf"{pre}encoder\.layers\.{_B}\.ffn\.(gate_proj|up_proj|down_proj)",),
    )


register_family(
    Family(
        name="aimv2",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="Apple AIMv2 autoregressively pre-trained ViTs (no class token); the LiT variant adds a text tower",
        formats="transformers (config.json with model_type aimv2 / aimv2_vision_model)",
        peft_layout=peft_layout,
    )
)

register_model(
    ModelSpec(
        name="aimv2-large-lit",
        family="aimv2",
        source="apple/aimv2-large-patch14-224-lit",
        backend="transformers",
        description="AIMv2 ViT-L/14 224px with a LiT-trained text tower (zero-shot classification)",
    )
)
_SIZES = {
    "large": "ViT-L/14, 0.3B params, width 1024",
    "huge": "ViT-H/14, 0.6B params, width 1536",
    "1B": "ViT-1B/14, 1.2B params, width 2048",
    "3B": "ViT-3B/14, 2.7B params, width 3072",
}
for _size, _desc in _SIZES.items():
    for _res in (224, 336, 448):
        register_model(
            ModelSpec(
                name=f"aimv2-{_size.lower()}-{_res}",
                family="aimv2",
                source=f"apple/aimv2-{_size}-patch14-{_res}",
                backend="transformers",
                description=f"AIMv2 {_desc}, {_res}px image encoder",
            )
        )
register_model(
    ModelSpec(
        name="aimv2-large-native",
        family="aimv2",
        source="apple/aimv2-large-patch14-native",
        backend="transformers",
        description="AIMv2 ViT-L/14 trained at native resolution (sinusoidal positions; visionfm resizes to 224)",
    )
)
