"""Open-vocabulary detectors (OWL-ViT, OWLv2, Grounding DINO): the ``detector`` family, the backend of
``pipeline("grounding")``. Their aliases are in the registry (``visionfm models --family detector``) and they load
through the one weights resolver (:func:`visionfm.foundation.loading.resolve_source`): :func:`load_detector`.

:class:`OpenVocabDetector` wraps a transformers checkpoint of one of :data:`DETECTOR_TYPES` and turns
``(images, phrases)`` into boxes in the **original image's pixels**, one result per image:

- All phrases are scored together: one forward pass per batch of images, the ``N`` phrases shared by every
  image of the batch (transformers' ``zero-shot-object-detection`` pipeline runs one forward per phrase).
- OWLv2 pads each image to a square (bottom/right) before resizing, so its normalised boxes are relative to
  the padded square and are scaled by ``max(H, W)`` on both axes; OWL-ViT (v1) resizes without padding and
  is scaled by ``(W, H)``. Grounding DINO boxes are relative to the unpadded image, scaled by ``(W, H)``.
- Labels are indices into ``phrases``.

Scoring follows each model's reference post-processing:

- OWL-ViT / OWLv2: every (box, phrase) pair whose ``sigmoid(logit) > threshold`` is a detection, so one box
  may be reported for several phrases. This is exactly what transformers' ``zero-shot-object-detection``
  pipeline returns (it scores each phrase in its own forward pass; OWL scores are independent per phrase).
- Grounding DINO: the processor's ``post_process_grounded_object_detection`` (a box is kept when its best
  token probability exceeds ``threshold``; its text label is made of the tokens above ``text_threshold``),
  so each box gets one label. See :meth:`OpenVocabDetector._grounding_dino_labels` for how a text label is
  mapped back to a phrase index.

Boxes are not clipped to the image (as in transformers): OWLv2 boxes can reach into the padding.

``visionfm.testing.tiny_checkpoint("owlv2")`` (also ``"owlvit"``, ``"grounding-dino"``) writes tiny random
checkpoints in the true transformers on-disk format (safetensors, processor and tokenizer files) for tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.images import as_image_list, to_uint8_chw
from .loading import (
    _HUB_ID,
    check_no_pickle_only,
    find_weights,
    hf_model_type,
    load_hf_model,
    read_json,
    resolve_device,
    resolve_dtype,
    resolve_source,
)
from .registry import Family, LoadRequest, ModelSpec, get_spec, register_family, register_model

logger = logging.getLogger(__name__)

#: transformers ``config.json`` ``model_type`` values of the supported open-vocabulary detectors.
DETECTOR_TYPES = ("owlv2", "owlvit", "grounding-dino")
#: Grounding DINO's default text threshold (the value used in its paper and model cards).
GROUNDING_DINO_TEXT_THRESHOLD = 0.25

_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
Detections = dict[str, torch.Tensor]


# -- identification --------------------------------------------------------------------------------
def detector_type(name: str | os.PathLike) -> str | None:
    """The ``model_type`` of an open-vocabulary detector checkpoint, or ``None`` if it is not one.

    Never downloads: a local directory's ``config.json`` is read directly, a hub id's ``config.json`` only
    from the local Hugging Face cache (``huggingface_hub`` with ``local_files_only=True``).

    Args:
        name: a checkpoint directory or a hub id (``"google/owlv2-base-patch16-ensemble"``).

    Returns:
        One of :data:`DETECTOR_TYPES`, or ``None`` (another model type, no ``config.json``, an uncached hub id).

    Example:
        >>> detector_type("/no/such/dir") is None
        True
    """
    spec = get_spec(os.fspath(name)) if not Path(os.path.expanduser(os.fspath(name))).is_dir() else None
    if spec is not None:
        return _ALIAS_TYPES.get(spec.name) if spec.family == "detector" else None
    path = Path(os.path.expanduser(os.fspath(name)))
    if path.is_dir():
        mt = hf_model_type(path)
    elif _HUB_ID.match(os.fspath(name)):
        from huggingface_hub import hf_hub_download

        try:
            cfg = hf_hub_download(os.fspath(name), "config.json", local_files_only=True)
        except Exception:  # not cached (or not a repo): never reach for the network here
            return None
        mt = hf_model_type(Path(cfg).parent)
    else:
        return None
    return mt if mt in DETECTOR_TYPES else None


# -- small helpers ---------------------------------------------------------------------------------
def _check_phrases(phrases: str | Sequence[str]) -> list[str]:
    if isinstance(phrases, str):
        phrases = [phrases]
    phrases = list(phrases)
    if not phrases:
        raise ValueError("phrases must be a non-empty list of strings (the things to find), got an empty list")
    bad = [p for p in phrases if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"phrases must be non-empty strings, got {bad!r}")
    return phrases


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) to (x0, y0, x1, y1), the same arithmetic as transformers."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def _sorted(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> Detections:
    """Detections ordered by descending score (stable, so ties keep their input order), on the CPU."""
    boxes, scores, labels = boxes.float().cpu(), scores.float().cpu(), labels.long().cpu()
    order = torch.sort(scores, descending=True, stable=True).indices
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


def grounding_dino_prompt(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join phrases the way Grounding DINO expects: lower-case, each ending with ``"."``.

    Args:
        phrases: the phrases; trailing periods and surrounding spaces are dropped.

    Returns:
        ``(prompt, spans)``: the prompt and each phrase's ``(start, end)`` character span in it.

    Raises:
        ValueError: a phrase contains ``"."`` inside it (Grounding DINO reads ``"."`` as a phrase separator).

    Example:
        >>> grounding_dino_prompt(["A cat", "a remote control."])
        ('a cat. a remote control.', [(0, 5), (7, 23)])
    """
    parts, spans, pos = [], [], 0
    for p in phrases:
        clean = " ".join(p.strip().lower().rstrip(".").split())
        if not clean or "." in clean:
            raise ValueError(
                f"Grounding DINO phrase {p!r} is empty or contains '.', which the model reads as a separator "
                "between phrases; rephrase it without '.'"
            )
        spans.append((pos, pos + len(clean)))
        parts.append(clean + ".")
        pos += len(clean) + 2  # the phrase, its ".", and the joining space
    return " ".join(parts), spans


# -- the detector ----------------------------------------------------------------------------------
class OpenVocabDetector:
    """A transformers open-vocabulary detector and its processor, scoring many phrases per forward pass.

    Attributes:
        kind: the checkpoint's ``model_type``, one of :data:`DETECTOR_TYPES`.
        model: the transformers ``*ForObjectDetection`` model, in eval mode.
        processor: its transformers processor (image processor + tokenizer).

    Example:
        >>> import numpy as np
        >>> from visionfm.testing import tiny_checkpoint
        >>> det = OpenVocabDetector.load(tiny_checkpoint("owlv2"))
        >>> out = det.detect([np.zeros((48, 80, 3), np.uint8)], ["a cat", "a dog"], threshold=0.0)
        >>> sorted(out[0]), out[0]["boxes"].shape[1], int(out[0]["labels"].max()) <= 1
        (['boxes', 'labels', 'scores'], 4, True)
    """

    def __init__(self, model: Any, processor: Any) -> None:
        kind = getattr(getattr(model, "config", None), "model_type", None)
        if kind not in DETECTOR_TYPES:
            raise ValueError(f"expected a model whose config.model_type is one of {DETECTOR_TYPES}, got {kind!r}")
        self.kind: str = kind
        self.name: str = kind
        self.model = model.eval()
        self.processor = processor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, device={self.device}, dtype={self.dtype})"

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters (pixel values are cast to it)."""
        return next(self.model.parameters()).dtype

    @classmethod
    def load(
        cls,
        name: str | os.PathLike,
        *,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
        allow_pickle: bool = False,
        local_files_only: bool | None = None,
    ) -> OpenVocabDetector:
        """Load a detector from a checkpoint directory or a hub id (local Hugging Face cache first).

        Args:
            name: a transformers checkpoint directory, or a hub id such as ``"google/owlv2-base-patch16-ensemble"``,
                ``"google/owlvit-base-patch32"`` or ``"IDEA-Research/grounding-dino-tiny"``.
            device: ``"cpu"`` (default), ``"cuda"``, ``"auto"`` (CUDA when available), ...
            dtype: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``.
            allow_pickle: permit ``pytorch_model.bin`` when no safetensors exist (transformers then reads it
                with ``torch.load(weights_only=True)``).
            local_files_only: never use the network (default: ``HF_HUB_OFFLINE``).

        Returns:
            The detector, in eval mode on ``device``.

        Raises:
            ValueError: ``name`` is not a directory or hub id, or its ``config.json`` is not a detector's.
            FileNotFoundError: the checkpoint has no weights.
            PickleCheckpointError: only pickle weights exist and ``allow_pickle`` is False.
            ModelNotAvailableError: a hub id that is not cached and cannot be downloaded now.
        """
        name = os.fspath(name)
        path, _, _ = resolve_source(
            name, allow_pickle=allow_pickle, local_files_only=local_files_only, open_clip_tags=False,
            allow_patterns=["*.json", "*.safetensors", "*.txt", *(["*.bin"] if allow_pickle else [])],
        )  # fmt: skip
        return cls.from_dir(path, name=name, device=device, dtype=dtype, allow_pickle=allow_pickle)

    @classmethod
    def from_dir(
        cls,
        path: Path,
        *,
        name: str | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
        allow_pickle: bool = False,
    ) -> OpenVocabDetector:
        """Load a detector from a local transformers checkpoint directory (see :meth:`load`)."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        path = Path(path)
        name = name or str(path)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name!r} ({path}) has no config.json; expected a transformers checkpoint of an open-vocabulary "
                f"detector (model_type one of {DETECTOR_TYPES})"
            )
        kind = read_json(path / "config.json").get("model_type")
        if kind not in DETECTOR_TYPES:
            raise ValueError(
                f"{name!r} ({path}) holds a {kind!r} checkpoint; expected an open-vocabulary detector with "
                f"model_type one of {DETECTOR_TYPES}"
            )
        try:
            weights = find_weights(path, _SAFETENSORS, _PICKLES, allow_pickle=allow_pickle)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{name!r}: {e}") from None
        check_no_pickle_only(path, allow_pickle=allow_pickle)
        # load_hf_model refuses a file that lacks tensors the model needs or holds mis-shaped ones (naming them),
        # instead of leaving those layers randomly initialised
        model = load_hf_model(AutoModelForZeroShotObjectDetection, path, allow_pickle=weights.name not in _SAFETENSORS)
        processor = AutoProcessor.from_pretrained(path)
        model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        det = cls(model, processor)
        det.name = name
        logger.info("loaded %s detector %s from %s on %s", kind, name, path, det.device)
        return det

    # -- inference ---------------------------------------------------------------------------------
    def detect(
        self,
        images: Any,
        phrases: str | Sequence[str],
        *,
        threshold: float = 0.1,
        text_threshold: float | None = None,
        batch_size: int = 8,
    ) -> list[Detections]:
        """Find every phrase in every image.

        Args:
            images: a list of images (or one image): PIL images, HWC uint8 numpy arrays, CHW tensors (uint8 or
                float in [0, 1]) or paths; anything :func:`visionfm.data.images.to_uint8_chw` accepts.
            phrases: ``N`` text queries (``"a cat"``, ``"a remote control"``); one string is one phrase.
            threshold: score threshold; a detection is kept when its score is strictly greater. For Grounding
                DINO this is the box threshold (its model cards use 0.25-0.35).
            text_threshold: Grounding DINO only: the token probability above which a token belongs to a box's
                text label (default :data:`GROUNDING_DINO_TEXT_THRESHOLD`). Ignored by OWL models.
            batch_size: images per forward pass; all ``N`` phrases are scored in that same pass. Grounding DINO
                batches only images whose resized sizes agree (so a result never depends on the other images).

        Returns:
            One dict per image, detections sorted by descending score:

            - ``"boxes"``: float32 ``[M, 4]`` (x0, y0, x1, y1) in the original image's pixels (not clipped).
            - ``"scores"``: float32 ``[M]`` in [0, 1].
            - ``"labels"``: int64 ``[M]``, indices into ``phrases``.

            All on the CPU. OWL models report a box once per phrase that scores above ``threshold``; Grounding
            DINO reports each box once, with its best phrase.

        Raises:
            ValueError: no phrases, an empty phrase, ``batch_size < 1``, or (Grounding DINO) a phrase with an
                inner ``"."`` or a prompt longer than the model's ``max_text_len`` tokens.
        """
        phrases = _check_phrases(phrases)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = [to_uint8_chw(im, name=f"image {i}") for i, im in enumerate(as_image_list(images))]
        results: list[Detections] = []
        with torch.inference_mode():
            if self.kind == "grounding-dino":
                tt = GROUNDING_DINO_TEXT_THRESHOLD if text_threshold is None else text_threshold
                text = self._grounding_dino_text(phrases)
                for start in range(0, len(items), batch_size):
                    results += self._detect_grounding_dino(items[start : start + batch_size], text, threshold, tt)
            else:
                text = self._owl_text(phrases)
                for start in range(0, len(items), batch_size):
                    results += self._detect_owl(items[start : start + batch_size], text, threshold)
        return results

    # -- OWL-ViT / OWLv2 -----------------------------------------------------------------------------
    def _owl_text(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` ``[N, L]``, padded to the text tower's length (as the processor)."""
        tok = self.processor.tokenizer
        max_len = int(self.model.config.text_config.max_position_embeddings)
        too_long = [p for p, ids in zip(phrases, tok(phrases)["input_ids"]) if len(ids) > max_len]
        if too_long:
            logger.warning("phrases longer than %d tokens are truncated: %s", max_len, too_long)
        enc = tok(phrases, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _detect_owl(self, images: list[torch.Tensor], text: dict[str, torch.Tensor], threshold: float) -> list:
        pixel_values = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = self.model(
            pixel_values=pixel_values.to(self.device, self.dtype),
            input_ids=text["input_ids"].repeat(len(images), 1).to(self.device),
            attention_mask=text["attention_mask"].repeat(len(images), 1).to(self.device),
        )
        scores = out.logits.float().sigmoid()  # [B, P, N]
        boxes = _cxcywh_to_xyxy(out.pred_boxes.float())  # [B, P, 4], relative to the (padded) model input
        results = []
        for i, im in enumerate(images):
            h, w = im.shape[-2:]
            if self.kind == "owlv2":  # padded bottom/right to a square of side max(H, W), then resized
                side = float(max(h, w))
                scale = torch.tensor([side, side, side, side])
            else:  # resized to the model's square input without padding
                scale = torch.tensor([float(w), float(h), float(w), float(h)])
            per_phrase = scores[i].T  # [N, P]: phrase-major, the order transformers' pipeline visits them
            label, box = (per_phrase > threshold).nonzero(as_tuple=True)
            results.append(_sorted(boxes[i][box] * scale.to(boxes.device), per_phrase[label, box], label))
        return results

    # -- Grounding DINO --------------------------------------------------------------------------------
    def _grounding_dino_text(self, phrases: list[str]) -> dict[str, Any]:
        """The joined prompt, its encoding ``[1, L]`` and each token's phrase index (``-1``: none)."""
        prompt, spans = grounding_dino_prompt(phrases)
        tok = self.processor.tokenizer
        enc = tok(prompt, return_tensors="pt", return_token_type_ids=True, return_offsets_mapping=True)
        max_len = int(self.model.config.max_text_len)
        if enc["input_ids"].shape[1] > max_len:
            raise ValueError(
                f"the Grounding DINO prompt for {len(phrases)} phrases is {enc['input_ids'].shape[1]} tokens, more "
                f"than the model's max_text_len={max_len}; split the phrases over several calls"
            )
        token_phrase = torch.full((enc["input_ids"].shape[1],), -1, dtype=torch.long)
        for t, (s, e) in enumerate(enc.pop("offset_mapping")[0].tolist()):
            if e > s:  # special tokens have empty offsets
                for k, (ps, pe) in enumerate(spans):
                    if s >= ps and e <= pe:
                        token_phrase[t] = k
                        break
        canonical = [
            tok.decode(tok(prompt[s:e], add_special_tokens=False)["input_ids"]).strip().lower() for s, e in spans
        ]
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        return {"inputs": inputs, "token_phrase": token_phrase, "canonical": canonical}

    def _detect_grounding_dino(
        self, images: list[torch.Tensor], text: dict[str, Any], threshold: float, text_threshold: float
    ) -> list[Detections]:
        ip = self.processor.image_processor
        processed = [ip(images=[im], return_tensors="pt") for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(processed):  # batch only same-size inputs: no padding, batch-invariant results
            groups.setdefault(tuple(p["pixel_values"].shape[-2:]), []).append(i)
        results: list[Detections | None] = [None] * len(images)
        for idx in groups.values():
            b = len(idx)
            model_inputs = {k: v.repeat(b, 1).to(self.device) for k, v in text["inputs"].items()}
            pixel_values = torch.cat([processed[i]["pixel_values"] for i in idx]).to(self.device, self.dtype)
            if "pixel_mask" in processed[idx[0]]:
                model_inputs["pixel_mask"] = torch.cat([processed[i]["pixel_mask"] for i in idx]).to(self.device)
            out = self.model(pixel_values=pixel_values, **model_inputs)
            sizes = [tuple(images[i].shape[-2:]) for i in idx]
            post = self.processor.post_process_grounded_object_detection(
                out,
                input_ids=model_inputs["input_ids"],
                threshold=threshold,
                text_threshold=text_threshold,
                target_sizes=sizes,
            )
            probs = out.logits.float().sigmoid()  # [b, Q, max_text_len]
            for j, i in enumerate(idx):
                keep = probs[j].max(dim=-1).values > threshold  # the same boxes, in the same order, as `post`
                labels = self._grounding_dino_labels(post[j]["text_labels"], probs[j][keep], text, text_threshold)
                results[i] = _sorted(post[j]["boxes"], post[j]["scores"], labels)
        return results  # type: ignore[return-value]

    @staticmethod
    def _grounding_dino_labels(
        text_labels: list[str], probs: torch.Tensor, text: dict[str, Any], text_threshold: float
    ) -> torch.Tensor:
        """Map Grounding DINO's text labels back to phrase indices.

        A text label is the decoded run of tokens whose probability exceeds ``text_threshold``. When it equals
        one phrase's own decoded tokens (lower-case, stripped), that phrase is the label (the first one if
        phrases repeat). Otherwise (empty, part of a phrase, or tokens from several phrases) the label is the
        phrase whose tokens best overlap the above-threshold tokens: the most such tokens, ties broken by the
        highest token probability; with no token above the threshold, the phrase of the most probable token.

        Args:
            text_labels: the processor's ``text_labels`` for the kept boxes, ``[M]`` strings.
            probs: ``[M, max_text_len]`` token probabilities of the kept boxes, in the same order.
            text: :meth:`_grounding_dino_text`'s output (``token_phrase``, ``canonical``).
            text_threshold: the text threshold used for ``text_labels``.

        Returns:
            int64 ``[M]`` phrase indices.
        """
        token_phrase, canonical = text["token_phrase"], text["canonical"]
        n_phrases = len(canonical)
        length = token_phrase.shape[0]
        labels = []
        for label, p in zip(text_labels, probs):
            norm = " ".join(label.strip().lower().split())
            if norm in canonical:
                labels.append(canonical.index(norm))
                continue
            p = p[:length].cpu()
            in_phrase = token_phrase >= 0
            owner = token_phrase.clamp(min=0)
            above = (p > text_threshold) & in_phrase
            counts = torch.zeros(n_phrases).index_add_(0, owner[above], torch.ones(int(above.sum())))
            best_prob = torch.full((n_phrases,), -1.0).scatter_reduce(0, owner[in_phrase], p[in_phrase], "amax")
            if counts.max() > 0:
                tied = counts == counts.max()
                labels.append(int(torch.where(tied, best_prob, torch.full_like(best_prob, -2.0)).argmax()))
            else:
                labels.append(int(best_prob.argmax()))
            logger.debug("Grounding DINO label %r mapped to phrase %d by token overlap", label, labels[-1])
        return torch.tensor(labels, dtype=torch.long)


__all__ = [
    "DETECTOR_TYPES",
    "GROUNDING_DINO_TEXT_THRESHOLD",
    "OpenVocabDetector",
    "detector_type",
    "grounding_dino_prompt",
]


# -- the family ------------------------------------------------------------------------------------
def load_detector(
    name: str | os.PathLike,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
) -> OpenVocabDetector:
    """Load an open-vocabulary detector by alias (``"owlv2-base"``, see ``visionfm models --family detector``),
    hub id or local directory; the same resolver as ``load_encoder`` (offline-first, pickle refused unless allowed).

    Example:
        >>> from visionfm.testing import tiny_checkpoint
        >>> load_detector(tiny_checkpoint("owlv2"), device="cpu").kind
        'owlv2'
    """
    return OpenVocabDetector.load(
        name, device=device, dtype=dtype, allow_pickle=allow_pickle, local_files_only=local_files_only
    )


def _detect(path: Path) -> str | None:
    return "transformers" if hf_model_type(path) in DETECTOR_TYPES else None


def _build(req: LoadRequest) -> OpenVocabDetector:
    return OpenVocabDetector.from_dir(req.path, name=req.name, allow_pickle=req.allow_pickle)


register_family(
    Family(
        name="detector",
        backends=("transformers",),
        detect=_detect,
        build=_build,
        description="open-vocabulary detectors (OWLv2, OWL-ViT, Grounding DINO) for pipeline('grounding')",
        formats="transformers (config.json with model_type owlv2 / owlvit / grounding-dino)",
        kind="detector",
    )
)
_ALIAS_TYPES: dict[str, str] = {}
for _name, _src, _type, _desc in [
    ("owlv2-base", "google/owlv2-base-patch16-ensemble", "owlv2", "OWLv2 ViT-B/16 (ensemble), 960px"),
    ("owlv2-large", "google/owlv2-large-patch14-ensemble", "owlv2", "OWLv2 ViT-L/14 (ensemble), 1008px"),
    ("owlvit-base-32", "google/owlvit-base-patch32", "owlvit", "OWL-ViT ViT-B/32, 768px"),
    ("owlvit-base-16", "google/owlvit-base-patch16", "owlvit", "OWL-ViT ViT-B/16, 768px"),
    ("owlvit-large", "google/owlvit-large-patch14", "owlvit", "OWL-ViT ViT-L/14, 840px"),
    ("grounding-dino-tiny", "IDEA-Research/grounding-dino-tiny", "grounding-dino", "Grounding DINO Swin-T"),
    ("grounding-dino-base", "IDEA-Research/grounding-dino-base", "grounding-dino", "Grounding DINO Swin-B"),
]:
    register_model(ModelSpec(name=_name, family="detector", source=_src, backend="transformers", description=_desc))
    _ALIAS_TYPES[_name] = _type
