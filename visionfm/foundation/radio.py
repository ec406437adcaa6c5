"""NVIDIA's RADIO family (C-RADIOv3 / C-RADIOv4) through transformers' ``RadioModel``.

The transformers checkpoint directory (``config.json`` with ``model_type`` ``radio``, ``model.safetensors``) is the
on-disk format. There is no transformers image processor for RADIO: the model conditions its input itself
(``config.norm_mean`` / ``config.norm_std`` inside ``RadioModel.input_conditioner``), so it takes RGB pixels in
[0, 1] and this family's preprocessing only resizes and rescales (``mean`` 0, ``std`` 1: ``Encoder.normalize`` passes
[0, 1] pixels through unchanged).

Resolution: RADIO's CPE position embeddings are cropped/interpolated from a ``max_img_size`` table, so any input
whose sides are multiples of the patch size runs at its own resolution. Preprocessing resizes the short side to
``config.image_size`` (bicubic, antialiased) and centre crops a square of that size, both snapped to a multiple of
the patch size (batches of photos of mixed aspect ratios must stack into one tensor). ``forward`` snaps any other
input: a side that is not a multiple of the patch is resized (bicubic, antialiased) to the nearest multiple, and an
INFO message on the ``visionfm.foundation.radio`` logger names the size used (once per input size and encoder).

The NVIDIA checkpoints ship a ``preprocessor_config.json`` that resizes nothing and normalises nothing (a
``CLIPImageProcessor`` with ``do_resize``/``do_center_crop``/``do_normalize`` false): such a file, or none, gives the
default above; a file that does resize is followed, its sizes snapped to the patch. Normalisation in the file is
always ignored (mean 0, std 1), since the model normalises itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

MODEL_TYPE = "radio"
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)


def snap(n: int | float, patch: int) -> int:
    """The multiple of ``patch`` nearest to ``n`` (ties round up), at least ``patch``."""
    return max(patch, int(n / patch + 0.5) * patch)


def snap_size(size: tuple[int, int], patch: int) -> tuple[int, int]:
    """``(H, W)`` with each side snapped to its nearest multiple of ``patch`` (see :func:`snap`)."""
    return snap(size[0], patch), snap(size[1], patch)


def default_preprocess(image_size: int, patch: int) -> PreprocessConfig:
    """Short side to ``image_size`` snapped to the patch (bicubic, antialiased), centre crop to that square,
    rescale to [0, 1]; mean 0 and std 1 (the model normalises its input itself)."""
    s = snap(image_size, patch)
    return PreprocessConfig(
        resize="shortest_edge",
        resize_size=s,
        interpolation="bicubic",
        crop_size=(s, s),
        mean=IDENTITY_MEAN,
        std=IDENTITY_STD,
    )


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers RADIO checkpoint (``model_type`` ``radio``), else ``None``."""
    return "transformers" if hf_model_type(Path(path)) == MODEL_TYPE else None


def load_preprocess_config(path: Path, image_size: int, patch: int) -> PreprocessConfig:
    """The preprocessing for the checkpoint at ``path`` (see the module docstring).

    Without a ``preprocessor_config.json`` (or with NVIDIA's, which resizes nothing): :func:`default_preprocess`.
    A file that resizes is followed, with its resize and crop sizes snapped to multiples of ``patch``. The mean and
    std are always 0 and 1: ``RadioModel`` normalises its [0, 1] input itself.
    """
    pp = None
    path = Path(path)
    if (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file():
        pp = PreprocessConfig.from_hf_dir(path, "CLIPImageProcessor")
    if pp is None or pp.resize == "none":
        default = default_preprocess(image_size, patch)
        logger.info(
            "%s: %s; using RADIO's default preprocessing (short side to %d, bicubic, centre crop %dx%d, pixels in [0, 1])",
            path,
            "no preprocessor_config.json" if pp is None else "its preprocessor config resizes nothing",
            default.resize_size,
            *default.crop_size,  # type: ignore[misc]
        )
        return default
    if tuple(pp.mean) != IDENTITY_MEAN or tuple(pp.std) != IDENTITY_STD:
        logger.warning(
            "%s: ignoring the preprocessor config's normalisation (mean %s, std %s): RadioModel normalises its "
            "[0, 1] input itself",
            path,
            pp.mean,
            pp.std,
        )
    crop = snap_size(pp.crop_size, patch) if pp.crop_size is not None else None
    size = pp.resize_size
    if size is not None and pp.resize in ("shortest_edge", "longest_edge") and crop is None:
        size = snap(size, patch)
    fixed = dataclasses.replace(
        pp, mean=IDENTITY_MEAN, std=IDENTITY_STD, crop_size=crop, resize_size=size, pad_size=None
    )
    if fixed != dataclasses.replace(pp, mean=IDENTITY_MEAN, std=IDENTITY_STD, pad_size=None):
        logger.info("%s: preprocessing sizes snapped to multiples of the patch (%d): %s", path, patch, fixed)
    return fixed


class RadioEncoder(Encoder):
    """RADIO (C-RADIOv3/v4) image encoder: a ViT with CPE position embeddings, several CLS (summary) tokens and
    register tokens, distilled from several teachers.

    ``Features``:

    - ``pooled``: transformers' ``summary``, the CLS tokens at ``config.summary_idxs`` flattened,
      ``[B, len(summary_idxs) * C]`` (``info.embed_dim``);
    - ``cls``: the first summary token alone (CLS token ``summary_idxs[0]``), ``[B, C]``;
    - ``registers``: the register tokens ``[B, R, C]`` (``None`` without registers);
    - ``patches``: transformers' ``features`` on the patch grid ``[B, h, w, C]`` (the last block's output: RADIO
      has no final norm);
    - ``layers``: block outputs on the patch grid ``{i: [B, h, w, C]}`` (the last equals ``patches``).

    Input pixels are RGB in [0, 1] (the model normalises them itself). Any input whose sides are multiples of the
    patch runs at its own resolution; other inputs are resized to the nearest multiples first, with an INFO log.

    Args:
        model: a transformers ``RadioModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        patch = int(cfg.patch_size)
        summary = [int(i) for i in cfg.summary_idxs]
        info = EncoderInfo(
            family="radio",
            backend="transformers",
            name=name,
            embed_dim=len(summary) * int(cfg.hidden_size),
            width=int(cfg.hidden_size),
            patch_size=patch,
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(cfg.num_hidden_layers),
            num_registers=int(cfg.num_registers),
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.num_cls_tokens = int(cfg.num_cls_tokens)
        self.summary_idxs = summary
        self.max_img_size = int(cfg.max_img_size)
        self._logged_sizes: set[tuple[int, int]] = set()
        self._warned_large: set[tuple[int, int]] = set()

    def snap_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Resize ``[B, 3, H, W]`` pixels to the nearest multiples of the patch (bicubic, antialiased), logging the
        size used at INFO; inputs already on the patch grid are returned as they are."""
        h, w = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
        p = self._info.patch_size
        new = snap_size((h, w), p)
        if new == (h, w):
            return pixel_values
        if (h, w) not in self._logged_sizes:
            self._logged_sizes.add((h, w))
            logger.info(
                "RADIO %s: input %dx%d (HxW) is not a multiple of the patch size %d; resized to %dx%d",
                self._info.name,
                h,
                w,
                p,
                *new,
            )
        x = torch.nn.functional.interpolate(
            pixel_values.float(), size=new, mode="bicubic", align_corners=False, antialias=True
        )
        return x.to(pixel_values.dtype)

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks, after the summary (class) tokens and registers."""
        return TokenMergingSites(blocks=self.model.encoder.layer, prefix=self.num_cls_tokens + self._info.num_registers)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode [0, 1] pixels in one model pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` RGB in [0, 1]; sides that are not multiples of the patch are snapped
                (:meth:`snap_input`). The grid is ``(H // patch, W // patch)`` after snapping.
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, len(summary_idxs) * C]``, ``cls`` ``[B, C]``, ``registers``
            ``[B, R, C]`` or ``None``, ``patches`` ``[B, h, w, C]`` and ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        x = self.snap_input(pixel_values)
        p = self._info.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if max(size) > self.max_img_size and size not in self._warned_large:
            self._warned_large.add(size)
            logger.warning(
                "RADIO %s: input %dx%d is larger than the model's max_img_size %d; position embeddings are upsampled",
                self._info.name,
                x.shape[-2],
                x.shape[-1],
                self.max_img_size,
            )
        prefix = self.num_cls_tokens + self._info.num_registers
        with tap_blocks(self.model.encoder.layer, idx) as taps:
            out = self.model(pixel_values=x.to(self.dtype))
        last = out.last_hidden_state  # [B, n_cls + R + h*w, C]
        return Features(
            pooled=out.summary,
            patches=out.features.reshape(out.features.shape[0], *grid, out.features.shape[-1]),
            grid=grid,
            cls=last[:, self.summary_idxs[0]],
            registers=last[:, self.num_cls_tokens : prefix] if self._info.num_registers else None,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )


def build(req: LoadRequest) -> RadioEncoder:
    """Build a RADIO encoder from a transformers checkpoint directory."""
    from transformers import AutoModel

    model = load_hf_model(AutoModel, req.path, allow_pickle=req.allow_pickle)
    cfg = model.config
    if cfg.model_type != MODEL_TYPE:
        raise ValueError(f"{req.path} holds a {cfg.model_type!r} model, not RADIO")
    pp = load_preprocess_config(req.path, int(cfg.image_size), int(cfg.patch_size))
    return RadioEncoder(model, pp, name=req.name)


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in RADIO encoders (the family's ``peft_layout``):
    ``encoder.layer.<i>.attention.{q,k,v,o}_proj`` and the MLP, ``encoder.layer.<i>.mlp.{fc1,fc2}`` (or
    ``{gate,up,down}_proj`` with ``use_swiglu_ffn``), relative to the ``RadioModel``."""
    return TargetLayout(
        description="radio (transformers)",
        attention=(rf"encoder\.layer\.{_B}\.attention\.(q_proj|k_proj|v_proj|o_proj)",),
        mlp=(rf"encoder\.layer\.{_B}\.mlp\.(fc1|fc2|gate_proj|up_proj|down_proj)",),
    )


register_family(
    Family(
        name="radio",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="NVIDIA C-RADIO agglomerative ViTs (CPE, any resolution on the patch grid): summary, patch and "
        "register tokens",
        formats="transformers (config.json with model_type radio)",
        peft_layout=peft_layout,
    )
)

_MODELS = {
    "c-radiov4-h": ("nvidia/C-RADIOv4-H", "C-RADIOv4 ViT-H/16 (631M params)"),
    "c-radiov4-so400m": ("nvidia/C-RADIOv4-SO400M", "C-RADIOv4 ViT-SO400M/16 (412M params)"),
    "c-radiov3-b": ("nvidia/C-RADIOv3-B", "C-RADIOv3 ViT-B/16 (98M params)"),
    "c-radiov3-l": ("nvidia/C-RADIOv3-L", "C-RADIOv3 ViT-L/16 (320M params)"),
    "c-radiov3-h": ("nvidia/C-RADIOv3-H", "C-RADIOv3 ViT-H/16 (631M params)"),
    "c-radiov3-g": ("nvidia/C-RADIOv3-g", "C-RADIOv3 ViT-g/16 (1.1B params)"),
}
for _name, (_source, _desc) in _MODELS.items():
    register_model(
        ModelSpec(
            name=_name,
            family="radio",
            source=_source,
            backend="transformers",
            description=f"NVIDIA {_desc}, agglomerative (multi-teacher) distillation",
        )
    )
