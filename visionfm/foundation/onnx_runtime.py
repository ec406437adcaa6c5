"""Run an ONNX export (:mod:`visionfm.foundation.onnx_export`) through onnxruntime, behind the ``Encoder`` contract.

``OnnxEncoder(export_dir)`` reads ``manifest.json``, opens ``vision.onnx`` (and ``text.onnx``) in onnxruntime
sessions, and rebuilds preprocessing and the tokenizer from the manifest. ``encode`` and ``encode_text`` then work as
on the PyTorch encoder: the same preprocessing code, the same batching, ``Features`` with ``pooled`` and
``patches``. Layer taps (``layers=``) need the model's internals and are not available; the dense CLIP modes run
from their own exported graphs.

SAM-style exports (SAM, SAM 2 / 2.1, EdgeTAM) open as :class:`OnnxPromptableEncoder`, which the mask-generation
pipeline prompts like the PyTorch model: the image embedding from ``vision.onnx``, the prompts through the
prompt-decoder graphs. :func:`load_onnx_encoder` picks the class from the manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .encoder import TextEncoder
from .features import EncoderInfo, Features
from .preprocess import PreprocessConfig
from .sam.prompting import AutoMaskDefaults, PromptableEncoder, prompt_tokens

logger = logging.getLogger(__name__)


def _session(path: Path, threads: int | None, memory_arena: bool = False) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError('runtime="onnx" needs onnxruntime: pip install "visionfm[onnx]"') from None
    opts = ort.SessionOptions()
    # no busy-waiting between runs: spinning threads would take the cores from PyTorch work in the same process
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # the CPU arena keeps onnxruntime's buffers between runs; PyTorch work in the same process then ran slower
    opts.enable_cpu_mem_arena = bool(memory_arena)
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxEncoder(TextEncoder):
    """An exported encoder on onnxruntime (CPU).

    Args:
        path: an export directory (``manifest.json`` + graphs).
        threads: onnxruntime intra-op threads (default: onnxruntime's).
        memory_arena: use onnxruntime's CPU memory arena. Off by default: the pipelines run PyTorch pre- and
            post-processing around the graphs, and with the arena on, PyTorch work in the same process ran up to 2x
            slower on the 2-core benchmark machine (docs/benchmarks.md), while the graphs ran up to 1.3x faster.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, memory_arena: bool = False) -> None:
        from .onnx_export import FORMAT, FORMAT_VERSION, MANIFEST

        path = Path(path)
        mf = path / MANIFEST
        if not mf.is_file():
            raise FileNotFoundError(f"{path} is not a visionfm ONNX export: no {MANIFEST} (visionfm export MODEL OUT)")
        manifest = json.loads(mf.read_text())
        if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{mf}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not "
                             f"{FORMAT!r} v<={FORMAT_VERSION}")  # fmt: skip
        raw = dict(manifest["info"])
        for k in ("image_size", "mean", "std"):
            raw[k] = tuple(raw[k])
        info = EncoderInfo(**{**raw, "backend": "onnxruntime", "name": str(path), "num_layers": 0})
        pp = dict(manifest["preprocess"])
        for k in ("crop_size", "pad_size", "mean", "std"):
            if pp.get(k) is not None:
                pp[k] = tuple(pp[k])
        super().__init__(info, PreprocessConfig(**pp))
        self.path = path
        self.manifest = manifest
        self.source_backend = manifest["backend"]
        self._threads = threads
        self._arena = memory_arena
        self._dense: dict[str, Any] = {}
        self._vision = _session(path / manifest["graphs"]["vision"]["file"], threads, memory_arena)
        self._text = None
        self.logit_bias = None
        if "text" in manifest["graphs"]:
            t = manifest["text"]
            self._text = _session(path / manifest["graphs"]["text"]["file"], threads, memory_arena)
            self._text_names = [i.name for i in self._text.get_inputs()]
            self._tokenizer = _load_tokenizer(path / t["tokenizer_dir"], t["tokenizer"])
            self._tok_opts = dict(t.get("tokenizer_options") or {})
            self._context_length = int(t["context_length"])
            self.logit_scale = float(t["logit_scale"])
            self.logit_bias = t.get("logit_bias")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Run ``vision.onnx`` on preprocessed pixels ``[B, 3, H, W]`` (``(H, W) = info.image_size``)."""
        if layers:
            raise ValueError(f"{self.path}: an ONNX export has no layer taps (layers={list(layers)})")
        self._check_pixels(pixel_values)
        x = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        pooled, patches = self._vision.run(["pooled", "patches"], {"pixel_values": x})
        p = torch.from_numpy(patches)
        return Features(pooled=torch.from_numpy(pooled), patches=p, grid=(p.shape[1], p.shape[2]))

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        want = tuple(self._info.image_size)
        if tuple(pixel_values.shape[-2:]) != want or pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be [B, 3, {want[0]}, {want[1]}] for this export, got "
                             f"{tuple(pixel_values.shape)}")  # fmt: skip

    def onnx_dense(self, pixel_values: torch.Tensor, mode: str) -> torch.Tensor:
        """``dense_features(self, pixel_values, mode)`` from the exported ``dense_<mode>.onnx``: ``[B, h, w, D]``."""
        graph = self.manifest["graphs"].get(f"dense_{mode}")
        if graph is None:
            have = sorted(k.removeprefix("dense_") for k in self.manifest["graphs"] if k.startswith("dense_"))
            raise ValueError(f"{self.path}: dense mode {mode!r} was not exported (exported: {have or 'none'})")
        want = tuple(self._info.image_size)
        if tuple(pixel_values.shape[-2:]) != want:
            raise ValueError(f"{self.path}: the exported dense modes take {want[0]}x{want[1]} inputs (the model's "
                             f"native size; use window={want[0]}), got {tuple(pixel_values.shape[-2:])}")  # fmt: skip
        if mode not in self._dense:
            self._dense[mode] = _session(self.path / graph["file"], self._threads, self._arena)
        x = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self._dense[mode].run(["dense"], {"pixel_values": x})[0])

    # -- text -------------------------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:  # type: ignore[override]
        return self._context_length

    def _is_overlong(self, texts: list[str]) -> list[bool]:
        return [False] * len(texts)

    def _tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.manifest["text"]["tokenizer"] == "open_clip":
            return {"input_ids": self._tokenizer(texts).numpy()}
        o = self._tok_opts
        if o.get("lowercase"):
            texts = [t.lower() for t in texts]
        enc = self._tokenizer(texts, max_length=o.get("max_length"), truncation=True, return_tensors="np",
                              padding=o.get("padding", True))  # fmt: skip
        return {k: np.asarray(enc[k], dtype=np.int64) for k in self._text_names}

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        if self._text is None:
            raise TypeError(f"{self.path}: this export has no text graph")
        feeds = self._tokens(texts)
        return torch.from_numpy(self._text.run(["text_embeds"], {k: feeds[k] for k in self._text_names})[0])

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        if self._text is None:
            raise TypeError(f"{self.path}: this export has no text graph (info.has_text is {self._info.has_text})")
        return super().encode_text(texts, batch_size=batch_size)


class OnnxPromptableEncoder(OnnxEncoder, PromptableEncoder):
    """An exported SAM, SAM 2 / 2.1 or EdgeTAM on onnxruntime: ``pipeline("mask-generation")`` runs it as the PyTorch
    model (same image embeddings, prompts, masks and automatic-mask defaults).

    Args:
        path: an export directory whose manifest has a ``sam`` entry.
        threads: onnxruntime intra-op threads (default: onnxruntime's).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, memory_arena: bool = False) -> None:
        super().__init__(path, threads=threads, memory_arena=memory_arena)
        sam = self.manifest.get("sam")
        if sam is None:
            raise ValueError(f"{self.path}: this export has no prompt decoder (it is not a SAM-style model)")
        self.prompt_variant = sam["variant"]
        self.auto_mask_defaults = AutoMaskDefaults(**sam["auto_mask_defaults"])
        self._low_res = int(sam["low_res_size"])
        self._image_inputs = list(sam["image_inputs"])
        self._decoders: dict[bool, Any] = {}

    @property
    def low_res_size(self) -> int:
        return self._low_res

    def _impl(self) -> type:
        """The PyTorch class whose pure-tensor steps (mask upscaling, mask prompts) this export shares."""
        from .sam.sam1 import SamEncoder
        from .sam.sam2 import Sam2Encoder

        return SamEncoder if self.prompt_variant == "sam1" else Sam2Encoder

    def decoder_inputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The mask decoder's image inputs from ``vision.onnx``: finer maps first, the image embedding last."""
        self._check_pixels(pixel_values)
        x = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        extra = self._image_inputs[1:]
        outs = self._vision.run(["patches", *extra], {"pixel_values": x})
        patches = torch.from_numpy(outs[0]).permute(0, 3, 1, 2).contiguous()
        return (*(torch.from_numpy(o) for o in outs[1:]), patches)

    def decode_tokens(
        self,
        tensors: Sequence[torch.Tensor],
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported prompt decoder (``prompt_decoder[_multimask].onnx``); see
        :meth:`~visionfm.foundation.sam.PromptableEncoder.decode_tokens`."""
        if multimask not in self._decoders:
            key = "prompt_decoder_multimask" if multimask else "prompt_decoder"
            self._decoders[multimask] = _session(self.path / self.manifest["graphs"][key]["file"], self._threads,
                                                 self._arena)  # fmt: skip

        def arr(t: torch.Tensor, dtype: Any) -> np.ndarray:
            return t.detach().to("cpu").numpy().astype(dtype, copy=False)

        image = (tensors[-1], *tensors[:-1])  # the graph takes the image embedding first
        feeds = {name: arr(t, np.float32) for name, t in zip(self._image_inputs, image, strict=True)}
        feeds.update(
            point_coords=arr(coords, np.float32),
            point_labels=arr(labels, np.int64),
            mask_input=arr(mask_input, np.float32),
            has_mask_input=arr(has_mask_input, np.float32),
        )
        low, iou = self._decoders[multimask].run(["low_res_masks", "iou_scores"], feeds)
        return torch.from_numpy(low), torch.from_numpy(iou)

    def decode_masks(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`~visionfm.foundation.sam.PromptableEncoder.decode_masks` on the exported graphs."""
        B, s = tensors[-1].shape[0], self._low_res
        coords, labs = prompt_tokens(self.prompt_variant, points, labels, boxes, (B, 1))
        has = torch.ones(1) if masks is not None else torch.zeros(1)
        mask_input = masks.float() if masks is not None else torch.zeros(B, 1, s, s)
        return self.decode_tokens(tensors, coords, labs, mask_input, has, multimask)

    def upscale_masks(self, low: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        return self._impl().upscale_masks(self, low, original, resized)

    def mask_prompt(self, masks: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        return self._impl().mask_prompt(self, masks, original, resized)


def load_onnx_encoder(
    path: str | os.PathLike, *, threads: int | None = None, memory_arena: bool = False
) -> OnnxEncoder:
    """Open an export directory as :class:`OnnxPromptableEncoder` (SAM-style exports) or :class:`OnnxEncoder`
    (``threads``, ``memory_arena``: see :class:`OnnxEncoder`)."""
    from .onnx_export import MANIFEST

    mf = Path(path) / MANIFEST
    sam = mf.is_file() and "sam" in json.loads(mf.read_text())
    return (OnnxPromptableEncoder if sam else OnnxEncoder)(path, threads=threads, memory_arena=memory_arena)


def _load_tokenizer(path: Path, kind: str) -> Any:
    if kind == "open_clip":
        import open_clip

        return open_clip.get_tokenizer(f"local-dir:{path}")
    if kind == "transformers":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    raise ValueError(f"unknown tokenizer kind {kind!r} in the export manifest")
