"""DINO (v1) ViTs through transformers' ``ViTModel``: the proxy ProxyCLIP uses (``dino_vitb8``), and any other
transformers ViT checkpoint.

The on-disk format is a transformers ``ViTModel`` directory (``config.json`` with ``model_type`` ``vit``,
``model.safetensors``, ``preprocessor_config.json``), as ``facebook/dino-vitb8`` / ``facebook/dino-vitb16`` /
``facebook/dino-vits8`` / ``facebook/dino-vits16`` ship. Preprocessing is the checkpoint's ``ViTImageProcessor``
(a square resize to 224, ImageNet mean/std).

At input sizes other than the native one, the position table is resized as DINO's own ``interpolate_pos_encoding``
does (bicubic with ``scale_factor = (g + 0.1) / g0``; :func:`visionfm.foundation.dense.resize_pos_embed`), not as
transformers' ``ViTEmbeddings`` does (``size=``): that is what the DINO torch.hub models (and ProxyCLIP through them)
compute; the two differ by up to 1.5e-2 in ProxyCLIP's scores on the tiny test model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .dense import resize_pos_embed
from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

MODEL_TYPES = ("vit",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: What facebook/dino-* ship in preprocessor_config.json (a ViTImageProcessor: square resize, no crop).
DEFAULT_PREPROCESS = PreprocessConfig(
    resize="exact",
    resize_size=None,
    interpolation="bilinear",
    crop_size=(224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers ``ViTModel`` checkpoint (``model_type`` ``vit``)."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt in MODEL_TYPES else None


def load_preprocess_config(path: Path) -> PreprocessConfig:
    """The checkpoint's ``preprocessor_config.json``, or DINO's (224 square, ImageNet mean/std) with a warning."""
    pp = PreprocessConfig.from_hf_dir(Path(path), "ViTImageProcessor")
    if pp is None:
        logger.warning("%s has no preprocessor_config.json; using DINO's (224x224 resize, ImageNet mean/std)", path)
        return DEFAULT_PREPROCESS
    return pp


class DinoEncoder(Encoder):
    """DINO / transformers ViT image encoder.

    ``Features``: ``pooled`` and ``cls`` are the layer-normed CLS token ``[B, C]``; ``patches`` the layer-normed
    patch tokens ``[B, h, w, C]`` (what DINO's ``get_intermediate_layers(x)[0][:, 1:]`` returns, ProxyCLIP's proxy
    features); ``layers`` raw block outputs (before the final norm) on the patch grid.

    Args:
        model: a transformers ``ViTModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        patch = int(cfg.patch_size)
        info = EncoderInfo(
            family="dino",
            backend="transformers",
            name=name,
            embed_dim=int(cfg.hidden_size),
            width=int(cfg.hidden_size),
            patch_size=patch,
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(cfg.num_hidden_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self._native = (int(cfg.image_size) // patch,) * 2

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The transformer blocks (``model.layers`` in transformers 5, ``model.encoder.layer`` in 4)."""
        return self.model.layers if hasattr(self.model, "layers") else self.model.encoder.layer

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch + class embeddings with the position table resized DINO's way: ``[B, 1 + h*w, C]``."""
        emb = self.model.embeddings
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        x = emb.patch_embeddings.projection(pixel_values.to(self.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([emb.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        pos = resize_pos_embed(emb.position_embeddings[0], 1, self._native, grid, "dino")
        return emb.dropout(x + pos.to(x.dtype))

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks, after the class token."""
        return TokenMergingSites(blocks=self.blocks, prefix=1)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is ``(H // patch, W // patch)`` (a remainder is
                dropped, as the stride-``patch`` conv does).
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled``/``cls`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers``
            ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        x = self.embed(pixel_values)
        blocks = self.blocks
        with tap_blocks(blocks, idx) as taps:
            for blk in blocks:
                out = blk(x, None)
                x = out[0] if isinstance(out, (tuple, list)) else out
        last = self.model.layernorm(x)
        cls = last[:, 0]
        return Features(
            pooled=cls,
            patches=tokens_to_grid(last, grid, prefix=1),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=1) for i in idx},
        )


def build(req: LoadRequest) -> DinoEncoder:
    """Build a :class:`DinoEncoder` from a transformers ``ViTModel`` directory."""
    from transformers import ViTModel

    class _WithoutPooler:  # DINO checkpoints have no (trained) pooler; the encoder never uses one
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            return ViTModel.from_pretrained(*args, add_pooling_layer=False, **kwargs)

    model = load_hf_model(_WithoutPooler, req.path, allow_pickle=req.allow_pickle)
    if model.config.model_type not in MODEL_TYPES:
        raise ValueError(f"{req.path} holds a {model.config.model_type!r} model, not a ViT")
    return DinoEncoder(model, load_preprocess_config(req.path), name=req.name)


_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in transformers ViTs (the family's ``peft_layout``)."""
    return TargetLayout(
        description="dino / vit (transformers)",
        attention=(
            rf"layers\.{_B}\.attention\.(q_proj|k_proj|v_proj|o_proj)",  # transformers >= 5
            rf"encoder\.layer\.{_B}\.attention\.(attention\.(query|key|value)|output\.dense)",  # transformers 4
        ),
        mlp=(rf"layers\.{_B}\.mlp\.(fc1|fc2)", rf"encoder\.layer\.{_B}\.(intermediate\.dense|output\.dense)"),
    )


register_family(
    Family(
        name="dino",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="DINO (v1) self-supervised ViTs and other transformers ViTModel checkpoints: CLS and patch tokens",
        formats="transformers (config.json with model_type vit)",
        peft_layout=peft_layout,
    )
)

for _name, _desc in {"vits16": "ViT-S/16", "vits8": "ViT-S/8", "vitb16": "ViT-B/16", "vitb8": "ViT-B/8"}.items():
    register_model(
        ModelSpec(
            name=f"dino-{_name}",
            family="dino",
            source=f"facebook/dino-{_name}",
            backend="transformers",
            description=f"DINO (v1) {_desc}; ProxyCLIP's default proxy is dino-vitb8",
        )
    )
