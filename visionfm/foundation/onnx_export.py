"""Export an encoder to ONNX: the vision tower and, for image-text families, the text tower as a separate graph.

``export_onnx(model, out)`` writes, under ``out``:

- ``vision.onnx``: ``pixel_values`` ``[B, 3, H, W]`` (preprocessed, ``(H, W) = info.image_size``) to ``pooled``
  ``[B, D]`` and ``patches`` ``[B, h, w, C]``, exactly :class:`~visionfm.foundation.features.Features`; dynamic batch.
- ``text.onnx`` (families with ``info.has_text``): the tokenizer's tensors (``input_ids`` ``[N, L]``, and
  ``attention_mask`` where the family uses it) to ``text_embeds`` ``[N, D]``; dynamic ``N`` and ``L``. Because the
  text tower is its own graph, label sets stay editable after export: new labels are embedded by this graph, not
  baked into the vision graph.
- ``dense_<mode>.onnx`` (image-text families): the training-free dense modes (vanilla, MaskCLIP, SCLIP, ClearCLIP,
  NACLIP) at the native input size, for zero-shot segmentation.
- ``prompt_decoder.onnx`` and ``prompt_decoder_multimask.onnx`` (SAM, SAM 2 / 2.1, EdgeTAM): the prompt encoder and
  mask decoder as their own graphs, so one image embedding serves any number of prompts. Inputs: the image tensors
  the decoder reads (``image_embeddings`` ``[B, C, h, w]``, and for SAM 2 / EdgeTAM ``high_res_0``, ``high_res_1``,
  which ``vision.onnx`` also outputs), the prompts as labelled points (``point_coords`` ``[B, N, T, 2]`` in the input
  frame, ``point_labels`` ``[B, N, T]``; see :func:`visionfm.foundation.sam.prompting.prompt_tokens`: a box is two
  corners labelled 2 and 3), ``mask_input`` ``[B, 1, s, s]`` and ``has_mask_input`` ``[1]``; outputs
  ``low_res_masks`` ``[B, N, M, s, s]`` and ``iou_scores`` ``[B, N, M]`` (``M`` = 1, or 3 for the multimask graph).
- ``tokenizer/``: the checkpoint's tokenizer files (no weights), read back by the runtime.
- ``manifest.json``: the format version, the visionfm and torch versions, the source, ``EncoderInfo``, the
  preprocessing (:class:`~visionfm.foundation.preprocess.PreprocessConfig`), each graph's inputs and outputs with
  their shapes (``null`` for dynamic axes), and the image-text constants (logit scale and bias, context length).

The graphs are made by PyTorch's exporter (``torch.onnx.export(..., dynamo=True)``); onnx, onnxscript and
onnxruntime are the ``visionfm[onnx]`` extra. :class:`visionfm.foundation.onnx_runtime.OnnxEncoder` runs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "visionfm-onnx"
FORMAT_VERSION = 1
#: files copied into ``tokenizer/``: everything a tokenizer may read, never weights
_TOKENIZER_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".vocab", ".gz")
_WEIGHT_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class _Vision(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder(pixel_values)
        return f.pooled, f.patches


class _PromptableVision(nn.Module):
    """A SAM-style image encoder: ``Features`` plus the finer feature maps its mask decoder reads (SAM 2 / EdgeTAM)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tensors = self.encoder.decoder_inputs(pixel_values)
        patches = tensors[-1].permute(0, 2, 3, 1)  # the image embedding is Features.patches, channels first
        return (patches.mean(dim=(1, 2)), patches, *tensors[:-1])


def _per_prompt(
    image: tuple[torch.Tensor, ...], coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``B`` images with ``N`` prompts each as ``B * N`` images with one prompt each.

    The decoders repeat each image's tensors for its prompts with ``repeat_interleave``, which the exporter turns into
    a graph that fails for ``B > 1`` and ``N > 1`` under onnxruntime; repeating them here (expand + reshape) gives the
    decoder one prompt per image, with the same arithmetic per (image, prompt).
    """
    B, N = coords.shape[:2]

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t[:, None].expand(B, N, *t.shape[1:]).reshape(B * N, *t.shape[1:])

    return (tuple(rows(t) for t in image), coords.reshape(B * N, 1, *coords.shape[2:]),
            labels.reshape(B * N, 1, labels.shape[2]), rows(mask_input))  # fmt: skip


class _PromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder on prompt tokens (:meth:`PromptableEncoder.decode_tokens`), one prompt
    per decoder row (:func:`_per_prompt`)."""

    def __init__(self, encoder: nn.Module, multimask: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.multimask = multimask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._decode((image_embeddings,), point_coords, point_labels, mask_input, has_mask_input)

    def _decode(
        self,
        image: tuple[torch.Tensor, ...],
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, N = coords.shape[:2]
        low, iou = self.encoder.decode_tokens(*_per_prompt(image, coords, labels, mask_input), has_mask_input,
                                              self.multimask)  # fmt: skip
        return low.reshape(B, N, *low.shape[2:]), iou.reshape(B, N, iou.shape[-1])


class _PromptDecoderFPN(_PromptDecoder):
    """SAM 2 / EdgeTAM: the image embedding, then the two finer feature maps, then the prompts."""

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        high_res_0: torch.Tensor,
        high_res_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._decode(
            (high_res_0, high_res_1, image_embeddings), point_coords, point_labels, mask_input, has_mask_input
        )


class _Text(nn.Module):
    """The text tower on ``input_ids`` alone (open_clip, SigLIP)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.text_from_inputs(input_ids=input_ids)


class _TextMasked(_Text):
    """The text tower on ``input_ids`` and ``attention_mask`` (transformers CLIP)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encoder.text_from_inputs(input_ids=input_ids, attention_mask=attention_mask)


class _Dense(nn.Module):
    """A training-free dense CLIP mode (:func:`visionfm.foundation.dense.dense_features`) at the native input size."""

    def __init__(self, encoder: nn.Module, mode: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.mode = mode

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from .dense import dense_features

        return dense_features(self.encoder, pixel_values, self.mode)


#: dense modes exported for image-text families (``proxy`` needs a second encoder's features at run time)
DENSE_EXPORT_MODES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip")


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f'ONNX export needs onnx and onnxscript: pip install "visionfm[onnx]" ({e})') from None


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], dynamic: list[dict[int, Any]], opset: int | None) -> None:  # fmt: skip
    kw: dict[str, Any] = {"opset_version": opset} if opset else {}
    module.eval()  # the wrappers are fresh modules: trace the inference graph (no dropout, SAM 2's eval-only paths)
    with warnings.catch_warnings():  # the exporter's note that equal dynamic axes share one name
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=tuple(dynamic), input_names=input_names,
                                    output_names=output_names, verbose=False, **kw)  # fmt: skip
    program.save(str(path))


def _copy_tokenizer(src: Path, dst: Path) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in _TOKENIZER_SUFFIXES and f.name not in _WEIGHT_NAMES:
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    return copied


def _export_prompt_decoder(enc: Any, tensors: tuple[torch.Tensor, ...], out: Path, batch: Any, extra: list[str],
                           opset: int | None) -> dict[str, Any]:  # fmt: skip
    """Write the two prompt-decoder graphs of a SAM-style encoder, traced on its decoder inputs ``tensors`` (a batch
    of sample images); returns the manifest's ``sam`` entry."""
    from .sam.prompting import prompt_tokens

    B, side, s = tensors[-1].shape[0], enc.info.image_size[0], enc.low_res_size
    points = torch.rand(B, 3, 2, 2) * side
    coords, labels = prompt_tokens(enc.prompt_variant, points, torch.ones(B, 3, 2, dtype=torch.long), None, (B, 3))
    args = (tensors[-1], *tensors[:-1], coords, labels, torch.zeros(B, 1, s, s), torch.zeros(1))
    prompts, tokens = torch.export.Dim("prompts", min=1, max=65536), torch.export.Dim("tokens", min=1, max=4096)
    names = ["image_embeddings", *extra, "point_coords", "point_labels", "mask_input", "has_mask_input"]
    dynamic = [{0: batch} for _ in tensors] + [{0: batch, 1: prompts, 2: tokens}] * 2 + [{0: batch}, None]
    for multimask, file in ((False, "prompt_decoder.onnx"), (True, "prompt_decoder_multimask.onnx")):
        if len(tensors) not in (1, 3):
            raise ValueError(f"a SAM-style decoder reads 1 or 3 image tensors, this one {len(tensors)}")
        module = (_PromptDecoder if len(tensors) == 1 else _PromptDecoderFPN)(enc, multimask)
        with torch.no_grad():
            _export(module, args, out / file, names, ["low_res_masks", "iou_scores"], dynamic, opset)
    return {
        "variant": enc.prompt_variant,
        "low_res_size": s,
        "image_inputs": ["image_embeddings", *extra],
        "auto_mask_defaults": dataclasses.asdict(enc.auto_mask_defaults),
    }


def export_onnx(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    text: bool = True,
    dense: bool = True,
    opset: int | None = None,
    **load_kwargs: Any,
) -> Path:
    """Export ``model``'s vision tower (and text tower) to ONNX graphs with a manifest; see the module docstring.

    Args:
        model: anything ``load_encoder`` accepts (alias, hub id, open_clip tag, local directory).
        out: output directory (created; existing graphs in it are replaced).
        text: also export the text tower of image-text families.
        dense: image-text families: also export the training-free dense modes (:data:`DENSE_EXPORT_MODES`, each
            ``dense_<mode>.onnx``: pixels to ``[B, h, w, D]`` at the native input size), which zero-shot-seg runs.
        opset: ONNX opset (default: the exporter's).
        **load_kwargs: further ``load_encoder`` options (``backend=``, ``allow_pickle=``, ...); the export runs on
            the CPU in fp32.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: onnx / onnxscript missing.
        ValueError: a family whose encoder cannot be exported (reported with the exporter's reason).
    """
    from importlib.metadata import version

    from .loading import load_encoder, resolve_source

    _require_onnx()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src, _, _ = resolve_source(model, allow_pickle=bool(load_kwargs.get("allow_pickle", False)))
    enc = load_encoder(model, device="cpu", dtype="fp32", **load_kwargs).eval()
    info = enc.info
    if getattr(enc, "max_num_patches", None) is not None:  # SigLIP 2 NaFlex: each image its own grid
        raise ValueError(f"{model!r} is a SigLIP 2 NaFlex checkpoint, whose grid differs per image; ONNX export "
                         "needs a fixed input size: export a fixed-resolution SigLIP 2 checkpoint")  # fmt: skip
    h, w = info.image_size
    x = enc.normalize(torch.rand(2, 3, h, w))
    batch = torch.export.Dim("batch", min=1, max=4096)
    graphs: dict[str, Any] = {}
    promptable = callable(getattr(enc, "decode_tokens", None))
    with torch.no_grad():
        ref = enc(x)
        tensors = enc.decoder_inputs(x) if promptable else ()  # the prompt decoder's sample inputs
        extra = [f"high_res_{i}" for i in range(len(tensors) - 1)]
        try:
            _export(_PromptableVision(enc) if promptable else _Vision(enc), (x,), out / "vision.onnx",
                    ["pixel_values"], ["pooled", "patches", *extra], [{0: batch}], opset)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the exporter's own errors are long; keep the first line
            raise ValueError(f"{model!r} ({info.family}/{info.backend}): the vision tower did not export to ONNX: "
                             f"{type(e).__name__}: {str(e).splitlines()[0]}") from e  # fmt: skip
    graphs["vision"] = {
        "file": "vision.onnx",
        "inputs": {"pixel_values": [None, 3, h, w]},
        "outputs": {"pooled": [None, int(ref.pooled.shape[1])], "patches": [None, *ref.patches.shape[1:]]},
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "visionfm": version("visionfm"),
        "torch": torch.__version__,
        "source": os.fspath(model),
        "family": info.family,
        "backend": info.backend,
        "info": dataclasses.asdict(info),
        "preprocess": dataclasses.asdict(enc.preprocess_config),
        "graphs": graphs,
    }
    if promptable:
        manifest["sam"] = _export_prompt_decoder(enc, tensors, out, batch, extra, opset)
        graphs["prompt_decoder"] = {"file": "prompt_decoder.onnx"}
        graphs["prompt_decoder_multimask"] = {"file": "prompt_decoder_multimask.onnx"}
    if text and info.has_text:
        if not hasattr(enc, "text_inputs"):
            raise ValueError(f"{model!r}: the {info.family}/{info.backend} text tower has no ONNX export yet")
        sample = enc.text_inputs(["a photo of a cat.", "a red square on a blue background."])
        names = [n for n in ("input_ids", "attention_mask") if n in sample]
        if set(names) != set(sample):
            raise ValueError(f"{model!r}: text inputs {sorted(sample)} are not input_ids (+ attention_mask)")
        module = _TextMasked(enc) if "attention_mask" in names else _Text(enc)
        length = torch.export.Dim("length", min=2, max=4096)
        with torch.no_grad():
            _export(module, tuple(sample[n] for n in names), out / "text.onnx", names, ["text_embeds"],
                    [{0: batch, 1: length} for _ in names], opset)  # fmt: skip
        graphs["text"] = {
            "file": "text.onnx",
            "inputs": {n: [None, None] for n in names},
            "outputs": {"text_embeds": [None, info.embed_dim]},
        }
        manifest["text"] = {
            "tokenizer": enc.tokenizer_kind,
            "tokenizer_dir": "tokenizer",
            "tokenizer_files": _copy_tokenizer(Path(src), out / "tokenizer"),
            "tokenizer_options": enc.tokenizer_options(),
            "context_length": int(enc.context_length),
            "logit_scale": float(enc.logit_scale),
            "logit_bias": enc.logit_bias,
        }
    if dense and info.has_text:
        from .dense import dense_features

        for mode in DENSE_EXPORT_MODES:
            try:
                with torch.no_grad():
                    ref_dense = dense_features(enc, x, mode)
                    _export(_Dense(enc, mode), (x,), out / f"dense_{mode}.onnx", ["pixel_values"], ["dense"],
                            [{0: batch}], opset)  # fmt: skip
            except (NotImplementedError, TypeError, ValueError) as e:  # a tower without this mode: skip, say so
                logger.warning("%s: dense mode %r not exported: %s", model, mode, str(e).splitlines()[0])
                continue
            graphs[f"dense_{mode}"] = {
                "file": f"dense_{mode}.onnx",
                "inputs": {"pixel_values": [None, 3, h, w]},
                "outputs": {"dense": [None, *ref_dense.shape[1:]]},
            }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, default=list))
    logger.info("exported %s to %s (%s)", model, out, ", ".join(graphs))
    return out
