"""Tiny random open-vocabulary detectors (OWLv2, OWL-ViT, Grounding DINO), transformers format.

Each writes a real transformers checkpoint (safetensors, processor and tokenizer files) that
:class:`visionfm.foundation.detectors.OpenVocabDetector` and transformers itself load; no timm, no download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._registry import tiny_writer

_TINY_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)


def _tiny_owl(path: Path, model_cls: Any, config_cls: Any, image_processor: Any, processor_cls: Any) -> None:
    from transformers import CLIPTokenizer

    from visionfm.foundation.clip import write_clip_tokenizer_files

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = config_cls(
        text_config=dict(vocab_size=49408, max_position_embeddings=16, **_TINY_TOWER),
        vision_config=dict(image_size=64, patch_size=8, **_TINY_TOWER),
        projection_dim=32,
    )
    model = model_cls(config).eval()
    with torch.no_grad():  # tame the random heads: unsaturated scores in (0, 1), boxes near their patch cells
        for lin in (model.class_head.logit_shift, model.class_head.logit_scale):
            lin.weight.mul_(0.1)
        scale = model.config.vision_config.hidden_size**-0.5  # the random box MLP would grow by sqrt(width)
        model.box_head.dense0.weight.mul_(scale)
        model.box_head.dense1.weight.mul_(scale)
        model.box_head.dense2.weight.mul_(0.5)
    model.save_pretrained(path, safe_serialization=True)
    write_clip_tokenizer_files(path)
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=16)  # OWL text towers take 16 tokens
    for f in ("vocab.json", "merges.txt"):
        (path / f).unlink()
    processor_cls(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


@tiny_writer("owlv2", default_backend="transformers")
def write_tiny_owlv2(path: str | os.PathLike, backend: str = "transformers") -> None:
    """Tiny random ``Owlv2ForObjectDetection`` + ``Owlv2Processor`` (64px, patch 8, 2+2 layers, width 32).

    The class and box heads' last weights are scaled down so random scores are not saturated.

    Args:
        path: output directory (created).
        backend: only ``"transformers"`` (the argument ``visionfm.testing.tiny_checkpoint`` passes).
    """
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    _check_backend(backend)
    ip = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    _tiny_owl(Path(path), Owlv2ForObjectDetection, Owlv2Config, ip, Owlv2Processor)


@tiny_writer("owlvit", default_backend="transformers")
def write_tiny_owlvit(path: str | os.PathLike, backend: str = "transformers") -> None:
    """Tiny random ``OwlViTForObjectDetection`` + ``OwlViTProcessor`` (64px, patch 8, 2+2 layers, width 32).

    Args:
        path: output directory (created).
        backend: only ``"transformers"``.
    """
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    _check_backend(backend)
    ip = OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    _tiny_owl(Path(path), OwlViTForObjectDetection, OwlViTConfig, ip, OwlViTProcessor)


#: Words in the tiny Grounding DINO WordPiece vocabulary (besides single letters and ``##`` letter pieces).
TINY_BERT_WORDS = (
    "a an the of and with on in photo cat cats dog remote control person man woman astronaut rocket flag "
    "cup coffee camera tripod table face hat helmet red blue green white black small large"
).split()


def write_tiny_bert_vocab(path: str | os.PathLike) -> Path:
    """Write a tiny lower-case BERT WordPiece ``vocab.txt`` whose special ids match ``bert-base-uncased``.

    Grounding DINO hard-codes the ids of ``[CLS]`` (101), ``[SEP]`` (102), ``"."`` (1012) and ``"?"`` (1029)
    to split its prompt into phrases, so they sit at those ids here too; ``[PAD]`` is 0, ``[UNK]`` 100,
    ``[MASK]`` 103. Letters, ``##`` letter pieces and :data:`TINY_BERT_WORDS` make any lower-case word
    tokenizable; the rest is ``[unused*]`` filler (1100 entries in all).

    Returns:
        The path of ``vocab.txt``.
    """
    vocab: dict[int, str] = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = [w for w in dict.fromkeys([*letters, *(f"##{c}" for c in letters), *TINY_BERT_WORDS]) if len(w)]
    free = (i for i in range(104, 1100) if i not in vocab)
    for w in words:
        vocab[next(free)] = w
    tokens = [vocab.get(i, f"[unused{i}]") for i in range(1100)]
    out = Path(path) / "vocab.txt"
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out


@tiny_writer("grounding-dino", default_backend="transformers")
def write_tiny_grounding_dino(path: str | os.PathLike, backend: str = "transformers") -> None:
    """Tiny random ``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor``, no timm, no download.

    Swin backbone (patch 4, width 8, one block per stage), a 1-layer BERT text tower (width 32) with the
    :func:`write_tiny_bert_vocab` vocabulary, ``d_model`` 32, 1 encoder / 2 decoder layers (the decoder box
    heads are tied, which needs at least two), 10 queries, ``max_text_len`` 32, images resized to a shortest
    edge of 128 (longest at most 192; the fourth, stride-64 feature level needs at least 2x2 cells for its
    32-group norm).

    Args:
        path: output directory (created).
        backend: only ``"transformers"``.
    """
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    _check_backend(backend)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=1100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        num_queries=10,
        encoder_layers=1,
        decoder_layers=2,
        d_model=32,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
        disable_custom_kernels=True,
    )
    model = GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():
        # Text features and query states are layer-normed, so their random dot products (the logits) would have
        # a std of sqrt(d_model) and saturate; scaling the last text norm keeps scores spread over (0, 1).
        text_norm = model.model.encoder.layers[-1].text_enhancer_layer.layer_norm_after
        text_norm.weight.mul_(0.1)
        text_norm.bias.mul_(0.1)
        # The box heads start at zero (boxes = the encoder's proposals); a little noise makes them move.
        model.bbox_embed[0].layers[-1].weight.normal_(std=0.05)
    model.save_pretrained(path, safe_serialization=True)
    vocab_file = write_tiny_bert_vocab(path)
    vocab = {tok: i for i, tok in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=32)
    ip = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 192})
    GroundingDinoProcessor(image_processor=ip, tokenizer=tokenizer).save_pretrained(path)


def _check_backend(backend: str) -> None:
    if backend != "transformers":
        raise ValueError(f"tiny detectors are written in transformers format only, got backend {backend!r}")


__all__ = [
    "TINY_BERT_WORDS",
    "write_tiny_bert_vocab",
    "write_tiny_grounding_dino",
    "write_tiny_owlv2",
    "write_tiny_owlvit",
]
