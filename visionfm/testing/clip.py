"""Tiny random CLIP (open_clip ViT and ModifiedResNet towers, transformers) and SigLIP checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionfm.foundation.clip import OPENAI_MEAN, OPENAI_STD, write_clip_tokenizer_files
from visionfm.foundation.clip.convert import _hf_config_from_open_clip

from ._registry import tiny_writer

TINY_OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@tiny_writer("clip-resnet", default_backend="open_clip")
def write_tiny_clip_resnet(path: Path, backend: str = "open_clip") -> None:
    """Tiny random CLIP with open_clip's ModifiedResNet image tower (64px, stride 32), open_clip format."""
    if backend != "open_clip":
        raise ValueError("the tiny ResNet CLIP is written in open_clip format only")
    cfg = {**TINY_OPEN_CLIP_CFG, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}}
    write_tiny_clip(path, backend, model_cfg=cfg)


#: ViT-B/16's geometry (224 px, patch 16, 14x14 grid) at a tiny width, with OpenAI's 64-wide heads in both towers,
#: so OpenAI-CLIP-derived reference code (``clip.model.build_model``, which infers heads as width // 64) builds the
#: same model from the state dict. The reference-parity goldens of zero-shot-seg are computed on it.
TINY_B16_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@tiny_writer("clip-b16", default_backend="open_clip")
def write_tiny_clip_b16(path: Path, backend: str = "open_clip") -> None:
    """Tiny random CLIP shaped like ViT-B/16 (224 px, patch 16, 2+2 layers, 64-wide heads), open_clip format.

    ``open_clip_model.safetensors`` holds OpenAI CLIP's key names, so ``torch.save`` of its state dict is a file
    OpenAI's ``clip.load(path, jit=False)`` reads.
    """
    if backend != "open_clip":
        raise ValueError("the tiny B/16-shaped CLIP is written in open_clip format only")
    write_tiny_clip(path, backend, model_cfg=TINY_B16_CFG)


#: A SigLIP 2 / PE-Core-style timm ViT image tower (timm's ``test_vit3``: 160 px, patch 16, 9 blocks of width 96,
#: one register token and no class token, attention-pool ``map`` head, no extra projection) and a tiny CLIP text tower.
TINY_TIMM_VIT_CFG: dict[str, Any] = {
    "embed_dim": 96,
    "init_logit_bias": -10,
    "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                 "no_causal_mask": True, "pool_type": "last", "proj_bias": True},
}  # fmt: skip
#: A MobileCLIP 2-style CNN timm tower (timm's ``test_convnext2``, stride 32, avg pool + linear projection), 64 px.
TINY_TIMM_CNN_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "timm_model_name": "test_convnext2", "timm_model_pretrained": False,
                   "timm_pool": "avg", "timm_proj": "linear"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}  # fmt: skip


@tiny_writer("clip-timm-vit", default_backend="open_clip")
def write_tiny_clip_timm_vit(path: Path, backend: str = "open_clip") -> None:
    """Tiny random open_clip model with a timm ViT image tower (SigLIP 2 / PE-Core style: ``map`` pooling, squash
    resize, bilinear, mean/std 0.5), open_clip format."""
    if backend != "open_clip":
        raise ValueError("the tiny timm-tower CLIP is written in open_clip format only")
    pp = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "resize_mode": "squash"}
    write_tiny_clip(path, backend, model_cfg=TINY_TIMM_VIT_CFG, preprocess=pp)


@tiny_writer("clip-timm-cnn", default_backend="open_clip")
def write_tiny_clip_timm_cnn(path: Path, backend: str = "open_clip") -> None:
    """Tiny random open_clip model with a timm CNN image tower (MobileCLIP 2 style: mean 0 / std 1, bilinear,
    shortest-side resize + centre crop), open_clip format."""
    if backend != "open_clip":
        raise ValueError("the tiny timm-tower CLIP is written in open_clip format only")
    pp = {"mean": [0.0] * 3, "std": [1.0] * 3, "interpolation": "bilinear", "resize_mode": "shortest"}
    write_tiny_clip(path, backend, model_cfg=TINY_TIMM_CNN_CFG, preprocess=pp)


@tiny_writer("clip", default_backend="open_clip")
def write_tiny_clip(
    path: Path,
    backend: str = "open_clip",
    *,
    model_cfg: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> None:
    """Tiny random CLIP (48px, patch 8, 2+2 layers) in open_clip or transformers format."""
    from safetensors.torch import save_file

    model_cfg = model_cfg or TINY_OPEN_CLIP_CFG
    if backend == "open_clip":
        from open_clip.model import CLIP

        model = CLIP(**model_cfg)
        cfg = {
            "model_cfg": model_cfg,
            "preprocess_cfg": {
                "size": int(model_cfg["vision_cfg"]["image_size"]),
                "mode": "RGB",
                "mean": list(OPENAI_MEAN),
                "std": list(OPENAI_STD),
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                **(preprocess or {}),
            },
        }
        (path / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    elif backend == "transformers":
        from transformers import CLIPImageProcessor, CLIPModel

        model = CLIPModel(_hf_config_from_open_clip(TINY_OPEN_CLIP_CFG))
        model.save_pretrained(path)
        CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(path)
        write_clip_tokenizer_files(path)
    else:
        raise ValueError(f"tiny CLIP backend must be 'open_clip' or 'transformers', got {backend!r}")


_SPM_CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "a red circle and a blue star",
    "a small green triangle at the top left",
    "an orange square next to a purple heart",
    "the quick brown fox jumps over the lazy dog",
    "a black and white photograph of a man with a camera",
    "a cup of coffee on a table",
    "an astronaut in a white suit",
]


@tiny_writer("siglip", default_backend="transformers")
def write_tiny_siglip(path: Path, backend: str = "transformers") -> None:
    """Tiny random SigLIP (transformers format) with a small SentencePiece tokenizer trained here."""
    import io

    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    if backend != "transformers":
        raise ValueError("tiny SigLIP is written in transformers format only")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SPM_CORPUS * 20),
        model_writer=buf,
        vocab_size=60,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    (path / "spiece.model").write_bytes(buf.getvalue())
    SiglipTokenizer(vocab_file=str(path / "spiece.model"), model_max_length=64).save_pretrained(path)
    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=None,
            eos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    SiglipModel(cfg).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


def _train_tiny_spm(vocab_size: int, **ids: int) -> bytes:
    """A tiny SentencePiece unigram model trained on :data:`_SPM_CORPUS` (bytes of its ``.model`` file)."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SPM_CORPUS * 20),
        model_writer=buf,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        **ids,
    )
    return buf.getvalue()


@tiny_writer("metaclip2", default_backend="transformers")
def write_tiny_metaclip2(path: Path, backend: str = "transformers") -> None:
    """Tiny random MetaCLIP 2 (transformers ``MetaClip2Model``, model_type ``metaclip_2``) as
    facebook/metaclip-2-worldwide-* ship it: a CLIP-shaped model with QuickGELU, an ``XLMRobertaTokenizer``
    (SentencePiece; XLM-V's layout: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, the text pooled at ``</s>``) and a
    ``CLIPImageProcessor`` (48 px here)."""
    from transformers import CLIPImageProcessor, MetaClip2Config, MetaClip2Model, XLMRobertaTokenizer

    if backend != "transformers":
        raise ValueError("tiny MetaCLIP 2 is written in transformers format only")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=_train_tiny_spm(60, pad_id=-1, bos_id=-1, eos_id=-1, unk_id=0))
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(1, sp.get_piece_size())]  # 0 is SPM's <unk>
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces, ("<mask>", 0.0)]
    tok = XLMRobertaTokenizer(vocab=vocab, model_max_length=77)
    tok.save_pretrained(path)
    common = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu"
    )
    cfg = MetaClip2Config(
        text_config=dict(common, vocab_size=len(tok), max_position_embeddings=77, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2),
        vision_config=dict(common, image_size=48, patch_size=8),
        projection_dim=24,
    )  # fmt: skip
    MetaClip2Model(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(path)


_SIGLIP2_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-"


def _write_tiny_gemma_tokenizer(path: Path) -> int:
    """A tiny Gemma tokenizer (BPE with byte fallback, ``tokenizer.json``) trained on :data:`_SPM_CORPUS`.

    Special ids as Gemma's (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4), then the 256 byte tokens,
    the characters of :data:`_SIGLIP2_CHARS` (both cases, so lower-casing changes the ids) and the learned merges.
    Settings as SigLIP 2's (no BOS, EOS appended, right padding, 64 tokens). Returns the vocabulary size.
    """
    from tokenizers import Tokenizer, models, normalizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + len(bytes_) + len(_SIGLIP2_CHARS) + 1 + 60,
        special_tokens=specials + bytes_,
        initial_alphabet=list(_SIGLIP2_CHARS) + ["▁"],
        show_progress=False,
    )
    bpe.train_from_iterator([s.lower() for s in _SPM_CORPUS] * 5, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in state["merges"]]
    tok = GemmaTokenizer(
        vocab=state["vocab"],
        merges=merges,
        add_bos_token=False,
        add_eos_token=True,
        model_max_length=64,
        padding_side="right",
    )
    tok.save_pretrained(path)
    return len(state["vocab"])


def _tiny_siglip2_sizes(vocab: int) -> tuple[dict[str, Any], dict[str, Any]]:
    text = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    return text, vision


@tiny_writer("siglip2", default_backend="transformers")
def write_tiny_siglip2(path: Path, backend: str = "transformers") -> None:
    """Tiny random fixed-resolution SigLIP 2, in the format of ``google/siglip2-base-patch16-224`` and its siblings:
    a ``SiglipModel`` (``model_type: siglip``; fixed-resolution SigLIP 2 is SigLIP 1's architecture), a
    ``SiglipImageProcessor`` (bilinear, 32 px here) and a tiny Gemma tokenizer (``tokenizer.json``)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    if backend != "transformers":
        raise ValueError("tiny SigLIP 2 is written in transformers format only")
    text, vision = _tiny_siglip2_sizes(_write_tiny_gemma_tokenizer(path))
    SiglipModel(SiglipConfig(text_config=text, vision_config=dict(vision, image_size=32))).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(path)


@tiny_writer("siglip2-naflex", default_backend="transformers")
def write_tiny_siglip2_naflex(path: Path, backend: str = "transformers") -> None:
    """Tiny random NaFlex SigLIP 2, in the format of ``google/siglip2-base-patch16-naflex``: a ``Siglip2Model``
    (``model_type: siglip2``, patch 16 and a 4x4 position table), a ``Siglip2ImageProcessor`` (patch 16, at most 256
    patches: ``Siglip2Processor`` applies these defaults over the saved image-processor settings, so the tiny model
    keeps them) and a tiny Gemma tokenizer (transformers loads it as the lower-casing ``Siglip2Tokenizer``)."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    if backend != "transformers":
        raise ValueError("tiny SigLIP 2 is written in transformers format only")
    text, vision = _tiny_siglip2_sizes(_write_tiny_gemma_tokenizer(path))
    vision = dict(vision, patch_size=16, num_patches=16)
    Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).save_pretrained(path)
    Siglip2ImageProcessor(patch_size=16, max_num_patches=256).save_pretrained(path)


__all__ = [
    "TINY_OPEN_CLIP_CFG",
    "TINY_TIMM_CNN_CFG",
    "TINY_TIMM_VIT_CFG",
    "write_tiny_clip",
    "write_tiny_clip_resnet",
    "write_tiny_clip_timm_cnn",
    "write_tiny_clip_timm_vit",
    "write_tiny_siglip",
    "write_tiny_siglip2",
    "write_tiny_siglip2_naflex",
]
