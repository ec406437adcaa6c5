"""A toy self-supervised encoder, trained from scratch on toyworld images only (no caption, no label).

Two objectives (``ssl.objective``):

- ``dino``: self-distillation (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV
  2021). A student ViT and its exponential-moving-average teacher each end in a projection head over
  ``prototypes`` outputs; every image gives two global views and a few small local views, and the student, shown
  every view, is trained to predict the teacher's centred, sharpened distribution on the global views of the same
  image (cross-entropy, never a view against itself). The teacher's momentum follows a cosine from ``momentum`` to
  1 and its temperature warms up from ``teacher_temp_start`` to ``teacher_temp``. Its outputs are centred by DINO's
  EMA of the batch mean (``ssl.centering: ema``) or, the default, by Sinkhorn-Knopp equipartition as in DINOv2
  (Oquab et al., 2023).
- ``simclr``: SimCLR's NT-Xent between the two global views (Chen et al., ICML 2020).

Views are random resized crops with flips and quarter turns, 20 % grey (``grey_prob``), and optionally colour
channels permuted (``permute_prob``) or inverted (``invert_prob``) per view, which makes colour uninformative so that
the encoder would have to encode shape. The shipped recipe (``recipes/toyworld_ssl.yaml``) is DINO with Sinkhorn-Knopp
centring and colour kept: under channel shuffling DINO's loss stayed at ``log(prototypes)`` in every try (both
centrings, 100-260 steps each) and SimCLR's shape kNN stalled near 26 %; docs/toyworld.md has the runs.

Architectures (``model.arch``): ``visionfm_conv_stem_vit`` (the recipe's; a timm ViT whose tokens come from a small
CNN stem, :mod:`visionfm.foundation.towers`), saved in timm's own format (``config.json`` + ``model.safetensors``,
loaded by the ``timm`` family), or ``vit``, a transformers ``ViTModel`` with a plain patch embedding, saved in DINO
v1's format (loaded by the ``dino`` family; the default when ``model.arch`` is absent). Either serves as ProxyCLIP's proxy
(``pipeline("zero-shot-seg", mode="proxy", proxy=path)``) and as the distillation recipe's second teacher.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..training.loop import TrainConfig, Trainer
from .datasets import training_world_args
from .world import ToyWorld

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _crop_resize(img: torch.Tensor, rng: np.random.Generator, scale: tuple[float, float], out: int) -> torch.Tensor:
    """A random square crop covering ``scale`` of the image area, resized bilinearly to ``out`` px. ``img``: float
    ``[3, S, S]``."""
    size = img.shape[-1]
    side = int(round(size * math.sqrt(rng.uniform(*scale))))
    side = max(8, min(size, side))
    y, x = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    crop = img[:, y : y + side, x : x + side]
    if side != out:
        crop = F.interpolate(crop[None], size=(out, out), mode="bilinear", align_corners=False, antialias=True)[0]
    return crop


def _photometric(img: torch.Tensor, rng: np.random.Generator, grey_prob: float, permute_prob: float,
                 invert_prob: float) -> torch.Tensor:  # fmt: skip
    """Colour made less informative: channels permuted (``permute_prob``), then grey (``grey_prob``) or inverted
    (``invert_prob``), then a brightness / contrast jitter. ``img``: float ``[3, h, w]`` in ``[0, 1]``."""
    if rng.random() < permute_prob:
        img = img[torch.from_numpy(rng.permutation(3))]
    if rng.random() < grey_prob:
        img = (img * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True).expand(3, -1, -1)
    if rng.random() < invert_prob:
        img = 1.0 - img
    contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-0.15, 0.15)
    return ((img - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)


def _geometric(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < 0.5:
        img = img.flip(-1)
    return torch.rot90(img, int(rng.integers(4)), dims=(-2, -1))


class ToyViewsDataset(Dataset):
    """Toyworld scenes as DINO multi-crop views.

    Each item is ``(global_views [2, 3, S, S], local_views [L, 3, s, s])``: ImageNet-normalised float crops, ``S`` =
    the image size, ``s`` = ``local_size``. Deterministic in ``(seed, index, epoch)``.
    """

    def __init__(self, world: Any, *, local_crops: int = 4, local_size: int = 32,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.1, 0.4),
                 grey_prob: float = 0.2, permute_prob: float = 1.0, invert_prob: float = 0.1,
                 seed: int = 0) -> None:  # fmt: skip
        if local_crops < 0:
            raise ValueError(f"data.local_crops must be >= 0, got {local_crops}")
        self.world, self.local_crops, self.local_size, self.seed = world, local_crops, local_size, seed
        self.global_scale, self.local_scale, self.grey_prob = tuple(global_scale), tuple(local_scale), grey_prob
        self.permute_prob, self.invert_prob = permute_prob, invert_prob
        self.epoch = 0
        self._mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        self._std = torch.tensor(IMAGENET_STD)[:, None, None]

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop at each epoch start (changes the views)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.world)

    def _view(self, img: torch.Tensor, rng: np.random.Generator, scale: tuple[float, float], out: int) -> torch.Tensor:
        v = _photometric(
            _geometric(_crop_resize(img, rng, scale, out), rng),
            rng,
            self.grey_prob,
            self.permute_prob,
            self.invert_prob,
        )
        return (v - self._mean) / self._std

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = self.world[i]
        rng = np.random.default_rng([self.seed, i, self.epoch])
        img = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0
        size = img.shape[-1]
        glob = torch.stack([self._view(img, rng, self.global_scale, size) for _ in range(2)])
        if not self.local_crops:
            return glob, torch.zeros(0, 3, self.local_size, self.local_size)
        loc = torch.stack([self._view(img, rng, self.local_scale, self.local_size) for _ in range(self.local_crops)])
        return glob, loc


class DinoHead(nn.Module):
    """DINO's projection head: a 3-layer MLP (GELU) to an L2-normalised bottleneck, then a weight-normalised linear
    layer to ``prototypes`` logits (its norm fixed at 1)."""

    def __init__(self, dim: int, hidden: int = 256, bottleneck: int = 64, prototypes: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))  # fmt: skip
        self.last = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.last, dim=-1).t()


class DinoPair(nn.Module):
    """Student (trained) and teacher (EMA, no gradient) ViT + head, the teacher's centre and the step count — one
    module, so a checkpoint holds all the training state and a resumed run continues exactly."""

    def __init__(self, backbone: nn.Module, head: DinoHead) -> None:
        super().__init__()
        self.student, self.student_head = backbone, head
        self.teacher, self.teacher_head = copy.deepcopy(backbone), copy.deepcopy(head)
        for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, head.last.shape[0]))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``[B, C]``: a transformers ViT's layer-normed CLS token (position table interpolated
        for local views), or a timm model's pre-logits."""
        if hasattr(vit, "forward_head"):
            return vit.forward_head(vit.forward_features(x), pre_logits=True)
        out = vit(pixel_values=x, interpolate_pos_encoding=x.shape[-1] != vit.config.image_size)
        return out.last_hidden_state[:, 0]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for t, s in zip(
            [*self.teacher.parameters(), *self.teacher_head.parameters()],
            [*self.student.parameters(), *self.student_head.parameters()],
            strict=True,
        ):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def sinkhorn_knopp(logits: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Teacher targets by Sinkhorn-Knopp (SwAV; DINOv2's centering): ``logits`` ``[B, K]`` (already divided by the
    temperature) become assignments ``[B, K]`` whose rows sum to 1 and whose columns are (nearly) equal in mass, so
    the batch cannot collapse onto one prototype or onto the uniform distribution."""
    q = torch.exp(logits - logits.max()).t()  # [K, B]
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def _simclr_loss(m: DinoPair, glob: torch.Tensor, temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SimCLR's NT-Xent (Chen et al., ICML 2020) on the two global views: each view's positive is the other view of
    its image, its negatives the other ``2B - 2`` views of the batch; the projection is the head's MLP (L2-normed)."""
    b = glob.shape[0]
    g = glob.transpose(0, 1).reshape(2 * b, *glob.shape[2:])
    z = F.normalize(m.student_head.mlp(m.embed(m.student, g)).float(), dim=-1)
    sim = (z @ z.t() / temperature).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(sim.device)
    loss = F.cross_entropy(sim, target)
    with torch.no_grad():
        acc = (sim.argmax(-1) == target).float().mean()
    return loss, {"pair_acc": float(acc)}


def _vit_config(model_cfg: dict[str, Any]) -> Any:
    from transformers import ViTConfig

    width = int(model_cfg["width"])
    return ViTConfig(
        image_size=int(model_cfg["image_size"]), patch_size=int(model_cfg["patch_size"]), hidden_size=width,
        num_hidden_layers=int(model_cfg["layers"]), num_attention_heads=int(model_cfg["heads"]),
        intermediate_size=int(model_cfg.get("mlp_ratio", 4)) * width, qkv_bias=True, layer_norm_eps=1e-6,
    )  # fmt: skip


def run(recipe: dict[str, Any]) -> Path:
    """Train a toy DINO ViT from scratch; returns the transformers checkpoint directory (the run's output_dir)."""
    from transformers import ViTImageProcessor, ViTModel

    model_cfg = dict(recipe["model"])
    data_cfg = dict(recipe.get("data", {}))
    ssl_cfg = dict(recipe.get("ssl", {}))
    objective = str(ssl_cfg.get("objective", "dino"))
    if objective not in ("dino", "simclr"):
        raise ValueError(f"ssl.objective must be 'dino' or 'simclr', got {objective!r}")
    view_keys = ("local_crops", "local_size", "global_scale", "local_scale", "grey_prob", "permute_prob", "invert_prob")
    views = {k: data_cfg.pop(k) for k in view_keys if k in data_cfg}
    train_cfg = TrainConfig.from_dict(dict(recipe["train"]))
    image = int(model_cfg["image_size"])
    data_cfg = training_world_args(data_cfg, image, "ssl_pretrain")
    torch.manual_seed(train_cfg.seed)
    arch = str(model_cfg.get("arch", "vit"))
    if arch == "vit":
        backbone = ViTModel(_vit_config(model_cfg), add_pooling_layer=False)
    else:
        import timm

        from ..foundation.towers import register

        register()
        timm_args = dict(
            img_size=image,
            patch_size=int(model_cfg["patch_size"]),
            embed_dim=int(model_cfg["width"]),
            depth=int(model_cfg["layers"]),
            num_heads=int(model_cfg["heads"]),
            dynamic_img_size=True,
        )
        backbone = timm.create_model(arch, num_classes=0, **timm_args)
    head = DinoHead(int(model_cfg["width"]), int(ssl_cfg.get("head_hidden", 256)),
                    int(ssl_cfg.get("bottleneck", 64)), int(ssl_cfg.get("prototypes", 256)))  # fmt: skip
    pair = DinoPair(backbone, head)
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = ToyViewsDataset(ToyWorld(**data_cfg), seed=train_cfg.seed, **views)
    m0, t_start = float(ssl_cfg.get("momentum", 0.99)), float(ssl_cfg.get("teacher_temp_start", 0.04))
    t_end, warm = float(ssl_cfg.get("teacher_temp", 0.07)), float(ssl_cfg.get("teacher_temp_warmup", 0.3))
    s_temp, c_mom = float(ssl_cfg.get("student_temp", 0.1)), float(ssl_cfg.get("center_momentum", 0.9))
    centering = str(ssl_cfg.get("centering", "sinkhorn"))
    if centering not in ("sinkhorn", "ema"):
        raise ValueError(f"ssl.centering must be 'sinkhorn' or 'ema', got {centering!r}")
    total = train_cfg.max_steps

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        glob, loc = batch
        step = int(m.steps)
        if objective == "simclr":
            m.steps += 1
            return _simclr_loss(m, glob, float(ssl_cfg.get("temperature", 0.2)))
        if step > 0:  # the teacher follows the student after every optimizer step (DINO's cosine momentum)
            m.update_teacher(1 - (1 - m0) * (math.cos(math.pi * min(step / total, 1.0)) + 1) / 2)
        m.steps += 1
        b = glob.shape[0]
        g = glob.transpose(0, 1).reshape(2 * b, *glob.shape[2:])  # view-major: [view 0 of every image, view 1 ...]
        with torch.no_grad():
            t_out = m.teacher_head(m.embed(m.teacher, g)).float()
            t_temp = t_end if step >= warm * total else t_start + (t_end - t_start) * step / max(warm * total, 1)
            if centering == "sinkhorn":
                t_prob = sinkhorn_knopp(t_out / t_temp).chunk(2)
            else:
                t_prob = F.softmax((t_out - m.center) / t_temp, dim=-1).chunk(2)
                m.center.mul_(c_mom).add_(t_out.mean(0, keepdim=True), alpha=1 - c_mom)
        s_views = [m.student_head(m.embed(m.student, g)).float()]
        if loc.shape[1]:
            lv = loc.transpose(0, 1).reshape(-1, *loc.shape[2:])
            s_views.append(m.student_head(m.embed(m.student, lv)).float())
        s_logp = torch.cat(s_views).div(s_temp).log_softmax(-1).chunk(2 + loc.shape[1])
        terms = [-(tp * sp).sum(-1).mean() for ti, tp in enumerate(t_prob) for si, sp in enumerate(s_logp) if si != ti]
        loss = torch.stack(terms).mean()
        with torch.no_grad():
            entropy = -(t_prob[0] * t_prob[0].clamp_min(1e-12).log()).sum(-1).mean()
            used = torch.cat(t_prob).argmax(-1).unique().numel()
        return loss, {"teacher_entropy": float(entropy), "prototypes_used": float(used), "teacher_temp": t_temp}

    trainer = Trainer(pair, loss_fn, dataset, train_cfg)
    last = trainer.fit()
    if trainer.accelerator.is_main_process:
        pair = trainer.unwrapped_model()
        final = pair.teacher if objective == "dino" else pair.student  # DINO keeps the teacher: the better of the two
        if arch == "vit":
            final.save_pretrained(out, safe_serialization=True)
            ViTImageProcessor(do_resize=True, size={"height": image, "width": image}, image_mean=list(IMAGENET_MEAN),
                              image_std=list(IMAGENET_STD)).save_pretrained(out)  # fmt: skip
        else:  # timm's own hub format (config.json with the architecture and its args, model.safetensors)
            from timm.models._hub import save_for_hf

            final.pretrained_cfg = {**final.pretrained_cfg, "input_size": (3, image, image), "crop_pct": 1.0,
                                    "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # fmt: skip
            save_for_hf(final, str(out), model_args=timm_args, safe_serialization=True)
        (out / "train_summary.json").write_text(json.dumps({"recipe": recipe, "last_metrics": last}, indent=2))
    logger.info("wrote a DINO ViT checkpoint to %s", out)
    return out


@torch.no_grad()
def knn_accuracy(path: str | Path | Any, *, kind: str = "shape", num_bank: int = 600, num_query: int = 600,
                 query_split: str = "heldout", k: int = 20, temperature: float = 0.07, seed: int = 1234,
                 batch_size: int = 200) -> float:  # fmt: skip
    """Weighted kNN classification (DINO's protocol: cosine similarity, the top ``k`` neighbours vote with weight
    ``exp(sim / temperature)``) of single-object toyworld scenes by the encoder's pooled features.

    Args:
        path: any encoder ``visionfm.load_encoder`` takes, or a loaded :class:`~visionfm.foundation.encoder.Encoder`.
        kind: ``"shape"``, ``"colour"`` or ``"colour_shape"``.
        num_bank: labelled scenes from the ``train`` split (seen compositions), seed ``seed``.
        num_query: scenes from ``query_split`` (``heldout``: the six compositions never seen), seed ``seed + 1``.
        k, temperature: the vote.
        seed: toyworld seed.
        batch_size: images per forward pass.

    Returns:
        top-1 accuracy in ``[0, 1]`` over the ``num_query`` scenes.
    """
    from ..foundation.loading import load_encoder
    from .world import class_names

    if num_bank < k:
        raise ValueError(f"num_bank ({num_bank}) must be at least k ({k})")
    enc = (path if isinstance(path, nn.Module) else load_encoder(str(path))).eval()
    names = class_names(kind)

    def features(split: str, n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        world = ToyWorld(split, n, seed=s, min_objects=1, max_objects=1)
        feats, labels = [], []
        for start in range(0, n, batch_size):
            scenes = [world[i] for i in range(start, min(n, start + batch_size))]
            imgs = [torch.from_numpy(sc.image).permute(2, 0, 1) for sc in scenes]
            feats.append(F.normalize(enc(enc.preprocess(imgs)).pooled.float(), dim=-1))
            labels += [names.index(sc.label_name(kind)) for sc in scenes]
        return torch.cat(feats), torch.tensor(labels)

    bank, bank_y = features("train", num_bank, seed)
    query, query_y = features(query_split, num_query, seed + 1)
    sim, idx = (query @ bank.t()).topk(k, dim=-1)
    votes = torch.zeros(len(query), len(names)).scatter_add_(1, bank_y[idx], (sim / temperature).exp())
    return float((votes.argmax(-1) == query_y).float().mean())
