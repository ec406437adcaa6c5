#!/usr/bin/env python
"""Check out every reference repository at its exact commit into REF_DIR/<name>/src (ref_paths.py: REFS, REF_DIR).

    python tools/seg_goldens/fetch_refs.py            # all of them (ref_paths.REFS): sclip clearclip naclip
                                                      # proxyclip dino dinov2 corrclip trident
    python tools/seg_goldens/fetch_refs.py naclip     # some of them

Needs git and access to github.com (a mirror works through git's url.<base>.insteadOf). A checkout already at the
right commit is left alone; one at another commit is moved to it. Nothing of theirs is edited, and nothing of it
goes into this repository (REF_DIR defaults to tools/seg_goldens/ref/, which is git-ignored).
"""

from __future__ import annotations

import subprocess
import sys

import ref_paths


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("+ git", " ".join(args), flush=True)
    return subprocess.run(["git", *args], check=check)


def head(path) -> str:
    """The checked-out commit, "" where there is none yet (an interrupted fetch)."""
    out = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--verify", "--quiet", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip()


def fetch(name: str) -> None:
    repo, commit = ref_paths.REFS[name]
    dst = ref_paths.src(name)
    if dst.exists() and not (dst / ".git").exists():
        sys.exit(f"{dst} exists but is not a git checkout: remove it, or point VISIONFM_REF_DIR elsewhere")
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", str(dst))
        git("-C", str(dst), "remote", "add", "origin", f"https://github.com/{repo}.git")
    elif head(dst) == commit:
        print(f"{name}: {dst} already at {commit}")
        return
    # just that commit if the server allows it (GitHub does), else the whole history
    if git("-C", str(dst), "fetch", "--quiet", "--depth", "1", "origin", commit, check=False).returncode:
        git("-C", str(dst), "fetch", "--quiet", "origin")
    git("-C", str(dst), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
    assert head(dst) == commit, (dst, head(dst), commit)
    print(f"{name}: {repo} @ {commit} -> {dst}")


def main() -> None:
    names = sys.argv[1:] or list(ref_paths.REFS)
    unknown = sorted(set(names) - set(ref_paths.REFS))
    if unknown:
        sys.exit(f"unknown reference(s) {unknown}; known: {list(ref_paths.REFS)}")
    for name in names:
        fetch(name)


if __name__ == "__main__":
    main()
