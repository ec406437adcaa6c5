"""The Segment Anything family (``sam``): SAM 1, SAM 2 / 2.1 and EdgeTAM through transformers, in one package:

- :mod:`~visionfm.foundation.sam.prompting`: the promptable-encoder interface the mask-generation pipeline uses
  (:class:`PromptableEncoder`, :class:`ImageEmbedding`, :class:`AutoMaskDefaults`);
- :mod:`~visionfm.foundation.sam.sam1`: SAM 1 (``SamModel``; longest-edge resize + padding);
- :mod:`~visionfm.foundation.sam.sam2`: SAM 2 / 2.1 (``Sam2Model``, Hiera) and EdgeTAM (``EdgeTamModel``, RepViT),
  square resize, FPN image features;
- this file: on-disk detection, building, the PEFT layout, the family and its aliases.

Every model keeps its prompt encoder and mask decoder on ``encoder.model``; ``Features.patches`` is the image
embedding the mask decoder reads (``[B, 64, 64, 256]`` for the real models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..loading import hf_model_type, load_hf_model
from ..registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .prompting import AutoMaskDefaults, ImageEmbedding, PromptableEncoder
from .sam1 import SAM1_AUTO_MASKS, SAM_MEAN, SAM_STD, SamEncoder, build_sam, load_preprocess_config
from .sam2 import EDGETAM_MODEL_TYPES, SAM2_AUTO_MASKS, SAM2_MODEL_TYPES, Sam2Encoder, build_sam2

MODEL_TYPES = ("sam", *SAM2_MODEL_TYPES, *EDGETAM_MODEL_TYPES)


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers SAM, SAM 2 or EdgeTAM checkpoint, else ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt in MODEL_TYPES else None


def build(req: LoadRequest) -> SamEncoder | Sam2Encoder:
    """Build the encoder of a transformers SAM (``SamModel``), SAM 2 (``Sam2Model``) or EdgeTAM (``EdgeTamModel``)
    checkpoint directory; ``*_video`` checkpoints load their image parts."""
    mt = hf_model_type(req.path)
    if mt == "sam":
        from transformers import SamModel

        return build_sam(load_hf_model(SamModel, req.path, allow_pickle=req.allow_pickle), req.path, req.name)
    if mt in SAM2_MODEL_TYPES:
        from transformers import Sam2Model as cls
    elif mt in EDGETAM_MODEL_TYPES:
        from transformers import EdgeTamModel as cls
    else:
        raise ValueError(f"{req.path}: model_type {mt!r} is not a SAM checkpoint; expected one of {MODEL_TYPES}")
    return build_sam2(load_hf_model(cls, req.path, allow_pickle=req.allow_pickle), req.path, req.name)


# -- PEFT layout -------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def untie_edgetam(model: Any) -> None:
    """Let PEFT wrap a transformers ``EdgeTamModel``: PEFT asks a model whose class declares ``_tied_weights_keys``
    (an empty dict here) for ``get_input_embeddings``, which ``EdgeTamModel`` does not implement (``Sam2Model``
    does). EdgeTAM ties nothing, so its config says so (``tie_word_embeddings = False``), which PEFT respects. Plain
    ``peft`` users loading an adapter onto an ``EdgeTamModel`` set the same."""
    model.config.tie_word_embeddings = False


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in sam encoders (the family's ``peft_layout``): the image encoder's attention
    projections and MLP linears (SAM: ViT blocks; SAM 2: Hiera blocks; EdgeTAM's RepViT is a CNN without attention:
    its MLP targets are the 1x1 convolutions of the channel mixers and downsampling FFNs)."""
    variant = getattr(encoder, "variant", "sam")
    if variant == "sam2":
        blocks = rf"vision_encoder\.backbone\.blocks\.{_B}"
        return TargetLayout(
            description="sam (transformers Sam2Model, Hiera)",
            image_roots=("vision_encoder",),
            attention=(rf"{blocks}\.attn\.(qkv|proj)",),
            mlp=(rf"{blocks}\.mlp\.(proj_in|proj_out)",),
        )
    if variant == "edgetam":
        return TargetLayout(
            description="sam (transformers EdgeTamModel, RepViT)",
            image_roots=("vision_encoder",),
            prepare=untie_edgetam,
            mlp=(rf"vision_encoder\.backbone\.timm_model\.stages_{_B}\..*(channel_mixer|ffn)\.conv[12]\.c",),
        )
    return TargetLayout(
        description="sam (transformers)",
        image_roots=("vision_encoder",),
        attention=(rf"vision_encoder\.layers\.{_B}\.attn\.(qkv|proj)",),
        mlp=(rf"vision_encoder\.layers\.{_B}\.mlp\.(lin1|lin2)",),
    )


# -- registration ------------------------------------------------------------------------------------
register_family(
    Family(
        name="sam",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="Segment Anything (SAM, SAM 2 / 2.1, EdgeTAM) image encoders with their promptable mask decoders",
        formats="transformers (config.json with model_type sam, sam2, sam2_video, edgetam or edgetam_video)",
        peft_layout=peft_layout,
    )
)

for _size, _desc in {
    "base": "ViT-B/16, 1024px input, 64x64x256 embeddings",
    "large": "ViT-L/16, 1024px input, 64x64x256 embeddings",
    "huge": "ViT-H/16, 1024px input, 64x64x256 embeddings",
}.items():
    register_model(
        ModelSpec(
            name=f"sam-vit-{_size}",
            family="sam",
            source=f"facebook/sam-vit-{_size}",
            backend="transformers",
            description=f"Segment Anything {_desc}",
        )
    )
# The hub's SAM 2 / 2.1 repos carry transformers weights as Sam2VideoModel checkpoints (model_type sam2_video).
for _version in ("2", "2.1"):
    for _size, _backbone in {
        "tiny": "Hiera-T",
        "small": "Hiera-S",
        "base-plus": "Hiera-B+",
        "large": "Hiera-L",
    }.items():
        register_model(
            ModelSpec(
                name=f"sam{_version}-hiera-{_size}",
                family="sam",
                source=f"facebook/sam{_version}-hiera-{_size}",
                backend="transformers",
                description=f"SAM {_version} {_backbone}, 1024px square input, 64x64x256 embeddings + FPN",
            )
        )
register_model(
    ModelSpec(
        name="edgetam",
        family="sam",
        source="yonigozlan/EdgeTAM-hf",
        backend="transformers",
        description="EdgeTAM (SAM 2 decoder on a RepViT-M1 backbone, timm), 1024px square input, 64x64x256 embeddings",
    )
)

__all__ = [
    "EDGETAM_MODEL_TYPES",
    "MODEL_TYPES",
    "SAM1_AUTO_MASKS",
    "SAM2_AUTO_MASKS",
    "SAM2_MODEL_TYPES",
    "SAM_MEAN",
    "SAM_STD",
    "AutoMaskDefaults",
    "ImageEmbedding",
    "PromptableEncoder",
    "Sam2Encoder",
    "SamEncoder",
    "build",
    "detect",
    "load_preprocess_config",
    "peft_layout",
]
