"""CLIP and SigLIP encoders: open_clip and transformers backends behind one ``Features`` contract.

Both backends return the same things for the same weights:

- ``pooled``: the projected image embedding, in the space ``encode_text`` maps texts to.
- ``patches``: final patch tokens after the last layer norm, before projection (open_clip's
  ``output_tokens`` convention; transformers' CLIP applies ``post_layernorm`` only to the class
  token, so it is applied here to the whole sequence).
- ``cls``: the class token after the last layer norm (CLIP); SigLIP has no class token.

SigLIP 2 comes in two on-disk forms. Fixed-resolution checkpoints (``google/siglip2-base-patch16-224`` ...) are
transformers ``SiglipModel`` s (``model_type: siglip``) with a Gemma tokenizer and run as SigLIP here, with the text
lower-cased as SigLIP 2 was trained. NaFlex checkpoints (``model_type: siglip2``) run on :class:`HFSiglip2Encoder`.

:func:`~visionfm.foundation.clip.convert.convert_checkpoint` moves a CLIP checkpoint between the open_clip and
transformers on-disk formats, so the same weights run on either backend.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..encoder import Encoder, TextEncoder, tap_blocks, tokens_to_grid
from ..features import EncoderInfo, Features
from ..loading import (
    CheckpointError,
    check_safetensors,
    find_weights,
    hf_model_type,
    load_hf_model,
    read_json,
    read_state_dict,
)
from ..preprocess import PreprocessConfig
from ..registry import LoadRequest
from ..token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_HF_CLIP_TYPES = ("clip", "metaclip_2", "siglip", "siglip2")

#: Family options accepted by ``load_encoder`` for the ``clip`` family, with their defaults.
#:
#: - ``max_num_patches``: SigLIP 2 NaFlex only (transformers ``Siglip2Model``, ``model_type: siglip2``): the most
#:   patches an image is resized to (``Siglip2ImageProcessor(max_num_patches=...)``), and the square
#:   :meth:`~HFSiglip2Encoder.preprocess` size (``isqrt(max_num_patches) * patch``). ``None``: the checkpoint's
#:   processor config (256 when it names none). Any other checkpoint of the family raises ``ValueError``.
CLIP_OPTIONS: Mapping[str, Any] = MappingProxyType({"max_num_patches": None})


def _as_tensor(out: Any) -> torch.Tensor:
    """transformers 5 returns model outputs from ``get_*_features``; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _ClipBase(TextEncoder):
    """Shared text batching for both backends (:class:`visionfm.foundation.encoder.TextEncoder`)."""


# ---------------------------------------------------------------------------------------------------
# open_clip backend
# ---------------------------------------------------------------------------------------------------
class OpenClipEncoder(_ClipBase):
    """An open_clip ``CLIP`` model with an open_clip ``VisionTransformer``, ``ModifiedResNet`` or timm image tower.

    For a timm tower (open_clip's ``TimmModel``: PE-Core, SigLIP 2, MobileCLIP 2 ...), ``pooled`` is
    ``encode_image`` (trunk features -> trunk head -> open_clip head). On a ViT trunk, ``patches`` are the
    ``forward_features`` tokens (after the trunk's final norm) without the prefix (class / register) tokens, ``cls``
    the class token where the trunk has one, and ``layers`` taps ``trunk.blocks``. On a CNN trunk (MobileCLIP 2's
    FastViT-MCi, ConvNeXt ...), ``patches`` is the last feature map (``forward_features``), ``cls`` is ``None`` and
    ``layers`` taps ``trunk.stages`` (each on its own grid).

    For the ResNet tower (the OpenAI ``RN50``-style CNN with attention pooling), ``patches`` is the last
    stage's feature map (stride 32) before the attention pool, ``pooled`` the attention-pooled
    embedding, ``cls`` is ``None``, and ``layers=[0..3]`` taps the four stages (each on its own grid).
    """

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str) -> None:
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        visual = model.visual
        self.is_resnet = isinstance(visual, ModifiedResNet)
        self.is_timm = isinstance(visual, TimmModel)
        if not (self.is_resnet or self.is_timm or isinstance(visual, VisionTransformer)):
            raise ValueError(
                f"{name!r}: the open_clip backend supports open_clip's own ViT and ModifiedResNet image towers and "
                f"timm towers (TimmModel), not {type(visual).__name__}; use a transformers checkpoint of this model "
                "instead"
            )
        out_dim, n_reg = getattr(visual, "output_dim", None), 0
        if self.is_resnet:
            width, patch, n_layers = visual.layer4[-1].conv3.out_channels, 32, 4
        elif self.is_timm:
            trunk = visual.trunk
            taps = _timm_taps(trunk)
            width, patch = trunk.num_features, _timm_reduction(trunk)
            n_layers = len(taps) if taps is not None else 0
            out_dim, n_reg = _timm_output_dim(visual), int(getattr(trunk, "num_reg_tokens", 0) or 0)
        else:
            width, patch, n_layers = visual.conv1.out_channels, visual.patch_size[0], len(visual.transformer.resblocks)
        info = EncoderInfo(
            family="clip",
            backend="open_clip",
            name=name,
            embed_dim=int(out_dim),
            width=int(width),
            patch_size=int(patch),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=True,
            num_layers=int(n_layers),
            num_registers=n_reg,
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        self.logit_bias = float(model.logit_bias.detach()) if getattr(model, "logit_bias", None) is not None else None

    def _forward_resnet(self, pixel_values: torch.Tensor, idx: list[int]) -> Features:
        v = self.model.visual
        x = v.stem(pixel_values)
        taps = {}
        for i, stage in enumerate((v.layer1, v.layer2, v.layer3, v.layer4)):
            x = stage(x)
            if i in idx:
                taps[i] = x.permute(0, 2, 3, 1)
        patches = x.permute(0, 2, 3, 1)
        return Features(pooled=v.attnpool(x), patches=patches, grid=tuple(patches.shape[1:3]), layers=taps)

    def _forward_timm(self, pixel_values: torch.Tensor, idx: list[int]) -> Features:
        """A timm image tower: ``trunk.forward_features`` -> ``trunk.forward_head`` -> open_clip's ``head``, as
        ``TimmModel.forward``, keeping the trunk's last tokens / feature map on the way."""
        v = self.model.visual
        trunk = v.trunk
        blocks = _timm_taps(trunk)
        if blocks is None and idx:
            raise ValueError(f"{self._info.name!r}: this timm trunk exposes no blocks or stages to tap")
        with tap_blocks(blocks, idx) if idx else _no_taps() as taps:
            x = trunk.forward_features(pixel_values)
        pooled = v.head(trunk.forward_head(x))
        if x.ndim == 4:  # CNN trunk: the last feature map, NCHW
            patches = x.permute(0, 2, 3, 1)
            layers = {i: t.permute(0, 2, 3, 1) if t.ndim == 4 else t for i, t in taps.items()}
            return Features(pooled=pooled, patches=patches, grid=tuple(patches.shape[1:3]), layers=layers)
        prefix = int(trunk.num_prefix_tokens)
        grid = _timm_grid(pixel_values, x.shape[1] - prefix, self._info.patch_size)
        cls = x[:, 0] if getattr(trunk, "cls_token", None) is not None else None
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(x, grid, prefix=prefix),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        """exp of the learned temperature (the multiplier on cosine similarities)."""
        return float(self.model.logit_scale.detach().exp())

    def token_merging_sites(self) -> TokenMergingSites:
        """The image tower's ViT blocks: open_clip's own (after the class token) or a timm trunk's (after its prefix
        tokens). ResNet and other CNN towers have none."""
        v = self.model.visual
        if self.is_timm and _timm_taps(v.trunk) is not None and hasattr(v.trunk, "blocks"):
            return TokenMergingSites(blocks=v.trunk.blocks, prefix=int(v.trunk.num_prefix_tokens))
        if not self.is_resnet and not self.is_timm:
            prefix = 0 if getattr(v, "class_embedding", None) is None else 1
            return TokenMergingSites(
                blocks=v.transformer.resblocks,
                prefix=prefix,
                batch_first=bool(getattr(v.transformer, "batch_first", True)),
            )
        return super().token_merging_sites()

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        v = self.model.visual
        idx = self._layer_indices(layers)
        if self.is_resnet:
            return self._forward_resnet(pixel_values, idx)
        if self.is_timm:
            return self._forward_timm(pixel_values, idx)
        grid = (pixel_values.shape[-2] // v.patch_size[0], pixel_values.shape[-1] // v.patch_size[1])
        x = v._embeds(pixel_values)
        with tap_blocks(v.transformer.resblocks, idx) as taps:
            x = v.transformer(x)
        pooled, tokens = v._pool(x)
        cls = pooled if v.pool_type == "tok" else None
        if v.proj is not None:
            pooled = pooled @ v.proj
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(tokens, grid),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=1) for i in idx},
        )

    @property
    def context_length(self) -> int:  # type: ignore[override]
        """Tokens the text tower reads (the tokenizer's context length), special tokens included."""
        return int(getattr(self.tokenizer, "context_length", None) or self.model.context_length)

    def _is_overlong(self, texts: list[str]) -> list[bool]:
        from open_clip.tokenizer import SimpleTokenizer

        n = self.context_length
        if isinstance(self.tokenizer, SimpleTokenizer):  # CLIP's BPE: <start> text <end>
            return [len(self.tokenizer.encode(t)) + 2 > n for t in texts]
        # any other open_clip tokenizer: a text fits when one more position changes none of the first n tokens
        a, b = self.tokenizer(texts, context_length=n), self.tokenizer(texts, context_length=n + 1)
        return (a != b[:, :n]).any(1).tolist()

    tokenizer_kind = (
        "open_clip"  #: how an ONNX export's runtime rebuilds the tokenizer (visionfm.foundation.onnx_export)
    )

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The text tower's tensor inputs for ``texts``: ``{"input_ids": [N, context_length]}``."""
        return {"input_ids": self.tokenizer(texts).to(self.device)}

    def text_from_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` text embeddings from :meth:`text_inputs`' tensors (``model.encode_text``)."""
        return self.model.encode_text(input_ids)

    def tokenizer_options(self) -> dict[str, Any]:
        """Tokenizer settings an exported text graph needs (none for open_clip's tokenizers)."""
        return {}

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.text_from_inputs(**self.text_inputs(texts))


@contextlib.contextmanager
def _no_taps() -> Iterator[dict[int, torch.Tensor]]:
    yield {}


def _timm_taps(trunk: Any) -> Any:
    """What ``layers`` taps in a timm trunk: its transformer ``blocks`` (ViT-like) or CNN ``stages``; else ``None``."""
    if hasattr(trunk, "blocks") and hasattr(trunk, "num_prefix_tokens"):
        return trunk.blocks
    return getattr(trunk, "stages", None)


def _timm_reduction(trunk: Any) -> int:
    """The stride of the trunk's last tokens / feature map: timm's ``feature_info`` reduction, else the patch size."""
    info = getattr(trunk, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, (list, tuple)) else None
        red = last.get("reduction") if isinstance(last, dict) else None
        if red:
            return int(red)
    pe = getattr(trunk, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps or 16)


def _timm_output_dim(visual: Any) -> int:
    """Width of ``TimmModel``'s output: its head's projection, else the trunk's classifier, else the trunk width."""
    for m in reversed(list(visual.head.modules())):
        if isinstance(m, torch.nn.Linear):
            return int(m.out_features)
    n = int(getattr(visual.trunk, "num_classes", 0) or 0)
    return n or int(visual.trunk.num_features)


def _timm_grid(pixel_values: torch.Tensor, n: int, stride: int) -> tuple[int, int]:
    """The ``h x w`` grid of ``n`` patch tokens: the input size over the trunk's stride, else a square."""
    h, w = pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride
    if h * w == n:
        return h, w
    r = math.isqrt(n)
    if r * r == n:
        return r, r
    raise ValueError(f"cannot place {n} patch tokens on a grid for input {tuple(pixel_values.shape[-2:])}")


def _open_clip_cfg(req: LoadRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) from ``open_clip_config.json`` or the open_clip tag's built-in config."""
    cfg_path = req.path / "open_clip_config.json"
    model_cfg: dict[str, Any] | None = None
    pp: dict[str, Any] = {}
    if cfg_path.is_file():
        raw = read_json(cfg_path)
        model_cfg = raw.get("model_cfg", raw)
        pp = dict(raw.get("preprocess_cfg", {}))
    arch = req.extra.get("open_clip_arch")
    pcfg = dict(req.extra.get("open_clip_pretrained_cfg") or {})
    if model_cfg is None:
        if not arch:
            raise ValueError(f"{req.path} has no open_clip_config.json")
        import open_clip

        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"open_clip has no config for {arch!r}")
    model_cfg = dict(model_cfg)
    if pcfg.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    for key in ("mean", "std", "interpolation", "resize_mode"):
        if key in pcfg and key not in pp:
            pp[key] = pcfg[key]
    pp.setdefault("size", model_cfg["vision_cfg"].get("image_size", 224))
    return model_cfg, pp


def _build_open_clip(req: LoadRequest) -> OpenClipEncoder:
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP

    from ..towers import ensure_registered

    model_cfg, pp = _open_clip_cfg(req)
    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    ensure_registered(cfg)
    model = (CustomTextCLIP if custom else CLIP)(**cfg)
    weights = find_weights(
        req.path,
        ["open_clip_model.safetensors", "model.safetensors"],
        ["open_clip_pytorch_model.bin", "pytorch_model.bin"],
        allow_pickle=req.allow_pickle,
    )
    if weights.suffix != ".safetensors":
        read_state_dict(weights, allow_pickle=req.allow_pickle)  # fails fast on a malicious pickle
    else:
        check_safetensors(weights)  # names the file when it is empty, truncated or not safetensors at all
    try:
        open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
    except RuntimeError as e:  # torch's strict load_state_dict: missing / unexpected / wrong-shape tensors
        raise CheckpointError(f"{weights} does not match the model its open_clip_config.json describes: {e}") from e
    arch = req.extra.get("open_clip_arch")
    tokenizer = open_clip.get_tokenizer(arch) if arch and not (req.path / "open_clip_config.json").is_file() else None
    if tokenizer is None:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{req.path}")
    return OpenClipEncoder(model, tokenizer, PreprocessConfig.from_open_clip(pp), req.name)


# ---------------------------------------------------------------------------------------------------
# transformers backend (CLIP and SigLIP)
# ---------------------------------------------------------------------------------------------------
class HFClipEncoder(_ClipBase):
    """A transformers ``CLIPModel``, ``MetaClip2Model`` (MetaCLIP 2: CLIP's architecture with an XLM-V tokenizer,
    handled as CLIP: :attr:`kind` ``"clip"``, :attr:`model_type` ``"metaclip_2"``) or ``SiglipModel``."""

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        #: the checkpoint's ``model_type``; :attr:`kind` is ``"clip"`` for both CLIP and MetaCLIP 2
        self.model_type = str(cfg.model_type)
        self.kind = "clip" if cfg.model_type == "metaclip_2" else cfg.model_type
        vcfg = cfg.vision_config
        embed_dim = cfg.projection_dim if self.kind == "clip" else vcfg.hidden_size
        self.siglip_version = 2 if self.kind == "siglip2" or type(tokenizer).__name__.startswith("Gemma") else 1
        info = EncoderInfo(
            family="clip",
            backend="transformers",
            name=name,
            embed_dim=int(embed_dim),
            width=int(vcfg.hidden_size),
            patch_size=int(vcfg.patch_size),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=True,
            num_layers=int(vcfg.num_hidden_layers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.tokenizer = tokenizer
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach()) if bias is not None else None
        self.text_max_length = int(cfg.text_config.max_position_embeddings)
        #: SigLIP 2 was trained on lower-cased text (transformers' ``Siglip2Tokenizer`` lower-cases NaFlex
        #: checkpoints' texts; the fixed-resolution ones ship a plain Gemma tokenizer, so it is done here).
        self.lowercase_text = self.kind != "clip" and self.siglip_version == 2

    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        """exp of the learned temperature (the multiplier on cosine similarities)."""
        return float(self.model.logit_scale.detach().exp())

    def token_merging_sites(self) -> TokenMergingSites:
        """The vision tower's blocks, after the class token (CLIP; SigLIP has none)."""
        return TokenMergingSites(blocks=self.model.vision_model.encoder.layers, prefix=1 if self.kind == "clip" else 0)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        vm = self.model.vision_model
        idx = self._layer_indices(layers)
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        with tap_blocks(vm.encoder.layers, idx) as taps:
            out = vm(pixel_values=pixel_values, return_dict=True)
        last = out.last_hidden_state
        if self.kind == "clip":
            normed = vm.post_layernorm(last)
            pooled = self.model.visual_projection(out.pooler_output)
            prefix, cls = 1, normed[:, 0]
        else:  # siglip: last_hidden_state is already normed; attention-pool head gives pooler_output
            normed, pooled, prefix, cls = last, out.pooler_output, 0, None
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(normed, grid, prefix=prefix),
            grid=grid,
            cls=cls,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Model text inputs, as the checkpoint's tokenizer declares them (``model_input_names``).

        SigLIP (1 and 2) is trained on texts padded to the maximum length (64), so it is always padded that way;
        SigLIP 2's texts are lower-cased (:attr:`lowercase_text`), as in its training and ``Siglip2Processor``.
        """
        pad = dict(padding="max_length") if self.kind != "clip" else dict(padding=True)
        if self.lowercase_text:
            texts = [t.lower() for t in texts]
        enc = self.tokenizer(texts, max_length=self.text_max_length, truncation=True, return_tensors="pt", **pad)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @property
    def context_length(self) -> int:  # type: ignore[override]
        """Tokens the text tower reads (``max_position_embeddings``), special tokens included."""
        return self.text_max_length

    def _is_overlong(self, texts: list[str]) -> list[bool]:
        if self.lowercase_text:
            texts = [t.lower() for t in texts]
        ids = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return [len(x) > self.text_max_length for x in ids]

    tokenizer_kind = "transformers"  #: how an ONNX export's runtime rebuilds the tokenizer

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The text tower's tensor inputs for ``texts`` (:meth:`tokenize`)."""
        return self.tokenize(texts)

    def text_from_inputs(self, **inputs: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` text embeddings from :meth:`text_inputs`' tensors (``get_text_features``)."""
        return _as_tensor(self.model.get_text_features(**inputs))

    def tokenizer_options(self) -> dict[str, Any]:
        """Tokenizer settings an exported text graph needs: padding, maximum length, lower-casing."""
        return {"padding": "max_length" if self.kind != "clip" else True, "max_length": self.text_max_length,
                "lowercase": bool(self.lowercase_text)}  # fmt: skip

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.text_from_inputs(**self.text_inputs(texts))


class HFSiglip2Encoder(HFClipEncoder):
    """A transformers ``Siglip2Model`` (SigLIP 2 NaFlex: native aspect ratio, a variable number of patches).

    :meth:`encode` resizes each image, aspect kept, to the largest multiple of the patch size with at most
    :attr:`max_num_patches` patches (``Siglip2ImageProcessor``'s rule), so each image has its own grid, and runs the
    batch packed with ``pixel_attention_mask`` / ``spatial_shapes``, as ``Siglip2Model.get_image_features``.

    Mixed grids in one batch: ``Features.patches`` (and each ``Features.layers`` tap) is padded with zeros to the
    largest height and the largest width of the images in the call, each image's patches top-left
    (``patches[b, :h_b, :w_b]``); ``Features.grid`` is that padded grid. :meth:`encode_with_shapes` also returns the
    per-image ``(h_b, w_b)`` (``spatial_shapes``, ``[B, 2]``); :meth:`patch_mask` turns them into a ``[B, H, W]`` bool
    mask. ``pooled`` is exact per image (the attention-pool head sees only the image's own patches).

    :meth:`forward` takes an ordinary ``[B, 3, H, W]`` batch (``H`` and ``W`` multiples of the patch size) and runs
    it as one grid, which is what pipelines that use :meth:`preprocess` (a square of :attr:`max_num_patches` patches,
    stretched) get.
    """

    def __init__(self, model: Any, tokenizer: Any, preprocess_config: PreprocessConfig, name: str,
                 max_num_patches: int) -> None:  # fmt: skip
        super().__init__(model, tokenizer, preprocess_config, name)
        self.max_num_patches = int(max_num_patches)

    def token_merging_sites(self) -> TokenMergingSites:
        """None: NaFlex batches carry a padding mask over the token sequence, which merging would invalidate."""
        raise ValueError(
            f"token merging is not available for SigLIP 2 NaFlex ({self._info.name!r}): its packed batches carry a "
            "per-token padding mask; use a fixed-resolution SigLIP 2 checkpoint"
        )

    def _run(self, packed: torch.Tensor, mask: torch.Tensor, shapes: torch.Tensor, idx: list[int]) -> tuple:
        vm = self.model.vision_model
        with tap_blocks(vm.encoder.layers, idx) as taps:
            out = vm(pixel_values=packed, pixel_attention_mask=mask, spatial_shapes=shapes, return_dict=True)
        return out.pooler_output, out.last_hidden_state, taps

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, h*w, p*p*3]`` in ``Siglip2ImageProcessor``'s order (row, column; then y, x, c)."""
        p = self._info.patch_size
        b, c, hh, ww = pixel_values.shape
        if hh % p or ww % p:
            raise ValueError(f"SigLIP 2 NaFlex input sides must be multiples of the patch size {p}, got {(hh, ww)}")
        x = pixel_values.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (hh // p) * (ww // p), p * p * c)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        idx = self._layer_indices(layers)
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        packed = self.patchify(pixel_values)
        b = packed.shape[0]
        mask = torch.ones(b, packed.shape[1], dtype=torch.long, device=packed.device)
        shapes = torch.tensor([grid] * b, dtype=torch.long, device=packed.device)
        pooled, last, taps = self._run(packed, mask, shapes, idx)
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(last, grid),
            grid=grid,
            layers={i: tokens_to_grid(taps[i], grid) for i in idx},
        )

    def naflex_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H, W)`` in pixels an image of ``height x width`` is resized to (``Siglip2ImageProcessor``'s rule)."""
        from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

        return get_image_size_for_max_num_patches(height, width, self._info.patch_size, self.max_num_patches)

    @staticmethod
    def patch_mask(spatial_shapes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``[B, H, W]`` bool mask of the real patches in padded ``Features.patches`` of grid ``(H, W)``."""
        rows = torch.arange(grid[0], device=spatial_shapes.device).view(1, -1, 1)
        cols = torch.arange(grid[1], device=spatial_shapes.device).view(1, 1, -1)
        return (rows < spatial_shapes[:, 0].view(-1, 1, 1)) & (cols < spatial_shapes[:, 1].view(-1, 1, 1))

    def encode_with_shapes(self, images: Any, *, batch_size: int = 32, layers: Sequence[int] | None = None,
                           output_device: torch.device | str | None = None) -> tuple[Features, torch.Tensor]:  # fmt: skip
        """Like :meth:`encode`, also returning ``spatial_shapes``: ``[B, 2]`` long, each image's ``(h, w)`` grid."""
        from ...data.images import as_image_list, load_images
        from ..preprocess import preprocess_uint8

        items = as_image_list(images)
        if not items:
            raise ValueError("encode() got no images")
        idx = self._layer_indices(layers)
        p, n_max = self._info.patch_size, self.max_num_patches
        pooled, toks, taps, grids = [], [], {i: [] for i in idx}, []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                tensors = load_images(items[start : start + batch_size])
                packed, masks, shapes = [], [], []
                for t in tensors:
                    hh, ww = self.naflex_size(int(t.shape[-2]), int(t.shape[-1]))
                    cfg = self.preprocess_config.with_overrides(resize="exact", crop_size=(hh, ww))
                    x = preprocess_uint8([t], cfg, device=self.device)[0].to(self.dtype)
                    seq = self.patchify(x)[0]
                    n = seq.shape[0]
                    packed.append(torch.nn.functional.pad(seq, (0, 0, 0, n_max - n)))
                    masks.append(torch.arange(n_max, device=self.device) < n)
                    shapes.append((hh // p, ww // p))
                shapes_t = torch.tensor(shapes, dtype=torch.long, device=self.device)
                out = self._run(torch.stack(packed), torch.stack(masks).long(), shapes_t, idx)
                for b, g in enumerate(shapes):
                    grids.append(g)
                    pooled.append(out[0][b])
                    toks.append(out[1][b, : g[0] * g[1]].reshape(g[0], g[1], -1))
                    for i in idx:
                        taps[i].append(out[2][i][b, : g[0] * g[1]].reshape(g[0], g[1], -1))
        grid = (max(g[0] for g in grids), max(g[1] for g in grids))

        def pad(maps: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(
                [torch.nn.functional.pad(m, (0, 0, 0, grid[1] - m.shape[1], 0, grid[0] - m.shape[0])) for m in maps]
            )

        feats = Features(
            pooled=torch.stack(pooled), patches=pad(toks), grid=grid, layers={i: pad(taps[i]) for i in idx}
        )
        shapes_all = torch.tensor(grids, dtype=torch.long)
        if output_device is not None:
            feats, shapes_all = feats.to(output_device), shapes_all.to(output_device)
        return feats, shapes_all

    def encode(self, images: Any, *, batch_size: int = 32, layers: Sequence[int] | None = None,
               output_device: torch.device | str | None = None, **_: Any) -> Features:  # fmt: skip
        """Encode images at their native aspect ratio (see the class docstring for the padded mixed-grid layout).

        ``progress``, ``num_workers`` and ``decode_device`` of :meth:`Encoder.encode` are accepted and ignored."""
        return self.encode_with_shapes(images, batch_size=batch_size, layers=layers, output_device=output_device)[0]


def _siglip2_preprocess(path: Path, patch: int, max_num_patches: int | None = None) -> tuple[PreprocessConfig, int]:
    """(a square fallback ``PreprocessConfig`` carrying the NaFlex interpolation/normalisation, max_num_patches).

    ``max_num_patches`` overrides the processor config's (the ``load_encoder`` option)."""
    import math

    from transformers import Siglip2ImageProcessor

    cfg = dict(Siglip2ImageProcessor().to_dict())
    if (path / "preprocessor_config.json").is_file():
        cfg.update(read_json(path / "preprocessor_config.json"))
    elif (path / "processor_config.json").is_file():
        cfg.update(read_json(path / "processor_config.json").get("image_processor") or {})
    n_max = int(cfg.get("max_num_patches", 256)) if max_num_patches is None else int(max_num_patches)
    if int(cfg.get("patch_size", patch)) != patch:
        raise CheckpointError(f"{path}: processor patch_size {cfg.get('patch_size')} != the model's {patch}")
    side = math.isqrt(n_max) * patch
    base = PreprocessConfig.from_hf({**cfg, "size": {"height": side, "width": side}, "do_center_crop": False})
    return base, n_max


def _build_hf(req: LoadRequest) -> HFClipEncoder:
    from transformers import AutoModel, AutoTokenizer

    model = load_hf_model(AutoModel, req.path, allow_pickle=req.allow_pickle)
    tokenizer = AutoTokenizer.from_pretrained(req.path)
    kind = model.config.model_type
    if kind == "siglip2":
        n_opt = req.options.get("max_num_patches")
        base, n_max = _siglip2_preprocess(req.path, int(model.config.vision_config.patch_size), n_opt)
        return HFSiglip2Encoder(model, tokenizer, base, req.name, n_max)
    pp = PreprocessConfig.from_hf_dir(req.path, "SiglipImageProcessor" if kind == "siglip" else "CLIPImageProcessor")
    if pp is None:
        size = int(model.config.vision_config.image_size)
        logger.warning("%s has no preprocessor_config.json; using the %s defaults", req.path, model.config.model_type)
        if model.config.model_type == "siglip":
            pp = PreprocessConfig(resize="exact", crop_size=(size, size), mean=(0.5,) * 3, std=(0.5,) * 3)  # type: ignore[arg-type]
        else:
            pp = PreprocessConfig(resize_size=size, crop_size=(size, size))
    return HFClipEncoder(model, tokenizer, pp, req.name)


# ---------------------------------------------------------------------------------------------------
# family
# ---------------------------------------------------------------------------------------------------
def _detect(path: Path) -> str | None:
    if (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
        return "open_clip"
    if hf_model_type(path) in _HF_CLIP_TYPES:
        return "transformers"
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    return None


def _check_max_num_patches(req: LoadRequest) -> None:
    """Validate the ``max_num_patches`` option: an int >= 1, and only for SigLIP 2 NaFlex checkpoints."""
    n = req.options.get("max_num_patches")
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"load_encoder option max_num_patches= must be an int or None, got {n!r}")
    if n < 1:
        raise ValueError(f"load_encoder option max_num_patches= must be >= 1, got {n}")
    fmt = req.extra.get("format", req.backend)
    kind = hf_model_type(req.path) if fmt == "transformers" else None
    if kind != "siglip2":
        what = f"is a transformers {kind!r} checkpoint" if kind else f"is in the {fmt} format"
        raise ValueError(
            f"load_encoder option max_num_patches= applies only to SigLIP 2 NaFlex checkpoints (transformers "
            f"Siglip2Model, model_type 'siglip2') of family 'clip'; {req.name!r} {what}, which has no NaFlex "
            "(its input size is fixed by its preprocessing)"
        )


def _build(req: LoadRequest) -> Encoder:
    _check_max_num_patches(req)
    fmt = req.extra.get("format", req.backend)
    if req.backend != fmt:
        raise ValueError(
            f"{req.name!r} is a {fmt} checkpoint; to run it on the {req.backend} backend convert it once with "
            f"`visionfm convert {req.path} OUT_DIR --to {req.backend}` (visionfm.foundation.clip.convert_checkpoint)"
        )
    return _build_open_clip(req) if req.backend == "open_clip" else _build_hf(req)
