"""PixArt-α / PixArt-Σ (diffusers) as a feature extractor and a text-to-image generator.

PixArt is a text-conditioned diffusion transformer (DiT blocks with ``adaLN-single`` and cross-attention to T5
text embeddings). As a feature extractor it works like :mod:`visionfm.foundation.dit` (DIFT-style denoiser
features), with the class label replaced by a prompt embedding:

1. ``z0 = vae.encode(x).latent_dist.mean * scaling_factor`` (posterior mean: deterministic).
2. ``eps``: ``ensemble`` draws ``[C, h, w]`` from a CPU ``torch.Generator`` seeded with ``noise_seed``, shared by
   every image of the batch (a batch encodes exactly as its images do one by one).
3. ``zt = scheduler.add_noise(z0, eps, t)`` with the DDPM forward process of the checkpoint's noise schedule.
4. ``transformer(zt, encoder_hidden_states=T5(prompt), timestep=t)`` with forward hooks on
   ``transformer.transformer_blocks``; the forward stops after the deepest block needed. The prompt is the option
   ``prompt`` (default ``""``, the embedding classifier-free guidance uses as "unconditional"). Block outputs
   ``[B, N, C]`` become ``[B, h/p, w/p, C]`` grids, averaged over the ensemble draws.

Generation lives in ``pipeline("generation")`` (:mod:`visionfm.pipelines.generation`), which reuses
:meth:`PixArtEncoder.encode_prompts` and the components held here.

Loading reads a diffusers ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline`` directory (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) from safetensors only, unless
``allow_pickle=True``.
"""

from __future__ import annotations

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
from .registry import Family, LoadRequest, ModelSpec, register_family, register_model

logger = logging.getLogger(__name__)

__all__ = ["PIXART_OPTIONS", "PixArtEncoder", "detect"]

_PIPELINES = {"PixArtAlphaPipeline": "alpha", "PixArtSigmaPipeline": "sigma"}
#: Default T5 sequence length of each variant (diffusers' ``max_sequence_length`` defaults).
MAX_SEQUENCE_LENGTH = {"alpha": 120, "sigma": 300}

#: Family options accepted by ``load_encoder`` for PixArt, with their defaults.
#:
#: - ``timestep``: diffusion timestep the latent is noised to (default 100, as for DiT; see ``DIT_OPTIONS``).
#: - ``layer``: block whose output is ``Features.patches``; ``None`` is the middle block (14 of PixArt-XL's 28).
#: - ``prompt``: text the denoiser is conditioned on; ``""`` is the classifier-free-guidance null prompt.
#: - ``noise_seed``: seed of the noise generator.
#: - ``ensemble``: number of noise draws whose block outputs are averaged.
PIXART_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"timestep": 100, "layer": None, "prompt": "", "noise_seed": 0, "ensemble": 1}
)


def _is_pixart_transformer_config(cfg: dict[str, Any] | None) -> bool:
    # The hub's PixArt-alpha configs say "Transformer2DModel"; adaLN-single with caption channels makes it PixArt.
    if cfg is None:
        return False
    name = cfg.get("_class_name")
    if name == "PixArtTransformer2DModel":
        return True
    return (
        name == "Transformer2DModel" and cfg.get("norm_type") == "ada_norm_single" and bool(cfg.get("caption_channels"))
    )


def _variant(path: Path) -> str:
    index = read_json_or_none(path / "model_index.json") or {}
    return _PIPELINES.get(str(index.get("_class_name")), "alpha")


def detect(path: Path) -> str | None:
    """Return ``"diffusers"`` if ``path`` is a diffusers PixArt pipeline directory, else ``None``.

    A PixArt directory has a ``model_index.json`` whose ``_class_name`` is ``PixArtAlphaPipeline`` or
    ``PixArtSigmaPipeline``, or a ``transformer/config.json`` naming a PixArt transformer next to ``text_encoder/``
    and ``tokenizer/`` folders.
    """
    path = Path(path)
    index = read_json_or_none(path / "model_index.json") if (path / "model_index.json").is_file() else None
    if index is not None and index.get("_class_name") in _PIPELINES:
        return "diffusers"
    cfg_path = path / "transformer" / "config.json"
    if (
        cfg_path.is_file()
        and (path / "text_encoder").is_dir()
        and (path / "tokenizer").is_dir()
        and _is_pixart_transformer_config(read_json_or_none(cfg_path))
    ):
        return "diffusers"
    return None


class PixArtEncoder(Encoder, DenoiserEncoder, Generator):
    """A diffusers PixArt-α/Σ pipeline behind the :class:`Features` contract.

    Attributes:
        vae: the pipeline's ``AutoencoderKL``.
        transformer: the ``PixArtTransformer2DModel`` denoiser.
        text_encoder: the ``T5EncoderModel``.
        tokenizer: the T5 tokenizer.
        scheduler: the pipeline's scheduler, as configured (generation builds a fresh copy per batch).
        noise_scheduler: a ``DDPMScheduler`` with the same noise schedule, used for ``add_noise``.
        variant: ``"alpha"`` or ``"sigma"`` (from ``model_index.json``; ``"alpha"`` if it does not say).
        max_sequence_length: T5 tokens per prompt (120 for α, 300 for Σ, as in diffusers).
        timestep, layer, prompt, noise_seed, ensemble: the feature options (see ``PIXART_OPTIONS``).

    ``info.has_text`` is False: T5 embeddings are token sequences for cross-attention, not an image-text space.
    """

    # The VAE and noise pieces are DiT's, unchanged (they read self.vae, self.noise_seed, self.ensemble).

    conditioning = "text"  # the Generator interface (visionfm.foundation.generator)

    def __init__(
        self,
        vae: nn.Module,
        transformer: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        *,
        name: str,
        options: dict[str, Any],
        variant: str = "alpha",
    ) -> None:
        from diffusers import DDPMScheduler

        info, pp, vae_scale, num_layers = denoiser_info("pixart", name, vae, transformer)
        super().__init__(info, pp)
        if variant not in MAX_SEQUENCE_LENGTH:
            raise ValueError(f"PixArt variant must be one of {sorted(MAX_SEQUENCE_LENGTH)}, got {variant!r}")
        self.vae = vae
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.noise_scheduler = DDPMScheduler.from_config(scheduler.config)
        self.vae_scale_factor = vae_scale
        self.variant = variant
        self.max_sequence_length = MAX_SEQUENCE_LENGTH[variant]
        self._cond_cache: tuple[Any, torch.Tensor, torch.Tensor] | None = None

        opts = {**PIXART_OPTIONS, **options}
        unknown = sorted(set(opts) - set(PIXART_OPTIONS))
        if unknown:
            raise TypeError(f"unknown PixArt option(s) {unknown}; valid options: {sorted(PIXART_OPTIONS)}")
        n_train = int(self.noise_scheduler.config.num_train_timesteps)
        check_int("timestep", opts["timestep"], lo=0, hi=n_train - 1)
        check_int("layer", opts["layer"], lo=-num_layers, hi=num_layers - 1, none_ok=True)
        check_int("noise_seed", opts["noise_seed"])
        check_int("ensemble", opts["ensemble"], lo=1)
        if not isinstance(opts["prompt"], str):
            raise TypeError(f"PixArt option prompt= must be a str, got {opts['prompt']!r}")
        self.timestep: int = opts["timestep"]
        self.layer: int = self._layer_indices([num_layers // 2 if opts["layer"] is None else opts["layer"]])[0]
        self.prompt: str = opts["prompt"]
        self.noise_seed: int = opts["noise_seed"]
        self.ensemble: int = opts["ensemble"]

    def extra_repr(self) -> str:
        return f"variant={self.variant}, timestep={self.timestep}, layer={self.layer}, prompt={self.prompt!r}"

    def encode_prompts(
        self, prompts: Sequence[str], *, max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 token embeddings of prompts, as ``PixArtAlphaPipeline.encode_prompt`` computes them.

        Prompts are lower-cased and stripped (diffusers' ``clean_caption=False`` path; its caption cleaning, which
        needs ``beautifulsoup4`` and ``ftfy``, is not reproduced), padded to ``max_length`` and truncated.

        Args:
            prompts: ``N`` strings.
            max_length: tokens per prompt; default :attr:`max_sequence_length`.

        Returns:
            ``(embeds, mask)``: ``[N, L, D_text]`` in the text encoder's dtype and ``[N, L]`` int64 attention mask
            (1 for tokens, 0 for padding), on the encoder's device.
        """
        max_length = int(max_length or self.max_sequence_length)
        texts = [str(p).lower().strip() for p in prompts]
        tok = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                             add_special_tokens=True, return_tensors="pt")  # fmt: skip
        dev = self.text_encoder.device
        ids, mask = tok.input_ids.to(dev), tok.attention_mask.to(dev)
        n_full = int((tok.attention_mask.sum(1) >= max_length).sum())
        if n_full:
            logger.debug("%d prompt(s) filled all %d T5 tokens and may have been truncated", n_full, max_length)
        embeds = self.text_encoder(ids, attention_mask=mask)[0]
        return embeds, mask

    def _condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached ``(embeds [1, L, D_text], mask [1, L])`` of :attr:`prompt`, recomputed if device/dtype change."""
        key = (self.prompt, str(self.text_encoder.device), self.text_encoder.dtype)
        if self._cond_cache is None or self._cond_cache[0] != key:
            # Outside inference mode so the cached tensors can also be used by a differentiable forward later.
            with torch.inference_mode(False), torch.no_grad():
                embeds, mask = self.encode_prompts([self.prompt])
            self._cond_cache = (key, embeds, mask)
        return self._cond_cache[1], self._cond_cache[2]

    def added_cond_kwargs(self, batch: int, height: int, width: int, dtype: torch.dtype) -> dict[str, Any]:
        """PixArt-α 1024's micro-conditions (``resolution`` ``[batch, 2]``, ``aspect_ratio`` ``[batch, 1]``), or
        ``None`` entries for transformers that do not use them; ``height``/``width`` in pixels."""
        if not getattr(self.transformer, "use_additional_conditions", False):
            return {"resolution": None, "aspect_ratio": None}
        dev = self.transformer.device
        res = torch.tensor([height, width]).repeat(batch, 1).to(dtype=dtype, device=dev)
        ar = torch.tensor([float(height / width)]).repeat(batch, 1).to(dtype=dtype, device=dev)
        return {"resolution": res, "aspect_ratio": ar}

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels into denoiser features.

        Args:
            pixel_values: ``[B, 3, S, S]`` from :meth:`preprocess` (in [-1, 1]).
            layers: block indices to tap (negative counts from the end) into ``Features.layers``.

        Returns:
            ``Features`` with ``patches`` ``[B, h, w, C]`` (output of block :attr:`layer`, ``h = S / patch_size``),
            ``pooled`` ``[B, C]`` (mean of ``patches`` over the grid) and ``layers`` ``{i: [B, h, w, C]}``; each
            averaged over the ``ensemble`` noise draws. Differentiable in the image (the prompt embedding is not).
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
        embeds, mask = self._condition()
        embeds = embeds.to(device=latents.device, dtype=latents.dtype).expand(b * e, -1, -1)
        mask = mask.to(latents.device).expand(b * e, -1)
        h_px, w_px = pixel_values.shape[-2:]
        added = self.added_cond_kwargs(b * e, int(h_px), int(w_px), latents.dtype)

        captured = run_denoiser_blocks(self.transformer, needed, noisy, encoder_hidden_states=embeds,
                                       encoder_attention_mask=mask, timestep=t, added_cond_kwargs=added)  # fmt: skip
        return ensemble_features(captured, b, e, grid, self.layer, taps)


def build(req: LoadRequest) -> PixArtEncoder:
    """Build a :class:`PixArtEncoder` from a diffusers PixArt-α/Σ pipeline directory."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    if req.backend != "diffusers":
        raise ValueError(f"PixArt supports backend 'diffusers' only, got {req.backend!r}")
    path = Path(req.path)
    for sub in ("vae", "transformer", "text_encoder", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            raise FileNotFoundError(f"{path} is not a PixArt pipeline directory: missing {sub}/")
    # load_encoder has already refused pickle-only component folders unless allow_pickle=True.
    use_st = None if req.allow_pickle else True
    vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", use_safetensors=use_st)
    transformer = PixArtTransformer2DModel.from_pretrained(str(path), subfolder="transformer", use_safetensors=use_st)
    text_encoder = T5EncoderModel.from_pretrained(str(path / "text_encoder"), use_safetensors=use_st)
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    scheduler = load_scheduler(path)
    variant = _variant(path)
    logger.debug("PixArt-%s %s: transformer %s, scheduler %s", variant, req.name, transformer.config, scheduler)
    return PixArtEncoder(vae, transformer, text_encoder, tokenizer, scheduler, name=req.name,
                         options=dict(req.options), variant=variant)  # fmt: skip


register_family(
    Family(
        name="pixart",
        backends=("diffusers",),
        detect=detect,
        build=build,
        options=PIXART_OPTIONS,
        description="PixArt-α/Σ text-to-image DiT: denoiser features and generation, via diffusers",
        formats="diffusers PixArt pipeline (model_index.json with PixArtAlphaPipeline / PixArtSigmaPipeline)",
    )
)
register_model(
    ModelSpec(
        name="pixart-alpha-512",
        family="pixart",
        source="PixArt-alpha/PixArt-XL-2-512x512",
        backend="diffusers",
        description="PixArt-α XL/2 text-to-image, 512 px (64x64 latents, 32x32 grid), T5-XXL text encoder",
    )
)
register_model(
    ModelSpec(
        name="pixart-sigma-1024",
        family="pixart",
        source="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        backend="diffusers",
        description="PixArt-Σ XL/2 text-to-image, 1024 px (128x128 latents, 64x64 grid), T5-XXL text encoder",
    )
)
