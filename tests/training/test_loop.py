"""The shared training loop: exact resume after SIGKILL, determinism, skipped samples, schedule."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from visionfm.training import TrainConfig, lr_factor

PROG = Path(__file__).with_name("resume_prog.py")


def _run(out: Path, steps: int, sleep: float = 0.0, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROG), str(out), str(steps), str(sleep), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_and_kill_when(out: Path, steps: int, ready, what: str, *overrides: str) -> None:
    """Start a slow run and SIGKILL it as soon as ``ready()`` is true (``what`` names the point, for errors)."""
    proc = subprocess.Popen(
        [sys.executable, str(PROG), str(out), str(steps), "0.15", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, f"never reached {what}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final.safetensors").exists(), "the run finished before it was killed"


def _run_and_kill_after(out: Path, steps: int, ckpt_step: int, *overrides: str) -> None:
    """Start a slow run, SIGKILL it as soon as checkpoint ``ckpt_step`` is complete."""
    ckpt = out / "checkpoints" / f"step_{ckpt_step:08d}"
    _run_and_kill_when(out, steps, (ckpt / "trainer_state.json").exists, f"checkpoint {ckpt_step}", *overrides)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    r = _run(out, 12)
    assert r.returncode == 0, r.stderr
    return out


def test_sigkill_then_resume_gives_identical_weights(reference, tmp_path):
    out = tmp_path / "killed"
    _run_and_kill_after(out, 12, 8)
    r = _run(out, 12)  # resumes from the newest complete checkpoint
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(reference / "final.safetensors")), load_file(str(out / "final.safetensors"))
    assert len(a) == 4 and set(a) == set(b)  # two Linear layers: weight and bias each
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8, 10, 12]  # nothing lost, nothing logged twice
    ref_rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    got_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(ref_rows) == len(got_rows) == 6
    for x, y in zip(ref_rows, got_rows, strict=True):
        assert set(x) == set(y), (sorted(x), sorted(y))
        assert {"step", "loss", "acc", "lr", "skipped_samples", "epoch"} <= set(x)
        assert (x["step"], x["epoch"], x["skipped_samples"]) == (y["step"], y["epoch"], y["skipped_samples"])
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6), x["step"]
        assert (x["acc"], x["lr"]) == pytest.approx((y["acc"], y["lr"]), abs=1e-6), x["step"]


def test_same_seed_same_weights_and_bad_sample_counted(reference, tmp_path):
    r = _run(tmp_path, 12)
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(reference / "final.safetensors")), load_file(str(tmp_path / "final.safetensors"))
    assert len(a) == 4 and set(a) == set(b)  # two Linear layers: weight and bias each
    for k in a:
        assert torch.equal(a[k], b[k]), k
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    # 12 steps x 2 micro-batches x 4 = 96 draws over 40-item epochs; item 7 appears once per epoch.
    assert last["skipped_samples"] == 2
    assert "skipping bad sample 7" in r.stderr
    state = json.loads((tmp_path / "checkpoints" / "step_00000012" / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["skipped_samples"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000008", "step_00000012"]


def test_training_reduces_loss(reference):
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_cosine_warmup_schedule():
    cfg = TrainConfig(output_dir="x", max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    vals = [lr_factor(s, cfg) for s in range(10, 110)]
    assert len(vals) == 100 and vals == sorted(vals, reverse=True)  # non-increasing after the warmup
    assert vals[0] > vals[50] > vals[-1]


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown train option.*'lrr'"):
        TrainConfig.from_dict({"output_dir": "x", "max_steps": 1, "lrr": 1})
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(output_dir="x", max_steps=1, mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(output_dir="x", max_steps=1, batch_size=0)


def test_resume_metrics_log_is_exact_mid_window(tmp_path):
    """Checkpoint at step 8, log every 3: the running averages of steps 7-8 must survive the kill."""
    ref = tmp_path / "ref"
    r = _run(ref, 12, 0.0, "log_every=3")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed"
    _run_and_kill_after(out, 12, 8, "log_every=3")
    r = _run(out, 12, 0.0, "log_every=3")
    assert r.returncode == 0, r.stderr
    strip = [{k: v for k, v in row.items() if k != "samples_per_s"} for row in _rows(ref)]
    got = [{k: v for k, v in row.items() if k != "samples_per_s"} for row in _rows(out)]
    assert [row["step"] for row in got] == [3, 6, 9, 12]
    assert got == strip  # bit-exact: loss, acc, lr, epoch, skipped_samples


def test_resume_with_changed_settings_is_refused(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    r = _run(out, 12, 0.0, "lr=0.02")
    assert r.returncode != 0
    assert "train.lr: 0.01 -> 0.02" in r.stderr and "new train.output_dir" in r.stderr, r.stderr[-2000:]
    r = _run(out, 12, 0.0, "progress=true")  # exempt: does not change the result
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("name", "damage"), [("model.safetensors", "truncate"), ("optimizer.bin", "zeros")])
def test_broken_latest_checkpoint_falls_back_to_previous(reference, tmp_path, name, damage):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    f = out / "checkpoints" / "step_00000012" / name
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(len(data)))
    r = _run(out, 12)
    assert r.returncode == 0, r.stderr
    assert f"step_00000012 is broken ({name}" in r.stderr, r.stderr[-2000:]
    a, b = load_file(str(reference / "final.safetensors")), load_file(str(out / "final.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k  # retrained steps 9-12 from step 8: the same weights
    assert _rows(out) == _rows(reference)[:-2] + _rows(out)[-2:] and len(_rows(out)) == 6


def test_rerunning_a_finished_run_keeps_its_last_metrics(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    r = _run(out, 12)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == _rows(reference)[-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_seeded_step_then_resume_is_exact(reference, tmp_path, seed):
    """Killed at a seeded step (not only right after a checkpoint); seed 2 also cuts the newest checkpoint's weights
    in half, as a kill during the write would. The resumed run's weights and metrics log equal the reference's."""
    import random

    kill_at = random.Random(seed).randint(9 if seed == 2 else 3, 11)  # seed 2 needs two checkpoints to fall back on
    out = tmp_path / "killed"

    def reached() -> bool:
        return (out / "metrics.jsonl").exists() and any(r["step"] >= kill_at for r in _rows(out))

    _run_and_kill_when(out, 12, reached, f"step {kill_at}")
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    if seed == 2:
        assert ckpts, "no checkpoint to break"
        w = ckpts[-1] / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    r = _run(out, 12)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_file(str(reference / "final.safetensors")), load_file(str(out / "final.safetensors"))
    assert len(a) == 4 and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), (kill_at, k)
    want = [{k: v for k, v in row.items() if k != "samples_per_s"} for row in _rows(reference)]
    got = [{k: v for k, v in row.items() if k != "samples_per_s"} for row in _rows(out)]
    assert len(want) == 6 and got == want, kill_at
    if seed == 2:
        assert ckpts[-1].name in r.stderr  # the broken checkpoint is named in the fallback warning


def test_progress_listener_hears_every_step_in_its_block(tmp_path):
    import importlib.util

    from visionfm.training import progress_listener

    spec = importlib.util.spec_from_file_location("resume_prog", PROG)
    prog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prog)
    seen: list[tuple[int, int]] = []
    with progress_listener(lambda step, total: seen.append((step, total))):
        prog.build(str(tmp_path / "a"), 5).fit()
    assert seen == [(i, 5) for i in range(1, 6)]
    prog.build(str(tmp_path / "b"), 3).fit()  # outside the block: not told
    assert len(seen) == 5
