"""Open-vocabulary detectors (OWL-ViT, OWLv2, Grounding DINO): parity with transformers, box scaling, batching,
thresholds, checkpoint identification and loading errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm.foundation.detectors import (
    DETECTOR_TYPES,
    OpenVocabDetector,
    detector_type,
    grounding_dino_prompt,
    load_detector,
)
from visionfm.foundation.loading import PickleCheckpointError
from visionfm.testing import tiny_checkpoint
from visionfm.testing.detectors import write_tiny_grounding_dino, write_tiny_owlv2, write_tiny_owlvit

PHRASES = ["a cat", "a remote control", "an astronaut"]
WRITERS = {"owlv2": write_tiny_owlv2, "owlvit": write_tiny_owlvit, "grounding-dino": write_tiny_grounding_dino}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_detector(tiny_root):
    """``kind -> checkpoint dir``, each tiny checkpoint written once (seeded) on first use."""
    paths: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in paths:
            path = Path(tiny_root) / f"detector-{kind}"
            if not path.exists():
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    WRITERS[kind](path)
            paths[kind] = path
        return paths[kind]

    return get


@pytest.fixture(scope="module")
def detector(tiny_detector):
    """``kind -> OpenVocabDetector``, each loaded once."""
    cache: dict[str, OpenVocabDetector] = {}

    def get(kind: str) -> OpenVocabDetector:
        if kind not in cache:
            cache[kind] = OpenVocabDetector.load(tiny_detector(kind))
        return cache[kind]

    return get


def _canonical(boxes, scores, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order detections by (label, x0, y0): comparisons then do not hinge on how near-ties in score sort."""
    boxes, scores, labels = (torch.as_tensor(x) for x in (boxes, scores, labels))
    keys = np.lexsort((boxes[:, 1].numpy(), boxes[:, 0].numpy(), labels.numpy()))
    order = torch.from_numpy(keys)
    return boxes[order].float(), scores[order].float(), labels[order].long()


def _assert_same(got: dict, boxes, scores, labels, *, atol_px: float = 1e-3) -> None:
    g = _canonical(got["boxes"], got["scores"], got["labels"])
    w = _canonical(boxes, scores, labels)
    assert g[2].tolist() == w[2].tolist()
    torch.testing.assert_close(g[0], w[0], atol=atol_px, rtol=0)
    torch.testing.assert_close(g[1], w[1], atol=1e-5, rtol=0)


def _hf_zero_shot(path: Path):
    """transformers' zero-shot-object-detection pipeline, reporting float boxes instead of truncated ints."""
    from transformers import pipeline as hf_pipeline

    pipe = hf_pipeline("zero-shot-object-detection", model=str(path), device="cpu")
    pipe._get_bounding_box = lambda box: box.tolist()  # [x0, y0, x1, y1], not int()-truncated
    return pipe


# -- 1. parity -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_parity_with_transformers_pipeline(kind, tiny_detector, detector, photos):
    """Same boxes (1e-3 px), scores and labels as transformers' pipeline, square and non-square photos.

    transformers 5.x scales OWLv2 boxes by max(H, W) (``_scale_boxes`` in ``image_processing_owlv2``), so for
    OWLv2 the pipeline agrees too; the padded-square scaling is checked from raw outputs in the next test.
    """
    path = tiny_detector(kind)
    pipe = _hf_zero_shot(path)
    threshold = 0.5  # the tiny models' scores spread around 0.5, so this keeps some pairs and drops others
    got = detector(kind).detect(photos, PHRASES, threshold=threshold)
    n_dropped = 0
    for img, g in zip(photos, got):
        want = pipe(Image.fromarray(img), candidate_labels=PHRASES, threshold=threshold)
        assert len(want) > 0
        n_dropped += 64 * len(PHRASES) - len(want)  # 8x8 patches x phrases
        _assert_same(
            g,
            torch.tensor([w["box"] for w in want]),
            torch.tensor([w["score"] for w in want]),
            torch.tensor([PHRASES.index(w["label"]) for w in want]),
        )
        assert torch.all(g["scores"][:-1] >= g["scores"][1:])  # sorted by descending score
    assert n_dropped > 0


def test_owlv2_boxes_scale_by_padded_square(tiny_detector, detector, photos):
    """OWLv2 boxes are (cx, cy, w, h) relative to the bottom/right-padded square: pixels = box * max(H, W)."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    path = tiny_detector("owlv2")
    model = Owlv2ForObjectDetection.from_pretrained(path).eval()
    processor = Owlv2Processor.from_pretrained(path)
    img = next(p for p in photos if p.shape[0] != p.shape[1])  # a non-square photo
    h, w = img.shape[:2]
    with torch.no_grad():
        out = model(**processor(text=[PHRASES], images=Image.fromarray(img), return_tensors="pt"))
    cx, cy, bw, bh = out.pred_boxes[0].unbind(-1)
    unit = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)  # [P, 4] in [0, 1]
    probs = out.logits[0].sigmoid()  # [P, N]
    patch, phrase = (probs > 0.5).nonzero(as_tuple=True)
    side = max(h, w)
    got = detector("owlv2").detect([img], PHRASES, threshold=0.5)[0]
    _assert_same(got, unit[patch] * side, probs[patch, phrase], phrase)
    # The tempting (W, H) scaling, right for OWL-ViT, is wrong here: the test would catch it.
    naive = unit[patch] * torch.tensor([w, h, w, h])
    ours = _canonical(got["boxes"], got["scores"], got["labels"])[0]
    assert not torch.allclose(_canonical(naive, probs[patch, phrase], phrase)[0], ours, atol=1.0)


# -- 2. batching -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DETECTOR_TYPES)
def test_batches_equal_single_images(kind, detector, photos):
    det = detector(kind)
    # Two same-size images (the coffee photo and its mirror) so Grounding DINO really batches them.
    images = [photos[2], photos[0], photos[2][:, ::-1].copy()]
    for batch_size in (2, 3):
        batched = det.detect(images, PHRASES, threshold=0.3, batch_size=batch_size)
        for img, got in zip(images, batched):
            single = det.detect([img], PHRASES, threshold=0.3)[0]
            _assert_same(got, single["boxes"], single["scores"], single["labels"])


# -- 3. thresholds ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DETECTOR_TYPES)
def test_thresholds_and_label_range(kind, detector, photos):
    det = detector(kind)
    every = det.detect(photos[:2], PHRASES, threshold=0.0)
    for img, res in zip(photos[:2], every):
        n = len(res["scores"])
        if kind == "grounding-dino":
            assert n == det.model.config.num_queries  # every query, one label each
        else:
            assert n == 64 * len(PHRASES)  # every (patch, phrase) pair
        assert res["boxes"].shape == (n, 4) and res["boxes"].dtype == torch.float32
        assert res["labels"].dtype == torch.int64
        assert 0 <= int(res["labels"].min()) and int(res["labels"].max()) < len(PHRASES)
        assert torch.all(res["scores"][:-1] >= res["scores"][1:])
        top = float(det.detect([img], PHRASES, threshold=0.0)[0]["scores"].max())
        none = det.detect([img], PHRASES, threshold=top)[0]  # kept only when strictly above: nothing
        assert none["boxes"].shape == (0, 4) and len(none["scores"]) == len(none["labels"]) == 0
        some = det.detect([img], PHRASES, threshold=float(res["scores"].median()))[0]
        assert 0 < len(some["scores"]) < n


# -- 4. identification -----------------------------------------------------------------------------
def _fake_hub_cache(cache: Path, repo: str, src: Path) -> None:
    """Lay ``src``'s files out as the Hugging Face cache holds a downloaded ``repo``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(src, root / "snapshots" / commit)


def test_detector_type(tiny_detector, tiny_root, tmp_path, monkeypatch):
    import huggingface_hub.constants

    for kind in DETECTOR_TYPES:
        assert detector_type(tiny_detector(kind)) == kind
        assert detector_type(str(tiny_detector(kind))) == kind
    assert detector_type(tiny_checkpoint("clip", "transformers", root=tiny_root)) is None
    assert detector_type(tmp_path / "missing") is None
    # Hub ids are looked up in the local cache only: a cached detector is found, anything else is None.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", "tiny-org/owlv2", tiny_detector("owlv2"))
    assert detector_type("tiny-org/owlv2") == "owlv2"
    assert detector_type("tiny-org/not-cached") is None
    det = OpenVocabDetector.load("tiny-org/owlv2", local_files_only=True)
    assert det.kind == "owlv2"


# -- 5. errors -------------------------------------------------------------------------------------
def test_errors(tiny_detector, detector, tiny_root, tmp_path, photos):
    from transformers import OwlViTForObjectDetection

    det = detector("owlvit")
    with pytest.raises(ValueError, match="non-empty"):
        det.detect(photos[:1], [])
    with pytest.raises(ValueError, match="non-empty strings"):
        det.detect(photos[:1], ["a cat", " "])
    with pytest.raises(ValueError, match="batch_size"):
        det.detect(photos[:1], PHRASES, batch_size=0)
    with pytest.raises(ValueError, match="contains '.'"):
        detector("grounding-dino").detect(photos[:1], ["st. louis arch"])

    src = tiny_detector("owlvit")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for f in src.glob("*.json"):
        shutil.copy(f, no_weights)
    with pytest.raises(FileNotFoundError, match="no-weights.*no weights.*model.safetensors"):
        OpenVocabDetector.load(no_weights)

    pickled = tmp_path / "pickle-only"
    shutil.copytree(no_weights, pickled)
    torch.save(OwlViTForObjectDetection.from_pretrained(src).state_dict(), pickled / "pytorch_model.bin")
    assert not list(pickled.glob("*.safetensors")) and (pickled / "pytorch_model.bin").is_file()
    with pytest.raises(PickleCheckpointError, match="pytorch_model.bin"):
        OpenVocabDetector.load(pickled)
    trusted = OpenVocabDetector.load(pickled, allow_pickle=True)
    a = trusted.detect(photos[:1], PHRASES, threshold=0.5)[0]
    b = det.detect(photos[:1], PHRASES, threshold=0.5)[0]
    _assert_same(a, b["boxes"], b["scores"], b["labels"])

    with pytest.raises(ValueError, match="'clip' checkpoint; expected an open-vocabulary detector"):
        OpenVocabDetector.load(tiny_checkpoint("clip", "transformers", root=tiny_root))
    with pytest.raises(ValueError, match=r"not a directory, a registered alias or a hub id \('org/name'\)"):
        OpenVocabDetector.load(tmp_path / "missing" / "dir")
    with pytest.raises(TypeError, match="'owlv2-base' is a detector.*load_detector"):
        vfm.load_encoder("owlv2-base")
    with pytest.raises(ValueError, match="unknown model 'owlv3-base'.*Did you mean: owlv2-base"):
        load_detector("owlv3-base")


# -- 6. Grounding DINO ---------------------------------------------------------------------------
def test_grounding_dino_prompt():
    prompt, spans = grounding_dino_prompt(["A Cat", "a remote control.", "  an   astronaut "])
    assert prompt == "a cat. a remote control. an astronaut."
    assert [prompt[s:e] for s, e in spans] == ["a cat", "a remote control", "an astronaut"]


@pytest.mark.parametrize("text_threshold", [0.25, 0.6])
def test_grounding_dino_parity_with_processor(text_threshold, tiny_detector, detector, photos):
    """Same boxes, scores and text labels as GroundingDinoProcessor.post_process_grounded_object_detection."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    path = tiny_detector("grounding-dino")
    model = GroundingDinoForObjectDetection.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    det = detector("grounding-dino")
    threshold = 0.7  # the tiny model's box scores spread over ~0.6-0.8: some boxes kept, some dropped
    got = det.detect(photos, PHRASES, threshold=threshold, text_threshold=text_threshold)
    for img, g in zip(photos, got):
        inputs = processor(images=Image.fromarray(img), text=PHRASES, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        ref = processor.post_process_grounded_object_detection(
            out,
            inputs["input_ids"],
            threshold=threshold,
            text_threshold=text_threshold,
            target_sizes=[img.shape[:2]],
        )[0]
        order = torch.sort(ref["scores"], descending=True, stable=True).indices
        torch.testing.assert_close(g["boxes"], ref["boxes"][order], atol=1e-3, rtol=0)
        torch.testing.assert_close(g["scores"], ref["scores"][order], atol=1e-5, rtol=0)
        for label, idx in zip([ref["text_labels"][i] for i in order], g["labels"].tolist()):
            if label in PHRASES:  # an exact phrase maps to itself; others go by token overlap (next test)
                assert PHRASES[idx] == label
    assert 0 < sum(len(g["scores"]) for g in got) < len(photos) * det.model.config.num_queries


def test_grounding_dino_label_mapping(detector):
    """Text labels that are not exactly one phrase go to the phrase whose tokens best overlap."""
    det = detector("grounding-dino")
    text = det._grounding_dino_text(PHRASES)
    token_phrase = text["token_phrase"]  # [CLS] a cat . a remote control . an astronaut . [SEP]
    assert token_phrase.tolist() == [-1, 0, 0, -1, 1, 1, 1, -1, 2, 2, -1, -1]
    length = det.model.config.max_text_len

    def probs(**on: float) -> torch.Tensor:
        p = torch.zeros(length)
        for pos, v in on.items():
            p[int(pos[1:])] = v
        return p

    cases = [
        ("a cat", probs(t1=0.9, t2=0.9), 0),  # exact
        ("remote", probs(t5=0.9), 1),  # part of a phrase
        ("cat a remote control", probs(t2=0.9, t4=0.9, t5=0.9, t6=0.9), 1),  # spans two: most tokens wins
        ("cat remote", probs(t2=0.5, t5=0.9), 1),  # one token each: the more probable wins
        ("", probs(t8=0.2, t1=0.1), 2),  # nothing above the text threshold: the most probable token's phrase
    ]
    labels = det._grounding_dino_labels([c[0] for c in cases], torch.stack([c[1] for c in cases]), text, 0.25)
    assert labels.tolist() == [c[2] for c in cases]


def test_detector_aliases_are_in_the_registry_and_resolve_to_hub_ids(monkeypatch):
    from visionfm.foundation.loading import ModelNotAvailableError

    names = [m.name for m in vfm.list_models("detector")]
    assert {"owlv2-base", "owlvit-base-32", "grounding-dino-tiny"} <= set(names)
    assert detector_type("owlv2-base") == "owlv2" and detector_type("grounding-dino-tiny") == "grounding-dino"
    assert detector_type("clip-vit-b-16") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="google/owlv2-base-patch16-ensemble"):
        load_detector("owlv2-base")
