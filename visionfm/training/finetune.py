"""Recipe task ``classification``: fine-tune any encoder with a head: frozen (linear probe), PEFT adapter, or full.

```yaml
task: classification
model: toyworld-clip                     # anything load_encoder accepts
tuning: lora                             # linear_probe | full | lora | dora | loha | lokr | ia3 | coop (CLIP)
coop: {n_ctx: 4, init: "a photo of a"}   # options of visionfm.adapters.PromptLearner (tuning: coop)
eval_suite: toyworld                     # optional: run this suite on the tuned encoder at the end
adapter: {r: 8, targets: attention}      # options of visionfm.adapters.attach (adapter methods only)
head: {kind: linear}                     # linear | mlp (hidden: 512)
data:
  train: {source: toyworld, split: train, num: 2000, label: shape}   # any eval-suite dataset source
  test:  {source: toyworld, split: test, num: 600, label: shape}
train: {output_dir: runs/lora, max_steps: 300, batch_size: 64, lr: 1e-3, ...}     # the shared loop's TrainConfig
```
The run directory gets the loop's checkpoints and ``metrics.jsonl``, then ``adapter/`` (a standard PEFT adapter
directory, for adapter methods), ``encoder.safetensors`` (full fine-tuning), ``head.safetensors``, and ``eval.json``
(test acc1/acc5/mean per-class recall through :class:`~visionfm.eval.metrics.ClassificationMetric`, with the
trainable and total parameter counts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .loop import TrainConfig, Trainer
from .registry import evaluators, register_task

logger = logging.getLogger(__name__)

TUNINGS = ("linear_probe", "full", "lora", "dora", "loha", "lokr", "ia3", "coop")


class CoOpClassifier(torch.nn.Module):
    """CLIP with CoOp's learnable text context as the classifier: logits ``[B, K]`` (only the context trains)."""

    def __init__(self, encoder: Any, learner: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.learner = learner

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from ..adapters import coop_logits

        return coop_logits(self.encoder, self.learner, pixel_values)


class PreprocessedDataset(Dataset):
    """``(pixel_values [3, H, W], label)`` from an eval dataset; unreadable samples raise (the loop skips them)."""

    def __init__(self, ds: Any, encoder: Any) -> None:
        self.ds = ds
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.ds[i]
        if s["image"] is None:
            raise ValueError(f"sample {s['id']}: {s['error']}")
        return self.encoder.preprocess([s["image"]])[0].float(), int(s["label"])


def _trainable(module: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


@register_task("classification")
def run(recipe: dict[str, Any]) -> Path:
    """Fine-tune and evaluate; returns the run directory."""
    from safetensors.torch import save_file

    from ..adapters.heads import ClassificationHead, EncoderWithHead
    from ..data.datasets import build_dataset
    from ..foundation.loading import load_encoder
    from .metrics import ClassificationMetric

    tuning = str(recipe.get("tuning", "lora"))
    if tuning not in TUNINGS:
        raise ValueError(f"recipe tuning must be one of {TUNINGS}, got {tuning!r}")
    if "model" not in recipe or "data" not in recipe or "train" not in recipe.get("data", {}):
        raise ValueError("a classification recipe needs 'model', 'data.train' (and usually 'data.test') and 'train'")
    cfg = TrainConfig.from_dict(dict(recipe["train"]))
    torch.manual_seed(cfg.seed)
    encoder = load_encoder(str(recipe["model"]), device="cpu", dtype="fp32")
    train_ds = build_dataset("train", recipe["data"]["train"])
    names = list(recipe.get("classnames") or train_ds.classnames)
    if not names:
        raise ValueError("data.train has no class names; give 'classnames'")
    for p in encoder.parameters():
        p.requires_grad_(tuning == "full")
    if tuning == "coop":  # CLIP prompt learning: the text side is the classifier, no head
        from ..adapters import PromptLearner

        model = CoOpClassifier(encoder, PromptLearner(encoder, names, **dict(recipe.get("coop") or {})))
    else:
        if tuning not in ("linear_probe", "full"):
            from .. import adapters

            adapters.attach(encoder, tuning, **dict(recipe.get("adapter") or {}))
        head_cfg = dict(recipe.get("head") or {})
        model = EncoderWithHead(encoder, ClassificationHead(encoder.info.embed_dim, len(names), **head_cfg))
    trainable, total = _trainable(model)
    logger.info("%s: %d trainable of %d parameters", tuning, trainable, total)
    loss_f = torch.nn.CrossEntropyLoss()

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        logits = m(x)
        loss = loss_f(logits.float(), y)
        return loss, {"acc": float((logits.argmax(-1) == y).float().mean())}

    trainer = Trainer(model, loss_fn, PreprocessedDataset(train_ds, encoder), cfg)
    last = trainer.fit()
    out = Path(cfg.output_dir)
    result: dict[str, Any] = {"tuning": tuning, "trainable_parameters": trainable, "total_parameters": total,
                              "last_train_metrics": last, "classnames": names}  # fmt: skip
    if "test" in recipe["data"]:
        test_ds = build_dataset("test", recipe["data"]["test"])
        metric = ClassificationMetric(len(names))
        m = trainer.unwrapped_model().eval()
        skipped = 0
        with torch.inference_mode():
            for lo in range(0, len(test_ds), cfg.batch_size):
                samples = [test_ds[i] for i in range(lo, min(lo + cfg.batch_size, len(test_ds)))]
                good = [s for s in samples if s["image"] is not None]
                skipped += len(samples) - len(good)
                if good:
                    x = encoder.preprocess([s["image"] for s in good]).float()
                    metric.update(m(x).cpu(), torch.tensor([s["label"] for s in good]))
        result["test"] = dict(metric.compute(), skipped=skipped)
        logger.info("test acc1 %.4f", result["test"]["acc1"])
    for key, evaluate in evaluators().items():  # e.g. eval_suite: the adapted encoder through an eval suite
        if recipe.get(key):
            result[key] = evaluate(recipe[key], encoder, out / key)
    if trainer.accelerator.is_main_process:
        mdl = trainer.unwrapped_model()
        if tuning == "coop":
            mdl.learner.save(out / "coop_context.safetensors")
        else:
            save_file({k: v.detach().cpu().contiguous() for k, v in mdl.head.state_dict().items()},
                      str(out / "head.safetensors"))  # fmt: skip
        if tuning == "full":
            sd = {k: v.detach().cpu().contiguous() for k, v in mdl.encoder.state_dict().items()}
            save_file(sd, str(out / "encoder.safetensors"))
        elif tuning not in ("linear_probe", "coop"):
            from .. import adapters

            adapters.save(mdl.encoder, out / "adapter")
        (out / "eval.json").write_text(json.dumps({"recipe": recipe, **result}, indent=1, default=str))
    return out


class SegmentationDataset(Dataset):
    """``(pixel_values [3, S, S], target [S, S] long)``: image and label map resized to the model's square input
    (bilinear / nearest; aspect not kept); unreadable samples or samples without a target raise (skipped)."""

    def __init__(self, ds: Any, encoder: Any) -> None:
        self.ds = ds
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        s = self.ds[i]
        if s["image"] is None or s["target"] is None:
            raise ValueError(f"sample {s['id']}: {s['error'] or 'no segmentation target'}")
        size = tuple(self.encoder.info.image_size)
        x = F.interpolate(s["image"][None].float() / 255, size, mode="bilinear", antialias=True, align_corners=False)
        t = torch.as_tensor(s["target"]).long()[None, None].float()
        t = F.interpolate(t, size, mode="nearest")[0, 0].long()
        return self.encoder.normalize(x)[0].float().cpu(), t


@register_task("segmentation")
def run_segmentation(recipe: dict[str, Any]) -> Path:
    """Train a segmentation head (frozen, adapted or full encoder) on label maps; test mIoU in ``eval.json``.

    Recipe as for ``classification``, with ``head: {kind: linear | upsample}``, datasets whose samples carry
    label maps (e.g. ``{source: toyworld, target: semantic_colour, max_objects: 2}``), and ``classnames`` (the
    foreground classes; label 0 is background).
    """
    from safetensors.torch import save_file

    from ..adapters.heads import EncoderWithHead, SegmentationHead
    from ..data.datasets import build_dataset
    from ..foundation.loading import load_encoder
    from .metrics import SegmentationMetric

    tuning = str(recipe.get("tuning", "lora"))
    if tuning == "coop":
        raise ValueError("tuning: coop learns a text classifier; it applies to the classification task only")
    if tuning not in TUNINGS:
        raise ValueError(f"recipe tuning must be one of {TUNINGS}, got {tuning!r}")
    if "model" not in recipe or "train" not in recipe.get("data", {}) or not recipe.get("classnames"):
        raise ValueError("a segmentation recipe needs 'model', 'classnames', 'data.train' and 'train'")
    cfg = TrainConfig.from_dict(dict(recipe["train"]))
    torch.manual_seed(cfg.seed)
    encoder = load_encoder(str(recipe["model"]), device="cpu", dtype="fp32")
    k = len(recipe["classnames"]) + 1
    for p in encoder.parameters():
        p.requires_grad_(tuning == "full")
    if tuning not in ("linear_probe", "full"):
        from .. import adapters

        adapters.attach(encoder, tuning, **dict(recipe.get("adapter") or {}))
    model = EncoderWithHead(encoder, SegmentationHead(encoder.info.width, k, **dict(recipe.get("head") or {})))
    trainable, total = _trainable(model)

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, t = batch
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits.float(), t), {}

    trainer = Trainer(
        model, loss_fn, SegmentationDataset(build_dataset("train", recipe["data"]["train"]), encoder), cfg
    )
    last = trainer.fit()
    out = Path(cfg.output_dir)
    result: dict[str, Any] = {"tuning": tuning, "trainable_parameters": trainable, "total_parameters": total,
                              "last_train_metrics": last, "classnames": ["background", *recipe["classnames"]]}  # fmt: skip
    if "test" in recipe["data"]:
        test = SegmentationDataset(build_dataset("test", recipe["data"]["test"]), encoder)
        metric = SegmentationMetric(k)
        m = trainer.unwrapped_model().eval()
        with torch.inference_mode():
            for i in range(len(test)):
                try:
                    x, t = test[i]
                except ValueError:
                    continue
                metric.update(m(x[None]).argmax(1)[0], t)
        res = metric.compute()
        result["test"] = {key: res[key] for key in ("mIoU", "aAcc", "mAcc", "IoU")}
    if trainer.accelerator.is_main_process:
        mdl = trainer.unwrapped_model()
        save_file(
            {kk: v.detach().cpu().contiguous() for kk, v in mdl.head.state_dict().items()},
            str(out / "head.safetensors"),
        )
        if tuning == "full":
            save_file({kk: v.detach().cpu().contiguous() for kk, v in mdl.encoder.state_dict().items()},
                      str(out / "encoder.safetensors"))  # fmt: skip
        elif tuning != "linear_probe":
            from .. import adapters

            adapters.save(mdl.encoder, out / "adapter")
        (out / "eval.json").write_text(json.dumps({"recipe": recipe, **result}, indent=1, default=str))
    return out
