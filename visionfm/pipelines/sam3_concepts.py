"""Concept segmentation with SAM 3: text phrases in, instances, semantic label maps and labelled masks out.

Three functions on a SAM 3 encoder (``load_encoder("sam3")``, :class:`visionfm.foundation.sam3.Sam3Encoder`):

- :func:`segment_concepts`: every instance of every phrase, per image (boxes, masks, scores) and each phrase's
  presence score: what grounding needs. The numbers are those of ``Sam3Model`` + ``Sam3Processor.
  post_process_instance_segmentation`` run once per (image, phrase), as users of transformers do today.
- :func:`sam3_semantic`: a semantic label map over class names with synonyms and background words, fusing SAM 3's
  semantic head with its instance masks and weighting each class by its presence score, as SegEarth-OV3 does: what
  zero-shot-seg needs (a :class:`~visionfm.pipelines.zero_shot_seg.SegResult`, labels indexed as zero-shot-seg
  indexes them).
- :func:`segment_everything`: instance masks for a whole label list, each mask labelled with its class, duplicates
  across classes removed by NMS.

**What is computed once.** M images x N phrases cost M vision-backbone passes (one per image, ``batch_size`` images
at a time: :meth:`Sam3Encoder.vision_embeds`), one text-encoder pass per phrase set (:meth:`Sam3Encoder.
phrase_embeds`, LRU-cached by the phrase tuple, so a second call with the same phrases runs no text encoder), and M x
ceil(N / ``phrase_batch``) passes of the DETR and mask heads, each over a batch of phrases that shares the image's
vision embeddings (:meth:`Sam3Encoder.decode`). Low-resolution mask logits are reduced to what the result keeps
(the instances over the threshold, upsampled; or one fused map per class) one phrase batch at a time, so memory grows
with the kept instances and the number of classes, not with N x queries x mask size.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.images import load_images
from ..data.masks import mask_to_rle
from ..foundation.encoder import Encoder
from ..foundation.preprocess import preprocess_uint8
from ..foundation.zero_shot import check_labels
from .base import Pipeline
from .seg_protocol import classify
from .zero_shot_seg import BACKGROUND, SegResult, _check_shared_texts, _parse_labels, _unit_range

logger = logging.getLogger(__name__)

#: SegEarth-OV3, the fusion :func:`sam3_semantic` reproduces: repository @ commit (``segearthov3_segmentor.py``,
#: ``sam3/model/sam3_image_processor.py``).
SEGEARTH_OV3 = "github.com/earth-insights/SegEarth-OV-3@87e5cc18c8bc9c0b4713b975587281ac1c97c79a"


# -- results ---------------------------------------------------------------------------------------
@dataclass
class PhraseInstances:
    """The instances of one phrase in one image.

    Attributes:
        phrase: the phrase.
        boxes: float ``[M, 4]`` xyxy in original image pixels (not clipped to the image, as transformers).
        scores: float ``[M]`` in [0, 1], best first: ``sigmoid(class logit) * presence``.
        masks: bool ``[M, H, W]`` at the original image size.
        presence: the phrase's presence score in [0, 1] (``sigmoid`` of SAM 3's presence logit): how sure the model
            is that the concept is in the image at all, whether or not an instance passed the threshold.
    """

    phrase: str
    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    presence: float

    def __len__(self) -> int:
        return self.boxes.shape[0]


@dataclass
class ConceptResult:
    """Instances of N phrases (or labels) in one image. The fields are those of
    :class:`~visionfm.pipelines.grounding.GroundingResult`, plus ``presence``.

    Attributes:
        boxes: float ``[M, 4]`` xyxy in original image pixels.
        scores: float ``[M]`` in [0, 1], sorted best first.
        labels: int64 ``[M]``, indices into ``phrases``.
        phrases: the queried phrases (:func:`segment_everything`: the class names).
        masks: bool ``[M, H, W]`` at the original image size.
        presence: float ``[N]``: each phrase's presence score in [0, 1] (for a class with synonyms, its best).
        protocol: the settings that produced the result.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    phrases: list[str]
    masks: torch.Tensor
    presence: torch.Tensor
    protocol: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def instances(self, phrase: int | str) -> PhraseInstances:
        """The instances of one phrase (by index or text), best first."""
        k = self.phrases.index(phrase) if isinstance(phrase, str) else int(phrase)
        if not 0 <= k < len(self.phrases):
            raise IndexError(f"phrase index {phrase} is out of range for {len(self.phrases)} phrases")
        sel = self.labels == k
        return PhraseInstances(
            self.phrases[k], self.boxes[sel], self.scores[sel], self.masks[sel], float(self.presence[k])
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"detections": [{"score", "label", "box": {xmin, ymin, xmax, ymax}, "mask": COCO RLE}],
        "presence": {phrase: score}, "protocol": {...}}`` (detections in transformers'
        ``zero-shot-object-detection`` format, best first)."""
        dets = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            dets.append(
                {
                    "score": float(self.scores[i]),
                    "label": self.phrases[int(self.labels[i])],
                    "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
                    "mask": mask_to_rle(self.masks[i].cpu().numpy()),
                }
            )
        return {
            "detections": dets,
            "presence": {p: float(s) for p, s in zip(self.phrases, self.presence)},
            "protocol": dict(self.protocol),
        }

    def overlay(self, image: Any, alpha: float = 0.45) -> Any:
        """The image with each mask tinted in its phrase's colour, boxes drawn and labelled "phrase score" (PIL)."""
        from PIL import Image, ImageDraw

        from ..data.images import to_uint8_chw

        base = to_uint8_chw(image).permute(1, 2, 0).numpy().astype(np.float32)
        palette = np.random.default_rng(3).integers(60, 256, (max(len(self.phrases), 1), 3))
        for m, k in zip(self.masks.cpu().numpy(), self.labels.tolist()):
            base[m] = (1 - alpha) * base[m] + alpha * palette[k]
        out = Image.fromarray(base.round().clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        for b, s, k in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            colour = tuple(int(v) for v in palette[k])
            draw.rectangle(b, outline=colour, width=2)
            draw.text((b[0] + 2, b[1] + 1), f"{self.phrases[k]} {s:.2f}", fill=colour)
        return out


# -- the shared loop ---------------------------------------------------------------------------------
def _check_encoder(encoder: Any) -> Any:
    from ..foundation.sam3 import Sam3Encoder

    if not isinstance(encoder, Sam3Encoder):
        what = encoder.info.family if isinstance(encoder, Encoder) else type(encoder).__name__
        raise TypeError(f"SAM 3 concept segmentation needs a SAM 3 encoder (load_encoder('sam3')), got {what}")
    return encoder


def _batch_arg(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass
class _Decoded:
    """SAM 3's raw outputs for one image and a contiguous batch of phrases ``[start, start + n)``."""

    start: int
    logits: torch.Tensor  # [n, Q] class logits
    boxes: torch.Tensor  # [n, Q, 4] xyxy in [0, 1]
    masks: torch.Tensor  # [n, Q, h, w] mask logits
    presence: torch.Tensor  # [n] presence logits
    semantic: torch.Tensor  # [n, 1, h, w] semantic logits


def _decode_images(
    encoder: Any,
    images: list[Any],
    texts: Sequence[str],
    *,
    batch_size: int,
    phrase_batch: int,
    progress: bool | None,
    desc: str,
) -> Iterator[tuple[int, list[_Decoded]]]:
    """Yield ``(image as uint8 [3, H, W], decoded phrase batches)`` in input order: one vision pass per image (images
    decoded ``batch_size`` at a time), the phrases' embeddings once (cached), the heads once per phrase batch. Runs
    under ``torch.inference_mode``."""
    n_chunks = math.ceil(len(texts) / phrase_batch)
    total = len(images) * n_chunks
    show = (len(images) > 1 or n_chunks > 1) if progress is None else progress
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit="decode", disable=not show) as bar:
        emb = encoder.phrase_embeds(list(texts))
        for first in range(0, len(images), batch_size):
            chunk = load_images(images[first : first + batch_size])
            pixels, _ = preprocess_uint8(chunk, encoder.preprocess_config, device=encoder.device)
            vision = encoder.vision_embeds(pixels.to(encoder.dtype))
            for b in range(len(chunk)):
                one = encoder.select_image(vision, b)
                outs = []
                for s in range(0, len(texts), phrase_batch):
                    o = encoder.decode(one, emb[s : s + phrase_batch])
                    outs.append(
                        _Decoded(
                            start=s,
                            logits=o.pred_logits.float(),
                            boxes=o.pred_boxes.float(),
                            masks=o.pred_masks,
                            presence=o.presence_logits.float()[:, 0],
                            semantic=o.semantic_seg,
                        )
                    )
                    bar.update(1)
                yield chunk[b], outs


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[K, h, w]`` to ``[K, H, W]``, bilinear, ``align_corners=False`` (transformers' and SAM 3's own)."""
    if x.shape[0] == 0:
        return x.new_zeros((0, *size))
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _instances(
    outs: list[_Decoded], size: tuple[int, int], threshold: float, mask_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's instances over the threshold, as ``post_process_instance_segmentation`` makes them, best first
    (stable): boxes ``[M, 4]`` in pixels, scores ``[M]``, text indices ``[M]``, bool masks ``[M, H, W]`` (on the
    CPU), and every text's presence ``[N]``."""
    boxes, scores, labels, masks, presence = [], [], [], [], []
    for d in outs:
        pres = d.presence.sigmoid()
        score = d.logits.sigmoid() * pres[:, None]  # [n, Q]
        presence.append(pres)
        scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32, device=score.device)
        for j in range(score.shape[0]):
            keep = score[j] > threshold
            masks.append((_upsample(d.masks[j][keep].float().sigmoid(), size) > mask_threshold).cpu())
            boxes.append(d.boxes[j][keep] * scale)
            scores.append(score[j][keep])
            labels.append(torch.full((int(keep.sum()),), d.start + j, dtype=torch.long, device=score.device))
    scores_t = torch.cat(scores)
    order = torch.sort(scores_t, descending=True, stable=True).indices
    return (
        torch.cat(boxes)[order].cpu(),
        scores_t[order].cpu(),
        torch.cat(labels)[order].cpu(),
        torch.cat(masks)[order.cpu()],
        torch.cat(presence).cpu(),
    )


# -- instances -----------------------------------------------------------------------------------------
def segment_concepts(
    encoder: Any,
    images: Any,
    phrases: str | Sequence[str],
    *,
    threshold: float = 0.3,
    mask_threshold: float = 0.5,
    batch_size: int = 4,
    phrase_batch: int = 16,
    progress: bool | None = None,
) -> ConceptResult | list[ConceptResult]:
    """Every instance of every phrase in every image (SAM 3 concept prompts).

    Per image and phrase, exactly what ``Sam3Processor.post_process_instance_segmentation(outputs, threshold,
    mask_threshold, target_sizes=[(H, W)])`` gives for ``Sam3Model(**Sam3Processor(images=image, text=phrase))``:
    scores ``sigmoid(class logit) * sigmoid(presence logit)``; queries whose score is over ``threshold`` are kept;
    boxes (xyxy in [0, 1] of the model input) times ``(W, H, W, H)``; masks ``sigmoid(mask logit)`` resized bilinearly
    (``align_corners=False``) to ``(H, W)``, then ``> mask_threshold``. The work is shared (module docstring): one
    vision pass per image, one text pass per phrase set, batched heads.

    Example:
        >>> import numpy as np
        >>> from visionfm import load_encoder
        >>> from visionfm.testing import tiny_checkpoint
        >>> enc = load_encoder(tiny_checkpoint("sam3"), device="cpu")
        >>> res = segment_concepts(enc, np.zeros((60, 80, 3), np.uint8), ["a cat", "a dog"], threshold=0.0)
        >>> res.phrases, tuple(res.presence.shape), tuple(res.masks.shape[1:])
        (['a cat', 'a dog'], (2,), (60, 80))

    Args:
        encoder: a SAM 3 encoder (``load_encoder("sam3")``).
        images: one image or a batch (PIL, HWC uint8 array, CHW tensor, path; see ``Encoder.preprocess``).
        phrases: one phrase or a list (unique, ignoring case and extra spaces; at most 32 tokens each).
        threshold: keep instances whose score is over this, in [0, 1] (transformers' default 0.3).
        mask_threshold: binarise mask probabilities over this, in [0, 1] (default 0.5).
        batch_size: images per vision-backbone pass.
        phrase_batch: phrases per pass of the detector and mask heads.
        progress: show a progress bar; default: when there is more than one image or phrase batch.

    Returns:
        One :class:`ConceptResult` per image (a single result for a single image): instances best first, ``labels``
        indexing ``phrases``, and every phrase's ``presence``. ``result.instances(phrase)`` gives one phrase's.
    """
    encoder = _check_encoder(encoder)
    phrases = check_labels(phrases, "phrases")
    threshold = _unit_range("threshold", threshold, 0.0, 1.0)
    mask_threshold = _unit_range("mask_threshold", mask_threshold, 0.0, 1.0)
    items, single = Pipeline._as_batch(images)
    if not items:
        raise ValueError("segment_concepts got no images")
    proto = {
        "model": encoder.info.name,
        "threshold": threshold,
        "mask_threshold": mask_threshold,
        "reference": "transformers Sam3Model + Sam3Processor.post_process_instance_segmentation",
    }
    results: list[ConceptResult] = []
    decoded = _decode_images(
        encoder, items, phrases, batch_size=_batch_arg("batch_size", batch_size),
        phrase_batch=_batch_arg("phrase_batch", phrase_batch), progress=progress, desc="sam3 concepts",
    )  # fmt: skip
    for image, outs in decoded:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        boxes, scores, labels, masks, presence = _instances(outs, size, threshold, mask_threshold)
        results.append(
            ConceptResult(
                boxes=boxes, scores=scores, labels=labels, phrases=list(phrases), masks=masks, presence=presence,
                protocol=dict(proto),
            )
        )  # fmt: skip
    return results[0] if single else results


# -- semantic label map (SegEarth-OV3) -------------------------------------------------------------------
def _background_names(background: Any, by_threshold: bool) -> list[str]:
    """The background texts to prompt, read as zero-shot-seg reads ``background``: ``True`` prompts the word
    "background" (or nothing, when a threshold makes the background), a string or a list prompts those words."""
    if background is True:
        names = [] if by_threshold else [BACKGROUND]
    elif isinstance(background, str):
        names = [background]
    else:
        names = list(background) if background else []
    if not all(isinstance(b, str) and b.strip() for b in names):
        raise ValueError(f"background names must be non-empty strings, got {background!r}")
    return names


def sam3_semantic(
    encoder: Any,
    images: Any,
    labels: str | Sequence[str],
    *,
    synonyms: Mapping[str, str | Sequence[str]] | None = None,
    background: bool | str | Sequence[str] = False,
    prob_thresh: float = 0.0,
    confidence_threshold: float = 0.5,
    instances: bool = True,
    semantic: bool = True,
    presence: bool = True,
    batch_size: int = 4,
    phrase_batch: int = 16,
    progress: bool | None = None,
    check_shared: bool = True,
) -> SegResult | list[SegResult]:
    """A semantic label map from SAM 3: its semantic head fused with its instance masks, weighted by presence.

    The fusion of SegEarth-OV3 (Li, Zhang, Deng, Wang, Meng, Cao: "SegEarth-OV3: Exploring SAM 3 for
    Open-Vocabulary Semantic Segmentation in Remote Sensing Images", arXiv:2512.08730;
    github.com/earth-insights/SegEarth-OV-3 @ 87e5cc18c8bc9c0b4713b975587281ac1c97c79a, ``segearthov3_segmentor.py``
    ``SegEarthOV3Segmentation._inference_single_view`` and ``predict``, ``sam3/model/sam3_image_processor.py``
    ``Sam3Processor._forward_grounding``). Each text ``t`` (every class name, synonym and background word) is one
    SAM 3 prompt on the whole image. With ``p_t = sigmoid(presence logit)``, instance scores
    ``s_i = sigmoid(class logit_i) * p_t``, ``up`` = bilinear resize to the original ``(H, W)``
    (``align_corners=False``) *of the logits*, then the sigmoid:

    ``F_t = p_t * max(0, max_{i: s_i > confidence_threshold} s_i * sigmoid(up(mask logit_i)), sigmoid(up(semantic
    logit)))``

    (each term only when ``instances`` / ``semantic`` / ``presence`` are on: ``use_transformer_decoder``,
    ``use_sem_seg``, ``use_presence_score`` in SegEarth-OV3; all on in every released config). A class's map is the
    maximum over its texts (``"sofa; couch"`` or ``synonyms``: SegEarth-OV3's comma-separated names on a class file
    line); the label is the argmax over classes; pixels whose best value is under ``prob_thresh`` become background
    (label 0, SegEarth-OV3's ``prob_thd`` / ``bg_idx``). Absent classes are dropped *softly*: a low presence score
    scales the whole map down, and ``prob_thresh`` then gives its pixels to the background (there is no hard presence
    cut in SegEarth-OV3).

    Background, as zero-shot-seg: ``background=["background"]`` (or a string, or more words: SegEarth-OV3's
    class 0 line, e.g. ``"background"``) prompts those words as class 0; ``True`` prompts "background" unless
    ``prob_thresh > 0`` makes the background by threshold alone (a row of zeros that never wins); ``False`` with
    ``prob_thresh == 0``: no background label. SegEarth-OV3's released configs are ``background=["background"]``
    (or their class 0 words) with ``prob_thresh`` 0.1-0.6 and ``confidence_threshold`` 0.1-0.5.

    Not reproduced: SegEarth-OV3's sliding windows (``slide_crop``, used by one of its configs; the whole image is
    one view here), and its bfloat16 autocast on CUDA (the encoder's own dtype is used).

    Example:
        >>> import numpy as np
        >>> from visionfm import load_encoder
        >>> from visionfm.testing import tiny_checkpoint
        >>> enc = load_encoder(tiny_checkpoint("sam3"), device="cpu")
        >>> res = sam3_semantic(enc, np.zeros((60, 80, 3), np.uint8), ["cat", "sofa; couch"], background=True)
        >>> res.labels, tuple(res.label_map.shape), tuple(res.probs.shape)
        (['background', 'cat', 'sofa'], (60, 80), (3, 60, 80))

    Args:
        encoder: a SAM 3 encoder (``load_encoder("sam3")``).
        images: one image or a batch.
        labels: class names; ``"sofa; couch"`` adds synonyms (zero-shot-seg's format).
        synonyms: ``{"sofa": ["couch"]}``, more synonyms per class name.
        background: see above.
        prob_thresh: pixels whose best class value is under this become background, in [0, 1].
        confidence_threshold: instances whose score is over this add their masks, in [0, 1] (SegEarth-OV3's
            ``confidence_threshold``; 0.5 in most of its configs).
        instances: fuse the instance masks.
        semantic: fuse the semantic head.
        presence: multiply by the presence score.
        batch_size: images per vision-backbone pass.
        phrase_batch: texts per pass of the detector and mask heads.
        progress: show a progress bar; default: when there is more than one image or text batch.
        check_shared: refuse a text that names two classes (or a class and a background word). A zero-shot-seg
            preset's own lists are taken as the reference lists them (COCO-Object's background words include its
            class "bed"), as the CLIP pipeline does.

    Returns:
        One :class:`~visionfm.pipelines.zero_shot_seg.SegResult` per image (one result for one image): ``label_map``
        int64 ``[H, W]`` indexing ``labels`` (``labels[0] == "background"`` when there is a background), ``probs``
        ``[K, H, W]`` the fused class maps ``F`` in [0, 1] (background by threshold: a row of zeros), ``scores``
        ``[K]`` each label's mean winning value over its pixels, and ``protocol``.
    """
    encoder = _check_encoder(encoder)
    p_th = _unit_range("prob_thresh", prob_thresh, 0.0, 1.0)
    c_th = _unit_range("confidence_threshold", confidence_threshold, 0.0, 1.0)
    if not (instances or semantic):
        raise ValueError("sam3_semantic needs instances=True or semantic=True (there is nothing to fuse otherwise)")
    by_threshold = p_th > 0
    bg_names = _background_names(background, by_threshold)
    names, texts = _parse_labels(labels, synonyms, check_shared=check_shared)
    use_bg = bool(background) or by_threshold
    if use_bg and any(" ".join(n.lower().split()) == BACKGROUND for n in names):
        raise ValueError("'background' is a reserved label when background is on; drop it from labels")
    if bg_names and check_shared:
        _check_shared_texts([BACKGROUND, *names], [bg_names, *texts])
    class_texts = ([bg_names] if bg_names else []) + texts
    out_labels = ([BACKGROUND] if use_bg else []) + names
    first = 1 if use_bg and not bg_names else 0  # the row of the first prompted class
    flat = [t for ts in class_texts for t in ts]
    owner = [first + c for c, ts in enumerate(class_texts) for _ in ts]
    items, single = Pipeline._as_batch(images)
    if not items:
        raise ValueError("sam3_semantic got no images")
    proto = {
        "method": "sam3-fusion",
        "reference": SEGEARTH_OV3,
        "model": encoder.info.name,
        "background": bg_names or use_bg,
        "prob_thresh": p_th,
        "confidence_threshold": c_th,
        "instances": instances,
        "semantic": semantic,
        "presence": presence,
    }
    results: list[SegResult] = []
    decoded = _decode_images(
        encoder, items, flat, batch_size=_batch_arg("batch_size", batch_size),
        phrase_batch=_batch_arg("phrase_batch", phrase_batch), progress=progress, desc="sam3 semantic",
    )  # fmt: skip
    for image, outs in decoded:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        probs = torch.zeros(len(out_labels), *size, device=encoder.device)
        for d in outs:
            pres = d.presence.sigmoid()
            score = d.logits.sigmoid() * pres[:, None]
            for j in range(score.shape[0]):
                fused = _fused_map(d, j, pres[j], score[j], size, c_th, instances, semantic, presence)
                c = owner[d.start + j]
                probs[c] = torch.maximum(probs[c], fused)
        label_map, probs = classify(probs, prob_thresh=p_th, background=0)
        results.append(
            SegResult(
                label_map=label_map.cpu(),
                labels=list(out_labels),
                scores=_mean_winning(probs, label_map).cpu(),
                probs=probs.cpu(),
                protocol=dict(proto),
            )
        )
    return results[0] if single else results


def _fused_map(
    d: _Decoded,
    j: int,
    pres: torch.Tensor,
    score: torch.Tensor,
    size: tuple[int, int],
    conf: float,
    instances: bool,
    semantic: bool,
    presence: bool,
) -> torch.Tensor:
    """SegEarth-OV3's fused map ``[H, W]`` of text ``d.start + j`` (formula in :func:`sam3_semantic`)."""
    fused = torch.zeros(size, device=score.device)
    if instances:
        keep = score > conf
        if bool(keep.any()):
            inst = _upsample(d.masks[j][keep], size).sigmoid() * score[keep][:, None, None]
            fused = torch.maximum(fused, inst.max(0).values)
    if semantic:
        fused = torch.maximum(fused, _upsample(d.semantic[j], size)[0].sigmoid())
    if presence:
        fused = fused * pres
    return fused


def _mean_winning(probs: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
    """``[K]``: each label's mean value of ``probs`` over the pixels it wins (0 for labels that win none)."""
    k = probs.shape[0]
    conf = probs.gather(0, label_map[None])[0].flatten()
    flat = label_map.flatten()
    total = torch.zeros(k, device=probs.device).index_add_(0, flat, conf)
    count = torch.bincount(flat, minlength=k).to(probs.dtype)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


# -- segment everything, with labels ---------------------------------------------------------------------
def mask_iou(masks: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Pairwise IoU of bool masks ``[M, H, W]`` -> float ``[M, M]`` (exact: intersections summed over pixel chunks of
    ``chunk``, so memory is ``M x chunk``, not ``M x H x W`` floats; two empty masks have IoU 0).

    >>> m = torch.zeros(2, 4, 4, dtype=torch.bool); m[0, :2] = True; m[1, :1] = True
    >>> mask_iou(m)[0, 1].item()
    0.5
    """
    flat = masks.flatten(1)
    area = flat.sum(1).float()
    inter = torch.zeros(flat.shape[0], flat.shape[0])
    for s in range(0, flat.shape[1], chunk):
        part = flat[:, s : s + chunk].float()
        inter += part @ part.T
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def _mask_nms(masks: torch.Tensor, nms_thresh: float) -> torch.Tensor:
    """Indices kept by greedy NMS on mask IoU over instances already sorted best first (in that order)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    iou = mask_iou(masks)
    keep: list[int] = []
    for i in range(masks.shape[0]):
        if not keep or float(iou[i, keep].max()) <= nms_thresh:
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def segment_everything(
    encoder: Any,
    images: Any,
    labels: str | Sequence[str],
    *,
    synonyms: Mapping[str, str | Sequence[str]] | None = None,
    threshold: float = 0.3,
    mask_threshold: float = 0.5,
    nms_thresh: float = 0.5,
    batch_size: int = 4,
    phrase_batch: int = 16,
    progress: bool | None = None,
) -> ConceptResult | list[ConceptResult]:
    """Instance masks for a whole label list, each labelled with its class: "segment everything" with concepts.

    Design: every class name and synonym is one SAM 3 concept prompt (:func:`segment_concepts`: one vision pass per
    image, one text pass for the label set, batched heads; instances over ``threshold``). Each instance takes the
    class of the text that found it. SAM 3 scores each prompt on its own, so one object is often found by several
    texts (a synonym, a near class, "cup" and "mug"); greedy NMS on *mask* IoU across all classes, best score first,
    keeps the first of any group whose masks overlap by more than ``nms_thresh``: the object keeps the class whose
    text scored it highest. Mask IoU rather than box IoU, because masks are what this returns and neighbouring
    objects of thin or diagonal shapes overlap far more as boxes than as masks. Masks may still overlap below the
    IoU threshold (a part inside a whole); nothing is done to make them disjoint.

    Args:
        encoder: a SAM 3 encoder (``load_encoder("sam3")``).
        images: one image or a batch.
        labels: class names; ``"sofa; couch"`` adds synonyms (zero-shot-seg's format).
        synonyms: ``{"sofa": ["couch"]}``, more synonyms per class name.
        threshold: instance score threshold in [0, 1] (``sigmoid(class logit) * presence``).
        mask_threshold: mask probability threshold in [0, 1].
        nms_thresh: an instance whose mask IoU with a better kept one (any class) is over this is dropped, in [0, 1].
        batch_size: images per vision-backbone pass.
        phrase_batch: texts per pass of the detector and mask heads.
        progress: show a progress bar; default: when there is more than one image or text batch.
        check_shared: refuse a text that names two classes (or a class and a background word). A zero-shot-seg
            preset's own lists are taken as the reference lists them (COCO-Object's background words include its
            class "bed"), as the CLIP pipeline does.

    Returns:
        One :class:`ConceptResult` per image (one result for one image) whose ``phrases`` are the class names and
        ``labels`` index them; ``presence`` ``[K]`` is each class's best presence score over its texts.
    """
    encoder = _check_encoder(encoder)
    names, texts = _parse_labels(labels, synonyms)
    threshold = _unit_range("threshold", threshold, 0.0, 1.0)
    mask_threshold = _unit_range("mask_threshold", mask_threshold, 0.0, 1.0)
    nms_thresh = _unit_range("nms_thresh", nms_thresh, 0.0, 1.0)
    flat = [t for ts in texts for t in ts]
    owner = torch.tensor([c for c, ts in enumerate(texts) for _ in ts], dtype=torch.long)
    items, single = Pipeline._as_batch(images)
    if not items:
        raise ValueError("segment_everything got no images")
    proto = {
        "model": encoder.info.name,
        "threshold": threshold,
        "mask_threshold": mask_threshold,
        "nms": "mask IoU, across classes",
        "nms_thresh": nms_thresh,
        "texts": {n: list(ts) for n, ts in zip(names, texts)},
    }
    results: list[ConceptResult] = []
    decoded = _decode_images(
        encoder, items, flat, batch_size=_batch_arg("batch_size", batch_size),
        phrase_batch=_batch_arg("phrase_batch", phrase_batch), progress=progress, desc="sam3 everything",
    )  # fmt: skip
    for image, outs in decoded:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        boxes, scores, text_idx, masks, presence = _instances(outs, size, threshold, mask_threshold)
        keep = _mask_nms(masks, nms_thresh)
        class_presence = torch.zeros(len(names)).scatter_reduce(0, owner, presence, reduce="amax")
        results.append(
            ConceptResult(
                boxes=boxes[keep], scores=scores[keep], labels=owner[text_idx[keep]], phrases=list(names),
                masks=masks[keep], presence=class_presence, protocol=dict(proto),
            )
        )  # fmt: skip
    return results[0] if single else results


class Sam3SegPipeline(Pipeline):
    """``pipeline("zero-shot-seg", model=<a SAM 3 checkpoint>)``: :func:`sam3_semantic` behind zero-shot-seg's call.

    Takes what the CLIP pipeline takes for the classes: ``labels`` (``"a; b"`` gives synonyms), ``synonyms=``,
    ``background=`` and a ``preset`` (its class names and background words; the preset's CLIP protocol — windows,
    templates, logit scale, thresholds — does not apply to SAM 3 and is left out). Returns the same
    :class:`~visionfm.pipelines.zero_shot_seg.SegResult`.

    Args:
        encoder: a SAM 3 encoder (family ``sam3``).
        batch_size: images per vision-backbone pass.
        preset: a zero-shot-seg preset name (``"sclip-voc21"``, ...): its labels and background words.
        prob_thresh: fused scores under this become background (class 0); needs background.
        confidence_threshold: instances under this score take no part in the fusion (SegEarth-OV3's 0.5).
        instances / semantic / presence: which of SAM 3's outputs the fusion uses (all, as SegEarth-OV3).
        phrase_batch: texts per pass of the DETR and mask heads.
    """

    task = "zero-shot-seg"

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 4,
        preset: str | None = None,
        prob_thresh: float = 0.0,
        confidence_threshold: float = 0.5,
        instances: bool = True,
        semantic: bool = True,
        presence: bool = True,
        phrase_batch: int = 16,
    ) -> None:
        if encoder.info.family != "sam3":
            raise TypeError(f"Sam3SegPipeline needs a SAM 3 encoder, got family {encoder.info.family!r}")
        super().__init__(encoder, batch_size=batch_size)
        self.preset = None
        if preset is not None:
            from .seg_presets import get_preset

            self.preset = get_preset(preset)
            logger.info("zero-shot-seg preset %s on SAM 3: its labels and background words only", preset)
        self.prob_thresh = _unit_range("prob_thresh", prob_thresh, 0.0, 1.0)
        self.options = dict(
            confidence_threshold=confidence_threshold, instances=instances, semantic=semantic, presence=presence,
            phrase_batch=phrase_batch,
        )  # fmt: skip

    #: what results and eval reports record as the method
    mode = "sam3"

    def __repr__(self) -> str:
        return f"Sam3SegPipeline(model={self.encoder.info.name!r}, batch_size={self.batch_size})"

    @property
    def protocol(self) -> dict[str, Any]:
        """The settings every result records."""
        return {
            "model": self.encoder.info.name, "mode": self.mode, "fusion": "SegEarth-OV3",
            "preset": self.preset.name if self.preset is not None else None, "prob_thresh": self.prob_thresh,
            **self.options,
        }  # fmt: skip

    def _run(
        self,
        images: list[Any],
        labels: Sequence[str] | None = None,
        *,
        background: bool | str | Sequence[str] | None = None,
        synonyms: Mapping[str, str | Sequence[str]] | None = None,
        prob_thresh: float | None = None,
    ) -> list[SegResult]:
        from_preset = labels is None and self.preset is not None
        if labels is None:
            if self.preset is None:
                raise ValueError("zero-shot-seg needs labels=[...] (class names; 'a; b' gives synonyms)")
            labels = list(self.preset.labels)
            if background is None and self.preset.background:
                background = list(self.preset.background)
        out = sam3_semantic(
            self.encoder, list(images), labels, synonyms=synonyms, background=False if background is None else background,
            prob_thresh=self.prob_thresh if prob_thresh is None else prob_thresh, batch_size=self.batch_size,
            check_shared=not from_preset, **self.options,
        )  # fmt: skip
        for r in out:
            if self.preset is not None:
                r.protocol["preset"] = self.preset.name
        return out


def _register() -> None:
    from .seg_methods import register_seg_backend, seg_backends

    if "sam3" not in seg_backends():
        register_seg_backend("sam3", Sam3SegPipeline)


_register()
