"""``pipeline("generation")``: class-conditional DiT and text-to-image PixArt-α/Σ generation (diffusers weights).

``gen(labels=["golden retriever", 207], num_images_per_label=4, guidance_scale=1.5, steps=50, seed=0)`` (DiT)

``gen(prompts=["a red square", "a blue circle"], num_images_per_prompt=2, guidance_scale=4.5, steps=20, seed=0)``
(PixArt)

- Labels are class ids or names (any comma-separated synonym of the checkpoint's ``id2label``, case-insensitive).
- Image ``i`` of a call starts from its own noise, drawn from ``torch.Generator().manual_seed(seed + i)``, so an image
  does not depend on the batch it was generated in (up to float rounding of batched matmuls: at most one level).
- Classifier-free guidance runs a conditional and a null-class pass per step, as diffusers' ``DiTPipeline`` does
  (parity is tested on the same weights and seeds).
- ``preset="paper"`` is DiT's evaluation protocol: cfg 1.5 with 250 steps. The quick default is 50 steps and
  cfg 4.0. Every result records what was used.
- PixArt: prompts are encoded once by T5 (lower-cased and stripped, as diffusers does with ``clean_caption=False``);
  classifier-free guidance pairs each prompt with ``negative_prompt`` (default ``""``), as ``PixArtAlphaPipeline``
  and ``PixArtSigmaPipeline`` do, with the checkpoint's scheduler (parity is tested). The quick default is
  diffusers' and PixArt's: 20 steps, cfg 4.5. Size defaults to the transformer's ``sample_size`` times the VAE
  scale; diffusers' aspect-ratio binning is not applied (it equals diffusers with ``use_resolution_binning=False``).
- ``cache=`` (at construction: the default; at call time: this call) skips the middle denoiser blocks on some steps
  and reuses their residuals from the last full step (:mod:`visionfm.foundation.step_cache`); off by default, and
  then the sampling loop is the uncached one. The protocol records it under ``"cache"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..foundation.encoder import Encoder
from ..foundation.generator import Generator
from ..foundation.step_cache import StepCache, cached_blocks, parse_cache
from .base import Pipeline, register_pipeline

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 50, "guidance_scale": 4.0},
    "paper": {"steps": 250, "guidance_scale": 1.5},  # DiT (Peebles & Xie, 2023), FID-50K protocol
}
#: Text-to-image (PixArt) presets: diffusers' ``PixArtAlphaPipeline`` defaults, the checkpoint's scheduler.
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 20, "guidance_scale": 4.5},
}


@dataclass
class GenerationResult:
    """Generated images.

    Attributes:
        images: PIL images (or HWC uint8 arrays), ``num_images_per_label`` per label (``num_images_per_prompt`` per
            prompt), in input order.
        labels: class id of each image (``-1`` for text-to-image).
        names: class name of each image (``""`` if the checkpoint has no ``id2label``, and for text-to-image).
        seeds: the noise seed of each image.
        protocol: model, kind, steps, guidance scale, scheduler, preset, dtype, seed (and prompts for text-to-image).
        prompts: the prompt of each image (``""`` for class-conditional generation).
    """

    images: list[Any]
    labels: list[int]
    names: list[str]
    seeds: list[int]
    protocol: dict[str, Any] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def grid(self, cols: int | None = None) -> Any:
        """A contact sheet of all images (PIL), ``cols`` per row (default: images per label or prompt)."""
        from PIL import Image

        n = len(self.images)
        per = self.protocol.get("num_images_per_label", self.protocol.get("num_images_per_prompt", n))
        cols = cols or max(1, min(n, per))
        rows = (n + cols - 1) // cols
        ims = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in self.images]  # output_type="np"
        w, h = ims[0].size
        sheet = Image.new("RGB", (cols * w, rows * h), "white")
        for i, im in enumerate(ims):
            sheet.paste(im, ((i % cols) * w, (i // cols) * h))
        return sheet

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: labels, names, prompts, seeds, protocol (images are not included)."""
        return {"labels": self.labels, "names": self.names, "prompts": self.prompts, "seeds": self.seeds,
                "protocol": dict(self.protocol)}  # fmt: skip


def label_ids(labels: Sequence[int | str], id2label: dict[int, str], num_classes: int) -> list[int]:
    """Class ids for ``labels`` (ids, or names matched case-insensitively against any comma-separated synonym)."""
    by_name: dict[str, int] = {}
    for k, v in id2label.items():
        for syn in str(v).split(","):
            by_name.setdefault(syn.strip().lower(), int(k))
    out = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
            if not 0 <= int(lab) < num_classes:
                raise ValueError(f"class id {lab} is outside 0..{num_classes - 1}")
            out.append(int(lab))
        elif isinstance(lab, str) and lab.strip().lower() in by_name:
            out.append(by_name[lab.strip().lower()])
        else:
            import difflib

            hint = difflib.get_close_matches(str(lab).lower(), list(by_name), n=3)
            raise ValueError(
                f"unknown class {lab!r}" + (f"; did you mean {hint}?" if hint else "")
                + ("" if id2label else " (this checkpoint has no id2label: pass class ids)")
            )  # fmt: skip
    return out


@register_pipeline("generation")
class GenerationPipeline(Pipeline):
    """Class-conditional DiT and text-to-image PixArt generation. See the module docstring."""

    default_model = "dit-xl-2-256"

    def __init__(self, encoder: Encoder, *, batch_size: int = 8, cache: Any = None) -> None:
        """Args: ``encoder`` a generator; ``batch_size`` images per batch; ``cache`` the default step caching of
        every call (any form :func:`~visionfm.foundation.step_cache.parse_cache` accepts; default: off, or
        interval 2 when the generator was loaded with ``speed="fast"``)."""
        super().__init__(encoder, batch_size=batch_size)
        if not isinstance(encoder, Generator):
            raise TypeError(
                f"generation needs a generator (visionfm.foundation.generator.Generator: DiT, PixArt), got "
                f"{type(encoder).__name__} (family {encoder.info.family!r})"
            )
        if cache is None and (getattr(encoder, "speed_options", None) or {}).get("speed") == "fast":
            from ..foundation.speed import FAST_CACHE

            cache = FAST_CACHE
        self.cache = parse_cache(cache)

    @property
    def text_to_image(self) -> bool:
        """Whether the model is prompted with text (PixArt) rather than class labels (DiT)."""
        return self.encoder.conditioning == "text"

    def __call__(  # type: ignore[override]
        self,
        labels: Sequence[int | str] | int | str | None = None,
        *,
        prompts: Sequence[str] | str | None = None,
        num_images_per_label: int | None = None,
        num_images_per_prompt: int | None = None,
        negative_prompt: str = "",
        guidance_scale: float | None = None,
        steps: int | None = None,
        seed: int = 0,
        preset: str = "quick",
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        progress: bool | None = None,
        cache: Any = None,
    ) -> GenerationResult:
        """Generate images; see the module docstring.

        Args:
            labels: class-conditional (DiT) models only: class names or ids.
            prompts: text-to-image (PixArt) models only: one prompt or a list.
            num_images_per_label: DiT: images per label (default 1).
            num_images_per_prompt: PixArt: images per prompt (default 1).
            negative_prompt: PixArt: the prompt classifier-free guidance steers away from (default ``""``).
            guidance_scale: classifier-free guidance scale (``<= 1``: no guidance); default: the preset's.
            steps: denoising steps; default: the preset's.
            seed: image ``i`` starts from the noise of ``torch.Generator("cpu").manual_seed(seed + i)``.
            preset: DiT: ``"quick"`` or ``"paper"``; PixArt: ``"quick"``.
            height, width: PixArt: image size in pixels (default: the checkpoint's native size).
            output_type: ``"pil"`` or ``"np"`` (HWC uint8 arrays).
            progress: tqdm bar over the denoising steps (``False`` hides it).
            cache: step caching (:func:`~visionfm.foundation.step_cache.parse_cache`): ``False`` or ``1`` off,
                ``True``/``"fast"``/``N`` a full step every 2nd/N-th step, a dict or ``StepCache`` for all fields;
                ``None`` (default): the pipeline's default, set at construction (off unless set there).

        Returns:
            A :class:`GenerationResult`, images in input order (all images of the first label/prompt first).
        """
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        step_cache = self.cache if cache is None else parse_cache(cache)
        if self.text_to_image:
            return self._text_to_image(labels, prompts, num_images_per_label, num_images_per_prompt, negative_prompt,
                                       guidance_scale, steps, seed, preset, height, width, output_type, progress,
                                       step_cache)  # fmt: skip
        name = self.encoder.info.name
        if prompts is not None:
            raise ValueError(f"prompts= needs a text-to-image model (PixArt); {name!r} is a class-conditional DiT: "
                             "pass labels=[class names or ids]")  # fmt: skip
        for arg, value, default in (("num_images_per_prompt", num_images_per_prompt, None),
                                    ("negative_prompt", negative_prompt, ""), ("height", height, None),
                                    ("width", width, None)):  # fmt: skip
            if value != default:
                raise ValueError(f"{arg}= is for text-to-image models (PixArt); {name!r} is a class-conditional DiT")
        num_images_per_label = 1 if num_images_per_label is None else num_images_per_label
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}")
        steps = int(PRESETS[preset]["steps"] if steps is None else steps)
        cfg = float(PRESETS[preset]["guidance_scale"] if guidance_scale is None else guidance_scale)
        if steps < 1 or num_images_per_label < 1:
            raise ValueError(f"steps and num_images_per_label must be >= 1, got {steps}, {num_images_per_label}")
        labels = [labels] if isinstance(labels, (int, str)) else list(labels or [])
        if not labels:
            raise ValueError("generation needs labels=[...] (class names or ids)")
        enc = self.encoder
        n_classes = enc.num_classes
        ids = [
            i for i in label_ids(labels, getattr(enc, "id2label", {}), n_classes) for _ in range(num_images_per_label)
        ]
        seeds = [seed + i for i in range(len(ids))]
        with torch.inference_mode():
            latents = torch.cat([self._sample(ids[i : i + self.batch_size], seeds[i : i + self.batch_size], steps, cfg,
                                              progress, step_cache)
                                 for i in range(0, len(ids), self.batch_size)])  # fmt: skip
            images = self._decode(latents)
        names = [getattr(enc, "id2label", {}).get(i, "") for i in ids]
        protocol = {"model": enc.info.name, "kind": "class-conditional", "steps": steps, "guidance_scale": cfg,
                    "preset": preset, "scheduler": type(enc.scheduler).__name__,
                    "dtype": str(enc.dtype).removeprefix("torch."), "num_images_per_label": num_images_per_label,
                    "seed": seed, "cache": _cache_protocol(step_cache, steps)}  # fmt: skip
        return GenerationResult(images=_as_output(images, output_type), labels=ids, names=names, seeds=seeds,
                                protocol=protocol, prompts=[""] * len(ids))  # fmt: skip

    # -- text-to-image (PixArt) -----------------------------------------------------------------------
    def _text_to_image(
        self,
        labels: Any,
        prompts: Sequence[str] | str | None,
        num_images_per_label: int | None,
        num_images_per_prompt: int | None,
        negative_prompt: str,
        guidance_scale: float | None,
        steps: int | None,
        seed: int,
        preset: str,
        height: int | None,
        width: int | None,
        output_type: str,
        progress: bool | None,
        step_cache: StepCache | None = None,
    ) -> GenerationResult:
        """PixArt-α/Σ text-to-image generation (``PixArt*Pipeline``'s loop, one generator per image)."""
        enc = self.encoder
        name = enc.info.name
        if labels is not None:
            raise ValueError(f"labels= is for class-conditional models (DiT); {name!r} is a text-to-image PixArt "
                             "model: pass prompts=['a photo of ...']")  # fmt: skip
        if num_images_per_label is not None:
            raise ValueError(f"num_images_per_label= is for class-conditional models (DiT); {name!r} is a "
                             "text-to-image PixArt model: use num_images_per_prompt=")  # fmt: skip
        if preset not in TEXT_PRESETS:
            raise ValueError(f"unknown preset {preset!r} for text-to-image; presets: {sorted(TEXT_PRESETS)}")
        steps = int(TEXT_PRESETS[preset]["steps"] if steps is None else steps)
        cfg = float(TEXT_PRESETS[preset]["guidance_scale"] if guidance_scale is None else guidance_scale)
        n = 1 if num_images_per_prompt is None else int(num_images_per_prompt)
        if steps < 1 or n < 1:
            raise ValueError(f"steps and num_images_per_prompt must be >= 1, got {steps}, {n}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        if not prompts:
            raise ValueError(f"text-to-image generation with {name!r} needs prompts=['a photo of ...']")
        bad = [p for p in [*prompts, negative_prompt] if not isinstance(p, str)]
        if bad:
            raise ValueError(f"prompts= and negative_prompt= must be strings, got {bad[0]!r}")
        tr = enc.transformer
        vsf = int(enc.vae_scale_factor)
        native = int(tr.config.sample_size) * vsf
        height, width = int(height or native), int(width or native)
        multiple = vsf * int(tr.config.patch_size)
        if height % multiple or width % multiple or height < multiple or width < multiple:
            raise ValueError(f"height= and width= must be positive multiples of {multiple} (VAE scale x patch size), "
                             f"got {height} x {width}")  # fmt: skip

        per_image = [p for p in prompts for _ in range(n)]
        seeds = [seed + i for i in range(len(per_image))]
        guided = cfg > 1
        with torch.inference_mode():
            unique = list(dict.fromkeys(prompts))
            parts = [
                enc.encode_prompts(unique[i : i + self.batch_size]) for i in range(0, len(unique), self.batch_size)
            ]
            emb, mask = torch.cat([e for e, _ in parts]), torch.cat([m for _, m in parts])
            neg = enc.encode_prompts([negative_prompt]) if guided else None
            rows = torch.tensor([unique.index(p) for p in per_image], device=emb.device)
            latents = []
            for i in range(0, len(per_image), self.batch_size):
                r = rows[i : i + self.batch_size]
                latents.append(self._sample_text(emb[r], mask[r], neg, seeds[i : i + self.batch_size], steps, cfg,
                                                 height, width, progress, step_cache))  # fmt: skip
            images = self._decode(torch.cat(latents))
        protocol = {"model": name, "kind": "text-to-image", "variant": getattr(enc, "variant", ""), "steps": steps,
                    "guidance_scale": cfg, "preset": preset, "scheduler": type(enc.scheduler).__name__,
                    "dtype": str(enc.dtype).removeprefix("torch."), "num_images_per_prompt": n, "seed": seed,
                    "prompts": list(prompts), "negative_prompt": negative_prompt, "height": height, "width": width,
                    "max_sequence_length": int(enc.max_sequence_length), "resolution_binning": False,
                    "cache": _cache_protocol(step_cache, steps)}  # fmt: skip
        return GenerationResult(images=_as_output(images, output_type), labels=[-1] * len(per_image),
                                names=[""] * len(per_image), seeds=seeds, protocol=protocol, prompts=per_image)  # fmt: skip

    def _sample_text(
        self,
        emb: torch.Tensor,
        mask: torch.Tensor,
        neg: tuple[torch.Tensor, torch.Tensor] | None,
        seeds: list[int],
        steps: int,
        cfg: float,
        height: int,
        width: int,
        progress: bool | None,
        step_cache: StepCache | None = None,
    ) -> torch.Tensor:
        """Denoised latents ``[B, C, height / vae_scale, width / vae_scale]`` for one batch.

        ``emb`` ``[B, L, D_text]`` and ``mask`` ``[B, L]`` are the prompts' T5 embeddings; ``neg`` the negative
        prompt's (``[1, L, D_text]``, ``[1, L]``), used when ``cfg > 1``. ``step_cache``: block caching across the
        steps (``None``: off).
        """
        import inspect

        from diffusers.utils.torch_utils import randn_tensor

        enc = self.encoder
        tr = enc.transformer
        dev = enc.device
        b, c, vsf = len(seeds), int(tr.config.in_channels), int(enc.vae_scale_factor)
        gens = [torch.Generator(device="cpu").manual_seed(int(x)) for x in seeds]
        latents = randn_tensor((b, c, height // vsf, width // vsf), generator=gens, device=dev, dtype=emb.dtype)
        scheduler = enc.new_scheduler()  # fresh state per batch
        scheduler.set_timesteps(steps, device=dev)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        latents = latents * scheduler.init_noise_sigma
        params = set(inspect.signature(scheduler.step).parameters)
        extra = {k: v for k, v in (("eta", 0.0), ("generator", gens)) if k in params}
        guided = cfg > 1
        if guided:
            assert neg is not None
            emb = torch.cat([neg[0].expand(b, -1, -1).to(emb.dtype), emb])
            mask = torch.cat([neg[1].expand(b, -1), mask])
        added = enc.added_cond_kwargs(len(emb), height, width, emb.dtype)
        with _cache_context(tr, step_cache, len(scheduler.timesteps)) as ctl:
            for i, t in enumerate(tqdm(scheduler.timesteps, desc="generation", disable=progress is False)):
                if ctl is not None:
                    ctl.step(i)
                xin = torch.cat([latents, latents]) if guided else latents
                xin = scheduler.scale_model_input(xin, t)
                ts = (t if torch.is_tensor(t) else torch.tensor(t))[None].to(dev).expand(xin.shape[0])
                pred = tr(xin, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=ts,
                          added_cond_kwargs=added, return_dict=False)[0]  # fmt: skip
                if guided:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + cfg * (cond - uncond)
                if int(tr.config.out_channels) // 2 == c:  # learned sigma: keep the noise prediction
                    pred = pred.chunk(2, dim=1)[0]
                out = scheduler.step(pred, t, latents, **extra, return_dict=False)
                # PixArtAlphaPipeline takes the predicted x0 (the second output, where there is one) for a 1-step run
                one_step_x0 = steps == 1 and getattr(enc, "variant", "") == "alpha" and len(out) > 1
                latents = out[1] if one_step_x0 else out[0]
        return latents

    # -- class-conditional (DiT) ----------------------------------------------------------------------
    def _sample(
        self,
        ids: list[int],
        seeds: list[int],
        steps: int,
        cfg: float,
        progress: bool | None,
        step_cache: StepCache | None = None,
    ) -> torch.Tensor:
        """Denoised latents ``[B, C, s, s]`` for one batch (``DiTPipeline``'s loop, one generator per image);
        ``step_cache``: block caching across the steps (``None``: off)."""
        from diffusers.utils.torch_utils import randn_tensor

        enc = self.encoder
        tr = enc.transformer
        dev, dtype = enc.device, tr.dtype
        c, s = int(tr.config.in_channels), int(tr.config.sample_size)
        gens = [torch.Generator(device="cpu").manual_seed(int(x)) for x in seeds]
        latents = randn_tensor((len(ids), c, s, s), generator=gens, device=dev, dtype=dtype)
        guided = cfg > 1
        null = enc.num_classes
        cls = torch.tensor(ids, device=dev)
        cls_in = torch.cat([cls, torch.full_like(cls, null)]) if guided else cls
        scheduler = enc.new_scheduler()  # fresh state per batch
        scheduler.set_timesteps(steps)
        x = torch.cat([latents, latents]) if guided else latents
        with _cache_context(tr, step_cache, len(scheduler.timesteps)) as ctl:
            for i, t in enumerate(tqdm(scheduler.timesteps, desc="generation", disable=progress is False)):
                if ctl is not None:
                    ctl.step(i)
                if guided:
                    half = x[: len(x) // 2]
                    x = torch.cat([half, half])
                xin = scheduler.scale_model_input(x, t)
                ts = (t if torch.is_tensor(t) else torch.tensor(t))[None].to(dev).expand(xin.shape[0])
                pred = tr(xin, timestep=ts, class_labels=cls_in).sample
                if guided:
                    eps, rest = pred[:, :c], pred[:, c:]
                    cond, uncond = torch.split(eps, len(eps) // 2)
                    half_eps = uncond + cfg * (cond - uncond)
                    pred = torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)
                model_out = pred[:, :c] if int(tr.config.out_channels) // 2 == c else pred
                x = scheduler.step(model_out, t, x).prev_sample
        return x[: len(ids)] if guided else x

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to uint8 HWC images ``[B, H, W, 3]`` through the generator's decoder."""
        return self.encoder.decode_latents(latents)


def _cache_context(transformer: torch.nn.Module, step_cache: StepCache | None, num_steps: int) -> Any:
    """``cached_blocks`` over the denoiser's ``transformer_blocks``, or a context yielding ``None`` when off."""
    if step_cache is None:
        return nullcontext(None)
    blocks = getattr(transformer, "transformer_blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ValueError(f"cache= needs a denoiser with transformer_blocks (an nn.ModuleList); "
                         f"{type(transformer).__name__} has none")  # fmt: skip
    return cached_blocks(blocks, step_cache, num_steps=num_steps)


def _cache_protocol(step_cache: StepCache | None, steps: int) -> dict[str, Any] | None:
    """What a result records about step caching (``None``: off)."""
    return None if step_cache is None else step_cache.protocol(steps)


def _as_output(images: np.ndarray, output_type: str) -> list[Any]:
    """``[B, H, W, 3]`` uint8 to a list of PIL images (``"pil"``) or arrays (``"np"``)."""
    if output_type == "pil":
        from PIL import Image

        return [Image.fromarray(a) for a in images]
    return list(images)
