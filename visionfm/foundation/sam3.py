"""SAM 3 (Segment Anything with concepts) through transformers' ``Sam3Model``.

The transformers checkpoint directory is the on-disk format: ``config.json`` with ``model_type`` ``sam3`` (the image
model; ``sam3_video`` checkpoints, which hold it as their ``detector_config``, load the same way, as ``Sam3Model``
itself allows), ``model.safetensors``, and what ``Sam3Processor.save_pretrained`` writes: ``processor_config.json``
(or ``preprocessor_config.json``) with the ``Sam3ImageProcessor`` settings and a CLIP tokenizer.

The encoder keeps the whole ``Sam3Model`` (text encoder, DETR encoder/decoder, mask decoder) for prompting.
``forward`` runs only the vision backbone (a ViT with windowed and global attention, RoPE); ``Features.patches`` is
its last hidden state on the patch grid. Concept prompting splits the model into its two halves so that each is
computed once:

- :meth:`Sam3Encoder.vision_embeds`: backbone + FPN neck, one pass per image (``Sam3Model.get_vision_features``);
- :meth:`Sam3Encoder.phrase_embeds`: the text encoder and its projection for a phrase set (``get_text_features``),
  kept in a small LRU cache keyed by the phrase tuple;
- :meth:`Sam3Encoder.decode`: the DETR encoder/decoder, scoring and mask heads for one image against a batch of
  phrases, given both (``Sam3Model.forward(vision_embeds=..., text_embeds=...)``).

:mod:`visionfm.pipelines.sam3_concepts` builds concept segmentation (instances per phrase, a semantic label map, and
"segment everything" with labels) on these.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, as_texts, preview_texts, tap_blocks
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

#: ``config.json`` model types this family loads: the image model, and the video model that holds it.
MODEL_TYPES = ("sam3", "sam3_video")
#: ``Sam3ImageProcessor``'s normalisation (``IMAGENET_STANDARD_MEAN`` / ``_STD``).
SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)
#: Tokens ``Sam3Processor`` pads every text to (``padding="max_length", max_length=32``), special tokens included.
TEXT_LENGTH = 32
#: Phrase sets whose embeddings :meth:`Sam3Encoder.phrase_embeds` keeps (least recently used dropped first).
PHRASE_CACHE_SIZE = 16


def _int(v: int | Sequence[int], what: str) -> int:
    if isinstance(v, int):
        return v
    if v[0] != v[-1]:
        raise ValueError(f"non-square SAM 3 {what} {tuple(v)} is not supported")
    return int(v[0])


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers SAM 3 checkpoint (``sam3`` / ``sam3_video``), else
    ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt in MODEL_TYPES else None


def load_preprocess_config(path: Path, image_size: int) -> PreprocessConfig:
    """The checkpoint's ``Sam3ImageProcessor`` settings as a :class:`PreprocessConfig`.

    ``Sam3ImageProcessor`` resizes every image to ``image_size x image_size`` (aspect ratio not kept; bilinear,
    antialiased, on uint8), rescales to [0, 1] and normalises with mean = std = 0.5. Without a
    ``processor_config.json`` / ``preprocessor_config.json`` (logged as a warning) these reference settings are used.

    Raises:
        ValueError: the processor's size is not the model's ``image_size`` (the global-attention blocks' RoPE tables
            are built for that grid, so no other input size runs).
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "Sam3ImageProcessor")
    if pp is None:
        logger.warning(
            "%s has no processor_config.json (nor preprocessor_config.json); using SAM 3's reference preprocessing "
            "(resize to %dx%d, bilinear, mean = std = 0.5)",
            path,
            image_size,
            image_size,
        )
        return PreprocessConfig(
            resize="exact",
            resize_size=None,
            interpolation="bilinear",
            crop_size=(image_size, image_size),
            mean=SAM3_MEAN,
            std=SAM3_STD,
        )
    if pp.image_size != (image_size, image_size):
        raise ValueError(
            f"{path}: preprocessing yields {pp.image_size} inputs but the SAM 3 vision backbone expects "
            f"{image_size}x{image_size}"
        )
    return pp


@dataclass(frozen=True)
class PhraseEmbeds:
    """Projected text embeddings of a phrase set, ready for :meth:`Sam3Encoder.decode`.

    Attributes:
        phrases: the phrases, in order.
        features: ``[N, L, D]`` token embeddings after ``Sam3Model.text_projection`` (``L = TEXT_LENGTH`` = 32,
            ``D`` = the DETR width, 256 for the released model).
        mask: bool ``[N, L]``, True on real tokens (False on padding).
    """

    phrases: tuple[str, ...]
    features: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.phrases)

    def __getitem__(self, index: slice) -> PhraseEmbeds:
        """A contiguous subset of the phrases (a slice)."""
        if not isinstance(index, slice):
            raise TypeError(f"PhraseEmbeds takes a slice, got {type(index).__name__}")
        return PhraseEmbeds(self.phrases[index], self.features[index], self.mask[index])


class Sam3Encoder(Encoder):
    """SAM 3 image encoder (vision backbone), with the whole ``Sam3Model`` kept for concept prompting.

    ``Features``: ``patches`` is the vision backbone's last hidden state on the patch grid ``[B, h, w, C]``
    (``C = backbone hidden_size``, 1024 for the released model; grid 72 x 72 at 1008 px, patch 14; no final norm:
    the backbone's only layer norm comes before its blocks); ``pooled`` its mean over the grid ``[B, C]``; no
    ``cls`` / ``registers``; ``layers`` the outputs of ``vision_encoder.backbone.layers[i]`` ``[B, h, w, C]``.
    ``info.has_text`` is False: SAM 3's text tower prompts the detector (:meth:`phrase_embeds`), it does not embed
    texts into a space shared with ``pooled``.

    Args:
        model: a transformers ``Sam3Model`` (kept whole as ``self.model``).
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
        tokenizer: the checkpoint's CLIP tokenizer (``None``: the checkpoint has none; prompting then raises).
    """

    def __init__(
        self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str, tokenizer: Any = None
    ) -> None:
        bcfg = model.config.vision_config.backbone_config
        width = int(bcfg.hidden_size)
        info = EncoderInfo(
            family="sam3",
            backend="transformers",
            name=name,
            embed_dim=width,
            width=width,
            patch_size=_int(bcfg.patch_size, "patch size"),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(bcfg.num_hidden_layers),
            num_registers=0,
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        self._phrase_cache: OrderedDict[tuple, PhraseEmbeds] = OrderedDict()

    # -- the image encoder contract -------------------------------------------------------------
    def token_merging_sites(self) -> TokenMergingSites:
        """Around the MLPs of the windowed ViT backbone (attention keeps the full grid)."""
        return TokenMergingSites(blocks=self.model.vision_encoder.backbone.layers, mode="mlp")

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels with the vision backbone (no neck, no heads).

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels, ``(H, W) = info.image_size``.
            layers: backbone block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        backbone = self.model.vision_encoder.backbone
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        with tap_blocks(backbone.layers, idx) as taps:
            tokens = backbone(pixel_values.to(self.dtype)).last_hidden_state  # [B, h*w, C]
        patches = tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1])
        return Features(pooled=patches.mean(dim=(1, 2)), patches=patches, grid=grid, layers={i: taps[i] for i in idx})

    # -- concept prompting ------------------------------------------------------------------------
    def vision_embeds(self, pixel_values: torch.Tensor) -> Any:
        """Backbone + FPN neck for a batch: what :meth:`decode` needs of an image (``Sam3Model.get_vision_features``,
        without any ``no_grad``).

        Args:
            pixel_values: ``[B, 3, H, W]`` as :meth:`preprocess` returns them.

        Returns:
            transformers' ``Sam3VisionEncoderOutput``: ``fpn_hidden_states`` (4 levels ``[B, D, h_l, w_l]``, strides
            patch/4, patch/2, patch and 2 x patch), ``fpn_position_encoding`` (the same shapes) and the backbone's
            ``last_hidden_state`` ``[B, h*w, C]``.
        """
        return self.model.get_vision_features(pixel_values=pixel_values.to(self.dtype))

    @staticmethod
    def select_image(vision: Any, index: int) -> Any:
        """Image ``index`` of a batch of :meth:`vision_embeds` outputs, as a batch of one."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        return Sam3VisionEncoderOutput(
            last_hidden_state=vision.last_hidden_state[index : index + 1],
            fpn_hidden_states=tuple(f[index : index + 1] for f in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(f[index : index + 1] for f in vision.fpn_position_encoding),
        )

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(
                f"SAM 3 checkpoint {self._info.name!r} has no tokenizer files (tokenizer.json or vocab.json + "
                "merges.txt, as Sam3Processor.save_pretrained writes them), so it cannot be prompted with text"
            )
        return self.tokenizer

    def tokenize(self, phrases: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask as ``Sam3Processor(text=...)`` makes them (padded to 32 tokens).

        Args:
            phrases: one phrase or a non-empty list.

        Returns:
            ``(input_ids, attention_mask)``, int64 ``[N, 32]`` each, on the encoder's device.

        Raises:
            ValueError: a phrase needs more than 32 tokens (special tokens included): ``Sam3Processor`` does not
                truncate and ``Sam3Model`` cannot run it, so it is refused here, naming the phrase.
        """
        texts = as_texts(phrases)
        tok = self._require_tokenizer()
        lengths = [len(ids) for ids in tok(texts)["input_ids"]]
        long = [t for t, n in zip(texts, lengths) if n > TEXT_LENGTH]
        if long:
            raise ValueError(
                f"{len(long)} phrase(s) need more than the {TEXT_LENGTH} tokens SAM 3's text encoder reads "
                f"(special tokens included): {preview_texts(long)}; shorten them"
            )
        enc = tok(texts, padding="max_length", max_length=TEXT_LENGTH, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def phrase_embeds(self, phrases: str | Sequence[str]) -> PhraseEmbeds:
        """Projected text embeddings of ``phrases`` (``Sam3Model.get_text_features(...).pooler_output``).

        Outside autograd (``torch.inference_mode`` / ``no_grad``) the result is kept in an LRU cache of the last
        :data:`PHRASE_CACHE_SIZE` phrase sets, keyed by the phrase tuple (and device, dtype, inference mode): calling
        again with the same phrases runs no text encoder. :meth:`clear_phrase_cache` empties it.

        Args:
            phrases: one phrase or a non-empty list (order kept; the cache key is the exact tuple).

        Returns:
            A :class:`PhraseEmbeds` with ``features`` ``[N, 32, D]`` and ``mask`` ``[N, 32]``.
        """
        texts = tuple(as_texts(phrases))
        cacheable = not torch.is_grad_enabled()
        key = (texts, str(self.device), self.dtype, torch.is_inference_mode_enabled())
        if cacheable and key in self._phrase_cache:
            self._phrase_cache.move_to_end(key)
            return self._phrase_cache[key]
        ids, mask = self.tokenize(texts)
        feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        out = PhraseEmbeds(texts, feats, mask.bool())
        if cacheable:
            self._phrase_cache[key] = out
            while len(self._phrase_cache) > PHRASE_CACHE_SIZE:
                self._phrase_cache.popitem(last=False)
        return out

    def clear_phrase_cache(self) -> None:
        """Forget every cached phrase embedding."""
        self._phrase_cache.clear()

    @property
    def phrase_cache_size(self) -> int:
        """How many phrase sets :meth:`phrase_embeds` holds now."""
        return len(self._phrase_cache)

    def decode(self, vision: Any, phrases: PhraseEmbeds) -> Any:
        """Run SAM 3's detector and mask heads for one image against a batch of phrases.

        The image's :meth:`vision_embeds` are broadcast over the phrases (no copy), so N phrases cost one batched
        DETR/mask-head pass and no backbone pass. Equal, up to float rounding, to ``Sam3Model`` called with the
        image and each phrase separately.

        Args:
            vision: :meth:`vision_embeds` of one image (batch 1; see :meth:`select_image`).
            phrases: :meth:`phrase_embeds` of N phrases.

        Returns:
            transformers' ``Sam3ImageSegmentationOutput`` with batch N (row i: phrase i): ``pred_logits`` ``[N, Q]``,
            ``pred_boxes`` ``[N, Q, 4]`` (xyxy, normalised to [0, 1] of the model input), ``pred_masks``
            ``[N, Q, h_m, w_m]`` mask logits (``h_m`` = 4 x the patch grid), ``presence_logits`` ``[N, 1]`` and
            ``semantic_seg`` ``[N, 1, h_m, w_m]`` logits.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        n = len(phrases)
        if vision.fpn_hidden_states[0].shape[0] != 1:
            raise ValueError(
                f"decode takes the vision embeddings of one image, got a batch of {vision.fpn_hidden_states[0].shape[0]}"
                " (use Sam3Encoder.select_image)"
            )
        one = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_position_encoding),
        )
        text = BaseModelOutputWithPooling(pooler_output=phrases.features)
        return self.model(vision_embeds=one, text_embeds=text, attention_mask=phrases.mask.long())


def _load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, or ``None`` (with a warning) when it has no tokenizer files."""
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        logger.warning(
            "%s has no tokenizer files: the SAM 3 encoder will encode images but not take text prompts", path
        )
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def build(req: LoadRequest) -> Sam3Encoder:
    """Build a :class:`Sam3Encoder` from a transformers checkpoint directory."""
    from transformers import Sam3Model

    model = load_hf_model(Sam3Model, req.path, allow_pickle=req.allow_pickle)
    image_size = _int(model.config.vision_config.backbone_config.image_size, "image size")
    pp = load_preprocess_config(req.path, image_size)
    return Sam3Encoder(model, pp, name=req.name, tokenizer=_load_tokenizer(Path(req.path)))


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in sam3 encoders (the family's ``peft_layout``): the vision backbone's blocks."""
    return TargetLayout(
        description="sam3 (transformers)",
        image_roots=("vision_encoder",),
        attention=(rf"vision_encoder\.backbone\.layers\.{_B}\.attention\.(q_proj|k_proj|v_proj|o_proj)",),
        mlp=(rf"vision_encoder\.backbone\.layers\.{_B}\.mlp\.(fc1|fc2)",),
    )


register_family(
    Family(
        name="sam3",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="SAM 3: vision backbone features; concept prompts (text phrases) give instances and semantic maps",
        formats="transformers (config.json with model_type sam3 / sam3_video)",
        peft_layout=peft_layout,
    )
)

register_model(
    ModelSpec(
        name="sam3",
        family="sam3",
        source="facebook/sam3",
        backend="transformers",
        description="SAM 3: ViT backbone (1008px input, patch 14, 72x72x1024 features), CLIP text encoder, "
        "DETR detector with presence head, instance and semantic mask heads",
    )
)
