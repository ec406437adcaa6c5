"""CoOp prompt learning on both CLIP backends: identity with the model's own text encoder, context placement,
trainability, a toy training run, save/load round trips and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm.adapters.prompt_learning import PromptLearner, coop_logits, read_context
from visionfm.testing import tiny_checkpoint

BACKENDS = ["open_clip", "transformers"]
# class names of 1, 2 and 6 words: the EOT/EOS position differs per class
NAMES = ["cat", "red panda", "hot air balloon over the sea"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoders(tiny_root):
    return {b: vfm.load_encoder(tiny_checkpoint("clip", b, root=tiny_root), device="cpu") for b in BACKENDS}


def reference(enc, phrase: str, names: list[str]) -> torch.Tensor:
    """The model's own text embeddings of ``f"{phrase} {name}."``, normalised: ``[K, D]``."""
    return F.normalize(enc.encode_text([f"{phrase} {c}." for c in names]).float(), dim=-1)


def phrase_embeddings(enc, phrase: str) -> torch.Tensor:
    """Token embeddings of ``phrase`` (no special tokens), ``[M, W]``."""
    if enc.info.backend == "open_clip":
        ids, emb = enc.tokenizer.encode(phrase), enc.model.token_embedding
    else:
        ids = enc.tokenizer(phrase, add_special_tokens=False)["input_ids"]
        emb = enc.model.text_model.embeddings.token_embedding
    with torch.no_grad():
        return emb(torch.tensor(ids)).float()


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_at_init(encoders, backend):
    enc = encoders[backend]
    learner = PromptLearner(enc, NAMES)
    out = learner()
    assert out.shape == (len(NAMES), enc.info.embed_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(enc, "a photo of a", NAMES), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(len(NAMES)))
    # another init phrase, of another length, with a word BPE splits in two ("itap" -> "it" "ap")
    learner = PromptLearner(enc, NAMES, n_ctx=3, init="itap of")
    torch.testing.assert_close(learner(), reference(enc, "itap of", NAMES), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_context_sits_at_the_phrase_positions(encoders, backend):
    """Setting the context to another phrase's embeddings gives that phrase's prompts: the context is spliced at
    positions 1..M of every class prompt and pooling follows each class's EOT position."""
    enc = encoders[backend]
    learner = PromptLearner(enc, NAMES, init=None)
    assert not torch.allclose(learner(), reference(enc, "a picture of the", NAMES), atol=1e-3)
    with torch.no_grad():
        learner.ctx.copy_(phrase_embeddings(enc, "a picture of the"))
    torch.testing.assert_close(learner(), reference(enc, "a picture of the", NAMES), atol=1e-5, rtol=0)

    phrases = ["a photo of a", "a drawing of a", "a picture of the"]
    csc = PromptLearner(enc, NAMES, class_specific=True)
    assert csc.ctx.shape == (len(NAMES), 4, csc.ctx.shape[-1])
    with torch.no_grad():
        for k, p in enumerate(phrases):
            csc.ctx[k] = phrase_embeddings(enc, p)
    expected = torch.cat([reference(enc, p, [c]) for p, c in zip(phrases, NAMES)])
    torch.testing.assert_close(csc(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_context_is_trainable(encoders, backend):
    enc = encoders[backend]
    learner = PromptLearner(enc, NAMES, init=None)
    assert [n for n, _ in learner.named_parameters()] == ["ctx"]
    assert list(learner.state_dict()) == ["ctx"]
    assert learner.ctx.shape == (4, learner.ctx.shape[-1]) and learner.ctx.std().item() == pytest.approx(0.02, rel=0.3)
    assert not any(p.requires_grad for p in enc.parameters())
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    logits = coop_logits(enc, learner, pixels)
    assert logits.shape == (2, len(NAMES))
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("class_specific", [False, True], ids=["unified", "csc"])
def test_coop_training_reduces_loss(encoders, backend, class_specific):
    """Labels from a fixed random linear rule on the frozen image features; a few Adam steps on the context only."""
    enc = encoders[backend]
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(24, 3, 48, 48, generator=g)
    with torch.no_grad():
        feats = F.normalize(enc(pixels).pooled, dim=-1)
    labels = (feats @ torch.randn(feats.shape[1], len(NAMES), generator=g)).argmax(-1)
    torch.manual_seed(0)
    learner = PromptLearner(enc, NAMES, class_specific=class_specific)
    opt = torch.optim.Adam(learner.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(coop_logits(enc, learner, pixels), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = F.cross_entropy(coop_logits(enc, learner, pixels), labels).item()
    assert final < 0.7 * losses[0], losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_round_trip(encoders, backend, tmp_path):
    enc = encoders[backend]
    learner = PromptLearner(enc, NAMES, class_specific=True)
    with torch.no_grad():
        learner.ctx.add_(0.1 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(1)))
    path = learner.save(tmp_path / "coop.safetensors")
    meta, ctx = read_context(path)
    assert meta["model"] == enc.info.name and meta["n_ctx"] == "4" and ctx.shape == learner.ctx.shape

    fresh = PromptLearner(enc, NAMES, init=None, class_specific=True).load(path)
    torch.testing.assert_close(fresh(), learner(), atol=0, rtol=0)
    restored = PromptLearner.from_file(path, enc)
    assert restored.classnames == NAMES and restored.class_specific and restored.init == "a photo of a"
    torch.testing.assert_close(restored(), learner(), atol=0, rtol=0)

    with pytest.raises(ValueError, match="other class names"):
        PromptLearner(enc, ["cat", "dog", "hot air balloon over the sea"], class_specific=True).load(path)
    with pytest.raises(ValueError, match="other order"):
        PromptLearner(enc, NAMES[::-1], class_specific=True).load(path)
    with pytest.raises(ValueError, match="class_specific"):
        PromptLearner(enc, NAMES).load(path)
    with pytest.raises(ValueError, match="n_ctx"):
        PromptLearner(enc, NAMES, n_ctx=2, init=None, class_specific=True).load(path)


def test_errors(encoders, tiny_root, tmp_path):
    enc = encoders["open_clip"]
    dino = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    with pytest.raises(TypeError, match="needs a CLIP encoder"):
        PromptLearner(dino, NAMES)
    with pytest.raises(ValueError, match="non-empty list"):
        PromptLearner(enc, [])
    with pytest.raises(ValueError, match="not one string"):
        PromptLearner(enc, "cat")
    with pytest.raises(ValueError, match="duplicate"):
        PromptLearner(enc, ["cat", "cat"])
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_ctx must be an integer >= 1"):
            PromptLearner(enc, NAMES, n_ctx=bad)
    with pytest.raises(ValueError, match="pass n_ctx=4"):
        PromptLearner(enc, NAMES, n_ctx=3, init="a photo of a")
    learner = PromptLearner(enc, NAMES)
    with pytest.raises(ValueError, match="another encoder"):
        coop_logits(encoders["transformers"], learner, torch.zeros(1, 3, 48, 48))
    from safetensors.torch import save_file

    save_file({"ctx": torch.zeros(4, 32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a CoOp context file"):
        learner.load(tmp_path / "other.safetensors")


def test_siglip_is_refused(tiny_root):
    enc = vfm.load_encoder(tiny_checkpoint("siglip", root=tiny_root), device="cpu")
    with pytest.raises(TypeError, match="CLIP text towers"):
        PromptLearner(enc, NAMES)
