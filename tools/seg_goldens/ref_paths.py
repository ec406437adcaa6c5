"""Every path the seg-golden generators use comes from here (see README.md).

REF_DIR    ``$VISIONFM_REF_DIR``, default ``ref/`` next to this file: the references' sources, one checkout per
           repository at ``REF_DIR/<name>/src`` (the names are the keys of REFS), as fetch_refs.py lays them out.
out_dir()  ``$VISIONFM_GOLDEN_OUT``, default a new temporary folder: the goldens. What the generators make on the way
           (the tiny checkpoint as a torch pickle, class files, the tiny proxies) goes to ``out_dir()/work/<name>/``.
           A default folder is exported to the environment, so a generator's subprocesses write to the same one.
           Nothing points at tests/pipelines/golden unless you set VISIONFM_GOLDEN_OUT to it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STUBS_DIR = HERE / "stubs"

# name -> (GitHub owner/repo, commit): the exact code the goldens in tests/pipelines/golden were made with
REFS = {
    "sclip": ("wangf3014/SCLIP", "b56bd3014b9e8a3ee3450bcfc53700a67d627b7a"),
    "clearclip": ("mc-lan/ClearCLIP", "ad68a404d55d48d27330b93554eb64a234ff717f"),
    "naclip": ("sinahmr/NACLIP", "0cac3a651f753b11315ea799cfbfabf79da1bd76"),
    "proxyclip": ("mc-lan/ProxyCLIP", "e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1"),
    "dino": ("facebookresearch/dino", "7c446df5b9f45747937fb0d72314eb9f7b66930a"),
    "dinov2": ("facebookresearch/dinov2", "b8931f7bf91576930313be2c6d6af376033b35f0"),
    "corrclip": ("zdk258/CorrCLIP", "6c1fd2c02ff90f071ed744a5998be0cda7ad75b4"),
    # Trident's repository holds its own (modified) segment_anything: the SAM code make_trident.py uses
    "trident": ("YuHengsss/Trident", "a93b346d1b1dc55bc6f547da5b7d361ad449ae44"),
    # SAM 3 semantic fusion; its vendored sam3/model/ code (the processor step) is used, its model is not
    "segearth_ov3": ("earth-insights/SegEarth-OV-3", "87e5cc18c8bc9c0b4713b975587281ac1c97c79a"),
}

REF_DIR = Path(os.environ.get("VISIONFM_REF_DIR") or HERE / "ref").absolute()


@functools.cache
def out_dir() -> Path:
    """The output folder, created on first use (a new temporary folder unless $VISIONFM_GOLDEN_OUT names one)."""
    out = os.environ.get("VISIONFM_GOLDEN_OUT")
    if not out:
        out = tempfile.mkdtemp(prefix="visionfm-seg-goldens-")
        os.environ["VISIONFM_GOLDEN_OUT"] = out  # inherited by the generators' subprocesses
        print(f"[seg_goldens] VISIONFM_GOLDEN_OUT is not set: writing to {out}", file=sys.stderr)
    path = Path(out).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def src(name: str) -> Path:
    """REF_DIR/<name>/src: the checkout of REFS[name]."""
    return REF_DIR / name / "src"


def work_dir(name: str) -> Path:
    """out_dir()/work/<name>, created: a generator's intermediate files."""
    path = out_dir() / "work" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_src(name: str, commit: str) -> Path:
    """src(name), after checking that it exists and, where that can be told, is at `commit` (= REFS[name])."""
    assert REFS[name][1] == commit, (name, commit, REFS[name])
    path = src(name)
    if not path.is_dir():
        sys.exit(f"{path} is missing: run `python tools/seg_goldens/fetch_refs.py` (or set VISIONFM_REF_DIR)")
    head = None
    if (path / ".git").exists():  # a checkout made by fetch_refs.py
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    elif (path / "COMMIT").is_file():  # an extracted `git archive` with a stamp file
        head = (path / "COMMIT").read_text().strip()
    if head is None:
        print(f"[seg_goldens] warning: cannot tell which commit {path} is; expected {commit}", file=sys.stderr)
    elif head != commit:
        sys.exit(f"{path} is at {head}, expected {REFS[name][0]} @ {commit}: rerun fetch_refs.py")
    return path
