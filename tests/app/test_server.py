"""visionfm app: the JSON API on tiny random checkpoints (the browser test is tests/app/test_browser.py, -m slow)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from visionfm.app import AppConfig, create_server
from visionfm.app.server import AppError, parse_labels
from visionfm.testing import tiny_checkpoint


def _png(w: int, h: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    cfg = AppConfig(clip=str(tiny_checkpoint("clip")), sam=str(tiny_checkpoint("sam")), max_pixels=120 * 100)
    srv = create_server(cfg, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.app.close()


def _call(server, path: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _upload(server, data: bytes, name: str = "x.png") -> tuple[int, dict]:
    status, body = _call(server, "/api/image", data, {"X-Filename": name})
    return status, json.loads(body)


def _overlay_size(result: dict) -> tuple[int, int]:
    head, b64 = result["overlay"].split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


def test_page_and_info(server):
    status, page = _call(server, "/")
    assert status == 200 and b'id="upload"' in page and b'id="overlay"' in page
    status, body = _call(server, "/api/info")
    info = json.loads(body)
    assert status == 200 and info["config"]["max_pixels"] == 12000 and "toyworld-0" in info["samples"]
    status, png = _call(server, "/api/sample/toyworld-0")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 64)
    status, body = _call(server, "/api/sample/nope")
    assert status == 404 and "no sample 'nope'" in json.loads(body)["error"]


def test_upload_gives_the_decoded_image_back(server):
    status, info = _upload(server, _png(90, 60))
    assert status == 200 and (info["width"], info["height"]) == (90, 60)
    status, png = _call(server, f"/api/image/{info['id']}")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (90, 60)


@pytest.mark.parametrize(
    ("data", "name", "status", "match"),
    [
        (b"hello, I am text", "notes.txt", 400, "'notes.txt': not a recognised image format"),
        (b"", "empty.png", 400, "'empty.png' is empty"),
        (_png(200, 100), "big.png", 400, "'big.png' is 200x100 = 20000 pixels, more than this app's limit of 12000"),
        (_png(64, 64)[:200], "cut.png", 400, "'cut.png'"),
    ],
)
def test_bad_uploads_get_a_clear_message(server, data, name, status, match):
    got, body = _upload(server, data, name)
    assert got == status and match in body["error"], body


def test_upload_over_the_byte_limit_is_refused(server, monkeypatch):
    import visionfm.app.server as srv

    monkeypatch.setattr(srv, "MAX_UPLOAD_BYTES", 1000)
    status, body = _upload(server, _png(40, 40))
    assert status == 413 and "more than this app's limit" in body["error"]


def _run(server, request: dict) -> dict:
    status, body = _call(server, "/api/run", request)
    assert status == 200, body
    job = json.loads(body)["job"]
    seen = set()
    while True:
        status, body = _call(server, f"/api/job/{job}")
        view = json.loads(body)
        seen.add(view["state"])
        if view["state"] in ("done", "error"):
            assert 0.0 <= view["progress"] <= 1.0
            return view


@pytest.mark.parametrize("task", ["segment", "ground"])
def test_segment_and_ground_draw_an_overlay_of_the_image_size(server, task):
    _, info = _upload(server, _png(100, 70, seed=1))
    view = _run(server, {"task": task, "image": info["id"], "labels": "red, blue square,\n green"})
    assert view["state"] == "done", view
    r = view["result"]
    assert r["task"] == task and (r["width"], r["height"]) == (100, 70) and _overlay_size(r) == (100, 70)
    found = {item["label"] for item in r["items"]}
    assert found <= {"red", "blue square", "green", "background"}  # the labels typed (and background), no others
    if task == "segment":  # every pixel has one label
        assert found and sum(item["pixels"] for item in r["items"]) == 100 * 70
    else:
        assert all(0 <= item["score"] <= 1 and item["box"]["xmax"] <= 100 for item in r["items"])


def test_click_to_segment(server):
    _, info = _upload(server, _png(80, 60, seed=2))
    view = _run(server, {"task": "click", "image": info["id"], "points": [[20, 30, 1], [70, 10, 0]]})
    assert view["state"] == "done", view
    assert _overlay_size(view["result"]) == (80, 60) and 0 <= len(view["result"]["items"]) <= 1


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"task": "segment", "labels": " , "}, "type at least one label"),
        ({"task": "ground", "labels": ""}, "type at least one label"),
        ({"task": "click", "points": []}, "click on the image"),
        ({"task": "click", "points": [[500, 5, 1]]}, "is not a point of the 80 x 60 image"),
        ({"task": "click", "points": [[5, 5, 7]]}, "label 1 (object) or 0 (background)"),
        ({"task": "paint", "labels": "a"}, "task must be one of segment, ground, click"),
    ],
)
def test_bad_requests_are_refused_before_queueing(server, request_, match):
    _, info = _upload(server, _png(80, 60))
    status, body = _call(server, "/api/run", {**request_, "image": info["id"]})
    assert status == 400 and match in json.loads(body)["error"]


def test_unknown_ids_and_bad_json(server):
    status, body = _call(server, "/api/run", {"task": "segment", "image": "nope", "labels": "a"})
    assert status == 400 and "no image 'nope'" in json.loads(body)["error"]
    status, body = _call(server, "/api/job/nope")
    assert status == 404 and "no job 'nope'" in json.loads(body)["error"]
    status, body = _call(server, "/api/run", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not JSON" in json.loads(body)["error"]


def test_a_failing_job_reports_its_error(server):
    _, info = _upload(server, _png(80, 60))
    view = _run(server, {"task": "segment", "image": info["id"], "labels": "cat, cat"})  # duplicates: pipeline error
    assert view["state"] == "error" and "cat" in view["error"] and "Traceback" not in view["error"]


def test_parse_labels():
    assert parse_labels("a, b c,,\n d ") == ["a", "b c", "d"]
    with pytest.raises(AppError, match="at least one label"):
        parse_labels(" ,\n ")
    with pytest.raises(ValueError, match="runtime must be"):
        AppConfig(runtime="tensorrt")


def test_cli_app_parser():
    from visionfm.cli import build_parser

    args = build_parser().parse_args(["app", "--port", "0", "--runtime", "onnx"])
    assert args.clip == "toyworld-clip" and args.sam == "toyworld-sam" and args.runtime == "onnx" and args.port == 0


def test_overlays_tint_labels_in_the_colour_they_name():
    import torch

    from visionfm.app.server import PALETTE, label_colour, seg_overlay

    assert label_colour("Red", 0) == (255, 0, 0) and label_colour("light blue", 0) == (173, 216, 230)
    assert label_colour("blue square", 3) == PALETTE[3]  # not a colour name: the palette

    class Seg:  # a zero-shot-seg result's fields that seg_overlay reads
        labels = ["background", "red", "cat"]
        label_map = torch.tensor([[0, 1], [2, 2]])

    class Big(Seg):  # 5 x 5: "red" a 3 x 3 block (its centre inside, the rest its outline), "cat" one pixel
        label_map = torch.zeros(5, 5, dtype=torch.long)
        label_map[1:4, 1:4] = 1
        label_map[4, 4] = 2

    image = np.full((5, 5, 3), 100, np.uint8)
    out = np.asarray(seg_overlay(image, Big())[0])
    assert out[0, 0].tolist() == [100, 100, 100]  # background: the image as it is
    assert out[2, 2].tolist() == [185, 45, 45]  # inside: 0.45 * 100 + 0.55 * (255, 0, 0), rounded
    assert out[1, 1].tolist() == [255, 255, 255] and out[4, 4].tolist() == [255, 255, 255]  # outlines
    overlay, items = seg_overlay(np.full((2, 2, 3), 100, np.uint8), Seg())
    assert [(i["label"], i["pixels"]) for i in items] == [("background", 1), ("red", 1), ("cat", 2)]
    assert items[1]["colour"] == "#ff0000" and items[0]["colour"] is None


@pytest.mark.slow  # exports two tiny models to ONNX first (about a minute)
def test_the_app_on_the_onnx_runtime(tmp_path, monkeypatch):
    from visionfm.app import VisionApp

    monkeypatch.setenv("VISIONFM_CACHE", str(tmp_path))
    app = VisionApp(AppConfig(clip=str(tiny_checkpoint("clip")), sam=str(tiny_checkpoint("sam")), runtime="onnx",
                              seg_mode="maskclip"))  # fmt: skip
    try:
        image = app.add_image(_png(90, 60, seed=4), "x.png")["id"]
        for request in ({"task": "segment", "labels": "red, cat"}, {"task": "ground", "labels": "red, cat"},
                        {"task": "click", "points": [[30, 20, 1]]}):  # fmt: skip
            view = app.run({**request, "image": image}, timeout=600)
            assert view["state"] == "done", view
            assert (view["result"]["width"], view["result"]["height"]) == (90, 60)
        assert len(list((tmp_path / "onnx").iterdir())) == 2  # the CLIP and the SAM, each exported once
        assert type(app._pipes["sam"].encoder).__name__ == "OnnxPromptableEncoder"
    finally:
        app.close()


def test_training_a_toyworld_model_shows_its_steps(tmp_path, monkeypatch):
    """A toyworld model missing from the cache is trained first; the job's stage and progress follow the steps."""
    import importlib.util
    from pathlib import Path

    import visionfm.toyworld.models as models
    from visionfm.app import VisionApp

    spec = importlib.util.spec_from_file_location("resume_prog", Path(__file__).parents[1] / "training/resume_prog.py")
    prog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prog)

    def fake_training(kind, **_):  # a 6-step run of the shared loop stands in for the toy CLIP's recipe
        prog.build(str(tmp_path / kind), 6, 0.15).fit()
        return tiny_checkpoint("clip")

    monkeypatch.setattr(models, "toy_model_dir", lambda kind, recipe=None: tmp_path / "missing")
    monkeypatch.setattr(models, "ensure_toy_model", fake_training)
    app = VisionApp(AppConfig(seg_mode="maskclip"))  # clip: toyworld-clip, not cached here
    try:
        image = app.add_image(_png(64, 64), "x.png")["id"]
        job = app.submit({"task": "segment", "image": image, "labels": "red, green"})
        seen = []
        while (view := app.job(job))["state"] not in ("done", "error"):
            seen.append((view["stage"], view["progress"]))
            time.sleep(0.02)
        assert view["state"] == "done", view
        steps = [(s, p) for s, p in seen if "training the toyworld-clip model" in s and "step" in s]
        assert steps, seen
        assert {s.rsplit(": ", 1)[1] for s, _ in steps} <= {f"step {i} of 6" for i in range(1, 7)}
        for s, p in steps:  # the bar at step k of 6 is k / 6 (read while the worker may be between the two updates)
            k = int(s.split("step ")[1].split(" ")[0])
            assert round((k - 1) / 6, 3) <= p <= round(k / 6, 3), (s, p)
    finally:
        app.close()
