"""``pipeline("grounding")``: boxes and masks for free-text phrases, M images × N phrases per call.

Two backends behind one call, ``gr(images, phrases=[...], threshold=0.1)``:

- **training-free** (``model=`` a CLIP): the phrases are the labels of a :mod:`zero-shot-seg
  <visionfm.pipelines.zero_shot_seg>` pass (dense CLIP, background by threshold or name); every connected region a
  phrase wins becomes one detection, its box the region's extent and its score the phrase's mean probability over
  the region.
- **detector** (``model=`` an OWLv2, OWL-ViT or Grounding DINO checkpoint, through transformers): the detector's
  boxes and scores; OWLv2's square padding is undone so boxes are in original pixels.
- **SAM 3** (``model=`` a SAM 3 checkpoint, e.g. ``"sam3"``): its concept prompts
  (:func:`visionfm.pipelines.sam3_concepts.segment_concepts`): per phrase every instance with box, mask and score,
  and the phrase's presence score (``GroundingResult.presence``). M images x N phrases cost one vision pass per image
  and one text pass per phrase set (cached). Its instances come from a set predictor, so no NMS is applied and
  ``refine=`` is refused (the masks are SAM 3's own).

With ``refine=`` a SAM model, each box becomes a SAM box prompt and its mask; scores are multiplied by SAM's
predicted mask IoU (mask-quality rescoring). Then per-phrase NMS and the score ``threshold``. Boxes are xyxy in
original pixels; results follow transformers' ``zero-shot-object-detection`` format in ``to_dict()``.

Phrases: one string is one phrase; phrases must be unique (ignoring case and extra spaces) and fit the text
tower's context (77 tokens for CLIP, 16 for OWL-ViT / OWLv2, Grounding DINO's ``max_text_len`` for its joined
prompt): a truncated phrase is refused rather than scored on its first tokens only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.masks import mask_to_rle
from ..foundation.encoder import Encoder
from ..foundation.zero_shot import check_labels
from .base import _LOAD_OPTIONS, Pipeline, register_pipeline

logger = logging.getLogger(__name__)


@dataclass
class GroundingResult:
    """Detections of the phrases in one image.

    Attributes:
        boxes: float ``[M, 4]`` xyxy in original image pixels.
        scores: float ``[M]``, sorted best first.
        labels: int64 ``[M]``, indices into ``phrases``.
        phrases: the queried phrases.
        masks: bool ``[M, H, W]`` at the original size (training-free regions, or SAM masks), or ``None``.
        protocol: the settings that produced the result.
        presence: float ``[N]`` in [0, 1], each phrase's presence score (SAM 3 backend only; else ``None``).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    phrases: list[str]
    masks: torch.Tensor | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    presence: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to_dict(self) -> list[dict[str, Any]]:
        """transformers' ``zero-shot-object-detection`` format: ``[{"score", "label", "box": {xmin, ymin, xmax,
        ymax}}]`` (plus ``"mask"``, COCO uncompressed RLE, when there are masks)."""
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            d: dict[str, Any] = {
                "score": float(self.scores[i]),
                "label": self.phrases[int(self.labels[i])],
                "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
            }
            if self.masks is not None:
                d["mask"] = mask_to_rle(self.masks[i].cpu().numpy())
            out.append(d)
        return out

    def overlay(self, image: Any, alpha: float = 0.45) -> Any:
        """The image with masks tinted, boxes drawn and labelled with phrase and score (a PIL image)."""
        from PIL import Image, ImageDraw

        from ..data.images import to_uint8_chw

        base = to_uint8_chw(image).permute(1, 2, 0).numpy().astype(np.float32)
        rng = np.random.default_rng(3)
        palette = rng.integers(60, 256, (max(len(self.phrases), 1), 3))
        if self.masks is not None:
            for m, k in zip(self.masks.cpu().numpy(), self.labels.tolist()):
                base[m] = (1 - alpha) * base[m] + alpha * palette[k]
        out = Image.fromarray(base.round().clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        for b, s, k in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            c = tuple(int(v) for v in palette[k])
            draw.rectangle(b, outline=c, width=2)
            draw.text((b[0] + 2, b[1] + 1), f"{self.phrases[k]} {s:.2f}", fill=c)
        return out


def regions(
    label_map: torch.Tensor, probs: torch.Tensor, first: int, min_area: int = 1
) -> list[tuple[int, torch.Tensor, float]]:
    """Connected regions of a label map: ``[(label, bool mask [H, W], mean probability), ...]``.

    Args:
        label_map: int ``[H, W]``.
        probs: float ``[K, H, W]`` class probabilities at the same size.
        first: labels below this (background) give no regions.
        min_area: smallest region kept, in pixels.
    """
    from scipy import ndimage

    out = []
    lm = label_map.cpu().numpy()
    for k in range(first, probs.shape[0]):
        comp, n = ndimage.label(lm == k, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            continue
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        pk = probs[k].cpu().numpy()
        sums = np.bincount(comp.ravel(), weights=pk.ravel(), minlength=n + 1)
        for c in range(1, n + 1):
            if areas[c] >= min_area:
                out.append((k, torch.from_numpy(comp == c), float(sums[c] / areas[c])))
    return out


@register_pipeline("grounding")
class GroundingPipeline(Pipeline):
    """Phrase grounding. See the module docstring.

    Args:
        encoder: a CLIP encoder (training-free backend); detectors come through :meth:`build`.
        detector: an :class:`~visionfm.foundation.detectors.OpenVocabDetector` (detector backend).
        refine: a SAM model name / encoder / mask-generation pipeline, and/or ``"pamr"`` (training-free: refine
            the dense scores along colour edges before finding regions); a list for both.
        batch_size: images per forward pass.
        min_area: training-free: smallest region, as a fraction of the image.
        nms_thresh: per-phrase box NMS IoU.
        **seg_options: training-free: options of the zero-shot-seg pipeline (``mode``, ``cos_thresh``,
            ``templates``, ``short_side``, ``window``, ``stride``, ``proxy``, ...).
    """

    default_model = "clip-vit-b-16"

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        detector: Any = None,
        refine: Any = None,
        batch_size: int = 8,
        min_area: float = 0.001,
        nms_thresh: float = 0.5,
        **seg_options: Any,
    ) -> None:
        if (encoder is None) == (detector is None):
            raise ValueError("grounding needs either a CLIP encoder, a SAM 3 encoder or a detector")
        self.detector = detector
        self.seg = None
        self.concepts = encoder if encoder is not None and encoder.info.family == "sam3" else None
        if self.concepts is not None:
            if refine is not None or seg_options:
                given = (["refine"] if refine is not None else []) + sorted(seg_options)
                raise ValueError(f"options {given} do not apply to SAM 3 grounding (its masks are its own)")
            super().__init__(encoder, batch_size=batch_size)
            self.min_area, self.nms_thresh, self.sam = 0.0, float(nms_thresh), None
            return
        items = list(refine) if isinstance(refine, (list, tuple)) else ([] if refine is None else [refine])
        if "pamr" in items:  # PAMR refines the dense scores (training-free backend); SAM refines boxes to masks
            if encoder is None:
                raise ValueError("refine='pamr' refines dense CLIP scores; it does not apply to a detector")
            seg_options["refine"] = "pamr"
            items.remove("pamr")
        if len(items) > 1:
            raise ValueError(f"refine takes 'pamr' and/or one SAM model, got {refine!r}")
        refine = items[0] if items else None
        if encoder is not None:
            from .zero_shot_seg import ZeroShotSegPipeline

            seg_options.setdefault("mode", "maskclip")
            self.seg = ZeroShotSegPipeline(encoder, batch_size=max(batch_size, 1), **seg_options)
        elif seg_options:
            raise ValueError(f"options {sorted(seg_options)} are for the training-free (CLIP) backend")
        super().__init__(encoder, batch_size=batch_size)  # type: ignore[arg-type] - None with a detector
        self.min_area = float(min_area)
        self.nms_thresh = float(nms_thresh)
        self.sam = None
        if refine is not None:
            from .mask_generation import MaskGenerationPipeline

            if isinstance(refine, MaskGenerationPipeline):
                self.sam = refine
            else:
                from ..foundation.loading import load_encoder

                sam_enc = refine if isinstance(refine, Encoder) else load_encoder(refine, device=self._device)
                self.sam = MaskGenerationPipeline(sam_enc)

    def __repr__(self) -> str:
        name = self.encoder.info.name if self.encoder is not None else getattr(self.detector, "name", "detector")
        return f"GroundingPipeline(model={name!r}, backend={self.protocol['backend']!r}, batch_size={self.batch_size})"

    @property
    def _device(self) -> torch.device:
        if self.concepts is not None:
            return self.concepts.device
        return self.seg.encoder.device if self.seg is not None else torch.device(self.detector.model.device)

    @classmethod
    def build(
        cls,
        model: str | Encoder,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> Pipeline:
        """A detector checkpoint (OWLv2, OWL-ViT, Grounding DINO) gives the detector backend; anything else is
        loaded as a CLIP encoder for the training-free backend."""
        if not isinstance(model, Encoder):
            from ..foundation.detectors import OpenVocabDetector, detector_type

            if detector_type(model) is not None:
                load_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in ("allow_pickle", "local_files_only")}
                det = OpenVocabDetector.load(model, device=_resolve_device(device), dtype=dtype, **load_kw)
                return cls(detector=det, batch_size=batch_size, **kwargs)
        if isinstance(model, Encoder):
            return cls(model, batch_size=batch_size, **kwargs)
        from ..foundation.loading import load_encoder

        load_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _LOAD_OPTIONS}
        return cls(load_encoder(model, device=device, dtype=dtype, **load_kw), batch_size=batch_size, **kwargs)

    @property
    def protocol(self) -> dict[str, Any]:
        """The settings every result records."""
        if self.concepts is not None:
            return {"backend": "sam3", "model": self.concepts.info.name, "nms_thresh": None, "refine": None}
        p: dict[str, Any] = {"nms_thresh": self.nms_thresh}
        if self.seg is not None:
            p.update(backend="training-free", min_area=self.min_area, **self.seg.protocol)
        else:
            p.update(backend=self.detector.kind, model=str(getattr(self.detector, "name", self.detector.kind)))
        p["refine"] = f"sam:{self.sam.encoder.info.name}" if self.sam is not None else None
        return p

    def _run(
        self,
        images: list[Any],
        phrases: Sequence[str] | None = None,
        *,
        threshold: float | None = None,
        text_threshold: float | None = None,
        cos_thresh: float | None = None,
        mask_threshold: float | None = None,
    ) -> list[GroundingResult]:
        from torchvision.ops import batched_nms

        from ..data.images import to_uint8_chw

        if phrases is None:
            raise ValueError("grounding needs phrases=[...], the things to find (one string is one phrase)")
        phrases = check_labels(phrases, "phrases")
        pixels = [to_uint8_chw(im, name=f"images[{i}]") for i, im in enumerate(images)]
        if self.concepts is not None:  # Sam3Processor's default threshold, 0.3; the other backends' 0.1
            th = 0.3 if threshold is None else float(threshold)
            return self._sam3(pixels, phrases, th, text_threshold, cos_thresh, mask_threshold)
        threshold = 0.1 if threshold is None else float(threshold)
        if mask_threshold is not None:
            raise ValueError("mask_threshold applies to the SAM 3 backend")
        if self.seg is not None:
            from .zero_shot_seg import _parse_labels

            if text_threshold is not None:
                raise ValueError("text_threshold applies to Grounding DINO; the CLIP backend has one threshold")
            _parse_labels(phrases, None, name="phrases")  # errors that name phrases, before any image runs
            raw = [self._training_free(px, phrases, cos_thresh) for px in pixels]
        else:
            if cos_thresh is not None:
                raise ValueError("cos_thresh applies to the training-free (CLIP) backend")
            self._refuse_truncated(phrases)
            dets = self.detector.detect(
                pixels, phrases, threshold=threshold,  # SAM rescoring only lowers scores: pre-filtering is exact
                text_threshold=text_threshold, batch_size=self.batch_size,
            )  # fmt: skip
            raw = [(d["boxes"].float().cpu(), d["scores"].float().cpu(), d["labels"].long().cpu(), None) for d in dets]
        results = []
        proto = dict(self.protocol, threshold=threshold, text_threshold=text_threshold, cos_thresh=cos_thresh)
        for px, (boxes, scores, labels, masks) in zip(pixels, raw):
            if self.sam is not None and len(boxes):
                res = self.sam(px, boxes=boxes.tolist())
                masks, scores = res.masks, scores * res.scores.clamp(0, 1)
            keep = scores >= threshold
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            masks = masks[keep] if masks is not None else None
            order = (
                batched_nms(boxes, scores, labels, self.nms_thresh) if len(boxes) else torch.zeros(0, dtype=torch.long)
            )
            results.append(
                GroundingResult(
                    boxes=boxes[order], scores=scores[order], labels=labels[order], phrases=phrases,
                    masks=masks[order] if masks is not None else None, protocol=proto,
                )
            )  # fmt: skip
        return results

    def _sam3(self, pixels: list[torch.Tensor], phrases: list[str], threshold: float, text_threshold: float | None,
              cos_thresh: float | None, mask_threshold: float | None) -> list[GroundingResult]:  # fmt: skip
        """SAM 3 concept prompts: instances over ``threshold`` (``Sam3Processor``'s rule), no NMS."""
        from .sam3_concepts import segment_concepts

        if text_threshold is not None or cos_thresh is not None:
            raise ValueError("text_threshold / cos_thresh do not apply to SAM 3 grounding (one score threshold)")
        mt = 0.5 if mask_threshold is None else float(mask_threshold)
        res = segment_concepts(self.concepts, pixels, phrases, threshold=threshold, mask_threshold=mt,
                               batch_size=self.batch_size)  # fmt: skip
        proto = dict(self.protocol, threshold=threshold, mask_threshold=mt)
        return [
            GroundingResult(
                boxes=r.boxes,
                scores=r.scores,
                labels=r.labels,
                phrases=list(phrases),
                masks=r.masks,
                protocol=dict(proto),
                presence=r.presence,
            )  # fmt: skip
            for r in res
        ]

    def _refuse_truncated(self, phrases: list[str]) -> None:
        """OWL-ViT / OWLv2 read each phrase alone, cut to the text tower's length: refuse longer ones. (Grounding
        DINO's detector refuses a joined prompt over ``max_text_len`` itself.)"""
        if self.detector.kind == "grounding-dino":
            return
        tok = self.detector.processor.tokenizer
        n = int(self.detector.model.config.text_config.max_position_embeddings)
        cut = [p for p, ids in zip(phrases, tok(phrases, verbose=False)["input_ids"]) if len(ids) > n]
        if cut:
            raise ValueError(
                f"{len(cut)} phrase(s) are longer than the {n}-token text context of the {self.detector.kind} "
                f"detector: they would be truncated, and phrases that differ only after the cut would get identical "
                f"scores. Shorten them: {', '.join(map(repr, cut))}"
            )

    def _training_free(
        self, pixels: torch.Tensor, phrases: list[str], cos_thresh: float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Regions of a zero-shot-seg pass: boxes ``[M, 4]``, scores ``[M]``, labels ``[M]``, masks ``[M, H, W]``."""
        H, W = pixels.shape[-2:]
        seg = self.seg._run([pixels], phrases, background=True, cos_thresh=cos_thresh)[0]
        first = 1  # background is row 0
        full = F.interpolate(seg.probs[None].float(), (H, W), mode="bilinear", align_corners=False)[0]
        regs = regions(seg.label_map, full, first, min_area=max(1, int(self.min_area * H * W)))
        if not regs:
            return (
                torch.zeros(0, 4),
                torch.zeros(0),
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, H, W, dtype=torch.bool),
            )
        from ..data.masks import masks_to_boxes

        masks = torch.stack([m for _, m, _ in regs])
        boxes = torch.from_numpy(masks_to_boxes(masks.numpy())).float()
        scores = torch.tensor([s for _, _, s in regs], dtype=torch.float32)
        labels = torch.tensor([k - first for k, _, _ in regs], dtype=torch.long)
        return boxes, scores, labels, masks


def _resolve_device(device: str | torch.device | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
