"""The ``visionfm`` command line (also ``python -m visionfm``, so ``accelerate launch -m visionfm`` works)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_models(args: argparse.Namespace) -> int:
    """Print the registry of named checkpoints as a table."""
    from .foundation.registry import families, list_models

    specs = list_models(args.family)
    if args.family and not specs:
        print(f"no models for family {args.family!r}; families: {', '.join(sorted(families()))}", file=sys.stderr)
        return 2
    rows = [[s.name, s.family, s.backend or "auto", s.source, s.description] for s in specs]
    print(_table(rows, ["name", "family", "backend", "source", "description"]))
    print(
        f"\n{len(specs)} models in {len({s.family for s in specs})} families. Also accepted: a hub id, an open_clip tag "
        "'ARCH/PRETRAINED', or a local checkpoint directory."
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a CLIP checkpoint between the open_clip and transformers formats."""
    from .foundation.clip import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, to=args.to)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Load an encoder and print its info."""
    from .foundation.loading import load_encoder

    enc = load_encoder(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    info = enc.info
    print(_table([[k, str(getattr(info, k))] for k in info.__dataclass_fields__], ["field", "value"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``visionfm`` command."""
    p = argparse.ArgumentParser(prog="visionfm", description="Vision foundation models behind one feature interface.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--family", help="only this family (clip, dinov2, sam, dit)")
    m.set_defaults(func=cmd_models)
    c = sub.add_parser("convert", help="convert a CLIP checkpoint between open_clip and transformers formats")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--to", required=True, choices=["transformers", "open_clip"])
    c.set_defaults(func=cmd_convert)
    i = sub.add_parser("info", help="load a model and print its EncoderInfo")
    i.add_argument("model", help="alias, hub id, open_clip tag or local directory")
    i.add_argument("--device", default="auto")
    i.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    i.add_argument("--allow-pickle", action="store_true", help="permit pickle checkpoints (weights_only=True)")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionfm`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
