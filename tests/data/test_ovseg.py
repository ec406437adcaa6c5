"""The ``ovseg`` dataset source reads the 8 open-vocabulary segmentation benchmarks in their own layouts.

The fake layouts come from :func:`visionfm.testing.ovseg.write_fake_benchmark`, which spells each layout out
literally; the expected targets below are mmseg's ``LoadAnnotations`` arithmetic applied to the written PNGs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visionfm.data  # noqa: F401 - registers "ovseg" (visionfm/data/__init__.py)
from visionfm.data.datasets import _SOURCE_KEYS, build_dataset, sources
from visionfm.data.ovseg import BENCHMARKS, benchmark_names
from visionfm.testing.ovseg import write_fake_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

#: benchmark -> (classes, reduce_zero_label, annotation path of image id ``i`` under the data root)
EXPECTED = {
    "voc21": (21, False, lambda d, i: d / "SegmentationClass" / f"{i}.png"),
    "context60": (60, False, lambda d, i: d / "SegmentationClassContext" / f"{i}.png"),
    "coco_object": (81, False, lambda d, i: d / "annotations" / "val2017" / f"{i}_instanceTrainIds.png"),
    "voc20": (20, True, lambda d, i: d / "SegmentationClass" / f"{i}.png"),
    "context59": (59, True, lambda d, i: d / "SegmentationClassContext" / f"{i}.png"),
    "coco_stuff": (171, False, lambda d, i: d / "annotations" / "val2017" / f"{i}_labelTrainIds.png"),
    "cityscapes": (19, False, lambda d, i: d / "gtFine" / "val" / f"{i}_gtFine_labelTrainIds.png"),
    "ade20k": (150, True, lambda d, i: d / "annotations" / "validation" / f"{i}.png"),
}


def expected_ids(bench: str, data_root: Path) -> list[str]:
    """The benchmark's sample order: the split file's for VOC / Context, else sorted image paths."""
    if bench.startswith(("voc", "context")):
        sets = "Segmentation" if bench.startswith("voc") else "SegmentationContext"
        return (data_root / "ImageSets" / sets / "val.txt").read_text().split()
    img_dir, suffix = {
        "coco_object": ("images/val2017", ".jpg"),
        "coco_stuff": ("images/val2017", ".jpg"),
        "cityscapes": ("leftImg8bit/val", "_leftImg8bit.png"),
        "ade20k": ("images/validation", ".jpg"),
    }[bench]
    return sorted(p.relative_to(data_root / img_dir).as_posix()[: -len(suffix)]
                  for p in (data_root / img_dir).rglob(f"*{suffix}"))  # fmt: skip


def mmseg_target(png: Path, reduce_zero_label: bool) -> np.ndarray:
    """mmseg's LoadAnnotations on ``png``: uint8 arithmetic, 0 -> 255, v -> v - 1, 255 stays 255."""
    gt = np.array(Image.open(png)).astype(np.uint8)
    if reduce_zero_label:
        gt[gt == 0] = 255
        gt = gt - 1
        gt[gt == 254] = 255
    return gt.astype(np.int64)


def build(bench: str, root: Path, **kw) -> object:
    return build_dataset(bench, {"source": "ovseg", "benchmark": bench, "root": str(root), **kw})


def test_registered_with_its_keys():
    assert "ovseg" in sources()
    assert _SOURCE_KEYS["ovseg"] == {"benchmark", "root", "split"}


def test_benchmark_table():
    assert benchmark_names() == ["voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff",
                                 "cityscapes", "ade20k"]  # fmt: skip
    assert {b: BENCHMARKS[b].num_classes for b in benchmark_names()} == {
        "voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_object": 81, "coco_stuff": 171,
        "cityscapes": 19, "ade20k": 150,
    }  # fmt: skip
    assert [b for b in benchmark_names() if BENCHMARKS[b].has_background] == ["voc21", "context60", "coco_object"]
    assert [b for b in benchmark_names() if BENCHMARKS[b].reduce_zero_label] == ["voc20", "context59", "ade20k"]
    for b in benchmark_names():
        s = BENCHMARKS[b]
        assert s.ignore_index == 255 and len(set(s.classes)) == len(s.classes)
        assert (s.classes[0] == "background") == s.has_background
        assert all(c == c.strip() and c for c in s.classes)
    c = {b: BENCHMARKS[b].classes for b in benchmark_names()}
    assert c["voc20"] == c["voc21"][1:] and c["context59"] == c["context60"][1:]
    assert c["coco_object"][1:] == c["coco_stuff"][:80]
    assert (c["voc21"][15], c["context59"][-1], c["coco_stuff"][80], c["cityscapes"][-1], c["ade20k"][7]) == (
        "person",
        "wood",
        "banner",
        "bicycle",
        "bed",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        BENCHMARKS["voc21"].reduce_zero_label = True  # type: ignore[misc]


@pytest.mark.parametrize("bench", list(EXPECTED))
def test_reads_each_layout(bench, tmp_path):
    k, reduce, ann = EXPECTED[bench]
    data_root = write_fake_benchmark(bench, tmp_path, num=3)
    ids = expected_ids(bench, data_root)
    assert len(ids) == 3
    if bench.startswith(("voc", "context")):
        assert ids != sorted(ids)  # so that following the split file's order is checked
    ds = build(bench, tmp_path)  # the directory above VOCdevkit / ADEChallengeData2016 ...
    assert build(bench, data_root).ids == ds.ids  # ... or mmseg's data_root itself
    assert ds.ids == ids and len(ds) == 3
    assert len(ds.classnames) == k and ds.classnames == list(BENCHMARKS[bench].classes)
    assert ds.benchmark is BENCHMARKS[bench]
    seen = set()
    for i, sid in enumerate(ds.ids):
        s = ds[i]
        assert s["error"] is None, s["error"]
        png = ann(data_root, sid)
        want = mmseg_target(png, reduce)
        h, w = want.shape
        assert tuple(s["image"].shape) == (3, h, w)
        assert Image.open(_img(bench, data_root, sid)).size == (w, h)
        t = s["target"]
        assert isinstance(t, np.ndarray) and t.dtype == np.int64 and t.shape == (h, w)
        np.testing.assert_array_equal(t, want)
        assert set(np.unique(t)) <= set(range(k)) | {255}
        assert s["label"] == -1
        seen |= set(np.unique(t).tolist())
    assert {0, k - 1} <= seen  # the first and the last class both occur
    assert (255 in seen) == (reduce or bench in ("voc21", "coco_stuff", "cityscapes"))


def _img(bench: str, d: Path, sid: str) -> Path:
    return {
        "coco_object": d / "images" / "val2017" / f"{sid}.jpg",
        "coco_stuff": d / "images" / "val2017" / f"{sid}.jpg",
        "cityscapes": d / "leftImg8bit" / "val" / f"{sid}_leftImg8bit.png",
        "ade20k": d / "images" / "validation" / f"{sid}.jpg",
    }.get(bench, d / "JPEGImages" / f"{sid}.jpg")


def test_voc_annotations_are_palette_pngs(tmp_path):
    d = write_fake_benchmark("voc21", tmp_path)
    im = Image.open(next((d / "SegmentationClass").glob("*.png")))
    assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert im.convert("RGB").getpixel((0, 0)) == (0, 0, 0)  # index 0 = background = black


def test_cityscapes_order_is_sorted_by_city_then_name(tmp_path):
    write_fake_benchmark("cityscapes", tmp_path, num=3)
    assert build("cityscapes", tmp_path).ids == [
        "frankfurt/frankfurt_000000_000038",
        "lindau/lindau_000000_000019",
        "munster/munster_000000_000057",
    ]


@pytest.mark.parametrize(("bench", "raw", "want"), [
    ("voc21", [0, 1, 20, 255], [0, 1, 20, 255]),
    ("voc20", [0, 1, 20, 255], [255, 0, 19, 255]),
    ("context60", [0, 1, 59, 255], [0, 1, 59, 255]),
    ("context59", [0, 1, 59, 255], [255, 0, 58, 255]),
    ("coco_object", [0, 1, 80, 255], [0, 1, 80, 255]),
    ("coco_stuff", [0, 1, 170, 255], [0, 1, 170, 255]),
    ("cityscapes", [0, 1, 18, 255], [0, 1, 18, 255]),
    ("ade20k", [0, 1, 150, 255], [255, 0, 149, 255]),
])  # fmt: skip
def test_label_values_map_exactly(bench, raw, want, tmp_path):
    data_root = write_fake_benchmark(bench, tmp_path, num=1)
    ds = build(bench, tmp_path)
    png = EXPECTED[bench][2](data_root, ds.ids[0])
    h, w = np.array(Image.open(png)).shape
    lab = np.resize(np.array(raw, np.uint8), (h, w))
    Image.fromarray(lab).save(png)
    s = ds[0]
    assert s["error"] is None, s["error"]
    np.testing.assert_array_equal(s["target"], np.resize(np.array(want, np.int64), (h, w)))


def test_num_and_split(tmp_path):
    write_fake_benchmark("voc21", tmp_path, num=4)
    ds = build_dataset("v", {"source": "ovseg", "benchmark": "voc21", "root": str(tmp_path), "num": 2})
    assert ds.ids == ["2008_000900", "2008_000893"]
    train = build("voc21", tmp_path, split="train")
    assert train.ids == ["2007_000001", "2007_000002"] and train[1]["error"] is None
    write_fake_benchmark("ade20k", tmp_path / "ade", num=2)
    assert build("ade20k", tmp_path / "ade", split="train").ids == ["ADE_train_00000001"]


def test_relative_root_resolves_against_the_suite_directory(tmp_path):
    write_fake_benchmark("context59", tmp_path / "data", num=2)
    spec = {"source": "ovseg", "benchmark": "context59", "root": "data/VOCdevkit/VOC2010"}
    assert len(build_dataset("c", spec, root=tmp_path)) == 2


def test_missing_layouts_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"{missing}.*does not exist.*JPEGImages"):
        build("voc21", missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no leftImg8bit/ directory in .*empty.*gtFine"):
        build("cityscapes", tmp_path / "empty")

    d = write_fake_benchmark("voc20", tmp_path / "voc")
    (d / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(ValueError, match=r"split file .*ImageSets/Segmentation/val\.txt does not exist.*train"):
        build("voc20", tmp_path / "voc")
    with pytest.raises(ValueError, match=r"split file .*ImageSets/Segmentation/test\.txt"):
        build("voc20", tmp_path / "voc", split="test")

    d = write_fake_benchmark("ade20k", tmp_path / "ade")
    for f in (d / "annotations" / "validation").iterdir():
        f.unlink()
    (d / "annotations" / "validation").rmdir()
    with pytest.raises(ValueError, match=r"annotation directory .*ADEChallengeData2016/annotations/validation "
                                         r"does not exist"):  # fmt: skip
        build("ade20k", tmp_path / "ade")
    write_fake_benchmark("coco_stuff", tmp_path / "coco")
    with pytest.raises(ValueError, match=r"image directory .*images/test2017 does not exist"):
        build("coco_stuff", tmp_path / "coco", split="test2017")

    with pytest.raises(ValueError, match=r"unknown ovseg benchmark 'voc'.*voc21"):
        build("voc", tmp_path / "voc")
    with pytest.raises(ValueError, match="missing key 'benchmark'"):
        build_dataset("x", {"source": "ovseg", "root": str(tmp_path)})


def test_empty_split_is_an_error(tmp_path):
    d = write_fake_benchmark("context60", tmp_path)
    (d / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"no images listed in .*val\.txt"):
        build("context60", tmp_path)


@pytest.mark.parametrize("bench", ["voc21", "cityscapes", "coco_object"])
def test_bad_annotations_are_skipped_and_counted(bench, tmp_path):
    data_root = write_fake_benchmark(bench, tmp_path, num=3)
    ds = build(bench, tmp_path)
    ann = EXPECTED[bench][2]
    ann(data_root, ds.ids[0]).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ann(data_root, ds.ids[2]).unlink()
    samples = [ds[i] for i in range(len(ds))]
    errors = [s["error"] for s in samples]
    assert sum(e is not None for e in errors) == 2  # what the runner counts as skipped
    assert samples[1]["error"] is None and samples[1]["target"] is not None
    assert samples[0]["image"] is None and "unreadable" in errors[0] and str(ann(data_root, ds.ids[0])) in errors[0]
    assert errors[2].startswith("FileNotFoundError") and str(ann(data_root, ds.ids[2])) in errors[2]


def test_wrong_annotation_files_are_skipped_with_the_reason(tmp_path):
    d = write_fake_benchmark("cityscapes", tmp_path, num=3)
    ds = build("cityscapes", tmp_path)
    gt = d / "gtFine" / "val"
    a, b, c = (gt / f"{i}_gtFine_labelTrainIds.png" for i in ds.ids)
    a.write_bytes((gt / f"{ds.ids[0]}_gtFine_labelIds.png").read_bytes())  # labelIds (33) instead of trainIds
    Image.open(b).convert("RGB").save(b)  # a colour rendering, not a label map
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(c)  # another size than its image
    errors = [ds[i]["error"] for i in range(3)]
    assert "raw values [33] are neither classes 0..18 nor 255" in errors[0]
    assert "single-channel integer label map" in errors[1]
    assert "is 7x5 but image" in errors[2]


def test_coco_reads_the_trainids_file_not_its_neighbours(tmp_path):
    # the raw <id>.png (181) and, for COCO-Object, <id>_labelTrainIds.png (170) sit beside the file to read
    for bench in ("coco_stuff", "coco_object"):
        write_fake_benchmark(bench, tmp_path / bench)
        ds = build(bench, tmp_path / bench)
        for i in range(len(ds)):
            t = ds[i]["target"]
            assert t is not None and t.max() <= (80 if bench == "coco_object" else 255)
            assert 181 not in t and (bench == "coco_stuff" or 170 not in t)
