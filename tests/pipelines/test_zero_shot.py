"""Zero-shot classification and feature extraction pipelines: parity with transformers, caching, files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import visionfm as vfm
from visionfm.testing import tiny_checkpoint

LABELS = ["a cat", "a dog", "an astronaut", "a cup of coffee", "a camera"]
HF_TEMPLATE = "This is a photo of {}."  # transformers' default hypothesis_template


@pytest.fixture(scope="module")
def hf_clip(tiny_root):
    return tiny_checkpoint("clip", "transformers", root=tiny_root)


@pytest.fixture(scope="module")
def siglip(tiny_root):
    return tiny_checkpoint("siglip", root=tiny_root)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_parity_with_transformers_pipeline(kind, hf_clip, siglip, photos):
    from transformers import pipeline as hf_pipeline

    path = hf_clip if kind == "clip" else siglip
    ours = vfm.pipeline("zero-shot-classification", model=str(path), device="cpu", templates=HF_TEMPLATE)
    ref = hf_pipeline("zero-shot-image-classification", model=str(path), device="cpu")
    got = ours(photos, labels=LABELS)
    want = ref([Image.fromarray(p) for p in photos], candidate_labels=LABELS, hypothesis_template=HF_TEMPLATE)
    for g, w in zip(got, want):
        g_scores = {d["label"]: d["score"] for d in g}
        for d in w:
            assert g_scores[d["label"]] == pytest.approx(d["score"], abs=1e-5)
        assert [d["label"] for d in g] == sorted(g_scores, key=g_scores.get, reverse=True)


def test_text_embeddings_computed_once_per_label_set(hf_clip, photos, monkeypatch):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu", templates="simple")
    calls = []
    real = clf.encoder.encode_text
    monkeypatch.setattr(
        clf.encoder, "encode_text", lambda texts, **kw: (calls.append(len(texts)), real(texts, **kw))[1]
    )
    a = clf(photos, labels=LABELS)
    b = clf(photos[:1], labels=LABELS)
    assert calls == [len(LABELS) * 7]  # one text pass (7 simple templates), reused by the second call
    assert [d["label"] for d in a[0]] == [d["label"] for d in b[0]]
    assert [d["score"] for d in a[0]] == pytest.approx([d["score"] for d in b[0]], abs=1e-6)
    clf(photos[:1], labels=LABELS[:2])
    assert len(calls) == 2


def test_templates_sets_dicts_and_errors(hf_clip, photos):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    assert len(clf(photos[0], labels=LABELS, templates="imagenet80")) == len(LABELS)
    per_class = {label: [f"a photo of {label}", f"{label}"] for label in LABELS}
    res = clf(photos[0], labels=LABELS, templates=per_class, top_k=2)
    assert len(res) == 2 and res[0]["score"] >= res[1]["score"]
    with pytest.raises(ValueError, match="contain"):
        clf(photos[0], labels=LABELS, templates=["no placeholder"])
    with pytest.raises(ValueError, match="unknown template set"):
        clf(photos[0], labels=LABELS, templates="imagenet81")
    with pytest.raises(ValueError, match="needs labels"):
        clf(photos[0])
    with pytest.raises(ValueError, match="unknown pipeline task.*zero-shot-classification"):
        vfm.pipeline("zero-shot-clasification", model=clf.encoder)


def test_siglip_multi_label_scores_are_independent(siglip, photos):
    clf = vfm.pipeline("zero-shot-classification", model=str(siglip), device="cpu")
    a = {d["label"]: d["score"] for d in clf(photos[0], labels=LABELS, multi_label=True)}
    b = {d["label"]: d["score"] for d in clf(photos[0], labels=LABELS[:2], multi_label=True)}
    assert b[LABELS[0]] == pytest.approx(a[LABELS[0]], abs=1e-6)  # adding labels does not change a score


def test_clip_multi_label_is_each_label_against_a_generic_class(hf_clip, photos):
    from transformers import CLIPModel, CLIPProcessor

    from visionfm.pipelines.zero_shot import NEGATIVE_PROMPTS

    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu", templates=HF_TEMPLATE)
    got = [{d["label"]: d["score"] for d in r} for r in clf(photos, labels=LABELS, multi_label=True)]
    fewer = {d["label"]: d["score"] for d in clf(photos[0], labels=LABELS[2:], multi_label=True)}
    assert fewer[LABELS[3]] == pytest.approx(got[0][LABELS[3]], abs=1e-6)  # independent of the other labels
    assert sum(got[0].values()) != pytest.approx(1.0, abs=1e-3)  # not a softmax over labels

    # the reference, from CLIPModel's own embeddings: a two-way softmax between the label and the generic class
    model, proc = CLIPModel.from_pretrained(hf_clip).eval(), CLIPProcessor.from_pretrained(hf_clip)
    with torch.no_grad():
        img = model.get_image_features(**proc(images=[Image.fromarray(p) for p in photos], return_tensors="pt"))
        txt = model.get_text_features(
            **proc(text=[HF_TEMPLATE.format(x) for x in LABELS], padding=True, return_tensors="pt")
        )
        neg = model.get_text_features(**proc(text=list(NEGATIVE_PROMPTS), padding=True, return_tensors="pt"))
    img, txt, neg = (o if isinstance(o, torch.Tensor) else o.pooler_output for o in (img, txt, neg))
    img, txt = torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)
    neg = torch.nn.functional.normalize(torch.nn.functional.normalize(neg, dim=-1).mean(0), dim=-1)
    scale = model.logit_scale.exp().detach()
    for i, row in enumerate(got):
        for k, label in enumerate(LABELS):
            pair = torch.stack([img[i] @ txt[k], img[i] @ neg]) * scale
            assert row[label] == pytest.approx(float(pair.softmax(0)[0]), abs=1e-5)


def test_classifier_file_roundtrip(hf_clip, photos, tmp_path):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu", templates="simple")
    path = clf.save_classifier(tmp_path / "pets.safetensors", LABELS)
    fresh = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    got, want = fresh(photos, classifier=path), clf(photos, labels=LABELS)
    for g, w in zip(got, want):
        assert [d["label"] for d in g] == [d["label"] for d in w]
        assert [d["score"] for d in g] == pytest.approx([d["score"] for d in w], abs=1e-6)


def test_feature_extraction_matches_encoder(tiny_root, photos):
    path = tiny_checkpoint("dinov2", root=tiny_root)
    fx = vfm.pipeline("feature-extraction", model=str(path), device="cpu", batch_size=2)
    enc = fx.encoder
    feats = fx(photos, layers=[0])
    ref = enc.encode(photos, layers=[0])
    torch.testing.assert_close(feats.pooled, ref.pooled)
    rows = fx(photos, output="numpy")
    assert len(rows) == len(photos) and rows[1]["patches"].shape == tuple(ref.patches.shape[1:])
    one = fx(photos[0], output="numpy")
    assert one["pooled"].shape == (enc.info.embed_dim,)


@pytest.mark.slow
def test_toyworld_clip_through_the_pipeline_matches_the_reported_accuracy():
    """The pipeline's top-1 on held-out compositions equals the demo's reported number (docs/toyworld.md)."""
    from visionfm.toyworld.demo import TEMPLATES, evaluate
    from visionfm.toyworld.models import ensure_toy_clip
    from visionfm.toyworld.world import ToyWorld, class_names

    enc = vfm.load_encoder(ensure_toy_clip(), device="cpu")
    reported = evaluate(enc, num=600)[0][0]
    assert (reported.task, reported.images) == ("colour+shape", "heldout compositions")
    world = ToyWorld("heldout", 600, image_size=64, seed=1234, min_objects=1, max_objects=1)
    scenes = [world[i] for i in range(len(world))]
    clf = vfm.pipeline("zero-shot-classification", model=enc, templates=list(TEMPLATES), batch_size=128)
    preds = clf([s.image for s in scenes], labels=class_names("colour_shape"), top_k=1)
    top1 = sum(p[0]["label"] == s.label_name("colour_shape") for p, s in zip(preds, scenes)) / len(scenes)
    assert top1 == pytest.approx(reported.top1, abs=1e-9)


def test_accepts_a_datasets_column_and_a_generator(hf_clip, photos):
    import datasets

    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in photos[:3]]}).cast_column(
        "image", datasets.Image()
    )
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    from_column = clf(ds["image"], labels=LABELS, top_k=1)
    from_gen = clf((p for p in photos[:3]), labels=LABELS, top_k=1)
    assert len(from_column) == len(from_gen) == 3
    assert [r[0]["label"] for r in from_column] == [r[0]["label"] for r in from_gen]


# -- input checks --------------------------------------------------------------------------------------
LONG_PROMPT = "a photo of " + "a very " * 40  # far past CLIP's 77 and SigLIP's 64 tokens


def test_a_label_string_is_one_label(hf_clip, photos, tmp_path):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    one = clf(photos[0], labels="red circle")
    assert [d["label"] for d in one] == ["red circle"] and one[0]["score"] == pytest.approx(1.0)
    path = clf.save_classifier(tmp_path / "one.safetensors", "red circle")
    assert clf.load_classifier(path)[0] == ["red circle"]


def test_a_prompt_string_is_one_prompt(hf_clip, photos):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    got = clf(photos[0], labels=LABELS, multi_label=True, negative_prompts="a photo.")
    want = clf(photos[0], labels=LABELS, multi_label=True, negative_prompts=["a photo."])
    assert [d["score"] for d in got] == pytest.approx([d["score"] for d in want], abs=1e-6)
    per_label = {label: f"a photo of {label}" for label in LABELS}  # one prompt per label, as a plain string
    got = clf(photos[0], labels=LABELS, templates=per_label)
    want = clf(photos[0], labels=LABELS, templates={k: [v] for k, v in per_label.items()})
    assert [d["score"] for d in got] == pytest.approx([d["score"] for d in want], abs=1e-6)


@pytest.mark.parametrize(
    ("labels", "named"), [(["a cat", "a dog", "a cat"], "'a cat'"), (["a cat", "a dog", "A  Cat"], "'A  Cat'")]
)
def test_duplicate_labels_are_rejected(hf_clip, photos, tmp_path, labels, named):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    with pytest.raises(ValueError, match=rf"labels must be unique.*{named}"):
        clf(photos[0], labels=labels)
    with pytest.raises(ValueError, match=rf"labels must be unique.*{named}"):
        clf.save_classifier(tmp_path / "dup.safetensors", labels)


@pytest.mark.parametrize(("kind", "context"), [("clip", 77), ("siglip", 64)])
def test_labels_whose_prompts_are_truncated_are_refused(kind, context, hf_clip, siglip, photos):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip if kind == "clip" else siglip), device="cpu")
    labels = [LONG_PROMPT + "red cat", LONG_PROMPT + "blue cat", "a dog"]  # the first two differ only after the cut
    with pytest.raises(ValueError, match=rf"{context}-token text context.*'a photo of a very a very.*red cat'"):
        clf(photos[0], labels=labels)
    if kind == "clip":  # CLIP's multi-label scores embed the negative prompts too (SigLIP's need none)
        with pytest.raises(ValueError, match=rf"{context}-token"):
            clf(photos[0], labels=["a dog", "a cat"], multi_label=True, negative_prompts=[LONG_PROMPT])
    assert len(clf(photos[0], labels=["a dog", "a cat"])) == 2  # short labels are fine


@pytest.mark.parametrize(("top_k", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_top_k_must_be_a_positive_integer(hf_clip, photos, top_k, error):
    clf = vfm.pipeline("zero-shot-classification", model=str(hf_clip), device="cpu")
    with pytest.raises(error, match="top_k"):
        clf(photos[0], labels=LABELS, top_k=top_k)
    assert len(clf(photos[0], labels=LABELS, top_k=99)) == len(LABELS)  # more than there are: all of them
