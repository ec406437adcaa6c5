"""The one training loop: Accelerate, mixed precision, accumulation, cosine warm-up, exact resume.

Adapters, distillation and pretraining recipes all train through :class:`Trainer`. A recipe supplies a
model, a ``loss_fn(model, batch) -> (loss, metrics)`` and a dataset; the loop owns everything else.

Exact resume. Every ``save_every`` optimizer steps the loop writes ``accelerator.save_state`` (model as
safetensors, optimizer, RNG states; all read back with ``weights_only=True``) plus a JSON trainer state
into ``output_dir/checkpoints/step_XXXXXXXX``, renamed into place only when complete, so a kill during a
save leaves the previous checkpoint intact. Data order is a pure function of ``(seed, epoch)`` and the
learning rate a pure function of the step, so a run killed with SIGKILL and resumed ends with the same
weights as an uninterrupted run. ``metrics.jsonl`` lines written after the last checkpoint are dropped
on resume, so no step is counted twice.

Bad samples. A dataset item that raises is skipped, logged and counted (``skipped_samples`` in the
metrics and the trainer state); training goes on with the rest of the batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, float]]"]
_CKPT_PREFIX = "step_"
#: set by :func:`visionfm.training.recipes.run_recipe`: ``check(output_dir, resuming)`` records the recipe in the run
#: directory and refuses to resume a directory made by another recipe (called by :meth:`Trainer.fit`)
RUN_DIR_CHECK: contextvars.ContextVar[Callable[[Path, bool], None] | None] = contextvars.ContextVar(
    "RUN_DIR_CHECK", default=None
)
#: ``fn(step, max_steps)`` callables told of every optimizer step of the runs in this context (thread); see
#: :func:`progress_listener`
_STEP_LISTENERS: contextvars.ContextVar[tuple[Callable[[int, int], None], ...]] = contextvars.ContextVar(
    "_STEP_LISTENERS", default=()
)
_MANIFEST = "manifest.json"
_CONFIG_FILE = "train_config.json"
#: TrainConfig fields that may change between a run and its resumption: ``output_dir`` (the run may be moved),
#: ``progress`` (the bar), ``resume`` (the switch itself) change nothing; ``max_steps`` extends (or shortens) a run,
#: the cosine schedule following the new length from the resumed step on.
RESUME_EXEMPT = frozenset({"output_dir", "progress", "resume", "max_steps"})


@dataclass
class TrainConfig:
    """Settings of one training run (a recipe's ``train:`` section).

    Attributes:
        output_dir: run directory (checkpoints, ``metrics.jsonl``, tensorboard logs).
        max_steps: optimizer steps to train for.
        batch_size: micro-batch size per process.
        grad_accum_steps: micro-batches per optimizer step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings' 1-d params).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: linear warm-up from 0 to ``lr``.
        min_lr_ratio: cosine decay floor, as a fraction of ``lr``.
        max_grad_norm: gradient clipping norm (``None``: off).
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate autocast).
        save_every: checkpoint every this many optimizer steps (and at the end).
        keep_last: checkpoints to keep.
        log_every: metrics line every this many steps.
        seed: seeds model init (via the recipe), data order and RNG.
        num_workers: DataLoader worker processes.
        resume: continue from the newest complete checkpoint in ``output_dir`` if there is one.
        progress: show a tqdm bar.
    """

    output_dir: str
    max_steps: int
    batch_size: int = 64
    grad_accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # YAML 1.1 reads "1e-4" as a string: coerce numbers
            v = getattr(self, f.name)
            if isinstance(v, str) and f.type in ("float", "float | None", "int"):
                try:
                    setattr(self, f.name, (float if "float" in f.type else int)(v))
                except ValueError:
                    raise ValueError(f"train.{f.name} must be a number, got {v!r}") from None
        from .schema import check_train_types

        check_train_types(self)  # e.g. `max_steps: true`, `batch_size: 2.5`, `betas: 0.9` name the key
        for name in ("max_steps", "batch_size", "grad_accum_steps", "save_every", "log_every", "keep_last"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.mixed_precision is False or self.mixed_precision is None:  # YAML 1.1 reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("train.warmup_steps must be >= 0 and train.min_lr_ratio in [0, 1]")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, failing on unknown keys with the list of valid ones."""
        import difflib

        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(d) - set(valid))
        if unknown:
            hints = {k: difflib.get_close_matches(k, valid, n=3) for k in unknown}
            said = ", ".join(f"{k!r}" + (f" (did you mean {' or '.join(map(repr, h))}?)" if h else "")
                             for k, h in hints.items())  # fmt: skip
            raise ValueError(f"unknown train option(s) {said}; valid: {valid}")
        missing = [k for k in ("output_dir", "max_steps") if k not in d]
        if missing:
            raise ValueError(f"train.{missing[0]} is required")
        return cls(**d)


@contextlib.contextmanager
def progress_listener(fn: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, call ``fn(step, max_steps)`` after every optimizer step of the training runs of this thread
    (the tqdm bar's numbers, for a progress display that is not a terminal, e.g. ``visionfm app``'s page).

    Args:
        fn: called with the step just finished (1-based) and the run's ``max_steps``; it should return quickly.
    """
    token = _STEP_LISTENERS.set((*_STEP_LISTENERS.get(), fn))
    try:
        yield
    finally:
        _STEP_LISTENERS.reset(token)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices, none on biases, norms, scalars and 1-d embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "logit_bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _SkipBad(Dataset):
    """Wraps a map-style dataset: an item that raises becomes ``None`` (logged), to be dropped in collate."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[i]
        except Exception as e:  # noqa: BLE001 - a bad sample must not kill a long run
            logger.warning("skipping bad sample %d: %s: %s", i, type(e).__name__, e)
            return None


class _Collate:
    """Drops skipped (``None``) items, then applies the user's collate; returns ``(batch, n_skipped)``."""

    def __init__(self, collate: Callable[[list[Any]], Any] | None) -> None:
        self.collate = collate or torch.utils.data.default_collate

    def __call__(self, items: list[Any]) -> tuple[Any, int]:
        good = [x for x in items if x is not None]
        return (self.collate(good) if good else None), len(items) - len(good)


@dataclass
class TrainState:
    """What a checkpoint records beyond Accelerate's state (JSON, no pickle)."""

    step: int = 0
    micro_batches: int = 0
    skipped_samples: int = 0
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def make_accelerator(**kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` that works in every setting this library runs in.

    - Without GPUs it passes ``cpu=True``: that is what makes Accelerate set up gloo under ``torchrun`` /
      ``accelerate launch``, so several CPU processes really share the work.
    - In a single process it first clears Accelerate's process-wide state. Accelerate keeps one state per
      process and refuses a second ``Accelerator`` with other settings (e.g. an evaluation, then bf16 training in
      the same Python session). Distributed runs keep their state.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    kwargs.setdefault("cpu", not torch.cuda.is_available())
    return Accelerator(**kwargs)


class Trainer:
    """Runs a recipe's model + loss on a dataset under Accelerate.

    Args:
        model: the module to train (its trainable parameters are optimised).
        loss_fn: ``loss_fn(model, batch) -> (loss, metrics)``; ``metrics`` are floats to log.
        train_data: a map-style ``Dataset`` (shuffled per epoch from ``(seed, epoch)``; a ``set_epoch``
            method, if present, is called at each epoch start) or an ``IterableDataset`` such as
            webdataset shards (read in order; it must itself be deterministic per epoch for exact
            resume, e.g. shuffle seeded from ``set_epoch``).
        config: the :class:`TrainConfig`.
        collate_fn: merges a list of items into a batch (default: ``default_collate``).
        param_groups: optimizer parameter groups (default: :func:`default_param_groups`).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: Dataset | IterableDataset,
        config: TrainConfig,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:

        self.cfg = config
        self.out = Path(config.output_dir)
        self.accelerator = make_accelerator(mixed_precision=config.mixed_precision, project_dir=str(self.out))
        self.loss_fn = loss_fn
        self.data = train_data
        self.iterable = isinstance(train_data, IterableDataset)
        self.collate = _Collate(collate_fn)
        groups = param_groups or default_param_groups(model, config.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.state = TrainState()
        self._tb = None

    # -- paths & checkpoints --------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        """Where ``step_XXXXXXXX`` checkpoints live."""
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        done = self.complete_checkpoints()
        return done[0] if done else None

    def save_checkpoint(self) -> Path:
        """Write the full training state atomically; prune old checkpoints."""
        acc = self.accelerator
        final = self.checkpoint_dir / f"{_CKPT_PREFIX}{self.state.step:08d}"
        tmp = self.checkpoint_dir / f".tmp-{final.name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / _CONFIG_FILE).write_text(json.dumps(_config_fingerprint(self.cfg), indent=1))
            (tmp / "trainer_state.json").write_text(json.dumps(dataclasses.asdict(self.state), indent=1))
            manifest = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            ckpts = sorted(
                (p for p in self.checkpoint_dir.iterdir() if p.name.startswith(_CKPT_PREFIX)),
                key=lambda p: int(p.name[len(_CKPT_PREFIX) :]),
            )
            for old in ckpts[: -self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def complete_checkpoints(self) -> list[Path]:
        """The complete checkpoints (a ``trainer_state.json`` is written last), newest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        done = [
            p
            for p in self.checkpoint_dir.iterdir()
            if p.name.startswith(_CKPT_PREFIX) and (p / "trainer_state.json").is_file()
        ]
        return sorted(done, key=lambda p: int(p.name[len(_CKPT_PREFIX) :]), reverse=True)

    def _check_same_config(self, ckpt: Path) -> None:
        """Refuse to resume a checkpoint written under other settings (those in :data:`RESUME_EXEMPT` may change)."""
        f = ckpt / _CONFIG_FILE
        if not f.is_file():
            return  # written before configs were recorded
        old, new = json.loads(f.read_text()), _config_fingerprint(self.cfg)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            diff = ", ".join(f"train.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.out} holds a run with other settings ({diff}); resuming it would mix two runs. Start fresh "
                f"with a new train.output_dir, or delete {self.out}, or set train.resume: false"
            )

    def _resume(self) -> None:
        candidates = self.complete_checkpoints() if self.cfg.resume else []
        check = RUN_DIR_CHECK.get()
        if check is not None:
            check(self.out, bool(candidates))
        if not candidates:
            if self.accelerator.is_main_process and (self.out / "metrics.jsonl").exists() and not self.cfg.resume:
                (self.out / "metrics.jsonl").unlink()
            return
        self._check_same_config(candidates[0])
        ckpt = None
        for cand in candidates:
            broken = _verify_checkpoint(cand)
            if broken is None:
                try:
                    self.accelerator.load_state(str(cand))
                    self.state = TrainState(**json.loads((cand / "trainer_state.json").read_text()))
                except Exception as e:  # noqa: BLE001 - a damaged checkpoint falls back to the previous one
                    broken = f"{type(e).__name__}: {e}"
            if broken is None:
                ckpt = cand
                break
            logger.warning("checkpoint %s is broken (%s); falling back to the previous one", cand, broken)
        if ckpt is None:
            raise RuntimeError(
                f"no loadable checkpoint in {self.checkpoint_dir} (all are broken; see the warnings). Delete it to "
                "start fresh, or set train.resume: false"
            )
        logger.info("resumed from %s (step %d)", ckpt, self.state.step)
        metrics = self.out / "metrics.jsonl"
        if self.accelerator.is_main_process and metrics.exists():  # drop lines logged after the checkpoint
            keep = [
                ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= self.state.step
            ]
            metrics.write_text("".join(ln + "\n" for ln in keep))

    # -- data -----------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[tuple[Any, int]]:
        cfg, acc = self.cfg, self.accelerator
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)  # type: ignore[union-attr]
        # A private generator: creating a DataLoader iterator must not draw from the global RNG (dropout etc.),
        # or a resumed run would draw differently from an uninterrupted one.
        loader_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 17)
        workers = dict(num_workers=cfg.num_workers, persistent_workers=False, generator=loader_gen)
        if self.iterable:
            loader = DataLoader(
                self.data, batch_size=cfg.batch_size, collate_fn=self.collate, drop_last=True, **workers
            )
            it = iter(loader)
            shard = itertools.islice(it, acc.process_index, None, acc.num_processes)
            yield from itertools.islice(shard, skip, None)
            return
        n = len(self.data)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        per_rank = n // acc.num_processes
        mine = order[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
        batches = [mine[i : i + cfg.batch_size] for i in range(0, per_rank - cfg.batch_size + 1, cfg.batch_size)]
        if not batches:
            raise ValueError(f"dataset of {n} items is smaller than one batch ({cfg.batch_size} x {acc.num_processes})")
        loader = DataLoader(_SkipBad(self.data), batch_sampler=batches[skip:], collate_fn=self.collate, **workers)
        yield from loader

    def _micro_batches(self) -> Iterator[tuple[Any, int]]:
        consumed = self.state.micro_batches
        if self.iterable:
            epoch, skip = self.state.extra.get("epoch", 0), self.state.extra.get("epoch_micro", 0)
        else:
            per_epoch = len(self.data) // self.accelerator.num_processes // self.cfg.batch_size  # type: ignore[arg-type]
            if per_epoch == 0:
                raise ValueError(f"dataset of {len(self.data)} items is smaller than one batch")  # type: ignore[arg-type]
            epoch, skip = divmod(consumed, per_epoch)
        while True:
            got = 0
            for item in self._epoch_batches(epoch, skip):
                got += 1
                self.state.extra.update(epoch=epoch, epoch_micro=skip + got)
                yield item
            if got == 0 and skip == 0:
                raise ValueError("the training data yielded no batch in a whole epoch")
            epoch, skip = epoch + 1, 0

    # -- logging --------------------------------------------------------------------------------
    def _log(self, row: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._tb = False
        if self._tb:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming if a checkpoint exists).

        Returns:
            The last logged metrics row (``step``, ``loss``, ``lr``, ``skipped_samples``, ...).
        """
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        self._resume()
        base_lrs = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        for g, lr in zip(self.optimizer.param_groups, base_lrs):
            g["initial_lr"] = lr
        data = self._micro_batches()
        last: dict[str, Any] = {}
        self.model.train()
        t0, samples0 = time.perf_counter(), self.state.samples
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            disable=not (cfg.progress and acc.is_main_process),
        )
        # Running sums since the last metrics line are checkpointed, so a resumed run logs what an uninterrupted one does.
        saved = self.state.extra.get("running") or {}
        running: dict[str, float] = dict(saved.get("sums", {}))
        n_running = int(saved.get("n", 0))
        while self.state.step < cfg.max_steps:
            factor = lr_factor(self.state.step, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * factor
            for k in range(cfg.grad_accum_steps):
                batch, skipped = next(data)
                self.state.micro_batches += 1
                self.state.skipped_samples += skipped
                if batch is None:
                    continue
                ctx = acc.no_sync(self.model) if k < cfg.grad_accum_steps - 1 else contextlib.nullcontext()
                with ctx:
                    loss, metrics = self.loss_fn(self.model, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss.item()} at step {self.state.step}")
                    acc.backward(loss / cfg.grad_accum_steps)
                self.state.samples += _batch_len(batch) * acc.num_processes
                for key, v in {"loss": float(loss.detach()), **metrics}.items():
                    running[key] = running.get(key, 0.0) + float(v)
                n_running += 1
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            bar.update(1)
            for listener in _STEP_LISTENERS.get():
                listener(self.state.step, cfg.max_steps)
            if self.state.step % cfg.log_every == 0 or self.state.step == cfg.max_steps:
                dt = time.perf_counter() - t0
                last = {
                    "step": self.state.step,
                    **{k: v / max(n_running, 1) for k, v in running.items()},
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "samples_per_s": (self.state.samples - samples0) / max(dt, 1e-9),
                    "skipped_samples": self.state.skipped_samples,
                    "epoch": self.state.extra.get("epoch", 0),
                }
                self._log(last)
                bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}")
                running, n_running = {}, 0
                t0, samples0 = time.perf_counter(), self.state.samples
            if self.state.step % cfg.save_every == 0 or self.state.step == cfg.max_steps:
                self.state.extra["running"] = {"sums": dict(running), "n": n_running}
                self.save_checkpoint()
        bar.close()
        if not last:  # nothing trained in this call (a finished run rerun): the run's last logged row
            last = self._last_logged_row()
        if self._tb:
            self._tb.close()
        self.model.eval()
        return last

    def _last_logged_row(self) -> dict[str, Any]:
        metrics = self.out / "metrics.jsonl"
        if not metrics.is_file():
            return {}
        rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
        rows = [r for r in rows if r.get("step", 0) <= self.state.step]
        return rows[-1] if rows else {}

    def unwrapped_model(self) -> nn.Module:
        """The trained model without Accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)


def _config_fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint must be resumed with: every field but :data:`RESUME_EXEMPT` (JSON-able)."""
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in RESUME_EXEMPT}))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_checkpoint(ckpt: Path) -> str | None:
    """``None`` if every file listed in the checkpoint's manifest is there with its checksum; else what is wrong."""
    mf = ckpt / _MANIFEST
    if not mf.is_file():
        return None  # written before manifests; loading it is the only check
    try:
        manifest = json.loads(mf.read_text())
    except ValueError:
        return f"{_MANIFEST} is unreadable"
    for name, digest in manifest.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum (truncated or overwritten)"
    return None


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0])
    return 1
