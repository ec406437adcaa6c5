"""timm ViTs from timm's own on-disk / hub format (``timm/vit_small_patch14_dinov2.lvd142m``, any
``save_for_hf`` / ``push_to_hf_hub`` export, visionfm's own ``visionfm_*`` timm towers).

The on-disk format is what ``timm.models.save_for_hf`` writes and ``timm.create_model("local-dir:DIR",
pretrained=True)`` reads: a ``config.json`` holding ``"architecture"`` (a timm model name), ``"num_classes"``,
``"pretrained_cfg"`` (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``, ...) and
optionally ``"model_args"`` (keyword arguments of ``timm.create_model``), next to ``model.safetensors`` (the state
dict; ``pytorch_model.bin`` only with ``allow_pickle=True``, read with ``weights_only=True``). A ``config.json`` with
an ``architecture`` key and no ``model_type`` (transformers' key) is this family's.

The model is built by timm (``timm.create_model(architecture, pretrained_cfg=..., **model_args)``) and the weights
are loaded strictly: a missing, unexpected or wrongly shaped tensor is a :class:`CheckpointError`. Only ViTs
(``timm.models.vision_transformer.VisionTransformer`` and its subclasses) are supported.

``Features``: ``pooled`` is timm's ``forward_head(forward_features(x), pre_logits=True)`` (the model's own pooling:
class token, average, attention pool ... after ``fc_norm``); ``patches`` the final (normed) patch tokens of
``forward_features``, without the class / register tokens; ``cls`` the class token (``None`` without one);
``registers`` the register tokens; ``layers`` raw block outputs on the patch grid. A model saved with
``model_args={"dynamic_img_size": True}`` takes any input size (the grid follows the input, the position table is
resized by timm); any other takes its native size only.

Preprocessing is timm's eval transform, ``timm.data.create_transform(**resolve_data_config(...))``: with the
default ``crop_mode="center"``, the short side is resized (PIL, the cfg's interpolation) to
``floor(size / crop_pct)`` and the centre ``size x size`` crop taken; ``crop_mode="squash"`` with ``crop_pct=1``
resizes to ``size x size``. Other crop modes raise ``NotImplementedError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import CheckpointError, find_weights, read_json, read_state_dict
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

#: Weights files, best first (timm's own preference order).
SAFETENSORS = ("model.safetensors",)
PICKLES = ("pytorch_model.bin",)
#: Architecture names registered by :mod:`visionfm.foundation.towers` (registered with timm before a build).
VISIONFM_PREFIX = "visionfm_"


def detect(path: Path) -> str | None:
    """``"timm"`` if ``path/config.json`` is timm's format (an ``architecture`` key, no transformers ``model_type``).

    Raises:
        ValueError: ``config.json`` is not valid JSON (naming the file and the line).
    """
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = read_json(cfg)
    except (OSError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("architecture"), str) and "model_type" not in data:
        return "timm"
    return None


def read_timm_config(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Parse a timm ``config.json`` as ``timm.create_model("local-dir:...")`` does.

    Args:
        path: checkpoint directory.

    Returns:
        ``(architecture, pretrained_cfg, model_args)``: the timm model name, the pretrained config (with the root
        ``num_classes`` folded in; legacy single-dict configs are split as timm splits them) and the
        ``timm.create_model`` keyword arguments the export recorded (``{}`` if none).
    """
    from timm.models._hub import load_model_config_from_path

    data = read_json(Path(path) / "config.json")  # a clear error for malformed JSON before timm reads it
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), str):
        raise ValueError(f"{Path(path) / 'config.json'} is not a timm config (no 'architecture' key)")
    pretrained_cfg, arch, model_args = load_model_config_from_path(path)
    return arch, dict(pretrained_cfg), dict(model_args or {})


def preprocess_from_data_config(data_cfg: dict[str, Any]) -> PreprocessConfig:
    """timm's eval transform (``transforms_imagenet_eval``) as a :class:`PreprocessConfig`.

    Args:
        data_cfg: ``timm.data.resolve_data_config`` output: ``input_size`` ``(C, H, W)``, ``interpolation``,
            ``crop_pct``, ``crop_mode``, ``mean``, ``std``.

    Raises:
        NotImplementedError: ``crop_mode="border"``, ``"squash"`` with ``crop_pct < 1``, or a non-square
            ``"center"`` crop (none of which a :class:`PreprocessConfig` expresses).
        ValueError: an interpolation other than nearest, bilinear, bicubic or lanczos.
    """
    h, w = (int(s) for s in data_cfg["input_size"][-2:])
    crop_pct = float(data_cfg.get("crop_pct") or 0.875)
    mode = data_cfg.get("crop_mode") or "center"
    common: dict[str, Any] = dict(
        interpolation=str(data_cfg.get("interpolation") or "bicubic"),
        mean=tuple(float(v) for v in data_cfg["mean"]),
        std=tuple(float(v) for v in data_cfg["std"]),
        resize_backend="pil",  # torchvision's Resize on PIL images
        crop_rounding="round",  # torchvision's CenterCrop
    )
    if mode == "squash" and crop_pct == 1.0:
        return PreprocessConfig(resize="exact", resize_size=None, crop_size=(h, w), **common)
    if mode == "center" and h == w:
        return PreprocessConfig(
            resize="shortest_edge", resize_size=math.floor(h / crop_pct), crop_size=(h, w), **common
        )
    raise NotImplementedError(
        f"timm preprocessing with crop_mode={mode!r}, crop_pct={crop_pct}, input size {h}x{w} is not supported "
        "(supported: 'center' with a square input size, 'squash' with crop_pct=1)"
    )


def _patch_size(model: torch.nn.Module) -> int:
    """Input pixels per token side: ``patch_embed.feat_ratio()`` (timm's API; hybrid stems give their total
    stride), else ``patch_embed.patch_size``."""
    pe = model.patch_embed
    ratio = pe.feat_ratio(as_scalar=False) if hasattr(pe, "feat_ratio") else pe.patch_size
    ratio = (ratio, ratio) if isinstance(ratio, int) else tuple(int(r) for r in ratio)
    if ratio[0] != ratio[1]:
        raise ValueError(f"non-square patches {ratio} are not supported")
    return int(ratio[0])


class TimmEncoder(Encoder):
    """A timm ViT (``timm.models.vision_transformer.VisionTransformer`` or a subclass).

    ``Features``: ``pooled`` ``[B, D]`` is ``model.forward_head(model.forward_features(x), pre_logits=True)``;
    ``patches`` ``[B, h, w, C]`` the final (normed) patch tokens of ``forward_features`` without the prefix tokens;
    ``cls`` ``[B, C]`` the normed class token (``None`` for models without one); ``registers`` ``[B, R, C]`` the normed
    register tokens (``None`` without); ``layers`` ``{i: [B, h, w, C]}`` raw outputs of ``model.blocks[i]``.

    Args:
        model: the timm ViT, weights loaded.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
        architecture: the timm model name, for error messages.
    """

    def __init__(
        self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str, architecture: str = ""
    ) -> None:
        num_features = int(model.num_features)
        info = EncoderInfo(
            family="timm",
            backend="timm",
            name=name,
            embed_dim=int(getattr(model, "head_hidden_size", num_features)),
            width=num_features,
            patch_size=_patch_size(model),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=len(model.blocks),
            num_registers=int(getattr(model, "num_reg_tokens", 0)),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.architecture = architecture or type(model).__name__
        #: Whether the model takes any input size (built with ``dynamic_img_size=True``).
        self.dynamic = bool(getattr(model, "dynamic_img_size", False))
        #: ``(H, W)`` the model was built for (the only size a non-dynamic model takes).
        self.native_size = tuple(int(s) for s in model.patch_embed.img_size)

    def grid_for(self, size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of an input of ``size`` ``(H, W)``.

        Raises:
            ValueError: the model is not dynamic and ``size`` is not its native size.
        """
        h, w = int(size[0]), int(size[1])
        pe = self.model.patch_embed
        if not self.dynamic:
            if (h, w) != self.native_size:
                nh, nw = self.native_size
                raise ValueError(
                    f"{self._info.name!r} ({self.architecture}) takes {nh}x{nw} inputs only: it was built without "
                    f"dynamic_img_size, got {h}x{w}. Resize the input, or save the model with "
                    "model_args={'dynamic_img_size': True} to run it at other sizes"
                )
            return tuple(int(g) for g in pe.grid_size)  # type: ignore[return-value]
        if hasattr(pe, "dynamic_feat_size"):
            return tuple(int(g) for g in pe.dynamic_feat_size((h, w)))  # type: ignore[return-value]
        p = self._info.patch_size
        return h // p, w // p

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks, after the prefix (class, register) tokens."""
        return TokenMergingSites(blocks=self.model.blocks, prefix=int(self.model.num_prefix_tokens))

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; ``(H, W)`` is the native size, or any size for a
                model built with ``dynamic_img_size=True`` (grid ``(H // patch, W // patch)``).
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, D]``, ``patches`` ``[B, h, w, C]``, ``cls`` ``[B, C]`` or ``None``,
            ``registers`` ``[B, R, C]`` or ``None`` and ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        grid = self.grid_for((pixel_values.shape[-2], pixel_values.shape[-1]))
        m = self.model
        with tap_blocks(m.blocks, idx) as taps:
            x = m.forward_features(pixel_values.to(self.dtype))
        pooled = m.forward_head(x, pre_logits=True)
        prefix = int(m.num_prefix_tokens)  # class token, register tokens (and DeiT's distillation token)
        n_cls = 1 if getattr(m, "cls_token", None) is not None else 0
        n_reg = self._info.num_registers
        return Features(
            pooled=pooled,
            patches=tokens_to_grid(x, grid, prefix=prefix),
            grid=grid,
            cls=x[:, 0] if n_cls else None,
            registers=x[:, n_cls : n_cls + n_reg] if n_reg else None,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )


def _load_weights(model: torch.nn.Module, path: Path, *, allow_pickle: bool) -> None:
    """Load the checkpoint's state dict into ``model`` strictly, as a :class:`CheckpointError` naming the file and
    the tensors when it does not fit."""
    weights = find_weights(path, SAFETENSORS, PICKLES, allow_pickle=allow_pickle)
    state = read_state_dict(weights, allow_pickle=allow_pickle)
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong:
        shown = "; ".join(f"{k}: {a} in the file, expected {b}" for k, a, b in sorted(wrong)[:5])
        raise CheckpointError(
            f"{weights}: {len(wrong)} tensor(s) have the wrong shape for the model its config.json describes: "
            f"{shown}. The weights do not belong to this config; download or save the checkpoint again"
        )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"missing {len(missing)} tensor(s) that {type(model).__name__} needs: {', '.join(missing[:5])}"
            )
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): {', '.join(unexpected[:5])}")
        raise CheckpointError(
            f"{weights} does not match the model its config.json describes ({'; '.join(parts)}). The file is "
            "incomplete or belongs to a different model; download or save the checkpoint again"
        )
    model.load_state_dict(state, strict=True)


def build(req: LoadRequest) -> TimmEncoder:
    """Build a :class:`TimmEncoder` from a timm checkpoint directory (``config.json`` + ``model.safetensors``).

    Raises:
        NotImplementedError: the architecture is not a timm ViT, or its preprocessing is not supported.
        CheckpointError: the weights file is damaged or does not fit the model.
        ValueError: the architecture is unknown to timm, or the config's input size is not the model's.
    """
    import timm
    from timm.data import resolve_data_config
    from timm.models.vision_transformer import VisionTransformer

    arch, pretrained_cfg, model_args = read_timm_config(req.path)
    if arch.startswith(VISIONFM_PREFIX):  # visionfm's own timm towers (the toyworld zoo)
        from .towers import register

        register()
    if not timm.is_model(arch):
        raise ValueError(f"{req.path}: architecture {arch!r} is not a timm model (timm {timm.__version__})")
    model = timm.create_model(arch, pretrained=False, pretrained_cfg=pretrained_cfg, **model_args)
    if not isinstance(model, VisionTransformer):
        raise NotImplementedError(
            f"{req.path}: timm architecture {arch!r} builds a {type(model).__name__}; the timm family supports ViTs "
            "only (timm.models.vision_transformer.VisionTransformer and its subclasses)"
        )
    _load_weights(model, req.path, allow_pickle=req.allow_pickle)
    pp = preprocess_from_data_config(resolve_data_config({}, pretrained_cfg=pretrained_cfg))
    enc = TimmEncoder(model, pp, name=req.name, architecture=arch)
    if not enc.dynamic and tuple(pp.image_size) != enc.native_size:
        raise ValueError(
            f"{req.path}: pretrained_cfg input_size {pp.image_size} is not the {arch} model's size "
            f"{enc.native_size} (and it was built without dynamic_img_size)"
        )
    return enc


_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in timm ViTs (the family's ``peft_layout``)."""
    return TargetLayout(
        description="timm (timm ViT)",
        attention=(rf"blocks\.{_B}\.attn\.(qkv|proj)",),
        mlp=(rf"blocks\.{_B}\.mlp\.(fc1|fc1_g|fc1_x|fc2)",),  # fc1_g / fc1_x: SwiGLU MLPs
    )


register_family(
    Family(
        name="timm",
        backends=("timm",),
        detect=detect,
        build=build,
        options={},
        description="timm ViTs in timm's own format (hub repos timm/*, save_for_hf exports): pooled, CLS, patches",
        formats="timm (config.json with 'architecture' and 'pretrained_cfg', model.safetensors)",
        peft_layout=peft_layout,
    )
)

register_model(
    ModelSpec(
        name="timm-vit-small-dinov2",
        family="timm",
        source="timm/vit_small_patch14_dinov2.lvd142m",
        backend="timm",
        description="DINOv2 ViT-S/14 through timm (518 px, bicubic, crop_pct 1)",
    )
)
