"""Recipes: loading, overrides, and a short toyworld CLIP pretraining run that loads like any CLIP."""

from __future__ import annotations

import pytest

from visionfm.testing import TINY_TOY_CLIP_OVERRIDES
from visionfm.training.recipes import apply_overrides, load_recipe, recipe_hash, register_task, run_recipe

TINY = list(TINY_TOY_CLIP_OVERRIDES)


def test_builtin_recipe_loads_and_overrides():
    r = load_recipe("toyworld_clip")
    assert r["task"] == "clip_pretrain" and r["data"]["split"] == "train"
    r2 = apply_overrides(r, ["train.max_steps=7", "model.vision_cfg.width=48", "train.lr=1e-4"])
    assert r2["train"]["max_steps"] == 7 and r2["model"]["vision_cfg"]["width"] == 48 and r2["train"]["lr"] == 1e-4
    assert r["train"]["max_steps"] != 7  # the original is not modified
    assert recipe_hash(r) != recipe_hash(r2)
    assert recipe_hash(r) == recipe_hash(apply_overrides(r, ["train.output_dir=elsewhere"]))


def test_recipe_errors():
    with pytest.raises(FileNotFoundError, match="built-in recipes.*toyworld_clip"):
        load_recipe("no_such_recipe")
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({"task": "x"}, ["train.max_steps"])
    with pytest.raises(ValueError, match="unknown recipe task"):
        run_recipe({"task": "nope"})
    with pytest.raises(ValueError, match="unknown train option"):
        run_recipe(load_recipe("toyworld_clip", [*TINY, "train.bogus=1", "train.output_dir=/tmp/x"]))


def _tiny_classification(tmp_path, **extra):
    r = {
        "task": "classification",
        "model": "toyworld-clip",
        "tuning": "linear_probe",
        "data": {"train": {"source": "toyworld", "split": "train", "num": 8, "label": "shape"}},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 4, "progress": False},
    }
    r.update(extra)
    return r


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r.update(tunning="full"), r"'tunning' \(did you mean 'tuning'"),
        (lambda r: r["data"]["train"].update(lable="position"), r"data.train.*'lable' \(did you mean 'label'"),
        (lambda r: r["data"]["train"].update(splt="test"), r"'splt' \(did you mean 'split'"),
        (lambda r: r["data"].update(tset={"source": "toyworld"}), r"'tset' \(did you mean 'test'"),
        (lambda r: r["train"].update(max_steps=True), r"train.max_steps must be int"),
        (lambda r: r["train"].update(batch_size=2.5), r"train.batch_size must be int"),
        (lambda r: r["train"].update(betas=0.9), r"train.betas must be tuple"),
        (lambda r: r["train"].update(lr="fast"), r"train.lr must be a number"),
        (lambda r: r.pop("train"), r"no 'train' section"),
    ],
)
def test_recipe_schema_rejects_typos_and_wrong_types(tmp_path, edit, match):
    r = _tiny_classification(tmp_path)
    edit(r)
    with pytest.raises(ValueError, match=match):
        run_recipe(r)
    assert not (tmp_path / "run").exists()  # rejected before anything ran


def test_recipe_override_typo_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"'tranin' \(did you mean 'train'"):
        run_recipe(_tiny_classification(tmp_path), ["tranin.max_steps=3"])
    with pytest.raises(ValueError, match=r"'max_stpes' \(did you mean 'max_steps'"):
        run_recipe(load_recipe("toyworld_clip", [*TINY, "train.max_stpes=3", f"train.output_dir={tmp_path}"]))


def test_malformed_recipe_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\ntrain:\n  max_steps: 3\n   lr: [1e-3\n")
    with pytest.raises(ValueError, match=r"bad.yaml:4:.*not valid YAML"):
        load_recipe(bad)


_DUMMY_RUNS: list[dict] = []


@register_task("_test_dummy_run")
def _dummy_run(recipe):
    """A recipe task without a declared schema: a tiny regression through the real Trainer."""
    import torch

    from visionfm.training import TrainConfig, Trainer

    cfg = TrainConfig.from_dict({"batch_size": 4, "save_every": 1, "progress": False, **recipe["train"]})
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    model = torch.nn.Linear(3, 1)

    def loss_fn(m, batch):
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1]), {}

    Trainer(model, loss_fn, data, cfg).fit()
    _DUMMY_RUNS.append(recipe)
    return cfg.output_dir


def test_resume_into_a_run_dir_of_another_recipe_is_refused(tmp_path):
    r = {"task": "_test_dummy_run", "tuning": "lora", "train": {"output_dir": str(tmp_path), "max_steps": 2}}
    run_recipe(r)
    run_recipe(r, ["train.progress=false", "train.max_steps=3"])  # exempt: the bar; extending a run
    with pytest.raises(ValueError, match=r"different recipe \(tuning: 'lora' -> 'full'\).*new train.output_dir"):
        run_recipe(r, ["tuning=full"])
    with pytest.raises(ValueError, match=r"train.lr: None -> 0.5"):
        run_recipe(r, ["train.lr=0.5"])
    assert len(_DUMMY_RUNS) == 2
    run_recipe(r, ["tuning=full", "train.resume=false"])  # starting over is allowed
    assert len(_DUMMY_RUNS) == 3
