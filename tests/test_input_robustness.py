"""The malformed-input corpus through encode, the pipelines and an eval suite (issue 16).

The corpus is built here from PIL and numpy (no binary junk is committed). Each case gets one of three outcomes,
asserted exactly:

- ``ok``: a correct result (odd but valid images: grey, RGBA, 16-bit, palette, CMYK, tiny, EXIF-rotated);
- ``error``: a clear ``ValueError`` (``ImageLoadError``) that names the file and says what was expected;
- inside an eval suite, every ``error`` case is skipped and counted, and the others are scored.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import visionfm as vfm
from visionfm.data.images import ImageLoadError
from visionfm.eval.runner import Runner
from visionfm.eval.suite import parse_suite
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _corpus() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file suffix, file bytes, expected outcome and, for errors, a phrase the message must contain)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    good_png = _png(rgb)
    jpg = io.BytesIO()
    rgb.save(jpg, format="JPEG")
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG")
    exif = io.BytesIO()
    ex = Image.Exif()
    ex[0x0112] = 6  # rotated 90 degrees
    rgb.save(exif, format="JPEG", exif=ex)
    gif = io.BytesIO()
    rgb.convert("P").save(gif, format="GIF")
    return {
        "rgb.png": (".png", good_png, "ok"),
        "grey.png": (".png", _png(rgb.convert("L")), "ok"),
        "rgba.png": (".png", _png(rgb.convert("RGBA")), "ok"),
        "grey16.png": (".png", _png(Image.fromarray((rng.random((30, 30)) * 65535).astype(np.uint16))), "ok"),
        "palette.gif": (".gif", gif.getvalue(), "ok"),
        "cmyk.jpg": (".jpg", cmyk.getvalue(), "ok"),
        "exif.jpg": (".jpg", exif.getvalue(), "ok"),
        "tiny.png": (".png", _png(Image.new("RGB", (1, 1), (255, 0, 0))), "ok"),
        "zero-bytes.png": (".png", b"", "error:cannot"),
        "truncated.png": (".png", good_png[: len(good_png) // 2], "error:truncated.png"),
        "random-bytes.jpg": (".jpg", rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(), "error:random-bytes.jpg"),
        "text.png": (".png", b"this is not an image\n", "error:text.png"),
        "thin.png": (".png", _png(Image.new("RGB", (1, 10000))), "error:aspect ratio"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = {}
    for name, (_, data, expect) in _corpus().items():
        (root / name).write_bytes(data)
        files[name] = (root / name, expect)
    return files


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("clip", root=tiny_root), device="cpu")


def _check(fn, path, expect):
    if expect == "ok":
        return fn(path)
    with pytest.raises(ValueError) as err:
        fn(path)
    phrase = expect.removeprefix("error:")
    msg = str(err.value)
    assert phrase in msg or path.name in msg, msg
    assert path.name in msg or "aspect ratio" in msg, msg  # the file is named (or its shape problem is)
    return None


def test_corpus_covers_both_outcomes(corpus):
    kinds = [e.split(":")[0] for _, e in corpus.values()]
    assert kinds.count("ok") == 8 and kinds.count("error") == 5


def test_encode_each_case(corpus, clip):
    for name, (path, expect) in corpus.items():
        out = _check(lambda p: clip.encode(str(p), progress=False), path, expect)
        if out is not None:
            assert out.pooled.shape == (1, clip.info.embed_dim) and bool(out.pooled.isfinite().all()), name


def test_encode_a_batch_names_the_bad_file(corpus, clip):
    good = str(corpus["rgb.png"][0])
    bad = corpus["truncated.png"][0]
    with pytest.raises(ImageLoadError, match="truncated.png"):
        clip.encode([good, str(bad)], progress=False)


@pytest.mark.parametrize("task", ["zero-shot-classification", "zero-shot-seg", "grounding"])
def test_pipelines_each_case(corpus, clip, task):
    pipe = vfm.pipeline(task, model=clip, **({"short_side": 64} if task != "zero-shot-classification" else {}))
    key = "phrases" if task == "grounding" else "labels"
    for name, (path, expect) in corpus.items():
        out = _check(lambda p, pipe=pipe: pipe(str(p), **{key: ["red", "blue"]}), path, expect)
        if expect == "ok":
            assert out is not None, name


def test_sam_pipeline_each_case(corpus, tiny_root):
    sam = vfm.pipeline("mask-generation", model=str(tiny_checkpoint("sam", root=tiny_root)), device="cpu")
    for name, (path, expect) in corpus.items():
        out = _check(lambda p: sam(str(p), boxes=[[0, 0, 1, 1]]), path, expect)
        if expect == "ok":
            assert out is not None, name


def test_eval_suite_skips_and_counts_the_bad_files(corpus, tiny_root, tmp_path):
    root = tmp_path / "folder"
    for cls in ("red", "blue"):  # every case in both classes
        (root / cls).mkdir(parents=True)
        for name, (path, _) in corpus.items():
            (root / cls / name).write_bytes(path.read_bytes())
    suite = parse_suite({"name": "robust", "datasets": {"f": {"source": "imagefolder", "path": str(root)}},
                         "tasks": [{"name": "zs", "task": "zero_shot_classification", "dataset": "f"}]})  # fmt: skip
    res = Runner(suite, str(tiny_checkpoint("clip", root=tiny_root)), tmp_path / "out").run()["results"][0]
    n_bad = sum(e.startswith("error") for _, e in corpus.values())
    assert res["skipped"] == 2 * n_bad and res["samples"] == 2 * (len(corpus) - n_bad)
    assert 0.0 <= res["metrics"]["acc1"] <= 1.0
    saved = json.loads(next((tmp_path / "out").glob("*.json")).read_text())["results"][0]
    assert saved["skipped"] == 2 * n_bad


@pytest.mark.parametrize("task", ["zero-shot-seg", "mask-generation"])
def test_pipelines_name_the_bad_image_of_a_batch(corpus, clip, tiny_root, task):
    if task == "mask-generation":
        pipe = vfm.pipeline(task, model=str(tiny_checkpoint("sam", root=tiny_root)), device="cpu")
        kw = {"boxes": [[0, 0, 1, 1]]}
    else:
        pipe = vfm.pipeline(task, model=clip, short_side=64)
        kw = {"labels": ["red", "blue"]}
    nan = np.full((3, 8, 8), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        pipe([str(corpus["rgb.png"][0]), nan], **kw)
