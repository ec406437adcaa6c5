"""Tests for visionfm.data.images (robust image input)."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from skimage import data as skdata

from visionfm.data.images import (
    MAX_IMAGE_PIXELS,
    ImageLoadError,
    as_image_list,
    load_images,
    open_image,
    to_rgb,
    to_uint8_chw,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # (512, 512, 3) uint8


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skdata.chelsea()  # (300, 451, 3) uint8, non-square


def _px(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    assert img.mode == "RGB"
    return img.getpixel(xy)


# ----------------------------------------------------------------------------- open_image


def test_open_image_applies_exif_orientation(tmp_path, chelsea):
    raw = Image.fromarray(chelsea)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.png"
    raw.save(path, exif=exif)

    img = open_image(path)
    assert img.mode == "RGB"
    assert img.size == (300, 451)  # (W, H) transposed from (451, 300)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(img), expected)
    np.testing.assert_array_equal(np.asarray(img), np.rot90(chelsea, k=-1))


def test_open_image_from_file_object_and_str(tmp_path, astronaut):
    path = tmp_path / "astro.png"
    Image.fromarray(astronaut).save(path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(np.asarray(open_image(f)), astronaut)
    np.testing.assert_array_equal(np.asarray(open_image(str(path))), astronaut)
    buf = io.BytesIO(path.read_bytes())
    np.testing.assert_array_equal(np.asarray(open_image(buf)), astronaut)


def test_open_image_converts_to_rgb(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)
    img = open_image(path)
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_decompression_bomb_is_rejected_before_decoding(tmp_path, astronaut):
    path = tmp_path / "bomb.png"
    Image.fromarray(astronaut[:200, :200]).save(path)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError) as exc:
        open_image(path, max_pixels=100)
    msg = str(exc.value)
    assert "bomb.png" in msg and "40000" in msg and "max_pixels=100" in msg
    assert Image.MAX_IMAGE_PIXELS == before
    assert MAX_IMAGE_PIXELS == 178_956_970
    assert open_image(path, max_pixels=40_000).size == (200, 200)  # exactly at the limit is fine


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR (8-bit RGB, given size) but no pixel data at all."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bomb_check_uses_header_before_decoding(tmp_path):
    path = tmp_path / "header_only.png"
    path.write_bytes(_png_header_only(1000, 1000))
    # No pixel data: decoding first would report a corrupt file, not the size.
    with pytest.raises(ImageLoadError, match=r"header_only\.png.*1000x1000 = 1000000 pixels.*max_pixels=10\b"):
        open_image(path, max_pixels=10)
    with pytest.raises(ImageLoadError, match=r"header_only\.png.*truncated or corrupt"):
        open_image(path)  # within the limit: now it is decoded and found to be empty


def test_huge_header_is_rejected_without_allocating(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"huge\.png.*decompression"):
        open_image(path)
    assert Image.MAX_IMAGE_PIXELS == before


def test_truncated_image_fails_eagerly(tmp_path, astronaut):
    for suffix in ("jpg", "png"):
        path = tmp_path / f"truncated.{suffix}"
        Image.fromarray(astronaut).save(path)
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
        with pytest.raises(ImageLoadError, match=rf"truncated\.{suffix}.*truncated or corrupt"):
            open_image(path)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, I am not an image\n"), "not a recognised image"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: None, "no such file"),
    ],
    ids=["empty", "text", "directory", "missing"],
)
def test_unreadable_inputs_name_the_file(tmp_path, make, reason):
    path = tmp_path / "bad_input.jpg"
    make(path)
    with pytest.raises(ImageLoadError) as exc:
        open_image(path)
    msg = str(exc.value)
    assert str(path) in msg and reason in msg and "expected" in msg
    assert isinstance(exc.value, ValueError)


# ----------------------------------------------------------------------------- to_rgb


def test_to_rgb_rgb_is_identity():
    img = Image.new("RGB", (3, 2), (1, 2, 3))
    assert to_rgb(img) is img


@pytest.mark.parametrize("value", [0, 77, 255])
def test_to_rgb_grayscale(value):
    assert _px(to_rgb(Image.new("L", (2, 2), value))) == (value, value, value)


def test_to_rgb_bilevel():
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    out = to_rgb(img)
    assert [_px(out, (x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_to_rgb_rgba_composites_over_white():
    pixels = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128], [200, 100, 50, 255]]], dtype=np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(pixels)))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent red -> white
    assert out[0, 1].tolist() == [0, 0, 255]  # opaque blue stays blue
    assert out[0, 2].tolist() == [127, 127, 127]  # half-transparent black -> mid gray
    assert out[0, 3].tolist() == [200, 100, 50]


def test_to_rgb_la_composites_over_white():
    img = Image.new("LA", (2, 1), (0, 0))
    img.putpixel((1, 0), (10, 255))
    out = to_rgb(img)
    assert [_px(out, (x, 0)) for x in range(2)] == [(255, 255, 255), (10, 10, 10)]


def _palette_image() -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    return img


def test_to_rgb_palette_without_transparency():
    out = to_rgb(_palette_image())
    assert [_px(out, (x, 0)) for x in range(2)] == [(255, 0, 0), (0, 255, 0)]


def test_to_rgb_palette_with_transparency(tmp_path):
    img = _palette_image()
    img.info["transparency"] = 0  # palette index 0 (red) is transparent
    out = to_rgb(img)
    assert [_px(out, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 255, 0)]
    path = tmp_path / "transparent.png"  # and through a real file
    img.save(path, transparency=0)
    loaded = open_image(path)
    assert [_px(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 255, 0)]


def test_to_rgb_cmyk():
    white = to_rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 0)))
    black = to_rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 255)))
    cyan = to_rgb(Image.new("CMYK", (1, 1), (255, 0, 0, 0)))
    assert (_px(white), _px(black), _px(cyan)) == ((255, 255, 255), (0, 0, 0), (0, 255, 255))


def test_to_rgb_16bit_grayscale():
    arr = np.array([[0, 65535, 257 * 100, 257 * 100 + 128, 257 * 100 + 129]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = np.asarray(to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 255, 100, 100, 101]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_to_rgb_32bit_int_and_float():
    as_16bit = np.asarray(to_rgb(Image.fromarray(np.array([[0, 65535]], dtype=np.int32))))
    assert as_16bit[0, :, 0].tolist() == [0, 255]
    own_max = np.asarray(to_rgb(Image.fromarray(np.array([[0, 100_000, 200_000]], dtype=np.int32))))
    assert own_max[0, :, 0].tolist() == [0, 128, 255]
    unit = np.asarray(to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))))
    assert unit[0, :, 0].tolist() == [0, 128, 255]
    wide = np.asarray(to_rgb(Image.fromarray(np.array([[0.0, 5.0, 10.0]], dtype=np.float32))))
    assert wide[0, :, 0].tolist() == [0, 128, 255]


def test_to_rgb_other_color_spaces(astronaut):
    ycbcr = Image.fromarray(astronaut).convert("YCbCr")
    diff = np.abs(np.asarray(to_rgb(ycbcr)).astype(int) - astronaut.astype(int))
    assert diff.max() <= 3


# ----------------------------------------------------------------------------- to_uint8_chw


def test_to_uint8_chw_parity(tmp_path, astronaut):
    expected = torch.from_numpy(astronaut).permute(2, 0, 1).contiguous()
    path = tmp_path / "astro.png"
    Image.fromarray(astronaut).save(path)
    chw = torch.from_numpy(astronaut).permute(2, 0, 1)
    inputs = {
        "pil": Image.fromarray(astronaut),
        "ndarray": astronaut,
        "tensor_uint8": chw,
        "tensor_float": chw.float() / 255,
        "tensor_float64": chw.double() / 255,
        "ndarray_float": astronaut.astype(np.float32) / 255,
        "path": path,
        "str": str(path),
    }
    for key, image in inputs.items():
        out = to_uint8_chw(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 512, 512) and out.is_contiguous(), key
        assert out.device.type == "cpu", key
        assert torch.equal(out, expected), key


def test_to_uint8_chw_does_not_alias_input(astronaut):
    arr = astronaut.copy()
    out = to_uint8_chw(arr)
    arr[:] = 0
    assert out.max().item() > 0


def test_to_uint8_chw_grayscale_and_alpha():
    camera = skdata.camera()
    out = to_uint8_chw(camera)
    assert out.shape == (3, *camera.shape)
    assert torch.equal(out[0], torch.from_numpy(camera)) and torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert torch.equal(to_uint8_chw(camera[:, :, None]), out)
    assert torch.equal(to_uint8_chw(torch.from_numpy(camera)[None]), out)

    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]], dtype=np.uint8)
    expected = torch.tensor([[[255, 0]], [[255, 0]], [[255, 255]]], dtype=torch.uint8)
    assert torch.equal(to_uint8_chw(rgba), expected)
    assert torch.equal(to_uint8_chw(torch.from_numpy(rgba).permute(2, 0, 1)), expected)
    assert torch.equal(to_uint8_chw(Image.fromarray(rgba)), expected)


def test_to_uint8_chw_float_rounding_and_slack():
    arr = np.array([[[0.0, 0.5, 1.0005]]], dtype=np.float64)  # 1.0005 is within the 1e-3 slack
    assert to_uint8_chw(arr)[:, 0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("image", "pattern"),
    [
        (np.zeros(5, dtype=np.uint8), r"image: expected an HWC ndarray.*got shape \(5,\)"),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"got shape \(4, 4, 2\)"),
        (np.zeros((3, 8, 8), dtype=np.uint8), r"looks like CHW"),
        (np.zeros((4, 4, 3), dtype=np.int64), r"expected dtype uint8 or float in \[0, 1\], got int64"),
        (torch.zeros(2, 8, 8, dtype=torch.uint8), r"1, 3 or 4 channels.*\(2, 8, 8\)"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), r"looks like HWC"),
        (torch.zeros(8, 8, dtype=torch.uint8), r"CHW tensor.*got shape \(8, 8\)"),
        (torch.full((3, 2, 2), 2.0), r"must lie in \[0, 1\], got range \[2, 2\]"),
        (np.full((2, 2, 3), -0.5), r"must lie in \[0, 1\]"),
        (np.full((2, 2, 3), np.nan), r"must lie in \[0, 1\]"),
    ],
)
def test_to_uint8_chw_bad_inputs(image, pattern):
    with pytest.raises(ImageLoadError, match=pattern):
        to_uint8_chw(image)


def test_to_uint8_chw_wrong_type():
    with pytest.raises(TypeError, match="got int"):
        to_uint8_chw(3)
    with pytest.raises(TypeError, match="got list"):
        to_uint8_chw([1, 2, 3])


def test_to_uint8_chw_unsupported_mode_names_mode():
    img = Image.new("La", (2, 2))  # premultiplied luminance+alpha: not supported
    with pytest.raises(ImageLoadError, match="unsupported image mode 'La'"):
        to_uint8_chw(img)


# ----------------------------------------------------------------------------- as_image_list / load_images


def test_as_image_list(tmp_path, astronaut):
    pil = Image.fromarray(astronaut)
    chw = torch.from_numpy(astronaut).permute(2, 0, 1)
    for single in (pil, tmp_path / "a.png", "a.png", astronaut, astronaut[..., 0], chw):
        out = as_image_list(single)
        assert len(out) == 1 and out[0] is single
    assert as_image_list([pil, astronaut]) == [pil, astronaut]
    assert as_image_list((pil,)) == [pil]
    assert as_image_list([]) == []

    batch = np.stack([astronaut, astronaut[::-1]])
    items = as_image_list(batch)
    assert len(items) == 2 and items[1].shape == (512, 512, 3) and np.shares_memory(items[1], batch)
    np.testing.assert_array_equal(items[1], astronaut[::-1])
    tbatch = torch.stack([chw, chw.flip(1)])
    titems = as_image_list(tbatch)
    assert len(titems) == 2 and titems[1].shape == (3, 512, 512) and torch.equal(titems[1], chw.flip(1))

    gen = (astronaut for _ in range(3))
    assert len(as_image_list(gen)) == 3
    with pytest.raises(TypeError, match="int"):
        as_image_list(42)
    with pytest.raises(ImageLoadError, match="shape"):
        as_image_list(np.zeros(5))


def test_load_images_batch(tmp_path, astronaut, chelsea):
    path = tmp_path / "cat.jpg"
    Image.fromarray(chelsea).save(path, quality=95)
    out = load_images([astronaut, path, torch.from_numpy(astronaut).permute(2, 0, 1)])
    assert [tuple(t.shape) for t in out] == [(3, 512, 512), (3, 300, 451), (3, 512, 512)]
    assert torch.equal(out[0], out[2])
    assert (out[1].float() - torch.from_numpy(chelsea).permute(2, 0, 1).float()).abs().mean() < 3
    assert len(load_images(np.stack([astronaut] * 4))) == 4
    assert len(load_images(astronaut)) == 1


def test_load_images_error_names_batch_index(tmp_path, astronaut):
    with pytest.raises(ImageLoadError, match=r"image 3 of the batch: .*got shape \(5,\)"):
        load_images([astronaut, astronaut, astronaut, np.zeros(5, dtype=np.uint8)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"image 1 of the batch: cannot read image .*empty\.png.*empty"):
        load_images([astronaut, empty])
    with pytest.raises(TypeError, match=r"image 0 of the batch: .*got float"):
        load_images([1.5])
    big = tmp_path / "big.png"
    Image.fromarray(astronaut).save(big)
    with pytest.raises(ImageLoadError, match=r"image 0 of the batch: .*big\.png.*262144 pixels"):
        load_images([big], max_pixels=1000)


# ----------------------------------------------------------------------------- bad values, URLs, extreme shapes


def test_nan_pixels_name_the_batch_index_and_the_nan():
    good = torch.rand(3, 8, 8)
    bad = torch.rand(3, 8, 8)
    bad[1, 2, 5] = float("nan")
    pattern = (
        r"image 1 of the batch: float pixel values contain NaN or infinity "
        r"\(1 of 192 values; first at channel 1, row 2, column 5\)"
    )
    for batch in (
        [good, bad],
        torch.stack([good, bad]),
        np.stack([good.permute(1, 2, 0).numpy(), bad.permute(1, 2, 0).numpy()]),
    ):
        with pytest.raises(ImageLoadError, match=pattern):
            load_images(batch)


def test_nan_pixels_name_the_batch_index_with_the_loader():
    from visionfm.data.loader import iter_image_batches

    bad = torch.rand(3, 8, 8)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ImageLoadError, match=r"image 3 of the batch: .*NaN or infinity"):
        list(iter_image_batches([torch.rand(3, 8, 8)] * 3 + [bad], batch_size=2))


@pytest.mark.parametrize(
    "url", ["http://example.com/cat.jpg", "https://example.com/a/b.png?x=1", "HTTPS://EX.COM/c.webp"]
)
def test_urls_are_refused_with_a_clear_message(url):
    expected = (
        rf"image 1 of the batch: cannot read image '{re.escape(url)}': "
        r"URLs are not supported, download the image first"
    )
    with pytest.raises(ImageLoadError, match=expected):
        load_images([np.zeros((4, 4, 3), np.uint8), url])
    with pytest.raises(ImageLoadError, match="URLs are not supported"):
        open_image(url)


def test_urls_and_missing_files_are_named_by_the_gpu_decode_path(tmp_path):
    from visionfm.data.loader import iter_image_batches

    with pytest.raises(ImageLoadError, match=r"image 0 of the batch: .*URLs are not supported"):
        list(iter_image_batches(["https://example.com/cat.jpg"], 1, decode_device="cpu"))
    with pytest.raises(ImageLoadError, match=r"image 0 of the batch: .*nope\.jpg.*no such file"):
        list(iter_image_batches([tmp_path / "nope.jpg"], 1, decode_device="cpu"))


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("size", [(1, 10000), (10000, 1), (3, 400)])
def test_extreme_aspect_ratio_is_refused_quickly(tmp_path, size):
    import time

    h, w = size
    path = tmp_path / "thin.png"
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(path)
    start, rss = time.perf_counter(), _peak_rss_mb()
    ratio = f"{max(h, w) / min(h, w):g}:1"
    pattern = (
        rf"image 0 of the batch: cannot read image .*thin\.png.*{w}x{h} pixels.*aspect ratio {ratio}.*"
        r"max_aspect_ratio=100"
    )
    with pytest.raises(ImageLoadError, match=pattern):
        load_images([path])
    with pytest.raises(ImageLoadError, match=rf"image: {w}x{h} pixels.*aspect ratio {ratio}"):
        to_uint8_chw(np.zeros((h, w, 3), np.uint8))
    with pytest.raises(ImageLoadError, match=rf"image 0 of the batch: {w}x{h} pixels.*aspect ratio"):
        load_images(Image.new("RGB", (w, h)))
    assert time.perf_counter() - start < 5 and _peak_rss_mb() - rss < 200
    assert load_images([path], max_aspect_ratio=None)[0].shape == (3, h, w)  # the limit can be lifted explicitly


def test_aspect_ratio_limit_is_inclusive():
    assert to_uint8_chw(np.zeros((2, 200, 3), np.uint8)).shape == (3, 2, 200)  # exactly 100:1 is accepted


def test_extreme_aspect_ratio_is_refused_by_the_batched_jpeg_decode_path(tmp_path):
    from visionfm.data.loader import iter_image_batches

    path = tmp_path / "strip.jpg"
    Image.fromarray(np.full((8, 4000, 3), 90, np.uint8)).save(path, quality=90)
    with pytest.raises(ImageLoadError, match=r"image 1 of the batch: 4000x8 pixels.*aspect ratio 500:1"):
        list(iter_image_batches([np.zeros((4, 4, 3), np.uint8), path], 2, decode_device="cpu"))
