"""DiT (diffusers) as a feature extractor: denoiser features of a noised VAE latent.

Diffusion features in the style of DIFT (Tang et al., 2023) and Diffusion Hyperfeatures (Luo et al.,
2023): an image is encoded into the VAE latent space, noised to a chosen timestep ``t`` with the forward
process, and the class-conditional DiT denoiser is run on it; the output of one transformer block, on
the latent patch grid, is the image's dense feature map.

Pipeline of :meth:`DiTEncoder.forward` for a ``[B, 3, S, S]`` input:

1. ``z0 = (vae.encode(x).latent_dist.mean - shift) * scaling_factor`` — the *mean* of the posterior, not
   a sample, so features are deterministic (``shift`` is ``vae.config.shift_factor``, unset for DiT).
2. ``eps`` — ``ensemble`` draws ``[C, h, w]`` from a CPU ``torch.Generator`` seeded with ``noise_seed``,
   drawn one after the other; every image of the batch gets the same draws, so a batch encodes exactly
   as its images do one by one.
3. ``zt = scheduler.add_noise(z0, eps, t)`` (``sqrt(abar_t) z0 + sqrt(1 - abar_t) eps``, in float32).
4. ``transformer(zt, timestep=t, class_labels=class_label)`` with forward hooks on
   ``transformer.transformer_blocks``; the forward is stopped after the deepest block needed (the
   final norm, projection and unpatchify never run). Block outputs ``[B, N, C]`` become ``[B, h/p, w/p, C]``
   grids, averaged over the ensemble draws.

Loading reads the diffusers pipeline directory (``model_index.json``, ``vae/``, ``transformer/``,
``scheduler/``) from safetensors only, unless ``allow_pickle=True`` (then diffusers reads ``.bin`` files with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .diffusion import (
    DenoiserEncoder,
    check_int,
    denoiser_info,
    ensemble_features,
    load_scheduler,
    read_json_or_none,
    run_denoiser_blocks,
)
from .encoder import Encoder
from .features import Features
from .generator import Generator
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model

logger = logging.getLogger(__name__)

__all__ = ["DIT_OPTIONS", "DiTEncoder", "PixelSpace", "detect", "save_pixel_dit"]

#: Family options accepted by ``load_encoder`` for DiT, with their defaults.
#:
#: - ``timestep``: diffusion timestep ``t`` (``0 <= t < num_train_timesteps``) the latent is noised to and
#:   the denoiser is conditioned on. Default 100: DIFT found small timesteps best for semantic features
#:   (it reports t=101 for the pixel-space ADM model and t=261 for Stable Diffusion); at t=100 of the
#:   1000-step linear schedule ``abar_t`` is about 0.9, so the input is still mostly image.
#: - ``layer``: the transformer block whose output is ``Features.patches`` (negative counts from the end);
#:   ``None`` picks the middle block, ``num_layers // 2`` (block 14 of DiT-XL's 28).
#: - ``class_label``: ImageNet class to condition on; ``None`` is the null (unconditional, classifier-free
#:   guidance) class, index ``num_embeds_ada_norm`` (1000 for the ImageNet DiTs).
#: - ``noise_seed``: seed of the noise generator; the same image always gets the same noise.
#: - ``ensemble``: number of noise draws whose block outputs are averaged (DIFT averages several).
DIT_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"timestep": 100, "layer": None, "class_label": None, "noise_seed": 0, "ensemble": 1}
)


class PixelSpace(nn.Module):
    """The identity "VAE" of a pixel-space DiT: the latent is the image itself, in [-1, 1].

    It has the slice of ``AutoencoderKL``'s interface that DiT feature extraction and generation use
    (``encode(x).latent_dist.mean``, ``decode(z).sample``, ``config.scaling_factor`` = 1, one block so the
    scale factor is 1), so a pixel-space DiT (``transformer.in_channels == 3``, no ``vae/`` folder) loads,
    encodes and generates through the same code as a latent DiT.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(block_out_channels=(channels,), scaling_factor=1.0, shift_factor=None,
                                      latent_channels=channels)  # fmt: skip

    @property
    def dtype(self) -> torch.dtype:
        """float32: the identity has no weights, so latents are decoded in full precision."""
        return torch.float32

    def encode(self, x: torch.Tensor) -> Any:
        """``encode(x).latent_dist.mean`` is ``x`` (``[B, 3, S, S]`` in [-1, 1])."""
        from types import SimpleNamespace

        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x, mode=lambda: x, sample=lambda generator=None: x))

    def decode(self, z: torch.Tensor) -> Any:
        """``decode(z).sample`` is ``z``."""
        from types import SimpleNamespace

        return SimpleNamespace(sample=z)


def _is_dit_transformer_config(cfg: dict[str, Any] | None) -> bool:
    # The hub's facebook/DiT-* configs predate DiTTransformer2DModel and say "Transformer2DModel";
    # ada_norm_zero with class embeddings is what makes a Transformer2DModel a DiT.
    if cfg is None:
        return False
    name = cfg.get("_class_name")
    if name == "DiTTransformer2DModel":
        return True
    return (
        name == "Transformer2DModel" and cfg.get("norm_type") == "ada_norm_zero" and cfg.get("patch_size") is not None
    )


def detect(path: Path) -> str | None:
    """Return ``"diffusers"`` if ``path`` is a diffusers DiT pipeline directory, else ``None``.

    A DiT directory has a ``model_index.json`` whose ``_class_name`` is ``"DiTPipeline"``, or a
    ``transformer/config.json`` naming a DiT transformer next to a ``vae/`` folder (or, for a pixel-space DiT,
    a ``model_index.json`` whose ``vae`` entry is ``[null, null]``).
    """
    path = Path(path)
    index = read_json_or_none(path / "model_index.json") if (path / "model_index.json").is_file() else None
    if index is not None and index.get("_class_name") == "DiTPipeline":
        return "diffusers"
    cfg_path = path / "transformer" / "config.json"
    has_vae = (path / "vae").is_dir() or (index is not None and index.get("vae") == [None, None])
    if cfg_path.is_file() and has_vae and _is_dit_transformer_config(read_json_or_none(cfg_path)):
        return "diffusers"
    return None


class DiTEncoder(Encoder, DenoiserEncoder, Generator):
    """A diffusers DiT pipeline behind the :class:`Features` contract.

    Attributes:
        vae: the pipeline's ``AutoencoderKL``.
        transformer: the ``DiTTransformer2DModel`` denoiser.
        scheduler: the pipeline's scheduler, as configured (for generation built on top).
        noise_scheduler: a ``DDPMScheduler`` with the same noise schedule, used for ``add_noise`` (its
            forward process is the one DiT was trained with, whatever sampler the pipeline names).
        timestep: diffusion timestep the features are taken at.
        layer: non-negative index of the block that gives ``Features.patches``.
        class_label: class id the denoiser is conditioned on (``num_embeds_ada_norm`` = null class).
        noise_seed: seed of the per-image noise.
        ensemble: number of noise draws averaged.
        id2label: ``{class id: name}`` from the pipeline's ``model_index.json`` (empty if it has none).

    Determinism assumes eval mode (``load_encoder`` returns it): in train mode DiT's label embedding
    randomly drops a non-null ``class_label`` to the null class.
    """

    conditioning = "class"  # the Generator interface (visionfm.foundation.generator)

    def __init__(self, vae: nn.Module, transformer: nn.Module, scheduler: Any, *, name: str, options: dict[str, Any]):
        from diffusers import DDPMScheduler

        info, pp, vae_scale, num_layers = denoiser_info("dit", name, vae, transformer)
        super().__init__(info, pp)
        self.vae = vae
        self.transformer = transformer
        self.scheduler = scheduler
        self.noise_scheduler = DDPMScheduler.from_config(scheduler.config)
        self.vae_scale_factor = vae_scale
        self.id2label: dict[int, str] = {}

        opts = {**DIT_OPTIONS, **options}
        unknown = sorted(set(opts) - set(DIT_OPTIONS))
        if unknown:
            raise TypeError(f"unknown DiT option(s) {unknown}; valid options: {sorted(DIT_OPTIONS)}")
        n_train = int(self.noise_scheduler.config.num_train_timesteps)
        n_classes = int(transformer.config.num_embeds_ada_norm)
        check_int("timestep", opts["timestep"], lo=0, hi=n_train - 1)
        check_int("layer", opts["layer"], lo=-num_layers, hi=num_layers - 1, none_ok=True)
        check_int("class_label", opts["class_label"], lo=0, hi=n_classes, none_ok=True)
        check_int("noise_seed", opts["noise_seed"])
        check_int("ensemble", opts["ensemble"], lo=1)
        self.timestep: int = opts["timestep"]
        self.layer: int = self._layer_indices([num_layers // 2 if opts["layer"] is None else opts["layer"]])[0]
        self.class_label: int = n_classes if opts["class_label"] is None else opts["class_label"]
        self.noise_seed: int = opts["noise_seed"]
        self.ensemble: int = opts["ensemble"]

    def extra_repr(self) -> str:
        return f"timestep={self.timestep}, layer={self.layer}, class_label={self.class_label}, ensemble={self.ensemble}"

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels into denoiser features.

        Args:
            pixel_values: ``[B, 3, S, S]`` from :meth:`preprocess` (in [-1, 1]).
            layers: block indices to tap (negative counts from the end) into ``Features.layers``.

        Returns:
            ``Features`` with ``patches`` ``[B, h, w, C]`` (output of block :attr:`layer`, ``h = S / patch_size``),
            ``pooled`` ``[B, C]`` (mean of ``patches`` over the grid) and ``layers``
            ``{i: [B, h, w, C]}``; each averaged over the ``ensemble`` noise draws. Differentiable.
        """
        taps = self._layer_indices(layers)
        needed = sorted(set(taps) | {self.layer})
        latents = self.encode_latents(pixel_values)
        b, c, lh, lw = latents.shape
        e = self.ensemble
        p = int(self.transformer.config.patch_size)
        grid = (lh // p, lw // p)

        noise = self.noise((c, lh, lw), device=latents.device)
        z0 = latents.float().unsqueeze(1).expand(b, e, c, lh, lw).reshape(b * e, c, lh, lw)
        eps = noise.unsqueeze(0).expand(b, e, c, lh, lw).reshape(b * e, c, lh, lw)
        t = torch.full((b * e,), self.timestep, dtype=torch.long, device=latents.device)
        noisy = self.noise_scheduler.add_noise(z0, eps, t).to(latents.dtype)
        labels = torch.full((b * e,), self.class_label, dtype=torch.long, device=latents.device)

        captured = run_denoiser_blocks(self.transformer, needed, noisy, timestep=t, class_labels=labels)
        return ensemble_features(captured, b, e, grid, self.layer, taps)


def build(req: LoadRequest) -> DiTEncoder:
    """Build a :class:`DiTEncoder` from a diffusers DiT pipeline directory."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    if req.backend != "diffusers":
        raise ValueError(f"DiT supports backend 'diffusers' only, got {req.backend!r}")
    path = Path(req.path)
    index = read_json_or_none(path / "model_index.json") or {}
    pixel_space = not (path / "vae").is_dir() and index.get("vae") == [None, None]
    for sub in ("transformer",) if pixel_space else ("vae", "transformer"):
        if not (path / sub).is_dir():
            raise FileNotFoundError(f"{path} is not a DiT pipeline directory: missing {sub}/")
    # load_encoder has already refused pickle-only component folders unless allow_pickle=True.
    # True: safetensors or an error; None: safetensors if present, else (opted-in) pickle.
    use_st = None if req.allow_pickle else True
    transformer = DiTTransformer2DModel.from_pretrained(str(path), subfolder="transformer", use_safetensors=use_st)
    if pixel_space:
        if int(transformer.config.in_channels) != 3:
            raise ValueError(f"{path}: a pixel-space DiT (no vae/) needs transformer in_channels=3, "
                             f"got {transformer.config.in_channels}")  # fmt: skip
        vae: nn.Module = PixelSpace(3)
    else:
        vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", use_safetensors=use_st)
    scheduler = load_scheduler(path)
    logger.debug("DiT %s: vae %s, transformer %s, scheduler %s", req.name, vae.config, transformer.config, scheduler)
    enc = DiTEncoder(vae, transformer, scheduler, name=req.name, options=dict(req.options))
    enc.id2label = {int(k): str(v) for k, v in (index.get("id2label") or {}).items()}
    return enc


def save_pixel_dit(path: str | Path, transformer: nn.Module, scheduler: Any, id2label: Mapping[int, str]) -> Path:
    """Save a pixel-space DiT (no VAE) as a diffusers-style pipeline directory that ``load_encoder`` reads.

    Layout: ``model_index.json`` (``_class_name: DiTPipeline``, ``vae: [null, null]``, ``id2label``),
    ``transformer/`` (``DiTTransformer2DModel.save_pretrained``, safetensors) and ``scheduler/``. diffusers'
    own ``DiTPipeline`` needs a VAE and does not load it; ``pipeline("generation")`` does.

    Args:
        path: output directory (created).
        transformer: a ``DiTTransformer2DModel`` with ``in_channels=3``; ``sample_size`` is the image size.
        scheduler: a diffusers scheduler (its config is saved).
        id2label: class names, ``{id: "name"}``.

    Returns:
        ``path``.
    """
    import diffusers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if int(transformer.config.in_channels) != 3:
        raise ValueError(f"a pixel-space DiT needs in_channels=3, got {transformer.config.in_channels}")
    transformer.save_pretrained(str(path / "transformer"), safe_serialization=True)
    scheduler.save_pretrained(str(path / "scheduler"))
    index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", type(transformer).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "vae": [None, None],
        "id2label": {str(k): str(v) for k, v in id2label.items()},
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in dit encoders (the family's ``peft_layout``)."""
    return TargetLayout(
        description="dit (diffusers transformer)",
        base_attr="transformer",
        attention=(rf"transformer_blocks\.{_B}\.attn1\.(to_q|to_k|to_v|to_out\.0)",),
        mlp=(rf"transformer_blocks\.{_B}\.ff\.net\.(0\.proj|2)",),
    )


register_family(
    Family(
        name="dit",
        backends=("diffusers",),
        detect=detect,
        build=build,
        options=DIT_OPTIONS,
        description="DiT denoiser features of a noised VAE latent (DIFT-style), via diffusers",
        formats="diffusers DiT pipeline (model_index.json with a DiTTransformer2DModel transformer)",
        peft_layout=peft_layout,
    )
)
register_model(
    ModelSpec(
        name="dit-xl-2-256",
        family="dit",
        source="facebook/DiT-XL-2-256",
        backend="diffusers",
        description="DiT-XL/2 class-conditional ImageNet diffusion transformer, 256 px (32x32 latents, 16x16 grid)",
    )
)
register_model(
    ModelSpec(
        name="dit-xl-2-512",
        family="dit",
        source="facebook/DiT-XL-2-512",
        backend="diffusers",
        description="DiT-XL/2 class-conditional ImageNet diffusion transformer, 512 px (64x64 latents, 32x32 grid)",
    )
)
