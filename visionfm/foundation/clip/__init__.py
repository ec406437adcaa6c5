"""The CLIP family (CLIP, SigLIP and SigLIP 2, open_clip and transformers backends), in one package:

- :mod:`~visionfm.foundation.clip.encoders`: the encoders, on-disk detection and building;
- :mod:`~visionfm.foundation.clip.convert`: open_clip <-> transformers checkpoint conversion (``visionfm convert``);
- :mod:`~visionfm.foundation.clip.dense`: the last-block parts training-free dense features need;
- :mod:`~visionfm.foundation.clip.peft`: where PEFT adapters go;
- this file: the family and its registry aliases.
"""

from __future__ import annotations

from ..registry import Family, ModelSpec, register_family, register_model
from .convert import (
    convert_checkpoint,
    hf_state_to_open_clip,
    open_clip_state_to_hf,
    write_clip_tokenizer_files,
)
from .dense import dense_tower
from .encoders import (
    CLIP_OPTIONS,
    OPENAI_MEAN,
    OPENAI_STD,
    HFClipEncoder,
    HFSiglip2Encoder,
    OpenClipEncoder,
    _build,
    _detect,
)
from .peft import peft_layout

__all__ = [
    "CLIP_OPTIONS",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "HFClipEncoder",
    "HFSiglip2Encoder",
    "OpenClipEncoder",
    "convert_checkpoint",
    "hf_state_to_open_clip",
    "open_clip_state_to_hf",
    "write_clip_tokenizer_files",
]

register_family(
    Family(
        name="clip",
        backends=("open_clip", "transformers"),
        detect=_detect,
        build=_build,
        options=CLIP_OPTIONS,
        description="CLIP, SigLIP and SigLIP 2 image-text encoders (open_clip or transformers weights)",
        formats="open_clip (open_clip_config.json + open_clip_model.safetensors) or transformers (config.json with "
        "model_type clip/metaclip_2/siglip/siglip2)",
        peft_layout=peft_layout,
        dense_tower=dense_tower,
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
    # SigLIP 2: fixed-resolution checkpoints are SiglipModels (Gemma tokenizer); -naflex ones are Siglip2Models
    ("siglip2-base", "google/siglip2-base-patch16-224", "SigLIP 2 ViT-B/16, 224px"),
    ("siglip2-base-256", "google/siglip2-base-patch16-256", "SigLIP 2 ViT-B/16, 256px"),
    ("siglip2-base-384", "google/siglip2-base-patch16-384", "SigLIP 2 ViT-B/16, 384px"),
    ("siglip2-base-512", "google/siglip2-base-patch16-512", "SigLIP 2 ViT-B/16, 512px"),
    ("siglip2-base-p32-256", "google/siglip2-base-patch32-256", "SigLIP 2 ViT-B/32, 256px"),
    ("siglip2-base-naflex", "google/siglip2-base-patch16-naflex", "SigLIP 2 ViT-B/16 NaFlex (native aspect ratio)"),
    ("siglip2-large", "google/siglip2-large-patch16-256", "SigLIP 2 ViT-L/16, 256px"),
    ("siglip2-large-384", "google/siglip2-large-patch16-384", "SigLIP 2 ViT-L/16, 384px"),
    ("siglip2-large-512", "google/siglip2-large-patch16-512", "SigLIP 2 ViT-L/16, 512px"),
    ("siglip2-so400m-p14-224", "google/siglip2-so400m-patch14-224", "SigLIP 2 So400m/14, 224px"),
    ("siglip2-so400m-p14-384", "google/siglip2-so400m-patch14-384", "SigLIP 2 So400m/14, 384px"),
    ("siglip2-so400m", "google/siglip2-so400m-patch16-256", "SigLIP 2 So400m/16, 256px"),
    ("siglip2-so400m-384", "google/siglip2-so400m-patch16-384", "SigLIP 2 So400m/16, 384px"),
    ("siglip2-so400m-512", "google/siglip2-so400m-patch16-512", "SigLIP 2 So400m/16, 512px"),
    ("siglip2-so400m-naflex", "google/siglip2-so400m-patch16-naflex", "SigLIP 2 So400m/16 NaFlex"),
    ("siglip2-giant", "google/siglip2-giant-opt-patch16-256", "SigLIP 2 g-opt/16, 256px"),
    ("siglip2-giant-384", "google/siglip2-giant-opt-patch16-384", "SigLIP 2 g-opt/16, 384px"),
    # open_clip tags whose image tower is a timm model (TimmModel): PE-Core, MobileCLIP 2, open_clip's SigLIP 2
    ("pe-core-t-16-384", "PE-Core-T-16-384/meta", "Meta Perception Encoder Core T/16, 384px (open_clip, timm tower)"),
    ("pe-core-s-16-384", "PE-Core-S-16-384/meta", "Meta Perception Encoder Core S/16, 384px (open_clip, timm tower)"),
    ("pe-core-b-16", "PE-Core-B-16/meta", "Meta Perception Encoder Core B/16, 224px (open_clip, timm tower)"),
    ("pe-core-l-14-336", "PE-Core-L-14-336/meta", "Meta Perception Encoder Core L/14, 336px (open_clip, timm tower)"),
    (
        "pe-core-g-14-448",
        "PE-Core-bigG-14-448/meta",
        "Meta Perception Encoder Core G/14, 448px (open_clip, timm tower)",
    ),
    ("mobileclip2-s0", "MobileCLIP2-S0/dfndr2b", "Apple MobileCLIP 2 S0 (open_clip, timm FastViT-MCi tower)"),
    ("mobileclip2-s2", "MobileCLIP2-S2/dfndr2b", "Apple MobileCLIP 2 S2, 256px (open_clip, timm FastViT-MCi tower)"),
    ("mobileclip2-s3", "MobileCLIP2-S3/dfndr2b", "Apple MobileCLIP 2 S3 (open_clip, timm FastViT-MCi tower)"),
    ("mobileclip2-s4", "MobileCLIP2-S4/dfndr2b", "Apple MobileCLIP 2 S4 (open_clip, timm FastViT-MCi tower)"),
    ("mobileclip2-b", "MobileCLIP2-B/dfndr2b", "Apple MobileCLIP 2 B, 224px (open_clip, timm ViT-B tower)"),
    ("mobileclip2-l-14", "MobileCLIP2-L-14/dfndr2b", "Apple MobileCLIP 2 L/14 (open_clip, timm ViT-L tower)"),
    ("openclip-siglip2-b-16", "ViT-B-16-SigLIP2/webli", "SigLIP 2 B/16, 224px via open_clip (timm tower)"),
    ("openclip-siglip2-b-16-256", "ViT-B-16-SigLIP2-256/webli", "SigLIP 2 B/16, 256px via open_clip (timm tower)"),
    ("openclip-siglip2-l-16-256", "ViT-L-16-SigLIP2-256/webli", "SigLIP 2 L/16, 256px via open_clip (timm tower)"),
    ("openclip-siglip2-so400m-14", "ViT-SO400M-14-SigLIP2/webli", "SigLIP 2 So400m/14, 224px via open_clip (timm)"),
    ("openclip-siglip2-so400m-16-256", "ViT-SO400M-16-SigLIP2-256/webli", "SigLIP 2 So400m/16, 256px via open_clip"),
    # DFN and MetaCLIP (1 and 2): open_clip's own ViT tower (QuickGELU)
    ("dfn2b-clip-vit-b-16", "ViT-B-16-quickgelu/dfn2b", "Apple DFN-2B CLIP ViT-B/16 (open_clip)"),
    ("dfn2b-clip-vit-l-14", "ViT-L-14-quickgelu/dfn2b", "Apple DFN-2B CLIP ViT-L/14 (open_clip)"),
    ("dfn5b-clip-vit-h-14", "ViT-H-14-quickgelu/dfn5b", "Apple DFN-5B CLIP ViT-H/14, 224px (open_clip)"),
    ("dfn5b-clip-vit-h-14-378", "ViT-H-14-378-quickgelu/dfn5b", "Apple DFN-5B CLIP ViT-H/14, 378px (open_clip)"),
    ("metaclip-vit-b-16", "ViT-B-16-quickgelu/metaclip_fullcc", "MetaCLIP ViT-B/16, 2.5B pairs (open_clip)"),
    ("metaclip-vit-l-14", "ViT-L-14-quickgelu/metaclip_fullcc", "MetaCLIP ViT-L/14, 2.5B pairs (open_clip)"),
    ("metaclip-vit-h-14", "ViT-H-14-quickgelu/metaclip_fullcc", "MetaCLIP ViT-H/14, 2.5B pairs (open_clip)"),
    (
        "metaclip2-vit-h-14",
        "ViT-H-14-worldwide-quickgelu/metaclip2_worldwide",
        "MetaCLIP 2 worldwide ViT-H/14, multilingual (open_clip, XLM-V tokenizer)",
    ),
    (
        "metaclip2-vit-h-14-378",
        "ViT-H-14-worldwide-378/metaclip2_worldwide",
        "MetaCLIP 2 worldwide ViT-H/14, 378px, multilingual (open_clip)",
    ),
    (
        "metaclip2-huge-hf",
        "facebook/metaclip-2-worldwide-huge-quickgelu",
        "MetaCLIP 2 worldwide ViT-H/14 (transformers MetaClip2Model, XLM-V tokenizer)",
    ),
    (
        "metaclip2-vit-bigg-14",
        "ViT-bigG-14-worldwide/metaclip2_worldwide",
        "MetaCLIP 2 worldwide ViT-bigG/14, multilingual (open_clip)",
    ),
]:
    _backend = "open_clip" if _src.split("/")[0].startswith(("ViT-", "PE-", "MobileCLIP")) else "transformers"
    register_model(ModelSpec(name=_name, family="clip", source=_src, backend=_backend, description=_desc))
