"""A small but complete training run, used by test_loop.py in subprocesses (so it can be SIGKILLed).

Usage: python resume_prog.py OUT_DIR MAX_STEPS SLEEP_S [KEY=VALUE ...]
(``KEY=VALUE``: TrainConfig fields to override, values parsed as YAML). Prints ``fit()``'s result as JSON.
It exercises dropout (RNG state), an epoch-dependent dataset (set_epoch), a bad sample (skip + count),
gradient accumulation, bf16 autocast and the cosine schedule.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from visionfm.training import TrainConfig, Trainer


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        if i == 7:
            raise ValueError("corrupt sample")
        g = torch.Generator().manual_seed(i * 100 + self.epoch)
        x = torch.randn(8, generator=g)
        return {"x": x, "y": (x.sum() > 0).long()}


def build(out: str, max_steps: int, sleep: float = 0.0, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 2))

    def loss_fn(m, batch):
        if sleep:
            time.sleep(sleep)
        logits = m(batch["x"])
        loss = nn.functional.cross_entropy(logits.float(), batch["y"])
        return loss, {"acc": float((logits.argmax(-1) == batch["y"]).float().mean())}

    cfg = TrainConfig(
        output_dir=out,
        max_steps=max_steps,
        batch_size=4,
        grad_accum_steps=2,
        lr=1e-2,
        warmup_steps=3,
        save_every=4,
        log_every=2,
        mixed_precision="bf16",
        progress=False,
        seed=3,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return Trainer(model, loss_fn, Data(), cfg)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    import json

    import yaml

    out, steps, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    overrides = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])}
    trainer = build(out, steps, sleep, **overrides)
    print(json.dumps(trainer.fit()))
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in trainer.unwrapped_model().state_dict().items()}, f"{out}/final.safetensors"
    )
