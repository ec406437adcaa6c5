"""TeacherCache: epoch reuse, seed keys, reopen, multi-rank shards, crash safety and schema checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import Tensor

from visionfm.distill import TeacherCache, cached_forward

GRID, PATCH_DIM, SUMMARY_DIM = 4, 6, 8


class FakeTeacher:
    """Deterministic teacher: summary ``[B, 8]`` and patch grid ``[B, 4, 4, 6]`` from images ``[B, 3, 8, 8]``."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w_sum = torch.randn(3 * 8 * 8, SUMMARY_DIM, generator=g)
        self.w_patch = torch.randn(3 * 2 * 2, PATCH_DIM, generator=g)
        self.calls = 0
        self.rows = 0

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        self.calls += 1
        self.rows += images.shape[0]
        b = images.shape[0]
        patches = images.unfold(2, 2, 2).unfold(3, 2, 2)  # [B, 3, 4, 4, 2, 2]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, GRID, GRID, 12)
        return {"summary": images.reshape(b, -1) @ self.w_sum, "patches": patches @ self.w_patch}


def make_images(ids: list[str], seeds: list[int]) -> Tensor:
    """Images ``[B, 3, 8, 8]`` that depend only on (id, seed), as an augmentation pipeline would."""
    out = []
    for i, s in zip(ids, seeds):
        g = torch.Generator().manual_seed(TeacherCache.key(i, s) % (2**31))
        out.append(torch.randn(3, 8, 8, generator=g))
    return torch.stack(out)


def batches(n: int = 50, batch: int = 8, seed: int = 0) -> list[tuple[list[str], list[int]]]:
    ids = [f"img_{i:03d}" for i in range(n)]
    return [(ids[i : i + batch], [seed] * len(ids[i : i + batch])) for i in range(0, n, batch)]


def run_epoch(cache: TeacherCache, teacher: FakeTeacher, seed: int = 0) -> dict[str, Tensor]:
    outs = [cached_forward(cache, teacher, make_images(i, s), i, s) for i, s in batches(seed=seed)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_epochs_reuse_cache(tmp_path: Path, dtype: torch.dtype) -> None:
    teacher = FakeTeacher()
    cache = TeacherCache(tmp_path, "clip", shard_size=16, dtype=dtype)
    epochs = []
    for epoch in range(3):
        out = run_epoch(cache, teacher)
        if epoch == 0:
            assert teacher.rows == 50 and teacher.calls == 7
            cache.flush()
        else:
            assert teacher.calls == 7 and teacher.rows == 50, "epochs 2 and 3 must not call the teacher"
        epochs.append(out)
    assert len(cache) == 50
    assert cache.stats["writes"] == 4 and cache.stats["rows_written"] == 50  # 16 + 16 + 16 + 2
    assert cache.stats["hits"] == 100 and cache.stats["misses"] == 50
    assert len(list((tmp_path / "clip").glob("shard-r0-*.safetensors"))) == 4

    ref = {k: torch.cat([v for v in (FakeTeacher()(make_images(i, s))[k] for i, s in batches())]) for k in out}
    for k, v in ref.items():
        assert epochs[0][k].shape == v.shape and epochs[0][k].dtype == torch.float32
        assert torch.equal(epochs[1][k], epochs[0][k]) and torch.equal(epochs[2][k], epochs[0][k])
        if dtype == torch.float32:
            assert torch.equal(epochs[1][k], v)
        else:
            assert torch.equal(epochs[1][k], v.half().float())  # exactly one fp16 rounding
            torch.testing.assert_close(epochs[1][k], v, rtol=1e-3, atol=1e-3)


def test_partial_hits_call_teacher_once_on_missing_rows(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    cache = TeacherCache(tmp_path, "dino", shard_size=4, dtype=torch.float32)
    ids, seeds = [f"s{i}" for i in range(6)], [1] * 6
    cached_forward(cache, teacher, make_images(ids[::2], seeds[::2]), ids[::2], seeds[::2])
    assert (teacher.calls, teacher.rows) == (1, 3)
    out = cached_forward(cache, teacher, make_images(ids, seeds), ids, seeds)
    assert (teacher.calls, teacher.rows) == (2, 6)  # one call on the 3 missing rows only
    ref = FakeTeacher()(make_images(ids, seeds))
    for k in ref:
        assert torch.equal(out[k], ref[k])


def test_different_seeds_are_different_keys(tmp_path: Path) -> None:
    assert TeacherCache.key("img_000", 0) != TeacherCache.key("img_000", 1)
    assert 0 <= TeacherCache.key("img_000", 0) < 2**63
    teacher = FakeTeacher()
    cache = TeacherCache(tmp_path, "clip", shard_size=8)
    run_epoch(cache, teacher, seed=0)
    vals, hit = cache.lookup(["img_000", "img_001"], [1, 1])
    assert vals is None and not hit.any()
    run_epoch(cache, teacher, seed=1)
    assert teacher.rows == 100 and len(cache) == 100
    a, _ = cache.lookup(["img_000"], [0])
    b, _ = cache.lookup(["img_000"], [1])
    assert a is not None and b is not None and not torch.equal(a["summary"], b["summary"])


def test_reopen_sees_all_shards(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    cache = TeacherCache(tmp_path, "clip", shard_size=16, dtype=torch.float32)
    first = run_epoch(cache, teacher)
    cache.flush()

    reopened = TeacherCache(tmp_path, "clip", shard_size=16, dtype=torch.float32)
    assert len(reopened) == 50
    again = run_epoch(reopened, teacher)
    assert teacher.calls == 7 and reopened.stats["hits"] == 50 and reopened.stats["misses"] == 0
    for k in first:
        assert torch.equal(first[k], again[k])
    # Writing more through the reopened cache continues the shard numbering instead of overwriting.
    ids = ["new_0", "new_1"]
    reopened.put(ids, [0, 0], teacher(make_images(ids, [0, 0])))
    reopened.flush()
    assert (tmp_path / "clip" / "shard-r0-00004.safetensors").exists()
    assert len(TeacherCache(tmp_path, "clip")) == 52


def test_ranks_write_disjoint_shards_reader_sees_all(tmp_path: Path) -> None:
    ids, seeds = [f"img_{i:03d}" for i in range(40)], [0] * 40
    teachers = [FakeTeacher(), FakeTeacher()]
    ranks = [TeacherCache(tmp_path, "clip", shard_size=8, rank=r) for r in range(2)]
    for r, (cache, teacher) in enumerate(zip(ranks, teachers)):
        mine_ids, mine_seeds = ids[r::2], seeds[r::2]
        for j in range(0, len(mine_ids), 5):
            b_ids, b_seeds = mine_ids[j : j + 5], mine_seeds[j : j + 5]
            cached_forward(cache, teacher, make_images(b_ids, b_seeds), b_ids, b_seeds)
        cache.flush()
    assert teachers[0].rows == teachers[1].rows == 20
    names = sorted(p.name for p in (tmp_path / "clip").glob("*.safetensors"))
    assert {n.split("-")[1] for n in names} == {"r0", "r1"} and len(names) == 6  # 8 + 8 + 4 per rank

    reader = TeacherCache(tmp_path, "clip")
    assert len(reader) == 40
    vals, hit = reader.lookup(ids, seeds)
    assert hit.all() and vals is not None
    ref = FakeTeacher()(make_images(ids, seeds))
    for k in ref:
        assert torch.equal(vals[k], ref[k].half().float())
    # A rank that was opened before the other rank's shards existed picks them up on a miss.
    late_ids = ["late_0"]
    ranks[1].put(late_ids, [0], teachers[1](make_images(late_ids, [0])))
    ranks[1].flush()
    _, hit = ranks[0].lookup(late_ids, [0])
    assert hit.all()


def test_partial_tmp_shard_is_ignored(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    cache = TeacherCache(tmp_path, "clip", shard_size=16, dtype=torch.float32)
    ids, seeds = [f"img_{i}" for i in range(10)], [0] * 10
    cache.put(ids, seeds, teacher(make_images(ids, seeds)))
    cache.flush()
    shard = next((tmp_path / "clip").glob("*.safetensors"))
    # Simulate a crash mid-write: a truncated copy under the tmp name, as _write_shard would leave behind.
    (tmp_path / "clip" / "shard-r0-00001.safetensors.1234.tmp").write_bytes(shard.read_bytes()[:100])
    reopened = TeacherCache(tmp_path, "clip", dtype=torch.float32)
    assert len(reopened) == 10
    vals, hit = reopened.lookup(ids, seeds)
    assert hit.all() and vals is not None
    assert sorted(os.listdir(tmp_path / "clip")) == [
        "shard-r0-00000.safetensors",
        "shard-r0-00001.safetensors.1234.tmp",
    ]


def test_schema_mismatch_raises(tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path, "clip", shard_size=4)
    cache.put(["a", "b"], [0, 0], {"summary": torch.randn(2, 8), "patches": torch.randn(2, 4, 4, 6)})
    with pytest.raises(ValueError, match="do not match"):
        cache.put(["c"], [0], {"summary": torch.randn(1, 16), "patches": torch.randn(1, 4, 4, 6)})
    cache.flush()
    reopened = TeacherCache(tmp_path, "clip")
    with pytest.raises(ValueError, match=r"summary: \[8\]"):
        reopened.put(["c"], [0], {"summary": torch.randn(1, 8), "patches": torch.randn(1, 2, 2, 6)})
    with pytest.raises(ValueError, match="do not match"):
        reopened.put(["c"], [0], {"summary": torch.randn(1, 8)})  # missing key
    with pytest.raises(ValueError, match="expected"):
        reopened.put(["c", "d"], [0, 0], {"summary": torch.randn(3, 8), "patches": torch.randn(3, 4, 4, 6)})
    # A shard from another writer with a different schema is rejected when indexed.
    other = TeacherCache(tmp_path / "elsewhere", "clip")
    other.put(["z"], [0], {"summary": torch.randn(1, 4)})
    other.flush()
    os.replace(
        next((tmp_path / "elsewhere" / "clip").glob("*.safetensors")), tmp_path / "clip" / "shard-r7-00000.safetensors"
    )
    with pytest.raises(ValueError, match="shard-r7-00000"):
        len(TeacherCache(tmp_path, "clip"))
