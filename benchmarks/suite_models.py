"""Models of the speed suite: real architectures with random weights, written once in each family's on-disk format,
and the peer library's side of every case (its own loader on the same files, its raw forward, its own image path).

Formats (one per model):

- ``vit-b-16``, ``vit-l-14``: open_clip (``open_clip_config.json`` + ``open_clip_model.safetensors``), open_clip's
  built-in ``ViT-B-16`` / ``ViT-L-14`` configs. Peer: ``open_clip.create_model_and_transforms("local-dir:...")``.
- ``vit-b-16-hf`` (not in ``all``): the same ViT-B/16 converted to transformers format. Peer:
  ``CLIPVisionModelWithProjection`` + ``CLIPImageProcessor``.
- ``dinov2-b-14``, ``dinov2-l-14``: transformers ``Dinov2Model`` + ``BitImageProcessor`` (dinov2-base/-large configs).
  Peer: ``Dinov2Model`` and ``pipeline("image-feature-extraction")``.
- ``dinov3-b-16`` (not in ``all``): transformers ``DINOv3ViTModel`` at dinov3-vitb16's size + ``DINOv3ViTImageProcessor``.
  Peer: ``DINOv3ViTModel`` and its processor + model.
- ``radio-b-16`` (not in ``all``): transformers ``RadioModel`` at ViT-B/16 size. Peer: ``RadioModel``; e2e through a
  ``CLIPImageProcessor`` that does not normalise (what NVIDIA ships).
- ``siglip2-b-16`` (not in ``all``): transformers ``Siglip2Model`` (NaFlex) at google/siglip2-base-patch16-naflex's
  size (vision and text towers 12 x 768, patch 16, a 16 x 16 position table; the text tower reads a tiny Gemma
  tokenizer instead of the 256k-token one) + ``Siglip2ImageProcessor(max_num_patches=256)``. Peer:
  ``Siglip2Model.get_image_features`` on the processor's ``pixel_values`` / ``pixel_attention_mask`` /
  ``spatial_shapes`` (the encoder-forward batch is the 256 x 256 square, patchified in the processor's order); e2e
  through the processor (native aspect ratio, as ours).
- ``siglip2-b-16-fixed`` (not in ``all``): fixed-resolution SigLIP 2 B/16 at 224 px, as google/siglip2-base-patch16-224
  ships it: a transformers ``SiglipModel`` (same towers and tokenizer as above) + ``SiglipImageProcessor``. Peer:
  ``SiglipModel.get_image_features`` and its processor + model.
- ``aimv2-l-14`` (not in ``all``): transformers ``Aimv2VisionModel`` at apple/aimv2-large-patch14-224's size (24 x 1024,
  patch 14, 224 px, no pooling head: the smallest released AIMv2 image encoder) + its ``CLIPImageProcessor``. Peer:
  ``Aimv2VisionModel`` (pooled = mean of ``last_hidden_state``, as ours without a head) and its processor + model.
- ``pe-core-b-16``, ``mobileclip2-s2`` (not in ``all``): open_clip format, written from
  ``open_clip.create_model("PE-Core-B-16" / "MobileCLIP2-S2", pretrained=None)`` (timm ``Eva`` / ``FastVit`` image
  towers, full text towers) with the preprocessing of their released open_clip tags. Peer: as ``vit-b-16``.
- ``sam-vit-b``: transformers ``SamModel`` (``SamConfig()`` is SAM ViT-B, 1024 px) + ``SamImageProcessor``.
  Peer: ``SamModel.get_image_embeddings`` and ``SamProcessor``.
- ``dit-xl-2-256``: diffusers pipeline directory: ``DiTTransformer2DModel`` XL/2 (28 blocks, 16 heads x 72, latent
  32 x 32), ``AutoencoderKL`` with sd-vae-ft-ema's config, ``DDIMScheduler``. Peer: diffusers' ``AutoencoderKL`` +
  ``DiTTransformer2DModel`` loaded from the same directory.
- ``tiny-clip``, ``tiny-dinov2`` (tests only): ``visionfm.testing.tiny_checkpoint`` (open_clip / transformers).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ALL_MODELS = ["vit-b-16", "vit-l-14", "dinov2-b-14", "dinov2-l-14", "sam-vit-b", "dit-xl-2-256"]
#: Runnable with ``--models`` but not part of ``all``.
EXTRA_MODELS = ["vit-b-16-hf", "dinov3-b-16", "radio-b-16", "siglip2-b-16", "siglip2-b-16-fixed", "aimv2-l-14",
                "pe-core-b-16", "mobileclip2-s2"]  # fmt: skip
TINY_MODELS = ["tiny-clip", "tiny-dinov2"]


def cache_root() -> Path:
    """``$VISIONFM_BENCH_CACHE`` or ``~/.cache/visionfm/bench``."""
    return Path(os.environ.get("VISIONFM_BENCH_CACHE", Path.home() / ".cache" / "visionfm" / "bench"))


def _write_once(name: str, writer: Callable[[Path], None], root: Path | None = None) -> Path:
    """Write a checkpoint directory once (atomically, marked by ``.complete``) and return it."""
    root = root or cache_root()
    out = root / name
    if (out / ".complete").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        writer(tmp)
    (tmp / ".complete").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# -- writers ---------------------------------------------------------------------------------------------------------
def _write_open_clip(arch: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import open_clip

        from visionfm.testing.clip import write_tiny_clip

        write_tiny_clip(path, "open_clip", model_cfg=open_clip.get_model_config(arch))

    return write


def _write_hf_clip_b16(path: Path) -> None:
    from visionfm.foundation.clip import convert_checkpoint

    src = checkpoint("vit-b-16")
    tmp = path / "converted"
    convert_checkpoint(src, tmp, to="transformers")
    for p in tmp.iterdir():
        p.rename(path / p.name)
    tmp.rmdir()


def _write_dinov2(hidden: int, layers: int, heads: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

        cfg = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
                           image_size=518, patch_size=14, layerscale_value=1.0)  # fmt: skip
        Dinov2Model(cfg).save_pretrained(path, safe_serialization=True)
        BitImageProcessor(size={"shortest_edge": 256}, resample=3, crop_size={"height": 224, "width": 224},
                          image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)  # fmt: skip

    return write


def _write_dinov3_b16(path: Path) -> None:
    """DINOv3 ViT-B/16 (dinov3-vitb16's architecture: 12 x 768, 4 registers, RoPE) + its processor (224 px)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    cfg = DINOv3ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          patch_size=16, num_register_tokens=4)  # fmt: skip
    DINOv3ViTModel(cfg).save_pretrained(path, safe_serialization=True)
    DINOv3ViTImageProcessor(size={"height": 224, "width": 224}, resample=2).save_pretrained(path)


def _write_radio_b16(path: Path) -> None:
    """C-RADIO at ViT-B/16 size (12 x 768; 3 class tokens, 7 registers, CPE up to 2048 px); no processor file (the
    model normalises its own [0, 1] input)."""
    from transformers import RadioConfig, RadioModel

    cfg = RadioConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=16, image_size=224)
    RadioModel(cfg).save_pretrained(path, safe_serialization=True)


def _siglip2_b16_towers(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(text, vision) configs of SigLIP 2 B/16 (both towers 12 x 768, MLP 3072), writing the tokenizer to ``path``: a
    tiny Gemma tokenizer (visionfm's test one), so the text tower's vocabulary is small; the image tower is real."""
    from visionfm.testing.clip import _write_tiny_gemma_tokenizer

    vocab = _write_tiny_gemma_tokenizer(path)
    tower = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    text = dict(tower, vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return text, dict(tower, patch_size=16)


def _write_siglip2_b16(path: Path) -> None:
    """SigLIP 2 B/16 NaFlex (google/siglip2-base-patch16-naflex's architecture: a 16 x 16 position table resized to
    each image's grid) + ``Siglip2ImageProcessor`` (patch 16, at most 256 patches, bilinear, mean/std 0.5)."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    text, vision = _siglip2_b16_towers(path)
    Siglip2Model(Siglip2Config(text_config=text, vision_config=dict(vision, num_patches=256))).save_pretrained(
        path, safe_serialization=True
    )
    Siglip2ImageProcessor(patch_size=16, max_num_patches=256).save_pretrained(path)


def _write_siglip2_b16_fixed(path: Path) -> None:
    """Fixed-resolution SigLIP 2 B/16 at 224 px (google/siglip2-base-patch16-224: a ``SiglipModel``) +
    ``SiglipImageProcessor`` (224 x 224, bilinear, mean/std 0.5)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    text, vision = _siglip2_b16_towers(path)
    SiglipModel(SiglipConfig(text_config=text, vision_config=dict(vision, image_size=224))).save_pretrained(
        path, safe_serialization=True
    )
    SiglipImageProcessor(size={"height": 224, "width": 224}, resample=2).save_pretrained(path)


def _write_aimv2_l14(path: Path) -> None:
    """AIMv2-L/14 image encoder (apple/aimv2-large-patch14-224: 24 x 1024, 8 heads, SwiGLU 2816, RMSNorm, no pooling
    head) + the ``CLIPImageProcessor`` it ships (short side 224, bicubic, centre crop 224, OpenAI mean/std)."""
    from transformers import Aimv2VisionConfig, Aimv2VisionModel, CLIPImageProcessor

    from visionfm.foundation.aimv2 import OPENAI_MEAN, OPENAI_STD

    cfg = Aimv2VisionConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=8,
                            image_size=224, patch_size=14, use_head=False)  # fmt: skip
    Aimv2VisionModel(cfg).save_pretrained(path, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                       image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)).save_pretrained(path)  # fmt: skip


def _write_open_clip_tag(arch: str, tag: str) -> Callable[[Path], None]:
    """open_clip's ``arch`` as ``open_clip.create_model(arch, pretrained=None)`` builds it (random weights), in
    open_clip's local-dir format, with the preprocessing of the released tag ``arch/tag``."""

    def write(path: Path) -> None:
        import open_clip
        from safetensors.torch import save_file

        model_cfg = open_clip.get_model_config(arch)
        model = open_clip.create_model(arch, pretrained=None)
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        pp = {"size": int(model_cfg["vision_cfg"]["image_size"]), "mode": "RGB", "mean": list(pcfg["mean"]),
              "std": list(pcfg["std"]), "interpolation": pcfg["interpolation"],
              "resize_mode": pcfg["resize_mode"]}  # fmt: skip
        (path / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2)
        )
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(path / "open_clip_model.safetensors"))

    return write


def _write_sam_b(path: Path) -> None:
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    model = SamModel(SamConfig())  # SamConfig's defaults are SAM ViT-B
    # transformers 5 leaves SamModel's weights at std ~1e-10: activations then underflow to denormals (a 10x slower
    # fp32 forward, all-zero features). Re-draw every matrix at the usual ViT scale, so the forward does real work.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "rel_pos" not in name:
                torch.nn.init.trunc_normal_(p, std=0.02)
    model.save_pretrained(path, safe_serialization=True)
    proc = SamImageProcessor()
    proc.save_pretrained(path)
    SamProcessor(image_processor=proc).save_pretrained(path)


def _write_dit_xl2(path: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                                        num_layers=28, sample_size=32, patch_size=2, norm_num_groups=32,
                                        num_embeds_ada_norm=1000, norm_type="ada_norm_zero")  # fmt: skip
    vae = AutoencoderKL(  # stabilityai/sd-vae-ft-ema
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, norm_num_groups=32, sample_size=256, act_fn="silu", scaling_factor=0.18215,
    )  # fmt: skip
    sched = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    DiTPipeline(transformer=transformer, vae=vae, scheduler=sched).save_pretrained(str(path), safe_serialization=True)


def _tiny(kind: str, backend: str) -> Path:
    from visionfm.testing import tiny_checkpoint

    return tiny_checkpoint(kind, backend)


_WRITERS: dict[str, Callable[[Path], None]] = {
    "vit-b-16": _write_open_clip("ViT-B-16"),
    "vit-l-14": _write_open_clip("ViT-L-14"),
    "vit-b-16-hf": _write_hf_clip_b16,
    "dinov2-b-14": _write_dinov2(768, 12, 12),
    "dinov2-l-14": _write_dinov2(1024, 24, 16),
    "sam-vit-b": _write_sam_b,
    "dinov3-b-16": _write_dinov3_b16,
    "radio-b-16": _write_radio_b16,
    "siglip2-b-16": _write_siglip2_b16,
    "siglip2-b-16-fixed": _write_siglip2_b16_fixed,
    "aimv2-l-14": _write_aimv2_l14,
    "pe-core-b-16": _write_open_clip_tag("PE-Core-B-16", "meta"),
    "mobileclip2-s2": _write_open_clip_tag("MobileCLIP2-S2", "dfndr2b"),
    "dit-xl-2-256": _write_dit_xl2,
}


def checkpoint(name: str, root: Path | None = None) -> Path:
    """The checkpoint directory of suite model ``name``, written on first use."""
    if name == "tiny-clip":
        return _tiny("clip", "open_clip")
    if name == "tiny-dinov2":
        return _tiny("dinov2", "transformers")
    if name not in _WRITERS:
        raise ValueError(f"unknown suite model {name!r}; choose from {ALL_MODELS + EXTRA_MODELS + TINY_MODELS}")
    return _write_once(name, _WRITERS[name], root)


# -- peers -----------------------------------------------------------------------------------------------------------
@dataclass
class Peer:
    """The peer library's side of one model.

    Attributes:
        name: what the peer is, for the report.
        forward: raw forward on a preprocessed batch -> pooled embedding ``[B, D]`` (inference mode is the caller's).
        modules: the peer's ``nn.Module`` s (weights accounting, FLOP counting).
        e2e: paths, batch size -> pooled ``[N, D]``, the peer's own decode + preprocess + forward.
        e2e_name: what ``e2e`` is.
        note: how ``forward`` relates to ours (e.g. extra work the peer cannot skip).
    """

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    modules: list[torch.nn.Module]
    e2e: Callable[[list[str], int], torch.Tensor]
    e2e_name: str
    note: str = ""


def _batched(paths: list[str], bs: int, fn: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    return torch.cat([fn(paths[i : i + bs]) for i in range(0, len(paths), bs)])


def _pil(paths: list[str]) -> list:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def build_peer(name: str, path: Path, device: torch.device, dtype: torch.dtype, ours: Any) -> Peer:
    """Load ``path`` with the peer library (fresh weights from disk, not shared with ours)."""
    family = ours.info.family
    if family == "clip" and ours.info.backend == "open_clip":
        return _open_clip_peer(path, device, dtype)
    if family == "clip" and getattr(ours, "kind", None) == "siglip2":
        return _siglip2_peer(path, device, dtype)
    if family == "clip" and getattr(ours, "kind", None) == "siglip":
        return _siglip_peer(path, device, dtype)
    if family == "clip":
        return _hf_clip_peer(path, device, dtype)
    if family == "dinov2":
        return _dinov2_peer(path, device, dtype)
    if family == "dinov3":
        return _dinov3_peer(path, device, dtype)
    if family == "radio":
        return _radio_peer(path, device, dtype)
    if family == "aimv2":
        return _aimv2_peer(path, device, dtype)
    if family == "sam":
        return _sam_peer(path, device, dtype)
    if family == "dit":
        return _dit_peer(path, device, dtype, ours)
    raise ValueError(f"no peer for family {family!r}")


def _open_clip_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device="cpu")
    model = model.to(device=device, dtype=dtype).eval()

    def e2e_batch(paths: list[str]) -> torch.Tensor:
        x = torch.stack([preprocess(im) for im in _pil(paths)]).to(device=device, dtype=dtype)
        return model.encode_image(x)

    return Peer(
        name="open_clip encode_image",
        forward=model.encode_image,
        modules=[model.visual],
        e2e=lambda paths, bs: _batched(paths, bs, e2e_batch),
        e2e_name="open_clip: PIL decode + preprocess_val transform + encode_image",
    )


def _hf_clip_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = CLIPImageProcessor.from_pretrained(path)

    def e2e_batch(paths: list[str]) -> torch.Tensor:
        x = proc(images=_pil(paths), return_tensors="pt")["pixel_values"].to(device=device, dtype=dtype)
        return model(pixel_values=x).image_embeds

    return Peer(
        name="transformers CLIPVisionModelWithProjection",
        forward=lambda x: model(pixel_values=x).image_embeds,
        modules=[model],
        e2e=lambda paths, bs: _batched(paths, bs, e2e_batch),
        e2e_name="transformers: PIL decode + CLIPImageProcessor + CLIPVisionModelWithProjection",
    )


def _dinov2_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import Dinov2Model
    from transformers import pipeline as hf_pipeline

    model = Dinov2Model.from_pretrained(path, dtype=dtype).to(device).eval()
    pipe = hf_pipeline("image-feature-extraction", model=str(path), device=device, dtype=dtype)

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        out = pipe(paths, batch_size=bs, pool=True)
        return torch.cat([torch.as_tensor(np.asarray(o, dtype=np.float32)).reshape(1, -1) for o in out])

    return Peer(
        name="transformers Dinov2Model",
        forward=lambda x: model(pixel_values=x).pooler_output,
        modules=[model],
        e2e=e2e,
        e2e_name='transformers pipeline("image-feature-extraction", pool=True)',
    )


def _dinov3_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import AutoImageProcessor, DINOv3ViTModel

    model = DINOv3ViTModel.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = AutoImageProcessor.from_pretrained(path)

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        def run(chunk: list[str]) -> torch.Tensor:
            x = proc(images=_pil(chunk), return_tensors="pt")["pixel_values"].to(device, dtype)
            return model(pixel_values=x).pooler_output.float().cpu()

        return _batched(paths, bs, run)

    return Peer(
        name="transformers DINOv3ViTModel",
        forward=lambda x: model(pixel_values=x).pooler_output,
        modules=[model],
        e2e=e2e,
        e2e_name="transformers DINOv3ViTImageProcessor + DINOv3ViTModel",
    )


def _radio_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import CLIPImageProcessor, RadioModel

    model = RadioModel.from_pretrained(path, dtype=dtype).to(device).eval()
    # transformers has no RADIO processor; NVIDIA's checkpoints ship a CLIPImageProcessor. This one resizes the short
    # side to 224 (bicubic) and centre crops, without normalising: the model conditions its [0, 1] input itself.
    proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_normalize=False)

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        def run(chunk: list[str]) -> torch.Tensor:
            x = proc(images=_pil(chunk), return_tensors="pt")["pixel_values"].to(device, dtype)
            return model(pixel_values=x).summary.float().cpu()

        return _batched(paths, bs, run)

    return Peer(
        name="transformers RadioModel",
        forward=lambda x: model(pixel_values=x).summary,
        modules=[model],
        e2e=e2e,
        e2e_name="transformers CLIPImageProcessor (no normalisation) + RadioModel",
    )


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5's ``get_image_features`` returns a model output (older versions a tensor)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _siglip2_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import AutoImageProcessor, Siglip2Model

    model = Siglip2Model.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = AutoImageProcessor.from_pretrained(path)
    p = int(model.config.vision_config.patch_size)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        # an already-resized [B, 3, H, W] batch in the processor's packed layout: [B, h*w, p*p*3] patches (row,
        # column; then y, x, c), every patch real
        b, c, hh, ww = x.shape
        seq = x.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        mask = torch.ones(seq.shape[:2], dtype=torch.long, device=x.device)
        shapes = torch.tensor([[hh // p, ww // p]] * b, dtype=torch.long, device=x.device)
        return _pooled(model.get_image_features(pixel_values=seq, pixel_attention_mask=mask, spatial_shapes=shapes))

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        def run(chunk: list[str]) -> torch.Tensor:
            inputs = proc(images=_pil(chunk), return_tensors="pt")
            x = inputs["pixel_values"].to(device, dtype)
            mask, shapes = inputs["pixel_attention_mask"].to(device), inputs["spatial_shapes"].to(device)
            out = model.get_image_features(pixel_values=x, pixel_attention_mask=mask, spatial_shapes=shapes)
            return _pooled(out).float().cpu()

        return _batched(paths, bs, run)

    return Peer(
        name="transformers Siglip2Model.get_image_features",
        forward=fwd,
        modules=[model.vision_model],
        e2e=e2e,
        e2e_name=f"transformers {type(proc).__name__} (NaFlex, max_num_patches={proc.max_num_patches}) + "
        "Siglip2Model.get_image_features",
        note="SigLIP 2 NaFlex: encoder forward on the square max_num_patches grid (all patches real); e2e at each "
        "image's native aspect ratio on both sides",
    )


def _siglip_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import AutoImageProcessor, SiglipModel

    model = SiglipModel.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = AutoImageProcessor.from_pretrained(path)

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        def run(chunk: list[str]) -> torch.Tensor:
            x = proc(images=_pil(chunk), return_tensors="pt")["pixel_values"].to(device, dtype)
            return _pooled(model.get_image_features(pixel_values=x)).float().cpu()

        return _batched(paths, bs, run)

    return Peer(
        name="transformers SiglipModel.get_image_features",
        forward=lambda x: _pooled(model.get_image_features(pixel_values=x)),
        modules=[model.vision_model],
        e2e=e2e,
        e2e_name=f"transformers {type(proc).__name__} + SiglipModel.get_image_features",
    )


def _aimv2_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import Aimv2VisionModel, AutoImageProcessor

    model = Aimv2VisionModel.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = AutoImageProcessor.from_pretrained(path)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=x)  # the released image encoders have no head: pooler_output is None
        return out.pooler_output if out.pooler_output is not None else out.last_hidden_state.mean(1)

    def e2e(paths: list[str], bs: int) -> torch.Tensor:
        def run(chunk: list[str]) -> torch.Tensor:
            x = proc(images=_pil(chunk), return_tensors="pt")["pixel_values"].to(device, dtype)
            return fwd(x).float().cpu()

        return _batched(paths, bs, run)

    return Peer(
        name="transformers Aimv2VisionModel",
        forward=fwd,
        modules=[model],
        e2e=e2e,
        e2e_name=f"transformers {type(proc).__name__} + Aimv2VisionModel",
        note="AIMv2 image encoder without a head: pooled = mean of last_hidden_state on both sides",
    )


def _sam_peer(path: Path, device: torch.device, dtype: torch.dtype) -> Peer:
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(path, dtype=dtype).to(device).eval()
    proc = SamProcessor.from_pretrained(path)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        return model.get_image_embeddings(x).mean(dim=(2, 3))

    def e2e_batch(paths: list[str]) -> torch.Tensor:
        x = proc(images=_pil(paths), return_tensors="pt")["pixel_values"].to(device=device, dtype=dtype)
        return fwd(x)

    return Peer(
        name="transformers SamModel.get_image_embeddings",
        forward=fwd,
        modules=[model.vision_encoder],
        e2e=lambda paths, bs: _batched(paths, bs, e2e_batch),
        # transformers' image-feature-extraction pipeline runs the whole SamModel (no prompts) and has no pooled
        # output for SAM, so the peer is transformers' own processor + image encoder
        e2e_name="transformers: PIL decode + SamProcessor + get_image_embeddings",
    )


def _dit_peer(path: Path, device: torch.device, dtype: torch.dtype, ours: Any) -> Peer:
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel
    from torchvision.transforms import functional as TF

    vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", dtype=dtype).to(device).eval()
    dit = DiTTransformer2DModel.from_pretrained(str(path), subfolder="transformer", dtype=dtype).to(device).eval()
    sched = DDPMScheduler.from_pretrained(str(path), subfolder="scheduler")
    t_step, layer, label, seed = ours.timestep, ours.layer, ours.class_label, ours.noise_seed
    size = int(dit.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        g = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn(tuple(z.shape[1:]), generator=g).to(z.device).expand(z.shape)
        t = torch.full((z.shape[0],), t_step, dtype=torch.long, device=z.device)
        zt = sched.add_noise(z.float(), eps, t).to(z.dtype)
        labels = torch.full((z.shape[0],), label, dtype=torch.long, device=z.device)
        got: dict[str, torch.Tensor] = {}
        h = dit.transformer_blocks[layer].register_forward_hook(lambda m, i, o: got.__setitem__("x", o))
        try:
            dit(
                zt, timestep=t, class_labels=labels, return_dict=False
            )  # the full denoiser: diffusers has no early exit
        finally:
            h.remove()
        return got["x"].mean(1)

    def e2e_batch(paths: list[str]) -> torch.Tensor:
        ims = []
        for im in _pil(paths):  # ADM / DiT center_crop_arr: bicubic shortest side, floor crop
            s = size / min(im.size)
            im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), resample=3)
            x0, y0 = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            ims.append(TF.to_tensor(im.crop((x0, y0, x0 + size, y0 + size))))
        x = TF.normalize(torch.stack(ims), [0.5] * 3, [0.5] * 3).to(device=device, dtype=dtype)
        return fwd(x)

    return Peer(
        name="diffusers AutoencoderKL.encode + add_noise + DiTTransformer2DModel",
        forward=fwd,
        modules=[vae.encoder, vae.quant_conv, dit],
        e2e=lambda paths, bs: _batched(paths, bs, e2e_batch),
        e2e_name="diffusers: PIL decode + center_crop_arr + VAE + DiT forward",
        note=f"peer runs all {len(dit.transformer_blocks)} DiT blocks (diffusers has no early exit); ours stops "
        f"after block {layer}, the feature block",
    )


# -- images ----------------------------------------------------------------------------------------------------------
def write_images(n: int, root: Path | None = None) -> list[str]:
    """``n`` JPEG files: random crops (varying sizes and aspect ratios) of four ``skimage.data`` photos."""
    import skimage.data as d
    from PIL import Image

    folder = (root or cache_root()) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:05d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    base = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket()]
    rng = np.random.default_rng(0)
    for i, p in enumerate(paths):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if not p.exists():
            Image.fromarray(np.ascontiguousarray(img[y : y + ch, x : x + cw])).save(p, quality=90)
    return [str(p) for p in paths]


def describe(path: Path) -> dict[str, Any]:
    """A short description of a checkpoint directory (format + the config that defines its size)."""
    if (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
        cfg = json.loads((path / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]
        return {"format": "open_clip", "vision_cfg": cfg}
    if (path / "model_index.json").is_file():
        cfg = json.loads((path / "transformer" / "config.json").read_text())
        keep = ("num_layers", "num_attention_heads", "attention_head_dim", "patch_size", "sample_size")
        return {"format": "diffusers", "transformer": {k: cfg[k] for k in keep}}
    cfg = json.loads((path / "config.json").read_text())
    vc = cfg.get("vision_config", cfg)
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    return {"format": "transformers", "model_type": cfg.get("model_type"), **{k: vc.get(k) for k in keep if k in vc}}
