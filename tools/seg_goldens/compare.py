#!/usr/bin/env python
"""Compare two safetensors files tensor by tensor (e.g. a regenerated golden with the committed one).

    python tools/seg_goldens/compare.py NEW.safetensors tests/pipelines/golden/proxyclip.safetensors [--atol 0]

Prints, per tensor, the max abs difference (floating point) or whether the values are equal (integer / bool), and
any tensor whose name, shape or dtype is in one file only. Exits 0 when every tensor matches: integers exactly,
floats within --atol (default 0: identical). Metadata is not compared: it names local paths; the keys whose values
differ are listed for information.
"""

from __future__ import annotations

import argparse
import sys

import torch
from safetensors import safe_open


def load(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--atol", type=float, default=0.0, help="largest float difference counted as a match (0)")
    args = ap.parse_args()
    (ta, ma), (tb, mb) = load(args.a), load(args.b)
    bad = 0
    for k in sorted(set(ta) | set(tb)):
        if k not in ta or k not in tb:
            print(f"{k:55s} only in {args.a if k in ta else args.b}")
            bad += 1
            continue
        x, y = ta[k], tb[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            print(f"{k:55s} shape/dtype {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}")
            bad += 1
        elif x.dtype.is_floating_point:
            diff = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
            same = torch.equal(x, y)
            ok = same or diff <= args.atol
            print(
                f"{k:55s} {str(tuple(x.shape)):16s} {str(x.dtype):14s} max abs diff {diff:.3e}{'' if ok else '  FAIL'}"
            )
            bad += not ok
        else:
            same = torch.equal(x, y)
            n = int((x != y).sum()) if not same else 0
            print(f"{k:55s} {str(tuple(x.shape)):16s} {str(x.dtype):14s} {'equal' if same else f'{n} differ  FAIL'}")
            bad += not same
    meta = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
    if meta:
        print(f"metadata differing (not compared): {', '.join(meta)}")
    print(f"{len(set(ta) | set(tb))} tensors, {bad} mismatching" + ("" if bad else ": match"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
