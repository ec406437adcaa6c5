"""The visionfm command line, through the console script and ``python -m visionfm``."""

from __future__ import annotations

import subprocess
import sys

import visionfm as vfm
from visionfm.cli import main
from visionfm.testing import tiny_checkpoint


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "backend", "source"]
    for spec in vfm.list_models():
        assert any(line.startswith(spec.name + " ") and spec.source in line for line in lines), spec.name


def test_models_filter_and_bad_family(capsys):
    assert main(["models", "--family", "sam"]) == 0
    out = capsys.readouterr().out
    assert "sam-vit-base" in out and "dinov2-small" not in out
    assert main(["models", "--family", "nope"]) == 2


def test_python_dash_m_is_the_same_cli():
    r = subprocess.run(
        [sys.executable, "-m", "visionfm", "models", "--family", "dinov2"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "facebook/dinov2-small" in r.stdout


def test_convert_and_info(tmp_path, tiny_root, capsys):
    src = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    assert main(["convert", str(src), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["info", str(tmp_path / "hf"), "--device", "cpu"]) == 0
    assert "transformers" in capsys.readouterr().out
    assert main(["info", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
