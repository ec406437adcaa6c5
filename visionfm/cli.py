"""The ``visionfm`` command line (also ``python -m visionfm``, so ``accelerate launch -m visionfm`` works)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _picture_stems(images: Sequence[str]) -> list[str]:
    """File-name stems for the pictures of ``images``: the image's own stem, with ``-`` and 8 hex digits of its full
    path added when another input image has the same stem (``x/pic.png`` and ``y/pic.jpg``), so none overwrites
    another's pictures."""
    import hashlib
    from collections import Counter

    stems = [Path(p).stem for p in images]
    count = Counter(stems)
    return [
        s if count[s] == 1 else f"{s}-{hashlib.sha256(str(Path(p).resolve()).encode()).hexdigest()[:8]}"
        for s, p in zip(stems, images)
    ]


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


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the local web app until interrupted."""
    from .app import AppConfig, serve

    cfg = AppConfig(clip=args.clip, sam=args.sam, grounding=args.grounding, runtime=args.runtime, device=args.device,
                    max_pixels=args.max_pixels, seg_mode=args.seg_mode)  # fmt: skip
    serve(cfg, host=args.host, port=args.port)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX graphs plus a manifest."""
    from .foundation.onnx_export import export_onnx

    if args.format != "onnx":
        raise ValueError(f"--format {args.format!r} is not supported; choose onnx")
    out = export_onnx(args.model, args.out, text=not args.no_text, allow_pickle=args.allow_pickle)
    graphs = sorted(p.name for p in Path(out).glob("*.onnx"))
    print(f"wrote {', '.join(graphs)} and manifest.json to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Load an encoder and print its info."""
    from .foundation.loading import load_encoder

    enc = load_encoder(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    info = enc.info
    print(_table([[k, str(getattr(info, k))] for k in info.__dataclass_fields__], ["field", "value"]))
    return 0


def _add_speed_arguments(p: argparse.ArgumentParser) -> None:
    """``--speed``, ``--token-merging``, ``--quantize``: load_encoder's speed options."""
    p.add_argument("--speed", choices=["fast"], help="speed preset: the options that pay on the device")
    p.add_argument("--token-merging", type=float, help="merge tokens in ViT blocks: r per block (>= 1) or a ratio")
    p.add_argument("--quantize", choices=["int8", "int8-weight", "int4-weight"], help="quantize the encoder")


def _speed_options(args: argparse.Namespace) -> dict:
    """The speed options given on the command line, for load_encoder."""
    out: dict = {}
    if getattr(args, "speed", None):
        out["speed"] = args.speed
    tm = getattr(args, "token_merging", None)
    if tm is not None:
        out["token_merging"] = int(tm) if tm >= 1 and float(tm).is_integer() else tm
    if getattr(args, "quantize", None):
        out["quantize"] = args.quantize
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    """Run an evaluation suite, or aggregate results into a report."""
    if args.report:
        from .eval.report import build_report

        path = build_report(args.report, args.out or args.report)
        print(f"wrote {path}")
        return 0
    if not args.suite or not args.model:
        raise ValueError("visionfm eval needs SUITE and --model (or --report DIR)")
    from .eval.runner import Runner
    from .eval.suite import load_suite

    suite = load_suite(args.suite, overrides={"num": args.num, "set": args.set, "data_root": args.data_root})
    runner = Runner(suite, args.model, args.out or "results", batch_size=args.batch_size, chunk_size=args.chunk_size,
                    num_workers=args.num_workers, load_options=_speed_options(args))  # fmt: skip
    report = runner.run()
    failed = [r for r in report["results"] if "error" in r]
    if runner.is_main:
        from .eval.report import _fmt_value, _is_number

        rows = []
        for r in report["results"]:  # every numeric metric; values in [0, 1] as percentages, as in the report
            if "error" in r:
                rows.append([r["name"], r["dataset"], "error", r["error"], str(r["samples"]), str(r["skipped"])])
                continue
            shown = {k: v for k, v in r["metrics"].items() if _is_number(v)} or {"-": None}
            for metric, value in shown.items():
                percent = _is_number(value) and isinstance(value, float) and 0.0 <= value <= 1.0
                cell = _fmt_value(value, percent) + ("%" if percent else "")
                rows.append([r["name"], r["dataset"], metric, cell, str(r["samples"]), str(r["skipped"])])
        print(_table(rows, ["task", "dataset", "metric", "value", "samples", "skipped"]))
        if failed:
            names = ", ".join(r["name"] for r in failed)
            print(f"error: {len(failed)} of {len(report['results'])} tasks failed ({names}); their errors are in "
                  f"{runner.results_path}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run a recipe YAML."""
    from .training.recipes import run_recipe

    out = run_recipe(args.recipe, args.overrides)
    print(f"checkpoint: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) the toy zoo, classify held-out compositions zero-shot and draw every pipeline."""
    from .toyworld.demo import run_demo

    results, image = run_demo(args.out, retrain=args.retrain, num=args.num, zoo=not args.clip_only)
    rows = [
        [r.task, r.images, str(r.num_classes), str(r.n), f"{100 * r.top1:.1f}%", f"{100 * r.chance:.1f}%"]
        for r in results
    ]
    print("\nZero-shot classification, toyworld CLIP trained from scratch (held-out pairs never seen in training)")
    print(_table(rows, ["labels", "images", "classes", "n", "top-1", "chance"]))
    print(f"\nreport: {image}  (pictures and zero_shot.json next to it)")
    return 0


def cmd_toyworld(args: argparse.Namespace) -> int:
    """Export toyworld scenes."""
    from .toyworld.export import main_export

    out = main_export(args.out, args.format, args.split, args.num, args.size, args.seed, args.label)
    print(f"wrote {args.format} to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a pipeline on image files (or generate images); print a table, optionally write JSON and pictures."""
    import json

    import numpy as np

    from .pipelines import pipeline

    kw: dict = {"templates": args.templates} if args.templates else {}
    if args.task in ("zero-shot-seg", "grounding"):
        if args.mode:
            kw["mode"] = args.mode
        if args.refine:
            kw["refine"] = [r.strip() for r in args.refine.split(",")]
    if args.preset and args.task not in ("zero-shot-seg", "generation"):
        raise ValueError(f"--preset is a zero-shot-seg or generation option, not one of {args.task}")
    if args.preset and args.task == "zero-shot-seg":
        kw["preset"] = args.preset
    labels = [x.strip() for item in (args.labels or []) for x in item.split(",") if x.strip()]
    if args.task != "generation" and not args.images:
        raise ValueError(f"{args.task} needs at least one image file")
    kw.update(_speed_options(args))
    pipe = pipeline(args.task, model=args.model, device=args.device, batch_size=args.batch_size, **kw)
    records = []
    if args.task == "zero-shot-classification":
        if not labels:
            raise ValueError("zero-shot-classification needs --labels")
        results = pipe(list(args.images), labels=labels, top_k=args.top_k, multi_label=args.multi_label)
        rows = [
            [img, r[0]["label"], f"{r[0]['score']:.3f}", ", ".join(f"{d['label']} {d['score']:.2f}" for d in r[1:])]
            for img, r in zip(args.images, results)
        ]
        print(_table(rows, ["image", "label", "score", "next"]))
        records = [{"image": img, "predictions": r} for img, r in zip(args.images, results)]
    elif args.task == "feature-extraction":
        feats = pipe(list(args.images))
        rows = [
            [
                img,
                str(tuple(feats.pooled[i].shape)),
                str(tuple(feats.patches[i].shape)),
                f"{float(feats.pooled[i].float().norm()):.3f}",
            ]
            for i, img in enumerate(args.images)
        ]
        print(_table(rows, ["image", "pooled", "patches", "|pooled|"]))
        records = [
            {"image": img, "pooled": feats.pooled[i].float().cpu().tolist()} for i, img in enumerate(args.images)
        ]
    elif args.task == "mask-generation":
        results = pipe(list(args.images), points_per_side=args.points_per_side, crops_n_layers=args.crops_n_layers)
        rows = [
            [img, str(len(r)), f"{float(r.scores.max()):.3f}" if len(r) else "-"]
            for img, r in zip(args.images, results)
        ]
        print(_table(rows, ["image", "masks", "best IoU"]))
        records = [{"image": img, **r.to_dict()} for img, r in zip(args.images, results)]
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for img, stem, r in zip(args.images, _picture_stems(args.images), results):
                r.overlay(img).save(Path(args.out) / f"{stem}_masks.png")
    elif args.task == "zero-shot-seg":
        if not labels and not args.preset:
            raise ValueError("zero-shot-seg needs --labels (e.g. --labels 'cat,sofa') or a --preset with its classes")
        opts = {"labels": labels, "background": not args.no_background} if labels else {}
        results = pipe(list(args.images), **opts)
        rows = [
            [img, ", ".join(f"{lab} {100 * float((r.label_map == r.labels.index(lab)).float().mean()):.0f}%"
                            for lab in r.masks)]
            for img, r in zip(args.images, results)
        ]  # fmt: skip
        print(_table(rows, ["image", "labels (pixel share)"]))
        records = [{"image": img, **r.to_dict()} for img, r in zip(args.images, results)]
        if args.out:
            from PIL import Image

            Path(args.out).mkdir(parents=True, exist_ok=True)
            for img, stem, r in zip(args.images, _picture_stems(args.images), results):
                Image.fromarray(r.label_map.numpy().astype(np.uint16)).save(Path(args.out) / f"{stem}_labels.png")
                Image.fromarray(r.colour_map()).save(Path(args.out) / f"{stem}_colours.png")
                r.overlay(img).save(Path(args.out) / f"{stem}_overlay.png")
    elif args.task == "grounding":
        if not labels:
            raise ValueError("grounding needs --labels (the phrases, e.g. --labels 'the red mug,a laptop')")
        results = pipe(list(args.images), phrases=labels, threshold=args.threshold)
        rows = [
            [
                img,
                d["label"],
                f"{d['score']:.3f}",
                "({xmin:.0f}, {ymin:.0f}, {xmax:.0f}, {ymax:.0f})".format(**d["box"]),
            ]
            for img, r in zip(args.images, results)
            for d in r.to_dict()
        ]
        print(_table(rows, ["image", "phrase", "score", "box xyxy"]))
        records = [{"image": img, "detections": r.to_dict()} for img, r in zip(args.images, results)]
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for img, stem, r in zip(args.images, _picture_stems(args.images), results):
                r.overlay(img).save(Path(args.out) / f"{stem}_grounding.png")
    elif args.task == "generation" and args.prompts is not None:
        prompts = [x.strip() for x in args.prompts.split(";") if x.strip()]
        if not prompts:
            raise ValueError("--prompts needs at least one prompt (separate prompts with ';')")
        if labels:
            raise ValueError("pass either --labels (class-conditional DiT) or --prompts (text-to-image), not both")
        res = pipe(prompts=prompts, num_images_per_prompt=args.num_images, negative_prompt=args.negative_prompt,
                   steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed, preset=args.preset or "quick",
                   cache=args.cache)  # fmt: skip
        print(_table([[str(i), p, str(sd)] for i, (p, sd) in enumerate(zip(res.prompts, res.seeds))],
                     ["#", "prompt", "seed"]))  # fmt: skip
        records = [res.to_dict()]
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(res.images):
                im.save(Path(args.out) / f"{i:04d}_prompt{i // args.num_images}_seed{res.seeds[i]}.png")
            res.grid().save(Path(args.out) / "grid.png")
    elif args.task == "generation":
        if not labels:
            raise ValueError(
                "generation needs --labels (class names or ids, e.g. --labels 'golden retriever,207') for a DiT model, "
                "or --prompts 'a red square;a blue circle' for a text-to-image (PixArt) model"
            )
        wanted = [int(x) if x.isdigit() else x for x in labels]
        res = pipe(wanted, num_images_per_label=args.num_images, steps=args.steps, guidance_scale=args.guidance_scale,
                   seed=args.seed, preset=args.preset or "quick", cache=args.cache)  # fmt: skip
        print(_table([[str(i), n or "-", str(c), str(sd)] for i, (n, c, sd) in enumerate(zip(res.names, res.labels,
                      res.seeds))], ["#", "class", "id", "seed"]))  # fmt: skip
        records = [res.to_dict()]
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for i, im in enumerate(res.images):
                im.save(Path(args.out) / f"{i:04d}_class{res.labels[i]}_seed{res.seeds[i]}.png")
            res.grid().save(Path(args.out) / "grid.png")
    else:
        raise ValueError(f"visionfm run does not support task {args.task!r}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.task}.json").write_text(json.dumps(records, indent=1))
        print(f"\nwrote {out / (args.task + '.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``visionfm`` command."""
    p = argparse.ArgumentParser(prog="visionfm", description="Vision foundation models behind one feature interface.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--family", help="only this family (clip, dinov2, sam, dit)")
    m.set_defaults(func=cmd_models)
    x = sub.add_parser(
        "export", help="export a model's vision (and text) tower, or SAM's encoder and prompt decoder, to ONNX"
    )
    x.add_argument("model", help="alias, hub id, open_clip tag or local directory")
    x.add_argument("out", help="output directory")
    x.add_argument("--format", default="onnx", choices=["onnx"])
    x.add_argument("--no-text", action="store_true", help="image-text families: skip the text tower graph")
    x.add_argument("--allow-pickle", action="store_true", help="permit pickle checkpoints (weights_only=True)")
    x.set_defaults(func=cmd_export)
    a = sub.add_parser("app", help="a local web page: zero-shot-seg overlays, grounding, click-to-segment (offline)")
    a.add_argument("--clip", default="toyworld-clip", help="image-text model for segmentation and grounding")
    a.add_argument("--sam", default="toyworld-sam", help="SAM-family model for click-to-segment and box-to-mask")
    a.add_argument("--grounding", default=None, help="a detector (OWLv2, Grounding DINO, SAM 3); default: --clip")
    a.add_argument("--seg-mode", default=None, help="zero-shot-seg mode (default: the model's preset)")
    a.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    a.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    a.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest upload, width x height")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=7860)
    a.set_defaults(func=cmd_app)
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
    tasks = [
        "zero-shot-classification",
        "feature-extraction",
        "mask-generation",
        "zero-shot-seg",
        "grounding",
        "generation",
    ]
    r = sub.add_parser("run", help=f"run a pipeline on image files ({', '.join(tasks)})")
    r.add_argument("task", choices=tasks)
    r.add_argument("images", nargs="*", help="image files (none for generation)")
    r.add_argument("--model", help="alias, hub id, open_clip tag or local directory (default: the task's)")
    r.add_argument("--labels", nargs="*", help="class names or phrases, space- or comma-separated")
    r.add_argument("--templates", help="template set (single, simple, imagenet80) or one template with {}")
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--mode", help="zero-shot-seg/grounding: dense CLIP mode (vanilla, maskclip, sclip, ...)")
    r.add_argument("--refine", help="zero-shot-seg/grounding: 'pamr' and/or a SAM model, comma-separated")
    r.add_argument("--no-background", action="store_true", help="zero-shot-seg: every pixel gets a label")
    r.add_argument("--threshold", type=float, default=0.1, help="grounding: score threshold")
    r.add_argument("--num-images", type=int, default=1, help="generation: images per label or prompt")
    r.add_argument("--prompts", help="generation (text-to-image, e.g. PixArt): prompts separated by ';'")
    r.add_argument("--negative-prompt", default="", help="generation (text-to-image): the guidance's negative prompt")
    r.add_argument("--steps", type=int, help="generation: denoising steps (default: the preset's)")
    r.add_argument("--guidance-scale", type=float, help="generation: classifier-free guidance (default: the preset's)")
    r.add_argument(
        "--preset",
        help="generation: quick (default; DiT: 50 steps, cfg 4; PixArt: 20, cfg 4.5) or paper (DiT: 250, cfg 1.5); "
        "zero-shot-seg: a method's benchmark config, e.g. naclip-voc21 (its classes are used without --labels)",
    )
    r.add_argument("--seed", type=int, default=0, help="generation: seed of the first image (image i: seed + i)")
    r.add_argument("--cache", type=int, help="generation: step caching interval (2: every other step reuses the "
                   "middle blocks' residuals; default off, or 2 with --speed fast)")  # fmt: skip
    r.add_argument("--multi-label", action="store_true", help="independent per-label scores (zero-shot)")
    r.add_argument("--points-per-side", type=int, default=32, help="automatic mask generation grid")
    r.add_argument("--crops-n-layers", type=int, default=0, help="automatic masks: extra layers of SAM crops")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--device", default="auto")
    r.add_argument("--out", help="directory for the JSON results")
    _add_speed_arguments(r)
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("eval", help="run an evaluation suite (shipped name or YAML), or --report DIR")
    e.add_argument("suite", nargs="?", help="shipped suite name (toyworld, ...) or a YAML file")
    e.add_argument("--model", help="alias, hub id, open_clip tag or local directory")
    e.add_argument("--out", help="results directory (default: results/, or the --report directory)")
    e.add_argument("--report", help="aggregate the result JSONs under this directory into report.md + plots")
    e.add_argument("--num", "--limit", type=int, help="cap every dataset at its first N samples (quick runs)")
    e.add_argument("--data-root", help="folder relative dataset paths resolve against (default: the suite file's)")
    e.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="edit the suite: datasets.NAME.KEY=V or tasks.I.KEY=V (I: index or name; *: all); repeatable",
    )
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--chunk-size", type=int, default=256, help="samples per persisted chunk (unit of resume)")
    e.add_argument("--num-workers", type=int, default=0)
    _add_speed_arguments(e)
    e.set_defaults(func=cmd_eval)
    t = sub.add_parser("train", help="run a recipe YAML (e.g. recipes/toyworld_clip.yaml)")
    t.add_argument("recipe", help="recipe path or built-in name")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    t.set_defaults(func=cmd_train)
    ds = sub.add_parser("distill", help="run a distillation recipe (task: distill), e.g. recipes/distill_toyworld.yaml")
    ds.add_argument("recipe", help="recipe path or built-in name")
    ds.add_argument("overrides", nargs="*", help="section.key=value overrides")
    ds.set_defaults(func=cmd_train)
    d = sub.add_parser("demo", help="offline demo: the toy zoo trained from scratch, every pipeline on held-out scenes")
    d.add_argument("--out", default="runs/demo", help="where the picture and JSON report go")
    d.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    d.add_argument("--num", type=int, default=600, help="evaluation images per set")
    d.add_argument("--clip-only", action="store_true", help="only the toy CLIP's zero-shot classification")
    d.set_defaults(func=cmd_demo)
    w = sub.add_parser("toyworld", help="export toyworld scenes (imagefolder, webdataset, coco)")
    w.add_argument("out")
    w.add_argument("--format", required=True, choices=["imagefolder", "webdataset", "coco"])
    w.add_argument("--split", default="train", choices=["train", "val", "test", "heldout"])
    w.add_argument("--num", type=int, default=1000)
    w.add_argument("--size", type=int, default=64)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument(
        "--label", default="colour_shape", choices=["colour_shape", "shape", "colour"], help="imagefolder classes"
    )
    w.set_defaults(func=cmd_toyworld)
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
