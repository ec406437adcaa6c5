"""Teacher feature cache for multi-teacher distillation.

Teacher outputs (for example a CLIP summary ``[D]`` and a patch grid ``[h, w, P]`` per sample) are computed
once and stored on disk as safetensors shards keyed by ``(sample id, augmentation seed)``, so later epochs only
pay for the student forward.

Layout on disk::

    root/teacher/shard-r{rank}-{n:05d}.safetensors

Each shard holds one tensor per output name, stacked over rows (``[N, ...]``), plus an int64 ``row_key`` tensor
``[N]`` with the key of every row (see :meth:`TeacherCache.key`). The shard's safetensors metadata records the
per-row schema (names and shapes). The shards *are* the index: a reader builds ``key -> (shard, row)`` lazily by
reading only the ``row_key`` tensor of each shard, so several ranks can write disjoint shard files (the rank is in
the file name) without sharing a mutable index file, and any reader sees every rank's shards. Shards are written
to ``*.tmp`` and renamed into place with :func:`os.replace`, so a crash mid-write never leaves a readable partial
shard; ``*.tmp`` files are ignored on load.

>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> cache = TeacherCache(root, "clip", shard_size=4, dtype=torch.float32)
>>> feats = {"summary": torch.arange(6.0).reshape(3, 2)}
>>> cache.put(["a", "b", "c"], [0, 0, 0], feats)
>>> cache.flush()
>>> hits, mask = TeacherCache(root, "clip").lookup(["c", "x", "a"], [0, 0, 0])
>>> mask.tolist(), hits["summary"].tolist()
([True, False, True], [[4.0, 5.0], [0.0, 1.0]])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save
from torch import Tensor

__all__ = ["TeacherCache", "cached_forward"]

logger = logging.getLogger(__name__)

ROW_KEY = "row_key"
_FORMAT = "visionfm.teacher_cache.v1"
_SHARD_RE = re.compile(r"^shard-r(\d+)-(\d{5,})\.safetensors$")

Schema = dict[str, tuple[int, ...]]


def _kind(t: Tensor) -> str:
    """``"float"`` for floating-point tensors (stored in the cache dtype), else the dtype name, e.g. ``"int64"``."""
    return "float" if t.is_floating_point() else str(t.dtype).removeprefix("torch.")


def _schema_str(schema: Schema) -> str:
    return ", ".join(f"{k}: {list(v)}" for k, v in sorted(schema.items()))


class TeacherCache:
    """On-disk cache of per-sample teacher outputs, keyed by ``(sample_id, seed)``.

    Floating-point tensors are stored in ``dtype`` (float16 by default) and always returned as float32; with
    ``dtype=torch.float32`` the round trip is exact. Non-floating tensors (e.g. int64 labels) are stored and
    returned unchanged. Rows are buffered in memory and written as one shard every ``shard_size`` rows
    (:meth:`flush` writes a partial one); buffered rows are already visible to :meth:`lookup`.

    A key that is already stored (on disk or buffered) is not stored again, so the first write wins.

    Args:
        root: Cache root directory; this teacher's shards live in ``root/teacher``.
        teacher: Teacher name (a directory name, e.g. ``"clip_b16"``).
        shard_size: Rows per shard file.
        rank: Writer rank; this process only writes ``shard-r{rank}-*`` files but reads every rank's.
        dtype: Storage dtype of floating-point tensors.
        max_open_shards: Size of the LRU of open (memory-mapped) shard handles.

    Attributes:
        stats: Counters: ``hits`` and ``misses`` (rows seen by :meth:`lookup`), ``writes`` (shard files
            written by this object) and ``rows_written`` (rows in those shards).
    """

    def __init__(
        self,
        root: str | Path,
        teacher: str,
        *,
        shard_size: int = 512,
        rank: int = 0,
        dtype: torch.dtype = torch.float16,
        max_open_shards: int = 8,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.dir = Path(root) / teacher
        self.teacher = teacher
        self.shard_size = shard_size
        self.rank = rank
        self.dtype = dtype
        self.max_open_shards = max(1, max_open_shards)
        self.stats: dict[str, int] = {"hits": 0, "misses": 0, "writes": 0, "rows_written": 0}

        self._schema: Schema | None = None  # per-row shape of every stored tensor
        self._kinds: dict[str, str] = {}  # name -> "float" or the stored non-floating dtype, e.g. "int64"
        self._index: dict[int, tuple[str, int]] = {}  # key -> (shard file name, row)
        self._known_shards: set[str] = set()
        self._loaded = False
        self._next_shard: int | None = None
        self._handles: OrderedDict[str, Any] = OrderedDict()  # LRU of safe_open handles
        # Write buffer: chunks of rows in put order plus key -> (chunk, row).
        self._buf_chunks: list[dict[str, Tensor]] = []
        self._buf_keys: list[list[int]] = []
        self._buf_pos: dict[int, tuple[int, int]] = {}

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(sample_id: str, seed: int) -> int:
        """Stable 63-bit key of ``(sample_id, seed)``.

        The key is the first 8 bytes (big-endian) of ``blake2b(f"{sample_id}\\x00{seed}", digest_size=8)`` with
        the top bit cleared, so it fits a non-negative int64 and is identical across processes, machines and
        Python versions (unlike :func:`hash`).

        Args:
            sample_id: Sample identifier (e.g. a relative file path).
            seed: Augmentation seed of this view of the sample.

        Returns:
            An int in ``[0, 2**63)``.

        >>> TeacherCache.key("img_0001", 3) == TeacherCache.key("img_0001", 3)
        True
        >>> TeacherCache.key("img_0001", 3) != TeacherCache.key("img_0001", 4)
        True
        """
        digest = hashlib.blake2b(f"{sample_id}\x00{int(seed)}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") & (2**63 - 1)

    def _keys(self, ids: Sequence[str], seeds: Sequence[int]) -> list[int]:
        if len(ids) != len(seeds):
            raise ValueError(f"ids and seeds differ in length: {len(ids)} vs {len(seeds)}")
        return [self.key(i, s) for i, s in zip(ids, seeds)]

    # ----------------------------------------------------------------- index
    def _shard_files(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(name for name in os.listdir(self.dir) if _SHARD_RE.match(name))

    def _check_schema(self, schema: Schema, kinds: dict[str, str], where: str) -> None:
        if self._schema is None:
            self._schema, self._kinds = dict(schema), dict(kinds)
            return
        if schema != self._schema:
            raise ValueError(
                f"Teacher cache {self.dir}: tensors of {where} do not match the cache schema. "
                f"Expected {{{_schema_str(self._schema)}}}, got {{{_schema_str(schema)}}}."
            )
        if kinds != self._kinds:
            raise ValueError(
                f"Teacher cache {self.dir}: dtypes of {where} ({kinds}) differ from the cache ({self._kinds})."
            )

    def _index_shard(self, name: str) -> None:
        handle = self._handle(name)
        meta = handle.metadata() or {}
        if meta.get("format") != _FORMAT or "schema" not in meta:
            raise ValueError(f"{self.dir / name} is not a teacher-cache shard (metadata {meta!r})")
        raw = json.loads(meta["schema"])
        schema = {k: tuple(v["shape"]) for k, v in raw.items()}
        kinds = {k: str(v["kind"]) for k, v in raw.items()}
        self._check_schema(schema, kinds, f"shard {name}")
        for row, k in enumerate(handle.get_tensor(ROW_KEY).tolist()):
            self._index.setdefault(int(k), (name, row))
        self._known_shards.add(name)

    def refresh(self) -> int:
        """Index shard files that appeared since the last scan (e.g. written by other ranks).

        Returns:
            Number of newly indexed shards.
        """
        new = [n for n in self._shard_files() if n not in self._known_shards]
        for name in new:
            self._index_shard(name)
        if not self._loaded:
            self._loaded = True
            if new:
                logger.info("Teacher cache %s: indexed %d shards, %d rows", self.dir, len(new), len(self._index))
        return len(new)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is not None:
            self._handles.move_to_end(name)
            return handle
        handle = safe_open(str(self.dir / name), framework="pt", device="cpu")
        self._handles[name] = handle
        while len(self._handles) > self.max_open_shards:
            self._handles.popitem(last=False)
        return handle

    def __len__(self) -> int:
        """Number of distinct rows stored, on disk (all ranks, as of the last scan) plus buffered."""
        self._ensure_loaded()
        return len(self._index) + len(self._buf_pos)

    def __contains__(self, item: tuple[str, int]) -> bool:
        """Whether ``(sample_id, seed)`` is stored (on disk or buffered)."""
        self._ensure_loaded()
        k = self.key(*item)
        return k in self._index or k in self._buf_pos

    def __repr__(self) -> str:
        return (
            f"TeacherCache(dir={str(self.dir)!r}, rows={len(self)}, shard_size={self.shard_size}, "
            f"rank={self.rank}, dtype={self.dtype})"
        )

    # ---------------------------------------------------------------- lookup
    def lookup(self, ids: Sequence[str], seeds: Sequence[int]) -> tuple[dict[str, Tensor] | None, Tensor]:
        """Fetch cached rows.

        Args:
            ids: Sample ids, length ``B``.
            seeds: Augmentation seeds, length ``B``.

        Returns:
            ``(values, hit)``: ``values`` maps each tensor name to ``[H, ...]`` CPU tensors holding the ``H``
            rows that hit, in input order (float32 for floating-point tensors), or ``None`` when nothing hit;
            ``hit`` is a bool mask ``[B]``.
        """
        keys = self._keys(ids, seeds)
        self._ensure_loaded()
        if any(k not in self._index and k not in self._buf_pos for k in keys):
            self.refresh()  # other ranks may have written shards since the last scan
        hit = torch.tensor([k in self._index or k in self._buf_pos for k in keys], dtype=torch.bool)
        n_hit = int(hit.sum())
        self.stats["hits"] += n_hit
        self.stats["misses"] += len(keys) - n_hit
        if n_hit == 0:
            return None, hit
        assert self._schema is not None
        out = {name: torch.empty((n_hit, *shape), dtype=self._out_dtype(name)) for name, shape in self._schema.items()}
        # Group hits by source (a shard file or a buffer chunk): position in output -> row in source.
        shard_rows: dict[str, list[tuple[int, int]]] = {}
        buf_rows: dict[int, list[tuple[int, int]]] = {}
        for pos, k in enumerate(k for k, h in zip(keys, hit.tolist()) if h):
            if k in self._buf_pos:
                chunk, row = self._buf_pos[k]
                buf_rows.setdefault(chunk, []).append((pos, row))
            else:
                shard, row = self._index[k]
                shard_rows.setdefault(shard, []).append((pos, row))
        for chunk, pairs in buf_rows.items():
            pos_t, row_t = (torch.tensor(x) for x in zip(*pairs))
            for name in out:
                out[name][pos_t] = self._buf_chunks[chunk][name][row_t].to(out[name].dtype)
        for shard, pairs in shard_rows.items():
            self._read_shard_rows(shard, pairs, out)
        return out, hit

    def _out_dtype(self, name: str) -> torch.dtype:
        kind = self._kinds[name]
        return torch.float32 if kind == "float" else getattr(torch, kind)

    def _read_shard_rows(self, shard: str, pairs: list[tuple[int, int]], out: dict[str, Tensor]) -> None:
        """Copy ``pairs`` of (output position, shard row) from ``shard`` into ``out``, reading contiguous runs."""
        handle = self._handle(shard)
        pairs = sorted(pairs, key=lambda p: p[1])
        runs: list[list[tuple[int, int]]] = [[pairs[0]]]
        for p in pairs[1:]:
            if p[1] == runs[-1][-1][1] + 1:
                runs[-1].append(p)
            else:
                runs.append([p])
        for name, dst in out.items():
            sl = handle.get_slice(name)
            for run in runs:
                lo, hi = run[0][1], run[-1][1] + 1
                dst[torch.tensor([p[0] for p in run])] = sl[lo:hi].to(dst.dtype)

    # ------------------------------------------------------------------ put
    def put(self, ids: Sequence[str], seeds: Sequence[int], tensors: dict[str, Tensor]) -> None:
        """Buffer teacher outputs and write a shard whenever ``shard_size`` rows are buffered.

        Rows whose key is already stored (or repeated within the call) are skipped. Tensors are detached and
        moved to CPU; floating-point ones are cast to the storage ``dtype``.

        Args:
            ids: Sample ids, length ``B``.
            seeds: Augmentation seeds, length ``B``.
            tensors: Name -> ``[B, ...]`` tensor; names and per-row shapes must match the existing shards.

        Raises:
            ValueError: On a batch-size mismatch, the reserved name ``row_key``, or names/shapes that differ from
                what the cache already holds.
        """
        keys = self._keys(ids, seeds)
        if not tensors:
            raise ValueError("put() needs at least one tensor")
        if ROW_KEY in tensors:
            raise ValueError(f"{ROW_KEY!r} is a reserved tensor name")
        for name, t in tensors.items():
            if t.ndim == 0 or t.shape[0] != len(keys):
                raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected [{len(keys)}, ...]")
        self._ensure_loaded()
        schema = {name: tuple(t.shape[1:]) for name, t in tensors.items()}
        kinds = {name: _kind(t) for name, t in tensors.items()}
        self._check_schema(schema, kinds, "put()")
        seen: set[int] = set()
        sel = []
        for i, k in enumerate(keys):
            if k in self._index or k in self._buf_pos or k in seen:
                continue
            seen.add(k)
            sel.append(i)
        if not sel:
            return
        idx = torch.tensor(sel)
        chunk = {
            name: t.detach()[idx.to(t.device)].to("cpu", self.dtype if t.is_floating_point() else t.dtype)
            for name, t in tensors.items()
        }
        chunk_keys = [keys[i] for i in sel]
        c = len(self._buf_chunks)
        self._buf_chunks.append(chunk)
        self._buf_keys.append(chunk_keys)
        for row, k in enumerate(chunk_keys):
            self._buf_pos[k] = (c, row)
        while len(self._buf_pos) >= self.shard_size:
            self._write_buffered(self.shard_size)

    def flush(self) -> None:
        """Write all buffered rows as a (possibly partial) shard. A no-op when the buffer is empty."""
        if self._buf_pos:
            self._write_buffered(len(self._buf_pos))

    def _write_buffered(self, n: int) -> None:
        """Write the first ``n`` buffered rows as one shard and keep the rest buffered."""
        names = list(self._buf_chunks[0])
        data = {name: torch.cat([c[name] for c in self._buf_chunks]) for name in names}
        keys = [k for ks in self._buf_keys for k in ks]
        shard = self._write_shard({name: t[:n] for name, t in data.items()}, keys[:n])
        for row, k in enumerate(keys[:n]):
            self._index.setdefault(k, (shard, row))
        rest = keys[n:]
        self._buf_chunks = [{name: t[n:].clone() for name, t in data.items()}] if rest else []
        self._buf_keys = [rest] if rest else []
        self._buf_pos = {k: (0, row) for row, k in enumerate(rest)}

    def _write_shard(self, data: dict[str, Tensor], keys: list[int]) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._next_shard is None:
            mine = [
                int(m.group(2))
                for n in self._shard_files()
                if (m := _SHARD_RE.match(n)) and int(m.group(1)) == self.rank
            ]
            self._next_shard = max(mine, default=-1) + 1
        name = f"shard-r{self.rank}-{self._next_shard:05d}.safetensors"
        self._next_shard += 1
        assert self._schema is not None
        schema = {k: {"shape": list(v), "kind": self._kinds[k]} for k, v in self._schema.items()}
        meta = {"format": _FORMAT, "teacher": self.teacher, "schema": json.dumps(schema), "rows": str(len(keys))}
        payload = {k: v.contiguous() for k, v in data.items()}
        payload[ROW_KEY] = torch.tensor(keys, dtype=torch.int64)
        blob = safetensors_save(payload, metadata=meta)
        final = self.dir / name
        tmp = self.dir / f"{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._known_shards.add(name)
        self.stats["writes"] += 1
        self.stats["rows_written"] += len(keys)
        logger.debug("Teacher cache %s: wrote %s (%d rows)", self.dir, name, len(keys))
        return name


def cached_forward(
    cache: TeacherCache,
    teacher_fn: Callable[[Tensor], dict[str, Tensor]],
    images: Tensor,
    ids: Sequence[str],
    seeds: Sequence[int],
) -> dict[str, Tensor]:
    """Teacher outputs for a batch, computing only the rows the cache misses.

    ``teacher_fn`` is called at most once, on ``images[miss]`` only, and not at all when every row hits; the new
    rows are then stored with :meth:`TeacherCache.put`. Newly computed rows are returned after the same storage
    round trip as cached ones (cast to ``cache.dtype`` and back), so a sample yields identical values in every
    epoch. Outputs are detached.

    Args:
        cache: The teacher's cache.
        teacher_fn: Maps images ``[M, ...]`` to a dict of ``[M, ...]`` tensors.
        images: Input batch ``[B, ...]`` (already augmented with ``seeds``).
        ids: Sample ids, length ``B``.
        seeds: Augmentation seeds, length ``B``.

    Returns:
        Name -> ``[B, ...]`` tensor on ``images.device``, in input order; floating-point outputs are float32.
    """
    if images.shape[0] != len(ids):
        raise ValueError(f"images has {images.shape[0]} rows but {len(ids)} ids were given")
    hits, hit = cache.lookup(ids, seeds)
    device = images.device
    if bool(hit.all()) and hits is not None:
        return {k: v.to(device) for k, v in hits.items()}
    miss = (~hit).nonzero().squeeze(1)
    miss_ids = [ids[i] for i in miss.tolist()]
    miss_seeds = [seeds[i] for i in miss.tolist()]
    computed = teacher_fn(images[miss.to(device)])
    cache.put(miss_ids, miss_seeds, computed)
    computed = {
        k: v.detach().to(cache.dtype).float() if v.is_floating_point() else v.detach() for k, v in computed.items()
    }
    if hits is None:
        return {k: v.to(device) for k, v in computed.items()}
    out = {}
    hit_d, miss_d = hit.nonzero().squeeze(1).to(device), miss.to(device)
    for name, v in computed.items():
        full = torch.empty((hit.shape[0], *v.shape[1:]), dtype=v.dtype, device=device)
        full[hit_d] = hits[name].to(device, v.dtype)
        full[miss_d] = v.to(device)
        out[name] = full
    return out
