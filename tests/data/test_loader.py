"""Fast image input: DataLoader workers and batched (GPU-capable) JPEG decoding give the same batches as PIL."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from visionfm.data.images import ImageLoadError, load_images
from visionfm.data.loader import iter_image_batches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("jpegs")
    out = []
    for i, im in enumerate(photos * 2):
        p = root / f"{i}.{'jpg' if i % 3 else 'png'}"
        Image.fromarray(im[: 100 + 7 * i, : 120 + 5 * i]).save(p, quality=90)
        out.append(str(p))
    rotated = root / "exif6.jpg"  # EXIF orientation 6: displayed rotated by 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photos[0][:80, :120]).save(rotated, exif=exif, quality=90)
    out.append(str(rotated))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_batches_equal_pil_decoding(files, workers):
    batches = list(iter_image_batches(files, 3, num_workers=workers))
    assert [len(b) for b in batches] == [3, 3, 3]
    for got, ref in zip([t for b in batches for t in b], load_images(files)):
        assert torch.equal(got, ref)


def test_batched_jpeg_decode_matches_pil(files):
    got = [t for b in iter_image_batches(files, 4, decode_device="cpu") for t in b]
    ref = load_images(files)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == torch.uint8  # EXIF orientation applied on both paths
        assert (g.int() - r.int()).abs().float().mean() < 1.0  # libjpeg IDCT / upsampling may differ by a level


def test_encode_with_workers_and_jpeg_decode_equals_plain_encode(files, tiny_root):
    import visionfm as vfm
    from visionfm.testing import tiny_checkpoint

    enc = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    ref = enc.encode(files, batch_size=4, num_workers=0, progress=False)
    par = enc.encode(files, batch_size=4, num_workers=2, progress=False)
    assert torch.equal(ref.pooled, par.pooled)
    tv = enc.encode(files, batch_size=4, decode_device="cpu", progress=False)
    assert torch.allclose(tv.pooled, ref.pooled, atol=0.05)


def test_unreadable_file_is_named_with_workers(files, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for kw in ({"num_workers": 2}, {"decode_device": "cpu"}):
        with pytest.raises(ImageLoadError, match="image 2 of the batch"):
            list(iter_image_batches([files[0], files[1], str(bad)], 2, **kw))
