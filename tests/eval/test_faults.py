"""Evaluation survives SIGKILL: killed at three seeded points (one also with its newest chunk file truncated, as a
kill during a write by another tool would leave it), the resumed run writes exactly the uninterrupted run's results."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from visionfm.testing import tiny_checkpoint

PROG = Path(__file__).with_name("eval_fault_prog.py")
N_CHUNKS = 5 + 3 + 3  # features of train (40/8) and test (24/8), the zero-shot pass over test (24/8)


def _run(model: Path, out: Path, kill: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROG), str(model), str(out), str(kill)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _results(out: Path) -> list[dict]:
    files = sorted(out.glob("faults__*.json"))
    assert len(files) == 1, files
    res = json.loads(files[0].read_text())["results"]
    return [{k: r.get(k) for k in ("name", "metrics", "samples", "skipped", "confusion", "per_class")} for r in res]


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory):
    model = tiny_checkpoint("clip", root=tiny_root)
    out = tmp_path_factory.mktemp("ref")
    proc = _run(model, out, 0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return model, _results(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_seeded_point_then_resume_gives_identical_results(reference, tmp_path, seed):
    model, want = reference
    kill = random.Random(seed).randint(1, N_CHUNKS - 1)
    out = tmp_path / "run"
    proc = _run(model, out, kill)
    assert proc.returncode == -9, (kill, proc.returncode, proc.stderr[-1000:])
    chunks = sorted((out / "cache").rglob("chunk_*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    assert len(chunks) == kill  # exactly the finished chunks are on disk, no results file yet
    assert not list(out.glob("faults__*.json"))
    if seed == 2:  # the newest chunk file cut in half: it must be recomputed, not trusted
        data = chunks[-1].read_bytes()
        chunks[-1].write_bytes(data[: len(data) // 2])
    proc = _run(model, out, 0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _results(out) == want
    if seed == 2:
        assert "computing the chunk again" in proc.stderr
