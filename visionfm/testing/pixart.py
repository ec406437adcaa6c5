"""Tiny random PixArt-α pipeline (T5 text encoder with an offline-trained sentencepiece tokenizer), diffusers format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._registry import tiny_writer
from .dit import tiny_vae


def _tiny_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """``n`` short captions from a fixed word list (deterministic for ``seed``)."""
    import random

    rng = random.Random(seed)
    colours = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "pink"]
    shapes = ["square", "circle", "triangle", "star", "cat", "dog", "house", "tree", "car", "cup", "bird", "boat"]
    places = ["on a table", "in a field", "at night", "under the sky", "near the sea", "in the snow", "on grass"]
    styles = ["a photo of", "a painting of", "a drawing of", "a close-up of", "an image of", "a picture of"]
    out = []
    for _ in range(n):
        s = f"{rng.choice(styles)} a {rng.choice(colours)} {rng.choice(shapes)}"
        if rng.random() < 0.6:
            s += f" {rng.choice(places)}"
        if rng.random() < 0.3:
            s += f" and a {rng.choice(colours)} {rng.choice(shapes)}"
        out.append(s)
    return out


def _tiny_t5_tokenizer(workdir: Path, vocab_size: int = 64) -> Any:
    """A T5 tokenizer built offline: a sentencepiece unigram model trained on :func:`_tiny_corpus`.

    Ids follow T5: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no BOS; no sentinel (``<extra_id_*>``) tokens.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(_tiny_corpus()) + "\n")
    prefix = workdir / "spiece"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, normalization_rule_name="identity",
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    try:  # transformers >= 5: T5Tokenizer is tokenizers-backed and takes the unigram vocabulary
        return T5Tokenizer(vocab=vocab, extra_ids=0)
    except TypeError:  # transformers 4.x: the sentencepiece-backed slow tokenizer
        return T5Tokenizer(vocab_file=str(prefix) + ".model", extra_ids=0, legacy=False)


@tiny_writer("pixart", default_backend="diffusers")
def write_tiny_pixart(path: Path, backend: str = "diffusers") -> None:
    """Write a tiny random PixArt-α pipeline (diffusers ``save_pretrained`` layout, safetensors).

    Transformer: ``PixArtTransformer2DModel``, 2 blocks, 2 heads x 8 dims (width 16), patch 2, latent sample size 8,
    caption channels 16, learned sigma (8 output channels). VAE: ``block_out_channels=(8, 16)`` (scale 2), 4 latent
    channels. Text encoder: ``T5EncoderModel`` with ``d_model=16``, 2 layers. Tokenizer: a 64-piece sentencepiece
    unigram model trained offline on generated captions. Scheduler: ``DPMSolverMultistepScheduler()`` (the real
    checkpoints' sampler). Images 16 px, patch grid 4 x 4. Loadable with ``PixArtAlphaPipeline.from_pretrained(path)``.
    Torch must be seeded by the caller.

    Args:
        path: directory to write into (created if missing).
        backend: only ``"diffusers"``.
    """
    import tempfile

    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    if backend != "diffusers":
        raise ValueError(f"tiny PixArt checkpoints exist for backend 'diffusers' only, got {backend!r}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_t5_tokenizer(Path(tmp))
    text_cfg = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # fmt: skip
    text_encoder = T5EncoderModel(text_cfg).eval()
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        caption_channels=16,
        cross_attention_dim=16,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    vae = tiny_vae()
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())  # fmt: skip
    pipe.save_pretrained(str(path), safe_serialization=True)


__all__ = ["write_tiny_pixart"]
