"""CoOp prompt learning (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022) on CLIP.

A :class:`PromptLearner` replaces the words of a hand-written prompt ("a photo of a {class}.") with ``M`` learnable
context vectors in the text tower's token-embedding space and trains only those, with CLIP itself frozen. Per class
``k`` the text tower reads::

    [SOS] ctx_1 ... ctx_M <tokens of classname_k> . [EOS] <pad ...>
     0    1 ...   M       M+1 ...                      e_k

The sequence is the checkpoint's own tokenization of ``f"{phrase} {classname}."`` where ``phrase`` is the init
phrase (``init="a photo of a"``) or ``M`` placeholder words (``"X X X X"``, random init); the embeddings at
positions ``1..M`` are then swapped for the context. CLIP's BPE splits on whitespace and punctuation before merging,
so the phrase always occupies exactly those positions (checked at construction). Everything else (positional
embeddings, causal mask, final norm, pooling at the EOT/EOS position ``e_k``, which moves with the class name's
length, and the projection) is the model's own text forward, run on the real token ids:

- open_clip ``CLIP``: ``model.encode_text(ids)``, pooled by ``text_pool_type`` (``argmax`` of the ids for CLIP,
  i.e. the EOT token, or the first ``text_eos_id``).
- transformers ``CLIPModel``: ``model.get_text_features(input_ids, attention_mask)`` with the class prompts padded
  to the longest; pooled at the first ``eos_token_id`` (or the id argmax for old configs).

The context is spliced in by a forward hook on the token-embedding layer that is registered for the duration of one
call only. With the context still equal to the init phrase's embeddings, :meth:`PromptLearner.forward` therefore
equals ``F.normalize(encoder.encode_text([f"{init} {c}." for c in classnames]))``.

Example:
    >>> import torch, visionfm as vfm
    >>> from visionfm.testing import tiny_checkpoint
    >>> enc = vfm.load_encoder(tiny_checkpoint("clip"), device="cpu")
    >>> learner = PromptLearner(enc, ["cat", "dog"])
    >>> tuple(learner().shape), [n for n, _ in learner.named_parameters()]
    ((2, 32), ['ctx'])
    >>> tuple(coop_logits(enc, learner, torch.zeros(3, 3, 48, 48)).shape)
    (3, 2)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..foundation.clip.encoders import _as_tensor
from ..foundation.encoder import Encoder
from ..foundation.zero_shot import class_logits

logger = logging.getLogger(__name__)

FORMAT = "visionfm.coop"
FORMAT_VERSION = "1"
PLACEHOLDER = "X"  # one BPE token; stands in for each context word when the context starts random (as in CoOp)
INIT_STD = 0.02  # CoOp's random context initialisation


class PromptLearner(nn.Module):
    """Learnable CoOp context for one CLIP encoder and one list of class names.

    The encoder is frozen (``requires_grad_(False)``, as in CoOp) and is *not* a submodule: ``parameters()`` and
    ``state_dict()`` hold the context ``ctx`` only.

    Args:
        encoder: a CLIP encoder from ``load_encoder`` (open_clip ``CLIP`` with its own text transformer, or
            transformers ``CLIPModel``). SigLIP and other families raise ``TypeError``.
        classnames: ``K`` distinct, non-empty class names; class ``k``'s prompt is ``f"{phrase} {classnames[k]}."``.
        n_ctx: ``M``, the number of context vectors (>= 1). With ``init`` it must equal the number of tokens
            of the init phrase (4 for ``"a photo of a"``).
        init: phrase whose token embeddings initialise the context; ``None``: ``N(0, 0.02^2)`` (CoOp's random init).
        class_specific: one context per class (CoOp's CSC variant, ``ctx`` is ``[K, M, W]``) instead of one shared
            by all classes (the unified context, ``ctx`` is ``[M, W]``).

    Attributes:
        ctx: the learnable context, float32, ``[M, W]`` or ``[K, M, W]`` (``W`` = text transformer width).
        input_ids: ``[K, L]`` token ids of the class prompts (the context positions hold the phrase's ids).
        attention_mask: ``[K, L]`` padding mask (transformers backend; ``None`` for open_clip).
    """

    def __init__(
        self,
        encoder: Encoder,
        classnames: Sequence[str],
        *,
        n_ctx: int = 4,
        init: str | None = "a photo of a",
        class_specific: bool = False,
    ) -> None:
        super().__init__()
        _check_clip(encoder)
        classnames = _check_classnames(classnames)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx must be an integer >= 1, got {n_ctx!r}")
        if init is not None and (not isinstance(init, str) or not init.strip()):
            raise ValueError(f"init must be a non-empty phrase or None (random context), got {init!r}")
        object.__setattr__(self, "encoder", encoder)  # not a submodule: its weights stay out of parameters()
        self.classnames = classnames
        self.n_ctx = n_ctx
        self.init = init
        self.class_specific = bool(class_specific)
        self.backend = encoder.info.backend

        phrase = init if init is not None else " ".join([PLACEHOLDER] * n_ctx)
        phrase_ids = self._phrase_ids(phrase)
        if len(phrase_ids) != n_ctx:
            raise ValueError(
                f"init phrase {init!r} is {len(phrase_ids)} tokens but n_ctx={n_ctx}; pass n_ctx={len(phrase_ids)} "
                "or a phrase of that many tokens"
            )
        ids, mask = self._tokenize([f"{phrase} {c}." for c in classnames])
        self.start = 1  # after [SOS]
        bad = [c for c, row in zip(classnames, ids) if row[self.start : self.start + n_ctx].tolist() != phrase_ids]
        if bad:
            raise ValueError(
                f"the tokenizer does not keep the context phrase {phrase!r} as a separate prefix in the prompts of "
                f"classes {bad[:5]}; CoOp needs [SOS] <phrase tokens> <class tokens>"
            )
        self._warn_truncated(ids, mask)
        self.register_buffer("input_ids", ids, persistent=False)
        self.register_buffer("attention_mask", mask, persistent=False)
        encoder.requires_grad_(False)  # CoOp: CLIP is frozen, only the context learns

        embedding = self._token_embedding()
        width = embedding.weight.shape[1]
        shape = (len(classnames), n_ctx, width) if self.class_specific else (n_ctx, width)
        if init is not None:
            with torch.no_grad():
                vectors = embedding(torch.tensor(phrase_ids, device=embedding.weight.device)).float()
            ctx = vectors.expand(shape).clone()
        else:
            ctx = torch.empty(shape, device=embedding.weight.device).normal_(std=INIT_STD)
        self.ctx = nn.Parameter(ctx)

    # ------------------------------------------------------------------------------------------- backend plumbing
    def _phrase_ids(self, phrase: str) -> list[int]:
        tok = self.encoder.tokenizer
        if self.backend == "open_clip":
            return list(tok.encode(phrase))
        return list(tok(phrase, add_special_tokens=False)["input_ids"])

    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.backend == "open_clip":
            return self.encoder.tokenizer(prompts).cpu(), None
        enc = self.encoder.tokenize(prompts)
        return enc["input_ids"].cpu(), enc.get("attention_mask", torch.ones_like(enc["input_ids"])).cpu()

    def _warn_truncated(self, ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        if self.backend == "open_clip":
            lengths = (ids != 0).sum(1)
            limit = ids.shape[1]
        else:
            lengths = mask.sum(1)  # type: ignore[union-attr]
            limit = self.encoder.text_max_length
        cut = [c for c, n in zip(self.classnames, lengths.tolist()) if n >= limit]
        if cut:
            logger.warning("prompts of classes %s fill the %d-token context and may be truncated", cut[:5], limit)

    def _token_embedding(self) -> nn.Embedding:
        model = self.encoder.model
        return model.token_embedding if self.backend == "open_clip" else model.text_model.embeddings.token_embedding

    @contextmanager
    def _spliced(self) -> Iterator[None]:
        """Swap the embeddings at the context positions for ``ctx`` while the text tower runs."""
        ctx = self.context()
        s, m = self.start, self.n_ctx

        def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            if out.shape[:2] != self.input_ids.shape:
                raise RuntimeError(f"unexpected token embedding call of shape {tuple(out.shape)} inside CoOp")
            return torch.cat([out[:, :s], ctx.to(device=out.device, dtype=out.dtype), out[:, s + m :]], dim=1)

        handle = self._token_embedding().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # ------------------------------------------------------------------------------------------------- forward
    def context(self) -> torch.Tensor:
        """``[K, M, W]`` context per class (the shared context broadcast to every class unless class-specific)."""
        k = len(self.classnames)
        return self.ctx if self.class_specific else self.ctx.unsqueeze(0).expand(k, -1, -1)

    def forward(self) -> torch.Tensor:
        """Class text embeddings for the current context.

        Returns:
            ``[K, D]`` float32, L2-normalised, in the image-text space (``D = encoder.info.embed_dim``); differentiable
            with respect to ``ctx`` only.
        """
        device = self.encoder.device
        ids = self.input_ids.to(device)
        with self._spliced():
            if self.backend == "open_clip":
                feats = self.encoder.model.encode_text(ids)
            else:
                mask = self.attention_mask.to(device)
                feats = _as_tensor(self.encoder.model.get_text_features(input_ids=ids, attention_mask=mask))
        return F.normalize(feats.float(), dim=-1)

    def extra_repr(self) -> str:
        return (
            f"classes={len(self.classnames)}, n_ctx={self.n_ctx}, init={self.init!r}, "
            f"class_specific={self.class_specific}, backend={self.backend!r}"
        )

    # ------------------------------------------------------------------------------------------------ save / load
    def metadata(self) -> dict[str, str]:
        """The safetensors metadata :meth:`save` writes (all values strings)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classnames": json.dumps(self.classnames),
            "n_ctx": str(self.n_ctx),
            "class_specific": json.dumps(self.class_specific),
            "init": json.dumps(self.init),
            "model": self.encoder.info.name,
            "backend": self.backend,
            "width": str(self.ctx.shape[-1]),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``ctx`` and :meth:`metadata` to a safetensors file.

        Args:
            path: output file (conventionally ``*.safetensors``).

        Returns:
            ``path``.
        """
        from safetensors.torch import save_file

        save_file({"ctx": self.ctx.detach().cpu().contiguous()}, str(path), metadata=self.metadata())
        logger.info("saved CoOp context (%d classes, n_ctx=%d) to %s", len(self.classnames), self.n_ctx, path)
        return Path(path)

    def load(self, path: str | Path) -> PromptLearner:
        """Load a context saved by :meth:`save` into this learner (in place).

        Raises:
            ValueError: the file is not a CoOp context, or was trained for other class names (order included),
                another ``n_ctx``, the other context kind, or a text tower of another width.

        Returns:
            ``self``.
        """
        meta, ctx = read_context(path)
        saved = json.loads(meta["classnames"])
        if saved != self.classnames:
            missing = [c for c in saved if c not in self.classnames]
            extra = [c for c in self.classnames if c not in saved]
            detail = f"missing here {missing[:5]}, not in the file {extra[:5]}" if missing or extra else "other order"
            raise ValueError(
                f"{path} was trained for {len(saved)} other class names than this learner's {len(self.classnames)} "
                f"({detail}); build the learner with the file's classnames or use PromptLearner.from_file"
            )
        want = {"n_ctx": str(self.n_ctx), "class_specific": json.dumps(self.class_specific)}
        for key, value in want.items():
            if meta.get(key) != value:
                raise ValueError(f"{path} has {key}={meta.get(key)}, this learner {key}={value}")
        if tuple(ctx.shape) != tuple(self.ctx.shape):
            raise ValueError(f"{path} holds a context of shape {tuple(ctx.shape)}, expected {tuple(self.ctx.shape)}")
        if meta.get("model") != self.encoder.info.name:
            logger.warning("%s was trained on %r; loading it onto %r", path, meta.get("model"), self.encoder.info.name)
        with torch.no_grad():
            self.ctx.copy_(ctx.to(self.ctx.device))
        return self

    @classmethod
    def from_file(cls, path: str | Path, encoder: Encoder) -> PromptLearner:
        """A learner for ``encoder`` with the class names, ``n_ctx`` and context kind stored in ``path``."""
        meta, _ = read_context(path)
        learner = cls(
            encoder,
            json.loads(meta["classnames"]),
            n_ctx=int(meta["n_ctx"]),
            init=None,
            class_specific=json.loads(meta["class_specific"]),
        )
        learner.init = json.loads(meta.get("init", "null"))
        return learner.load(path)


def read_context(path: str | Path) -> tuple[dict[str, str], torch.Tensor]:
    """``(metadata, ctx)`` of a file written by :meth:`PromptLearner.save`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or "ctx" not in f.keys():
            raise ValueError(f"{path} is not a CoOp context file (no {FORMAT!r} metadata)")
        return meta, f.get_tensor("ctx")


def coop_logits(encoder: Encoder, learner: PromptLearner, pixel_values: torch.Tensor) -> torch.Tensor:
    """CoOp logits: ``logit_scale * cos(image embedding, class text embedding)``.

    The image tower runs under ``no_grad`` (it is frozen), so gradients reach the context only.

    Args:
        encoder: the encoder ``learner`` was built for.
        learner: the prompt learner.
        pixel_values: ``[B, 3, H, W]`` preprocessed images (``encoder.preprocess``).

    Returns:
        ``[B, K]`` float32 logits.
    """
    if learner.encoder is not encoder:
        raise ValueError("learner was built for another encoder; pass the encoder given to PromptLearner")
    with torch.no_grad():
        pooled = encoder(pixel_values.to(device=encoder.device, dtype=encoder.dtype)).pooled
    return class_logits(encoder, pooled, learner())


def _check_clip(encoder: Any) -> None:
    from ..foundation.clip import HFClipEncoder, OpenClipEncoder

    if isinstance(encoder, OpenClipEncoder):
        if not hasattr(encoder.model, "token_embedding") or not hasattr(encoder.tokenizer, "encode"):
            raise TypeError(
                f"{encoder.info.name!r}: CoOp supports open_clip CLIP models with their own text transformer and "
                f"BPE tokenizer, not {type(encoder.model).__name__} with {type(encoder.tokenizer).__name__}"
            )
        return
    if isinstance(encoder, HFClipEncoder):
        if encoder.kind != "clip":
            raise TypeError(f"{encoder.info.name!r}: CoOp supports CLIP text towers, not {encoder.kind!r}")
        return
    info = getattr(encoder, "info", None)
    what = f"{info.family!r} encoder {info.name!r}" if info is not None else type(encoder).__name__
    raise TypeError(f"CoOp prompt learning needs a CLIP encoder (open_clip or transformers backend), got {what}")


def _check_classnames(classnames: Sequence[str]) -> list[str]:
    if isinstance(classnames, str):
        raise ValueError("classnames must be a list of class names, not one string")
    names = list(classnames)
    if not names:
        raise ValueError("classnames must be a non-empty list of class names")
    bad = [c for c in names if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"class names must be non-empty strings, got {bad[:5]}")
    dupes = sorted(c for c, n in Counter(names).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate class names: {dupes[:5]}")
    return names
