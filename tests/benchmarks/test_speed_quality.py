"""The speed-quality suite's harness on tiny checkpoints: one row per variant, agreement in range, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_encoder_rows_cover_every_variant_and_agree_with_the_baseline(tmp_path, monkeypatch):
    import torch

    from benchmarks import speed_quality as sq
    from benchmarks import suite

    monkeypatch.setenv("VISIONFM_BENCH_CACHE", str(tmp_path / "cache"))
    variants = ["fp32", "int8", "tome-0.5", "int8+tome-0.5", "fast"]
    rows = sq.bench_encoder("tiny-clip", torch.device("cpu"), 0, 1, variants)
    assert [r["variant"] for r in rows] == variants
    assert not [r for r in rows if "error" in r]
    base = rows[0]
    assert base["speedup"] == 1.0 and base["pooled_cos"] == pytest.approx(1.0, abs=1e-6)
    for r in rows[1:]:
        assert r["images_per_s"] > 0
        assert 0.5 < r["pooled_cos"] < 1.0 + 1e-6, r
        assert r["patch_cos"] <= 1.0 + 1e-6
    assert rows[1]["options"]["quantize"] == "int8" and rows[2]["options"]["token_merging"] == 0.5
    assert rows[4]["options"]["speed"] == "fast"
    # the suite entry point writes the JSON and the markdown table
    args = suite.parse_args(["--suite", "speed-quality", "--models", "tiny-clip", "--skip-quality", "--iters", "1",
                             "--warmup", "0", "--out", str(tmp_path / "out")])  # fmt: skip
    report = suite.run_suite(args, command="test")
    assert report["errors"] == []
    on_disk = json.loads((tmp_path / "out" / "speed_quality_cpu.json").read_text())
    assert [r["variant"] for r in on_disk["speed"]] == list(sq.ENCODER_VARIANTS)
    md = (tmp_path / "out" / "speed_quality_cpu.md").read_text()
    assert md.startswith("# speed-quality") and "| tiny-clip | int8+tome-0.5 |" in md
