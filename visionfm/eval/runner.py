"""Run an evaluation suite on a model with Hugging Face Accelerate: exact, resumable, one command.

``visionfm eval SUITE --model M --out DIR`` (or under ``accelerate launch`` / ``torchrun``). A suite is a YAML of
datasets × tasks (:mod:`visionfm.eval.suite`). The runner:

- splits each dataset into chunks of ``chunk_size`` samples. Each chunk goes through a DataLoader prepared by
  ``Accelerator.prepare``, so processes share the work. Results are collected with ``gather_for_metrics``,
  which drops the samples Accelerate repeats to even out the last batch, so counts are exact at any world
  size;
- persists each finished chunk (features, or per-sample counts) atomically under ``DIR/cache/``. Only the
  main process writes. A killed run resumes at the first missing chunk. Each chunk is written once and read
  once, so nothing is lost or counted twice. A chunk file that cannot be read or does not hold exactly its
  samples (truncated, damaged) is logged, deleted and computed again;
- skips and counts unreadable samples (``skipped`` in the results). A task whose data has no readable sample at
  all ends with an ``"error"`` in its result (no metrics) and the other tasks still run;
- reuses cached image features across tasks and runs. A cache directory is keyed by everything its rows depend
  on: the model's weights (``checkpoint_sha256``), the dataset's definition *and* its current listing (sample
  ids, count, class names), the chunk size and the task's options. A changed folder or another
  ``chunk_size`` therefore gets a fresh cache instead of mixing old rows in, and each chunk file records its
  sample range and ids, which are checked when it is read. A linear probe and kNN over the same split encode
  it once;
- writes ``DIR/<suite>__<model>-<hash>.json``: model, checkpoint hash, suite, protocol, library versions, sample
  counts, wall time. ``<model>`` is the model's last path component (readable) and ``<hash>`` 8 hex digits of
  the model's full path (or name) and weights, so ``runs/a/final`` and ``runs/b/final`` do not overwrite each
  other while a rerun of the same model replaces its own file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.datasets import EvalDataset, build_dataset, collate
from ..foundation.encoder import Encoder
from .keys import model_fingerprint
from .suite import Suite, load_suite

logger = logging.getLogger(__name__)

FORMAT = "visionfm-eval/1"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("visionfm", "torch", "transformers", "open_clip_torch", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "model"


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a ValueError naming the argument otherwise (bools and floats too)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"Runner: {name} must be {what}, got {value!r}")
    return int(value)


CHUNK_FORMAT = "visionfm-eval-chunk/1"


class Runner:
    """Evaluates one model on one suite. See the module docstring.

    Args:
        suite: a :class:`Suite` or anything :func:`load_suite` accepts (shipped name or YAML path).
        model: an :class:`Encoder` or anything ``load_encoder`` accepts.
        out_dir: results, the per-chunk state and the feature cache go here.
        batch_size: images per forward pass (per process).
        chunk_size: samples per persisted chunk (the unit of resumption).
        num_workers: DataLoader workers.
        accelerator: an ``accelerate.Accelerator`` (default: a new one; CPU if no GPU).
        after_chunk: test hook called with the number of chunks finished so far in this process's run.
        load_options: extra ``load_encoder`` options when ``model`` is a name, e.g. ``{"token_merging": 0.5}``,
            ``{"quantize": "int8"}`` or ``{"speed": "fast"}`` (they are part of the model's fingerprint, so
            results with and without them are kept apart).
    """

    def __init__(
        self,
        suite: Suite | str | os.PathLike,
        model: str | Encoder,
        out_dir: str | os.PathLike,
        *,
        batch_size: int = 64,
        chunk_size: int = 256,
        num_workers: int = 0,
        accelerator: Any = None,
        after_chunk: Callable[[int], None] | None = None,
        load_options: dict[str, Any] | None = None,
    ) -> None:
        from ..training.loop import make_accelerator

        self.batch_size = _positive_int("batch_size", batch_size)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.num_workers = _positive_int("num_workers", num_workers, minimum=0)
        self.suite = suite if isinstance(suite, Suite) else load_suite(suite)
        self.accelerator = accelerator or make_accelerator()
        if isinstance(model, Encoder):
            self.encoder = model
            self.model_name = model.info.name
            model_id = model.info.name
        else:
            from ..foundation.loading import load_encoder

            self.encoder = load_encoder(str(model), device=self.accelerator.device, **(load_options or {}))
            self.model_name = str(model)
            local = Path(os.path.expanduser(str(model)))
            model_id = str(local.resolve()) if local.exists() else str(model)
        self.encoder.eval()
        self.out_dir = Path(out_dir)
        self.after_chunk = after_chunk
        self._chunks_done = 0
        self.fingerprint = model_fingerprint(self.encoder)
        self.model_id = model_id
        self._datasets: dict[str, EvalDataset] = {}

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def dataset(self, name: str) -> EvalDataset:
        """The suite's dataset ``name``, built once."""
        if name not in self._datasets:
            self._datasets[name] = build_dataset(name, self.suite.datasets[name], root=self.suite.root)
        return self._datasets[name]

    def _dataset_key(self, name: str) -> str:
        spec = json.dumps(self.suite.datasets[name], sort_keys=True, default=str)
        return f"{_slug(name)}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"

    @property
    def results_path(self) -> Path:
        """``out_dir/<suite>__<model's last path component>-<8 hex of its full path or name and weights>.json``."""
        tag = _sha([self.model_id, self.fingerprint])[:8]
        return self.out_dir / f"{_slug(self.suite.name)}__{_slug(Path(self.model_name).name)}-{tag}.json"

    # -- the chunked, resumable, distributed loop --------------------------------------------------------------
    def map_chunks(
        self, key: str, ds: EvalDataset, fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]], desc: str
    ) -> dict[str, torch.Tensor]:
        """Apply ``fn`` to every batch of ``ds`` across processes; persist per chunk; return all rows in order.

        ``fn(samples)`` returns a dict of tensors with one row per sample (first dimension = ``len(samples)``).
        The result concatenates those rows over the dataset, in dataset order, plus ``"index"`` and ``"valid"``
        (``False`` for unreadable samples, whose rows ``fn`` never sees and which are zero).

        Args:
            key: cache directory for this computation (under ``out_dir/cache``); a subdirectory is keyed by the
                dataset's listing (``ids``, count, ``classnames``, ``labels`` where it has them) and the chunk size.
            ds: the dataset (an :class:`EvalDataset` or any map-style dataset yielding eval samples).
            fn: per-batch computation on readable samples.
            desc: progress bar label.
        """
        from safetensors.torch import save_file

        acc = self.accelerator
        # the rows depend on the samples' listing and the chunk boundaries too: both are part of the directory.
        # Any map-style dataset works; one without ``ids`` (a generation plan) is listed by position and labels.
        ids = [str(i) for i in getattr(ds, "ids", None) or range(len(ds))]
        listing = _sha({"n": len(ds), "ids": ids, "classnames": list(getattr(ds, "classnames", None) or []),
                        "labels": list(getattr(ds, "labels", None) or [])})  # fmt: skip
        ds_name = str(getattr(ds, "name", type(ds).__name__))
        cache = self.out_dir / "cache" / key / f"{listing[:16]}-c{self.chunk_size}"
        n_chunks = (len(ds) + self.chunk_size - 1) // self.chunk_size
        if self.is_main:
            cache.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(ds), desc=desc, disable=not self.is_main, unit="img")
        chunks: list[dict[str, torch.Tensor]] = []
        for c in range(n_chunks):
            path = cache / f"chunk_{c:05d}.safetensors"
            lo, hi = c * self.chunk_size, min((c + 1) * self.chunk_size, len(ds))
            meta = {"format": CHUNK_FORMAT, "dataset": ds_name, "listing_sha256": listing, "chunk_size": str(
                self.chunk_size), "lo": str(lo), "hi": str(hi), "ids_sha256": _sha(ids[lo:hi])}  # fmt: skip
            done = self._load_chunk(path, meta) if path.exists() else None  # from an earlier (possibly killed) run
            if done is not None:
                chunks.append(done)
                bar.update(hi - lo)
                continue
            dl = torch.utils.data.DataLoader(
                torch.utils.data.Subset(ds, range(lo, hi)), batch_size=self.batch_size, shuffle=False,
                num_workers=self.num_workers, collate_fn=collate,
            )  # fmt: skip
            dl = acc.prepare_data_loader(dl)
            parts: list[dict[str, torch.Tensor]] = []
            for batch in dl:
                rows = self._rows(batch, fn)
                gathered = acc.gather_for_metrics(rows)
                parts.append({k: v.cpu() for k, v in gathered.items()})
                bar.update(len(gathered["index"]) if self.is_main else 0)
            merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
            if merged and (len(merged["index"]) != hi - lo or set(merged["index"].tolist()) != set(range(lo, hi))):
                raise RuntimeError(f"{desc}: chunk {c} gathered {len(merged['index'])} samples, expected {hi - lo}")
            if self.is_main:
                tmp = path.with_suffix(".tmp")
                save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp), metadata=meta)
                os.replace(tmp, path)
            chunks.append(merged)
            acc.wait_for_everyone()
            self._chunks_done += 1
            if self.after_chunk is not None:
                self.after_chunk(self._chunks_done)
        bar.close()
        acc.wait_for_everyone()
        out = {k: torch.cat([ch[k] for ch in chunks]) for k in chunks[0]} if chunks else {}
        order = torch.argsort(out["index"]) if out else None
        return {k: v[order] for k, v in out.items()} if out else out

    def _load_chunk(self, path: Path, meta: dict[str, str]) -> dict[str, torch.Tensor] | None:
        """The rows of a finished chunk file, or None when it must be computed again: the file is unreadable
        (truncated, damaged) or does not hold exactly the samples ``meta`` describes. Such a file is logged and
        deleted (by the main process)."""
        from safetensors import safe_open

        lo, hi = int(meta["lo"]), int(meta["hi"])
        try:
            with safe_open(str(path), framework="pt") as f:
                found = f.metadata() or {}
                rows = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - any unreadable chunk is recomputed, never fatal
            problem = f"unreadable ({type(e).__name__}: {e})"
        else:
            wrong = sorted(k for k in meta if found.get(k) != meta[k])
            index = rows.get("index")
            if wrong:
                problem = f"for other samples (metadata {', '.join(wrong)} differ)"
            elif index is None or any(len(v) != hi - lo for v in rows.values()):
                problem = f"incomplete (expected {hi - lo} rows)"
            elif index.tolist() and set(index.tolist()) != set(range(lo, hi)):
                problem = f"not samples {lo}..{hi - 1}"
            else:
                return rows
        logger.warning("eval cache: chunk file %s is %s; deleting it and computing the chunk again", path, problem)
        if self.is_main:
            path.unlink(missing_ok=True)
        return None

    def _rows(self, batch: list[dict[str, Any]], fn: Callable) -> dict[str, torch.Tensor]:
        dev = self.accelerator.device
        # unreadable samples carry an error; generation plans have no image and no error
        valid = torch.tensor([s["error"] is None for s in batch], dtype=torch.bool)
        good = [s for s in batch if s["error"] is None]
        rows: dict[str, torch.Tensor] = {
            "index": torch.tensor([s["index"] for s in batch], dtype=torch.long),
            "label": torch.tensor([s["label"] for s in batch], dtype=torch.long),
            "valid": valid,
        }
        if good:
            with torch.inference_mode():
                out = fn(good)
            for k, v in out.items():
                full = torch.zeros((len(batch), *v.shape[1:]), dtype=v.dtype)
                full[valid] = v.detach().cpu()
                rows[k] = full
        else:  # every sample of this batch is unreadable: shapes come from a probe call on nothing
            for k, (shape, dtype) in self._row_shapes(fn).items():
                rows[k] = torch.zeros((len(batch), *shape), dtype=dtype)
        return {k: v.to(dev) for k, v in rows.items()}

    def _row_shapes(self, fn: Callable) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        probe = {"index": 0, "id": "probe", "image": torch.zeros(3, 32, 32, dtype=torch.uint8), "label": -1,
                 "captions": ["probe"], "target": None, "error": None}  # fmt: skip
        with torch.inference_mode():
            out = fn([probe])
        return {k: (tuple(v.shape[1:]), v.dtype) for k, v in out.items()}

    # -- features --------------------------------------------------------------------------------------------
    def features(self, name: str) -> dict[str, torch.Tensor]:
        """Pooled image features of dataset ``name``: ``{"pooled": [N, D] float32, "label": [N], "valid": [N],
        "index": [N]}``, cached by (model weights, dataset definition)."""
        ds = self.dataset(name)
        enc = self.encoder

        def fn(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            feats = enc.encode([s["image"] for s in samples], batch_size=self.batch_size, progress=False)
            return {"pooled": feats.pooled.float()}

        key = f"features/{self.fingerprint[:16]}/{self._dataset_key(name)}"
        return self.map_chunks(key, ds, fn, f"features {name}")

    # -- the whole suite ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every task; the main process writes and returns the results dict (others return it too)."""
        from .tasks import UnusableDataError, run_task

        t0 = time.perf_counter()
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        results = []
        for task in self.suite.tasks:
            logger.info("task %s", task["name"])
            try:
                res = run_task(self, task)
            except UnusableDataError as e:  # this task's data cannot be scored; the others still run
                logger.error("%s", e)
                res = {"task": task["task"], "dataset": task.get("test", task.get("dataset", e.dataset)),
                       "error": str(e), "metrics": {}, "samples": 0, "skipped": e.skipped}  # fmt: skip
            res.setdefault("name", task["name"])
            results.append(res)
        report = {
            "format": FORMAT,
            "suite": self.suite.name,
            "suite_file": str(self.suite.path) if self.suite.path else None,
            "model": self.model_name,
            "model_info": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.encoder.info).items()},
            "checkpoint_sha256": self.fingerprint,
            "versions": _versions(),
            "world_size": self.accelerator.num_processes,
            "started": started,
            "wall_s": round(time.perf_counter() - t0, 2),
            "results": results,
        }
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.results_path
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(report, indent=1, default=_json_default))
            os.replace(tmp, path)
            logger.info("wrote %s", path)
        return report


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)
