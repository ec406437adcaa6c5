"""The app's server: uploads, one worker that runs the pipelines, and a JSON API the page polls for progress.

Endpoints (all JSON unless noted; errors are ``{"error": message}`` with a 4xx status):

- ``GET /``: the page (``static/index.html``).
- ``GET /api/info``: the models, the sample images and the upload limits.
- ``GET /api/sample/<name>``: a sample image (PNG): toyworld scenes, and ``skimage.data`` photos where scikit-image
  is installed.
- ``POST /api/image``: the raw bytes of an image file (header ``X-Filename``: its name, URL-encoded). It is decoded
  with :func:`visionfm.data.images.open_image` under the app's ``max_pixels``. The reply is
  ``{"id", "width", "height"}``. A file that is not an image, or is too large, gets a 400 that says so.
- ``GET /api/image/<id>``: the decoded image (PNG, EXIF-oriented): what the models see and what clicks refer to.
- ``POST /api/run``: ``{"task": "segment" | "ground" | "click", "image": id, "labels": "a, b",
  "points": [[x, y, 1|0], ...]}``. The request is checked at once (unknown image, empty labels, points outside the
  image), then queued; the reply is ``{"job": id}``.
- ``GET /api/job/<id>``: ``{"state": "queued" | "running" | "done" | "error", "stage", "progress" (0..1),
  "result" | "error"}``. ``result`` is ``{"task", "overlay" (a PNG data URL at the image's size), "width",
  "height", "items", "seconds"}``.

One worker thread runs the jobs in order: the models are loaded once, on first use, and are not shared between
threads.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote

import numpy as np

logger = logging.getLogger(__name__)

TOY_CLIP, TOY_SAM, TOY_SSL = "toyworld-clip", "toyworld-sam", "toyworld-ssl"
#: uploads larger than this many bytes are refused before decoding
MAX_UPLOAD_BYTES = 64 * 2**20
#: the app's default ``max_pixels`` (width x height) for an upload: 4096 x 4096
DEFAULT_MAX_PIXELS = 4096 * 4096
TASKS = ("segment", "ground", "click")
#: how the toyworld models see an image (as in ``visionfm demo``): the short side resized to 192, windows every 16 px
TOY_RESOLUTION = {"short_side": 192, "stride": 16}


class AppError(ValueError):
    """A request the app refuses, with the message the page shows."""


@dataclass
class AppConfig:
    """What the app runs.

    Attributes:
        clip: the image-text model of zero-shot segmentation and training-free grounding (any name
            ``load_encoder`` accepts). Default: the toyworld CLIP, trained on first use and then cached, so the app
            runs offline.
        sam: the SAM-family model of click-to-segment, which also turns grounding boxes into masks.
        grounding: a detector for grounding (OWLv2, OWL-ViT, Grounding DINO, SAM 3); ``None``: training-free
            grounding on ``clip``, refined by ``sam``.
        runtime: ``"torch"`` or ``"onnx"`` (``clip`` and ``sam`` run from their ONNX exports, made once).
        device: where PyTorch models run (``"cpu"``, ``"cuda"``, ``"auto"``).
        max_pixels: uploads of more than this many pixels (width x height) are refused.
        seg_mode: zero-shot-seg mode; ``None``: the toyworld preset (``proxy``, with the toy self-supervised encoder;
            ``maskclip`` on ONNX, which has no proxy graph) for the toyworld CLIP, the pipeline's default otherwise.
    """

    clip: str = TOY_CLIP
    sam: str = TOY_SAM
    grounding: str | None = None
    runtime: str = "torch"
    device: str = "cpu"
    max_pixels: int = DEFAULT_MAX_PIXELS
    seg_mode: str | None = None

    def __post_init__(self) -> None:
        if self.runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {self.runtime!r}")
        if int(self.max_pixels) < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


def parse_labels(text: Any) -> list[str]:
    """Labels typed on the page: separated by commas or new lines, blanks dropped.

    Raises:
        AppError: no label at all.
    """
    if not isinstance(text, str):
        raise AppError(f"labels must be text, got {type(text).__name__}")
    labels = [t.strip() for t in re.split(r"[,\n]", text) if t.strip()]
    if not labels:
        raise AppError("type at least one label, separated by commas (for example: red, blue, green)")
    return labels


def _png(image: Any) -> bytes:
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _data_url(image: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode("ascii")


@dataclass
class Job:
    """One queued request and what the page polls."""

    id: str
    request: dict[str, Any]
    state: str = "queued"
    stage: str = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        out = {"id": self.id, "state": self.state, "stage": self.stage, "progress": round(self.progress, 3)}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class VisionApp:
    """The app without HTTP: images, jobs, pipelines (built on first use) and their results.

    Args:
        config: what to run.
        keep_images: uploads kept in memory (least recently used dropped).
        keep_jobs: finished jobs kept for polling.
    """

    def __init__(self, config: AppConfig | None = None, *, keep_images: int = 32, keep_jobs: int = 256) -> None:
        self.config = config or AppConfig()
        self.keep_images, self.keep_jobs = keep_images, keep_jobs
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pipes: dict[str, Any] = {}
        self._paths: dict[str, str] = {}
        self._samples: dict[str, bytes] | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="visionfm-app-worker", daemon=True)
        self._worker.start()

    # -- images -------------------------------------------------------------------------------------------------
    def add_image(self, data: bytes, filename: str = "upload") -> dict[str, Any]:
        """Decode an uploaded file; ``{"id", "width", "height"}``.

        Raises:
            AppError: empty, not an image, corrupt, or more than ``config.max_pixels`` pixels.
        """
        from ..data.images import ImageLoadError, open_image

        if not data:
            raise AppError(f"{filename!r} is empty (0 bytes)")
        try:
            img = open_image(io.BytesIO(data), max_pixels=int(self.config.max_pixels), max_aspect_ratio=20)
        except ImageLoadError as e:
            msg = str(e).replace("<BytesIO object>", filename)
            size = re.search(r"image is (\d+x\d+ = \d+ pixels), more than max_pixels", msg)
            if size:  # too large: say so in the app's terms
                msg = (f"{filename!r} is {size.group(1)}, more than this app's limit of {self.config.max_pixels} "
                       "pixels (start it with visionfm app --max-pixels N to allow larger images)")  # fmt: skip
            raise AppError(msg) from None
        arr = np.asarray(img)
        image_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._images[image_id] = arr
            while len(self._images) > self.keep_images:
                self._images.popitem(last=False)
        logger.info("image %s: %s, %dx%d", image_id, filename, arr.shape[1], arr.shape[0])
        return {"id": image_id, "width": int(arr.shape[1]), "height": int(arr.shape[0])}

    def image(self, image_id: str) -> np.ndarray:
        """An uploaded image, uint8 ``[H, W, 3]``.

        Raises:
            AppError: unknown id (never uploaded, or dropped from memory).
        """
        with self._lock:
            if image_id not in self._images:
                raise AppError(
                    f"no image {image_id!r} here (the app keeps the last {self.keep_images}): upload it again"
                )
            self._images.move_to_end(image_id)
            return self._images[image_id]

    def samples(self) -> dict[str, bytes]:
        """Sample images as PNG bytes by name: four held-out toyworld scenes, and three ``skimage.data`` photos
        where scikit-image is installed."""
        if self._samples is None:
            from ..toyworld.world import ToyWorld

            world = ToyWorld("heldout", 4, seed=7, min_objects=2, max_objects=3)
            out = {f"toyworld-{i}": _png(world[i].image) for i in range(4)}
            try:
                from skimage import data as skdata

                for name in ("astronaut", "chelsea", "coffee"):
                    out[name] = _png(getattr(skdata, name)())
            except ImportError:  # scikit-image is optional: the toyworld scenes suffice offline
                pass
            self._samples = out
        return self._samples

    # -- jobs ---------------------------------------------------------------------------------------------------
    def submit(self, request: dict[str, Any]) -> str:
        """Check a request and queue it; returns the job id.

        Raises:
            AppError: unknown task or image, empty labels, bad points.
        """
        task = request.get("task")
        if task not in TASKS:
            raise AppError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        arr = self.image(str(request.get("image", "")))
        clean: dict[str, Any] = {"task": task, "image": str(request["image"])}
        if task in ("segment", "ground"):
            clean["labels"] = parse_labels(request.get("labels", ""))
        else:
            clean["points"] = self._points(request.get("points"), arr.shape[:2])
        job = Job(uuid.uuid4().hex[:12], clean)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep_jobs:
                self._jobs.popitem(last=False)
        self._queue.put(job)
        return job.id

    @staticmethod
    def _points(points: Any, size: tuple[int, int]) -> list[list[float]]:
        H, W = size
        if not isinstance(points, list) or not points:
            raise AppError("click on the image to place a point (shift-click for a background point)")
        out = []
        for i, p in enumerate(points):
            if not (isinstance(p, list) and len(p) == 3 and all(isinstance(v, (int, float)) for v in p)):
                raise AppError(f"points[{i}] must be [x, y, label], got {p!r}")
            x, y, lab = (float(v) for v in p)
            if not (0 <= x <= W and 0 <= y <= H) or lab not in (0.0, 1.0):
                raise AppError(f"points[{i}] = ({x:g}, {y:g}) label {lab:g} is not a point of the {W} x {H} image "
                               "with label 1 (object) or 0 (background)")  # fmt: skip
            out.append([x, y, lab])
        return out

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's state, stage, progress and result or error.

        Raises:
            AppError: unknown id.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise AppError(f"no job {job_id!r}")
        return job.view()

    def run(self, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Submit and wait: the job's final view (for scripts and tests)."""
        job_id = self.submit(request)
        t0 = time.monotonic()
        while True:
            view = self.job(job_id)
            if view["state"] in ("done", "error"):
                return view
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise TimeoutError(f"job {job_id} still {view['state']} after {timeout} s ({view['stage']})")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the worker after the queued jobs."""
        self._queue.put(None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.state = "running"
            t0 = time.perf_counter()
            try:
                result = self._execute(job)
                result["seconds"] = round(time.perf_counter() - t0, 3)
                job.result, job.state, job.stage, job.progress = result, "done", "done", 1.0
            except (ValueError, TypeError, FileNotFoundError, ImportError) as e:  # what the user can fix: say it
                job.error, job.state = str(e) or type(e).__name__, "error"
            except Exception as e:  # noqa: BLE001 - a bug: log the traceback, show one line on the page
                logger.exception("job %s (%s) failed", job.id, job.request["task"])
                job.error, job.state = f"internal error ({type(e).__name__}: {e}); the server log has details", "error"

    # -- the pipelines ------------------------------------------------------------------------------------------
    def _step(self, job: Job, stage: str, progress: float) -> None:
        job.stage, job.progress = stage, progress
        logger.info("job %s: %s", job.id, stage)

    def _model(self, name: str, job: Job) -> str:
        """A model name as the pipelines take it; the toyworld models are trained on first use (then cached)."""
        if name not in self._paths:
            if name in (TOY_CLIP, TOY_SAM, TOY_SSL):
                from ..toyworld.models import ensure_toy_model, toy_model_dir
                from ..training.loop import progress_listener

                kind = name.removeprefix("toyworld-")
                stage = f"training the {name} model (first run only; cached after)"
                if not toy_model_dir(kind).is_dir():
                    self._step(job, stage, 0.0)

                def on_step(step: int, total: int) -> None:  # the page's bar follows the training steps
                    job.stage, job.progress = f"{stage}: step {step} of {total}", step / max(total, 1)

                with progress_listener(on_step):
                    self._paths[name] = str(ensure_toy_model(kind))
            else:
                self._paths[name] = name
        return self._paths[name]

    def _pipeline(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._pipes:
            self._pipes[key] = build()
        return self._pipes[key]

    def _toy_templates(self, labels: list[str]) -> tuple[list[str], float]:
        """The toyworld templates and background threshold of these labels' kind (shape names, else colours), as
        ``visionfm demo`` uses them (:data:`visionfm.toyworld.demo.SHOWCASE`)."""
        from ..toyworld.demo import SHOWCASE
        from ..toyworld.seg import TEMPLATES
        from ..toyworld.world import SHAPES

        kind = "shape" if all(lab in SHAPES for lab in labels) else "colour"
        return list(TEMPLATES[kind]), float(SHOWCASE["cos_thresh"][kind])

    def _execute(self, job: Job) -> dict[str, Any]:
        task = job.request["task"]
        image = self.image(job.request["image"])
        overlay, items = {"segment": self._segment, "ground": self._ground, "click": self._click}[task](job, image)
        return {"task": task, "overlay": _data_url(overlay), "width": overlay.size[0], "height": overlay.size[1],
                "items": items}  # fmt: skip

    def _run_on(self) -> dict[str, Any]:
        """How ``pipeline()`` runs the CLIP and the SAM: on onnxruntime, or on PyTorch on the configured device."""
        return {"runtime": "onnx"} if self.config.runtime == "onnx" else {"device": self.config.device}

    def _segment(self, job: Job, image: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
        from ..pipelines.base import pipeline
        from ..toyworld.demo import SHOWCASE

        cfg, labels = self.config, job.request["labels"]
        self._step(job, f"loading {cfg.clip}", 0.1)
        clip = self._model(cfg.clip, job)
        opts: dict[str, Any] = {}
        call: dict[str, Any] = {"background": True}
        if cfg.clip == TOY_CLIP:
            templates, call["cos_thresh"] = self._toy_templates(labels)
            mode = cfg.seg_mode or ("maskclip" if cfg.runtime == "onnx" else str(SHOWCASE["seg_mode"]))
            opts = {**TOY_RESOLUTION, "mode": mode, "templates": templates}
            if mode == "proxy":
                opts["proxy"] = self._model(TOY_SSL, job)
        elif cfg.seg_mode:
            opts["mode"] = cfg.seg_mode
        key = f"seg|{json.dumps(opts, sort_keys=True)}"
        seg = self._pipeline(key, lambda: pipeline("zero-shot-seg", model=clip, **self._run_on(), **opts))
        self._step(job, f"segmenting into {len(labels)} labels", 0.5)
        r = seg(image, labels=labels, **call)
        self._step(job, "drawing the overlay", 0.9)
        return seg_overlay(image, r)

    def _ground(self, job: Job, image: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
        from ..pipelines.base import pipeline
        from ..toyworld.demo import SHOWCASE

        cfg, phrases = self.config, job.request["labels"]
        name = cfg.grounding or cfg.clip
        self._step(job, f"loading {name} and {cfg.sam}", 0.1)
        model = self._model(name, job)
        opts: dict[str, Any] = {}
        call: dict[str, Any] = {}
        if cfg.grounding is None and cfg.clip == TOY_CLIP:
            templates, call["cos_thresh"] = self._toy_templates(phrases)
            opts = {**TOY_RESOLUTION, "mode": str(SHOWCASE["grounding_mode"]), "templates": templates}
        kw = dict(opts)
        if "sam3" not in name.lower():  # SAM 3 draws its own masks; the other backends get SAM's for their boxes
            kw["refine"] = self._model(cfg.sam, job)
        # training-free grounding runs the CLIP on the chosen runtime; detectors run on PyTorch
        run_on = self._run_on() if cfg.grounding is None else {"device": cfg.device}
        key = f"ground|{name}|{json.dumps(opts, sort_keys=True)}"
        gr = self._pipeline(key, lambda: pipeline("grounding", model=model, **run_on, **kw))
        self._step(job, f"grounding {len(phrases)} phrases", 0.5)
        r = gr(image, phrases=phrases, **call)
        self._step(job, "drawing the overlay", 0.9)
        return grounding_overlay(image, r)

    def _click(self, job: Job, image: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
        from ..pipelines.base import pipeline

        self._step(job, f"loading {self.config.sam}", 0.1)
        sam = self._model(self.config.sam, job)
        mg = self._pipeline("sam", lambda: pipeline("mask-generation", model=sam, **self._run_on()))
        pts = job.request["points"]
        self._step(job, f"segmenting from {len(pts)} point{'s' * (len(pts) > 1)}", 0.5)
        r = mg(image, points=[[p[:2] for p in pts]], point_labels=[[int(p[2]) for p in pts]], multimask_output=True)
        self._step(job, "drawing the overlay", 0.9)
        return _draw_points(r.overlay(image), pts), [{"score": round(float(r.scores[0]), 4), "points": pts}]


#: colours for labels that are not colour names (tab10)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip


def label_colour(label: str, index: int) -> tuple[int, int, int]:
    """A label's overlay colour: the colour it names (CSS colour names: "red", "navy", ...), else a fixed palette's."""
    from PIL import ImageColor

    try:
        return tuple(ImageColor.getrgb(label.strip().lower().replace(" ", "")))[:3]  # type: ignore[return-value]
    except ValueError:
        return PALETTE[index % len(PALETTE)]


def _hex(c: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in c)


def _tint(image: np.ndarray, masks: list[np.ndarray], colours: list[tuple[int, int, int]], alpha: float = 0.55) -> Any:
    """``image`` with each mask blended towards its colour (later masks over earlier ones) and outlined in white
    (a region tinted in the colour of the object it covers stays visible), as a PIL image."""
    from PIL import Image
    from scipy.ndimage import binary_erosion

    out = image.astype(np.float32)
    for m, c in zip(masks, colours, strict=True):
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(c, np.float32)
    for m in masks:
        out[m & ~binary_erosion(m, border_value=0)] = 255.0
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def seg_overlay(image: np.ndarray, result: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A zero-shot-seg result drawn for the page: each label's pixels tinted in its colour (background left as it
    is); the legend is the page's table (``items``: label, pixel count, colour), not text drawn into the image."""
    lm = result.label_map.cpu().numpy()
    masks, colours, items = [], [], []
    for k, lab in enumerate(result.labels):
        m = lm == k
        if not m.any():
            continue
        colour = label_colour(lab, k)
        if lab != "background":
            masks.append(m)
            colours.append(colour)
        items.append({"label": lab, "pixels": int(m.sum()), "colour": _hex(colour) if lab != "background" else None})
    return _tint(image, masks, colours), items


def grounding_overlay(image: np.ndarray, result: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Grounding drawn for the page: masks tinted and boxes outlined in their phrase's colour; ``items``: phrase,
    score, box (xyxy pixels), colour."""
    from PIL import ImageDraw

    colours = [label_colour(p, i) for i, p in enumerate(result.phrases)]
    labels = result.labels.tolist()
    masks = [] if result.masks is None else list(result.masks.cpu().numpy())
    out = _tint(image, masks, [colours[k] for k in labels][: len(masks)])
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 200))
    items = []
    for box, score, k in zip(result.boxes.tolist(), result.scores.tolist(), labels, strict=True):
        draw.rectangle(box, outline=colours[k], width=width)
        items.append({"label": result.phrases[k], "score": round(float(score), 4), "colour": _hex(colours[k]),
                      "box": {"xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]}})  # fmt: skip
    return out, items


def _draw_points(image: Any, points: list[list[float]]) -> Any:
    """Click points on the overlay: green for the object, red for background."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    r = max(2, round(min(image.size) / 60))
    for x, y, lab in points:
        draw.ellipse(
            [x - r, y - r, x + r, y + r], fill=(40, 220, 60) if lab else (230, 40, 40), outline=(255, 255, 255)
        )
    return image


# -- HTTP ----------------------------------------------------------------------------------------------------------
def _handler(app: VisionApp) -> type[BaseHTTPRequestHandler]:
    page = resources.files("visionfm.app").joinpath("static/index.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "visionfm-app"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj: Any, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
            self._json({"error": message}, status)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            try:
                if path in ("/", "/index.html"):
                    return self._send(200, page, "text/html; charset=utf-8")
                if path == "/api/info":
                    cfg = asdict(app.config)
                    return self._json({"config": cfg, "samples": list(app.samples()), "tasks": list(TASKS),
                                       "max_upload_bytes": MAX_UPLOAD_BYTES})  # fmt: skip
                if path.startswith("/api/sample/"):
                    name = unquote(path.removeprefix("/api/sample/"))
                    samples = app.samples()
                    if name not in samples:
                        return self._error(f"no sample {name!r}; samples: {', '.join(samples)}", HTTPStatus.NOT_FOUND)
                    return self._send(200, samples[name], "image/png")
                if path.startswith("/api/image/"):
                    return self._send(200, _png(app.image(path.removeprefix("/api/image/"))), "image/png")
                if path.startswith("/api/job/"):
                    return self._json(app.job(path.removeprefix("/api/job/")))
                return self._error(f"no such page: {path}", HTTPStatus.NOT_FOUND)
            except AppError as e:
                return self._error(str(e), HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                self._discard(length)
                return self._error(f"the upload is {length / 2**20:.1f} MB, more than this app's limit of "
                                   f"{MAX_UPLOAD_BYTES // 2**20} MB", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)  # fmt: skip
            body = self.rfile.read(length) if length else b""
            try:
                if path == "/api/image":
                    name = unquote(self.headers.get("X-Filename") or "upload")
                    return self._json(app.add_image(body, name))
                if path == "/api/run":
                    try:
                        request = json.loads(body or b"{}")
                    except json.JSONDecodeError as e:
                        raise AppError(f"the request is not JSON ({e})") from None
                    if not isinstance(request, dict):
                        raise AppError("the request must be a JSON object")
                    return self._json({"job": app.submit(request)})
                return self._error(f"no such endpoint: POST {path}", HTTPStatus.NOT_FOUND)
            except AppError as e:
                return self._error(str(e))

        def _discard(self, length: int) -> None:
            while length > 0:
                chunk = self.rfile.read(min(length, 2**20))
                if not chunk:
                    return
                length -= len(chunk)

    return Handler


def create_server(config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """The app's HTTP server, not yet serving (``port=0`` picks a free port); ``server.app`` is its
    :class:`VisionApp`. Call ``serve_forever()``, and ``shutdown()`` from another thread to stop."""
    app = VisionApp(config)
    server = ThreadingHTTPServer((host, port), _handler(app))
    server.daemon_threads = True
    server.app = app  # type: ignore[attr-defined]
    return server


def serve(config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the app until interrupted (``visionfm app``)."""
    server = create_server(config, host, port)
    h, p = server.server_address[:2]
    logger.warning("visionfm app on http://%s:%d (Ctrl-C to stop)", h, p)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.warning("stopping")
    finally:
        server.server_close()
        server.app.close()  # type: ignore[attr-defined]


__all__ = ["DEFAULT_MAX_PIXELS", "MAX_UPLOAD_BYTES", "AppConfig", "AppError", "VisionApp", "create_server",
           "grounding_overlay", "label_colour", "parse_labels", "seg_overlay", "serve"]  # fmt: skip
