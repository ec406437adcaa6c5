"""Distilled students (AM-RADIO / Theia style): one ViT, one adaptor head per teacher, as a first-class encoder.

A student is a plain pre-norm ViT (class token, optional register tokens, learned position embedding
resized bicubically for other input sizes) trained to reproduce several teachers at once. Each teacher
gets an :class:`Adaptor`: two 2-layer MLPs (``Linear -> GELU -> Linear``, as RADIO's ``MLP`` heads) that
map the student's class token to the teacher's summary space and every patch token to the teacher's
dense feature space.

On disk a student is a directory with

- ``student_config.json``: ``{"format": "visionfm-student/1", "config": {...StudentConfig fields...}}``;
- ``model.safetensors``: the student (``student.*``) and the adaptors (``adaptors.<teacher>.*``).

Pickle weights are never read. ``text_from`` names the CLIP teacher whose text tower gives
:meth:`StudentEncoder.encode_text`: a directory (relative paths are tried against the student's own
directory first), an alias or a hub id, loaded lazily through :func:`visionfm.load_encoder`.

Example:
    >>> import tempfile, torch
    >>> from visionfm.foundation.student import StudentConfig, AdaptorConfig, build_student
    >>> cfg = StudentConfig(image_size=32, width=32, depth=2, heads=2,
    ...                     adaptors={"clip": AdaptorConfig(summary_dim=16, patch_dim=16, hidden=32, kind="clip")})
    >>> enc = build_student(cfg).eval()
    >>> feats = enc(torch.zeros(2, 3, 32, 32))
    >>> tuple(feats.pooled.shape), tuple(feats.patches.shape), feats.grid
    ((2, 16), (2, 4, 4, 32), (4, 4))
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import find_weights, read_json, read_state_dict
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, register_family
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

FORMAT = "visionfm-student/1"
CONFIG_NAME = "student_config.json"
WEIGHTS_NAME = "model.safetensors"
_PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth")
ADAPTOR_KINDS = ("clip", "dino", "sam", "generic")
# CLIP's normalisation: the default, since a CLIP teacher is the usual summary target.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TEACHER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


# ---------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptorConfig:
    """One teacher's adaptor head.

    Attributes:
        summary_dim: width ``D_t`` of the teacher's summary vector (CLIP: its image embedding); 0 for teachers
            with no summary (SAM), which then get no summary head.
        patch_dim: width ``P_t`` of the teacher's dense features. For ``kind="clip"`` the patch head targets
            the teacher's dense embeddings in the joint image-text space, so ``patch_dim == summary_dim``.
        hidden: width of both MLPs' hidden layer.
        kind: ``"clip" | "dino" | "sam" | "generic"``: what the teacher is; the first ``"clip"`` adaptor
            gives ``Features.pooled`` and :meth:`StudentEncoder.dense_features`.
    """

    summary_dim: int
    patch_dim: int
    hidden: int = 256
    kind: Literal["clip", "dino", "sam", "generic"] = "generic"

    def __post_init__(self) -> None:
        if self.kind not in ADAPTOR_KINDS:
            raise ValueError(f"adaptor kind must be one of {ADAPTOR_KINDS}, got {self.kind!r}")
        if self.summary_dim < 0 or self.patch_dim < 1 or self.hidden < 1:
            raise ValueError(
                f"adaptor dims must be summary_dim >= 0, patch_dim >= 1, hidden >= 1; got {self.summary_dim}, "
                f"{self.patch_dim}, {self.hidden}"
            )
        if self.kind == "clip" and (self.summary_dim < 1 or self.patch_dim != self.summary_dim):
            raise ValueError(
                "a 'clip' adaptor maps both summary and patches into the joint image-text space: it needs "
                f"patch_dim == summary_dim >= 1, got summary_dim={self.summary_dim}, patch_dim={self.patch_dim}"
            )


@dataclass(frozen=True)
class StudentConfig:
    """Architecture, adaptors and preprocessing of a student (saved as ``student_config.json``).

    Attributes:
        image_size: native square input side in pixels (the position embedding's grid is
            ``image_size // patch_size``).
        patch_size: pixels per patch side.
        width: token width ``C``.
        depth: number of transformer blocks.
        heads: attention heads per block (must divide ``width``).
        mlp_ratio: block MLP hidden width as a multiple of ``width``.
        num_registers: register tokens (DINOv2-reg style), 0 for none.
        adaptors: teacher name -> :class:`AdaptorConfig` (names: letters, digits, ``_`` and ``-``).
        mean: per-channel normalisation mean, RGB, in [0, 1] units.
        std: per-channel normalisation std, RGB, in [0, 1] units.
        interpolation: resize interpolation of the preprocessing (short side to ``image_size``, centre crop).
        text_from: the CLIP teacher whose text tower gives ``encode_text`` (a directory, alias or hub id), or
            ``None`` for a student without text.
    """

    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    num_registers: int = 0
    adaptors: Mapping[str, AdaptorConfig] = field(default_factory=dict)
    mean: tuple[float, float, float] = _CLIP_MEAN
    std: tuple[float, float, float] = _CLIP_STD
    interpolation: str = "bicubic"
    text_from: str | None = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.depth < 1 or self.num_registers < 0:
            raise ValueError(f"need depth >= 1 and num_registers >= 0, got {self.depth}, {self.num_registers}")
        adaptors = {
            str(k): v if isinstance(v, AdaptorConfig) else AdaptorConfig(**v) for k, v in dict(self.adaptors).items()
        }
        bad = [k for k in adaptors if not _TEACHER_NAME.match(k)]
        if bad:
            raise ValueError(f"teacher names must match {_TEACHER_NAME.pattern} (no dots), got {bad}")
        object.__setattr__(self, "adaptors", adaptors)
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if self.text_from is not None and self.clip_teacher is None:
            raise ValueError("text_from is set but no adaptor has kind='clip' to map images into its text space")

    @property
    def clip_teacher(self) -> str | None:
        """Name of the first ``kind="clip"`` adaptor, or ``None``."""
        return next((k for k, a in self.adaptors.items() if a.kind == "clip"), None)

    @property
    def grid(self) -> tuple[int, int]:
        """Native patch grid ``(h, w)``."""
        g = self.image_size // self.patch_size
        return (g, g)

    def preprocess_config(self) -> PreprocessConfig:
        """Short side to ``image_size``, centre crop, normalise with ``mean``/``std``."""
        s = self.image_size
        return PreprocessConfig(
            resize="shortest_edge",
            resize_size=s,
            interpolation=self.interpolation,
            crop_size=(s, s),
            mean=self.mean,  # type: ignore[arg-type]
            std=self.std,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (adaptors as plain dicts)."""
        d = asdict(self)
        d["adaptors"] = {k: asdict(v) for k, v in self.adaptors.items()}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudentConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise, naming the valid ones."""
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown student config keys {unknown}; valid: {sorted(valid)}")
        return cls(**dict(d))


# ---------------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------------
class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, c/heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class StudentViT(nn.Module):
    """Plain pre-norm ViT with a class token, optional registers and a learned position embedding.

    Token order is ``[cls, registers..., patches...]``; the class and patch tokens carry position
    embeddings, registers do not (as DINOv2 with registers). Inputs whose grid differs from the native one
    get the patch position embedding resized bicubically.

    Args:
        config: the architecture (adaptors are ignored here).
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        c, p = config.width, config.patch_size
        gh, gw = config.grid
        self.patch_embed = nn.Conv2d(3, c, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.registers = nn.Parameter(torch.zeros(1, config.num_registers, c)) if config.num_registers else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + gh * gw, c))
        self.blocks = nn.ModuleList(_Block(c, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        for t in (self.cls_token, self.pos_embed, self.registers):
            if t is not None:
                nn.init.trunc_normal_(t, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def num_prefix(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.config.num_registers

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding ``[1, 1 + h*w, C]`` for a patch grid ``(h, w)`` (bicubic resize if not native)."""
        native = self.config.grid
        if tuple(grid) == native:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *native, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """All tokens after the final norm.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is ``(H // patch, W // patch)``.

        Returns:
            ``([B, 1 + R + h*w, C], (h, w))``.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"expected pixel_values [B, 3, H, W], got shape {tuple(pixel_values.shape)}")
        x = self.patch_embed(pixel_values.to(self.pos_embed.dtype))  # [B, C, h, w]
        b, _, h, w = x.shape
        if h < 1 or w < 1:
            raise ValueError(
                f"input {tuple(pixel_values.shape[-2:])} is smaller than one {self.config.patch_size}px patch"
            )
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + self.pos_embed_for((h, w))
        if self.registers is not None:
            x = torch.cat([x[:, :1], self.registers.expand(b, -1, -1), x[:, 1:]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), (h, w)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class token ``[B, C]`` and patch grid ``[B, h, w, C]``, both after the final norm."""
        tokens, grid = self.forward_tokens(pixel_values)
        return tokens[:, 0], tokens_to_grid(tokens, grid, prefix=self.num_prefix)


def _mlp(width: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out))


class Adaptor(nn.Module):
    """One teacher's heads: class token -> summary ``[B, D_t]``, patch tokens -> dense ``[B, h, w, P_t]``.

    Args:
        width: student token width ``C``.
        config: the teacher's dims and kind.
    """

    def __init__(self, width: int, config: AdaptorConfig) -> None:
        super().__init__()
        self.config = config
        self.summary = _mlp(width, config.hidden, config.summary_dim) if config.summary_dim else None
        self.patches = _mlp(width, config.hidden, config.patch_dim)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Map student tokens to the teacher's spaces.

        Args:
            cls: ``[B, C]`` student class token.
            patches: ``[B, h, w, C]`` student patch tokens.

        Returns:
            ``(summary [B, D_t] or None when summary_dim == 0, patches [B, h, w, P_t])``.
        """
        return (self.summary(cls) if self.summary is not None else None), self.patches(patches)


# ---------------------------------------------------------------------------------------------------
# encoder
# ---------------------------------------------------------------------------------------------------
class StudentEncoder(Encoder):
    """A distilled student behind the :class:`Features` contract.

    ``Features``: ``pooled`` is the CLIP adaptor's summary ``[B, D]`` when a ``"clip"`` adaptor exists (so
    zero-shot pipelines work unchanged, ``D = info.embed_dim``), else the class token ``[B, C]``; ``patches``
    the student's own patch tokens ``[B, h, w, C]`` after the final norm (``C = info.width``); ``cls`` the
    class token; ``registers`` ``[B, R, C]`` or ``None``; ``layers`` raw block outputs on the patch grid.

    Args:
        config: architecture, adaptors, preprocessing and ``text_from``.
        student: the ViT (built from ``config`` when ``None``).
        adaptors: teacher name -> :class:`Adaptor` (built from ``config`` when ``None``).
        name: recorded in ``info.name``.
        text_source: where to load the text teacher from (default ``config.text_from``), already resolved.
    """

    def __init__(
        self,
        config: StudentConfig,
        student: StudentViT | None = None,
        adaptors: Mapping[str, Adaptor] | None = None,
        *,
        name: str = "student",
        text_source: str | None = None,
    ) -> None:
        pp = config.preprocess_config()
        clip = config.clip_teacher
        info = EncoderInfo(
            family="student",
            backend="torch",
            name=name,
            embed_dim=config.adaptors[clip].summary_dim if clip else config.width,
            width=config.width,
            patch_size=config.patch_size,
            image_size=pp.image_size,
            mean=config.mean,  # type: ignore[arg-type]
            std=config.std,  # type: ignore[arg-type]
            has_text=config.text_from is not None,
            num_layers=config.depth,
            num_registers=config.num_registers,
        )
        super().__init__(info, pp)
        self.config = config
        self.student = student if student is not None else StudentViT(config)
        adaptors = (
            adaptors if adaptors is not None else {k: Adaptor(config.width, a) for k, a in config.adaptors.items()}
        )
        if set(adaptors) != set(config.adaptors):
            raise ValueError(
                f"adaptors {sorted(adaptors)} do not match the config's teachers {sorted(config.adaptors)}"
            )
        self.adaptors = nn.ModuleDict({k: adaptors[k] for k in config.adaptors})
        self.text_source = text_source or config.text_from
        self._text: dict[str, Encoder] = {}  # a plain dict: the lazily loaded teacher is not part of state_dict

    # -- teachers ------------------------------------------------------------------------------------
    @property
    def teachers(self) -> list[str]:
        """Teacher names, in config order."""
        return list(self.config.adaptors)

    @property
    def clip_teacher(self) -> str | None:
        """The teacher whose adaptor gives ``pooled`` and :meth:`dense_features`, or ``None``."""
        return self.config.clip_teacher

    def _check_teacher(self, teacher: str) -> Adaptor:
        if teacher not in self.adaptors:
            raise KeyError(
                f"unknown teacher {teacher!r} for student {self._info.name!r}; known teachers: {self.teachers}"
            )
        return self.adaptors[teacher]  # type: ignore[return-value]

    # -- image side ----------------------------------------------------------------------------------
    def token_merging_sites(self) -> TokenMergingSites:
        """The student's ViT blocks, after its class token and registers."""
        return TokenMergingSites(blocks=self.student.blocks, prefix=self.student.num_prefix)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; any size with ``H, W >= patch_size`` (the grid is
                ``(H // patch, W // patch)``; the position embedding is resized when it is not native).
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, D]``, ``patches`` ``[B, h, w, C]``, ``cls`` ``[B, C]``,
            ``registers`` ``[B, R, C]`` or ``None`` and ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        prefix = self.student.num_prefix
        with tap_blocks(self.student.blocks, idx) as taps:
            tokens, grid = self.student.forward_tokens(pixel_values)
        cls = tokens[:, 0]
        patches = tokens_to_grid(tokens, grid, prefix=prefix)
        clip = self.clip_teacher
        pooled = self.adaptors[clip].summary(cls) if clip else cls  # type: ignore[union-attr]
        r = self.config.num_registers
        return Features(
            pooled=pooled,
            patches=patches,
            grid=grid,
            cls=cls,
            registers=tokens[:, 1 : 1 + r] if r else None,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )

    def _features(self, pixels_or_features: torch.Tensor | Features) -> Features:
        if isinstance(pixels_or_features, Features):
            if pixels_or_features.cls is None:
                raise ValueError("adaptor() needs Features with a class token (Features from this student)")
            return pixels_or_features
        return self(pixels_or_features)

    def adaptor(
        self, pixels_or_features: torch.Tensor | Features, teacher: str
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The student's prediction of one teacher's outputs.

        Args:
            pixels_or_features: ``[B, 3, H, W]`` normalised pixels, or ``Features`` this student returned (reused,
                no second pass).
            teacher: a name from :attr:`teachers`.

        Returns:
            ``(summary [B, D_t] or None for a teacher without summary, patches [B, h, w, P_t])`` in the teacher's
            spaces.

        Raises:
            KeyError: ``teacher`` is not one of this student's teachers (the message lists them).
        """
        head = self._check_teacher(teacher)
        feats = self._features(pixels_or_features)
        return head(feats.cls, feats.patches)

    def teacher_outputs(
        self, pixels_or_features: torch.Tensor | Features
    ) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
        """Every adaptor's ``(summary, patches)`` from one student pass (what a distillation step needs)."""
        feats = self._features(pixels_or_features)
        return {k: head(feats.cls, feats.patches) for k, head in self.adaptors.items()}

    def dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Dense embeddings in the CLIP teacher's image-text space, for open-vocabulary segmentation.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels.

        Returns:
            ``[B, h, w, D]`` the CLIP adaptor's patch outputs (not normalised), ``D = info.embed_dim``.

        Raises:
            TypeError: the student has no ``"clip"`` adaptor.
        """
        clip = self.clip_teacher
        if clip is None:
            raise TypeError(f"student {self._info.name!r} has no 'clip' adaptor; teachers: {self.teachers}")
        return self.adaptor(pixel_values, clip)[1]

    # -- text side -----------------------------------------------------------------------------------
    def text_teacher(self) -> Encoder:
        """The CLIP teacher named by ``text_from``, loaded on first use on this encoder's device and dtype.

        Raises:
            TypeError: the student has no ``text_from``.
            ValueError: the teacher's embedding width differs from the CLIP adaptor's ``summary_dim``.
        """
        if self.text_source is None:
            raise TypeError(f"student {self._info.name!r} has no text tower (config.text_from is not set)")
        enc = self._text.get("teacher")
        if enc is None:
            from .loading import load_encoder

            with torch.inference_mode(False):  # normal tensors even when first used inside a pipeline
                enc = load_encoder(self.text_source, device=self.device, dtype=self.dtype)
            if not enc.info.has_text:
                raise ValueError(f"text_from {self.text_source!r} ({enc.info.family}) has no text tower")
            if enc.info.embed_dim != self._info.embed_dim:
                raise ValueError(
                    f"text_from {self.text_source!r} embeds texts in {enc.info.embed_dim} dims but the student's "
                    f"{self.clip_teacher!r} adaptor outputs {self._info.embed_dim}"
                )
            logger.info("student %s: text tower from %s", self._info.name, self.text_source)
            self._text["teacher"] = enc
        elif enc.device != self.device:
            enc.to(self.device)
        return enc

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embed texts with the CLIP teacher's text tower.

        Args:
            texts: one string or a list of strings.
            batch_size: texts per forward pass.

        Returns:
            ``[N, D]`` text embeddings (not normalised), in the space of ``Features.pooled``.
        """
        return self.text_teacher().encode_text(texts, batch_size=batch_size)

    @property
    def logit_scale(self) -> float:
        """The CLIP teacher's logit scale (multiplier on cosine similarities)."""
        return float(self.text_teacher().logit_scale)  # type: ignore[attr-defined]

    @property
    def logit_bias(self) -> float | None:
        """The teacher's logit bias (SigLIP), else ``None``; ``None`` for a student without text."""
        if self.text_source is None:
            return None
        return getattr(self.text_teacher(), "logit_bias", None)


# ---------------------------------------------------------------------------------------------------
# build / save / load
# ---------------------------------------------------------------------------------------------------
def build_student(config: StudentConfig, *, name: str = "student") -> StudentEncoder:
    """A randomly initialised student (seed with ``torch.manual_seed`` for reproducibility)."""
    return StudentEncoder(config, name=name)


def save_student(
    encoder_or_modules: StudentEncoder | tuple[StudentViT, Mapping[str, Adaptor]],
    path: str | os.PathLike,
) -> Path:
    """Write a student directory: ``student_config.json`` and ``model.safetensors``.

    Args:
        encoder_or_modules: a :class:`StudentEncoder`, or ``(student, adaptors)`` as a training loop holds them
            (the config is ``student.config`` with each adaptor's own config).
        path: output directory (created).

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    if isinstance(encoder_or_modules, StudentEncoder):
        config = encoder_or_modules.config
        student, adaptors = encoder_or_modules.student, dict(encoder_or_modules.adaptors.items())
    else:
        student, adaptors = encoder_or_modules
        adaptors = dict(adaptors.items())
        config = StudentConfig.from_dict(
            {**student.config.to_dict(), "adaptors": {k: asdict(a.config) for k, a in adaptors.items()}}
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    for name, head in adaptors.items():
        state.update({f"adaptors.{name}.{k}": v for k, v in head.state_dict().items()})
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out / WEIGHTS_NAME), metadata={"format": "pt"}
    )
    doc = {"format": FORMAT, "config": config.to_dict()}
    (out / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    logger.info("saved student (%d teachers) to %s", len(adaptors), out)
    return out


def read_config(path: str | os.PathLike) -> StudentConfig:
    """The :class:`StudentConfig` in a student directory, checking the format tag."""
    doc = read_json(Path(path) / CONFIG_NAME)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{Path(path) / CONFIG_NAME} has format {doc.get('format')!r}; expected {FORMAT!r}")
    return StudentConfig.from_dict(doc.get("config") or {})


def _text_source(text_from: str | None, base: Path) -> str | None:
    if text_from is None:
        return None
    p = Path(os.path.expanduser(text_from))
    if not p.is_absolute() and (base / p).is_dir():
        return str(base / p)
    return text_from


def load_student(path: str | os.PathLike, *, name: str | None = None, allow_pickle: bool = False) -> StudentEncoder:
    """Load a student directory (``load_encoder`` calls this through the ``student`` family).

    Args:
        path: directory written by :func:`save_student`.
        name: recorded in ``info.name`` (default: the path).
        allow_pickle: accepted for the family interface; student weights are safetensors only.

    Raises:
        FileNotFoundError: no ``model.safetensors``.
        PickleCheckpointError: only pickle weights exist.
        ValueError: the weights do not match the config (missing or unexpected keys are listed).
    """
    del allow_pickle  # safetensors only, whatever the caller allows
    path = Path(path)
    config = read_config(path)
    weights = find_weights(path, [WEIGHTS_NAME], _PICKLE_NAMES, allow_pickle=False)
    state = read_state_dict(weights)
    with torch.device("meta"):
        enc = StudentEncoder(config, name=name or str(path), text_source=_text_source(config.text_from, path))
    expected = set(enc.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match {CONFIG_NAME}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    enc.load_state_dict(state, strict=True, assign=True)
    return enc


def detect(path: Path) -> str | None:
    """``"torch"`` if ``path`` holds a student (``student_config.json``), else ``None``."""
    return "torch" if (Path(path) / CONFIG_NAME).is_file() else None


def build(req: LoadRequest) -> StudentEncoder:
    """The family builder: :func:`load_student` on ``req.path``."""
    return load_student(req.path, name=req.name, allow_pickle=req.allow_pickle)


# -- registration ------------------------------------------------------------------------------------
_FAMILY: Family | None = None


def register() -> Family:
    """Register the ``student`` family (idempotent for this module; a foreign ``student`` family raises)."""
    global _FAMILY
    if _FAMILY is None:
        _FAMILY = register_family(
            Family(
                name="student",
                backends=("torch",),
                detect=detect,
                build=build,
                options={},
                description="distilled multi-teacher ViT students (AM-RADIO / Theia style) with per-teacher adaptors",
                formats="visionfm student (student_config.json + model.safetensors)",
            )
        )
    return _FAMILY
