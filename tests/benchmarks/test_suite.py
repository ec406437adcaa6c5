"""The speed suite's harness (``python -m benchmarks``) on tiny checkpoints: encoders and e2e cases on CPU, the JSON
schema of its report, and agreement of ours and the peer's outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # pytest runs with --import-mode=importlib: the repo root is not on sys.path
    sys.path.insert(0, str(ROOT))

SIDE_KEYS = {"name", "images_per_s", "latency_p50_s", "latency_p95_s", "peak_mem_mb", "flops_per_image", "mfu"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    from benchmarks import suite

    out = tmp_path_factory.mktemp("suite")
    # the pipelines' peers take minutes at their sizes; they have their own scripts
    args = suite.parse_args(["--suite", "encoders,e2e", "--models", "tiny", "--device", "cpu", "--out", str(out),
                             "--cache", str(out / "cache"), "--iters", "2", "--warmup", "1"])  # fmt: skip
    rep = suite.run_suite(args, command="test")
    on_disk = json.loads((out / "suite_cpu.json").read_text())
    assert (out / "suite_cpu.md").read_text().startswith("# visionfm speed suite")
    assert len(on_disk["rows"]) == len(rep["rows"])
    return on_disk


def test_report_schema(report: dict) -> None:
    assert report["errors"] == []
    assert report["device"] == "cpu" and report["quick"] is True
    m = report["machine"]
    assert m["cpu"] and m["torch"] and m["torch_threads"] == 1 and "transformers" in m["versions"]
    assert report["matmul_peak"]["tflops"] > 0
    assert report["command"] == "test" and report["timestamp"]
    rows = report["rows"]
    assert {(r["model"], r["case"]) for r in rows} >= {
        ("tiny-clip", "encoder forward"),
        ("tiny-dinov2", "encoder forward"),
    }
    for r in rows:
        for side in ("ours", "peer"):
            assert SIDE_KEYS <= set(r[side]), (r["model"], r["case"], side)
            s = r[side]
            assert s["images_per_s"] > 0 and 0 < s["latency_p50_s"] <= s["latency_p95_s"]
            assert s["peak_mem_mb"] is not None and s["peak_mem_mb"] >= 0
            assert s["flops_per_image"] > 0 and s["mfu"] > 0  # no upper bound: the peak is timed on a shared machine
        assert r["ratio"] > 0 and r["batch_size"] >= 1 and r["dtype"] == "float32"


def test_outputs_agree(report: dict) -> None:
    for r in report["rows"]:
        assert r["max_abs_diff"] < 1e-4 * max(1.0, r["pooled_abs_max"]), (r["model"], r["case"], r["max_abs_diff"])


def test_e2e_rows(report: dict) -> None:
    rows = {r["model"]: r for r in report["rows"] if r["case"] == "feature extraction e2e"}
    assert set(rows) == {"tiny-clip", "tiny-dinov2"}
    for r in rows.values():
        assert r["images"] == 4 * r["batch_size"]  # --quick: four batches of JPEG files, one encode call
        assert r["ratio_vs_raw_forward"] > 0 and r["raw_forward"]["images_per_s"] > 0
    assert "image-feature-extraction" in rows["tiny-dinov2"]["peer"]["name"]
    assert "open_clip" in rows["tiny-clip"]["peer"]["name"]


def test_cli_rejects_unknown_suite() -> None:
    from benchmarks import suite

    with pytest.raises(SystemExit):
        suite.parse_args(["--suite", "encoders,nope"])
