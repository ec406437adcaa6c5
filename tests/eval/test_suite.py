"""Suite schema: unknown task keys and dataset keys are rejected with the closest valid names.

Every suite task key is checked against the keys its task declares (``EVAL_TASK_KEYS`` in
``visionfm/training/schema.py``, plus ``task``, ``name``, ``classnames``) and every dataset entry against its source's
keys (``register_source(..., keys=...)``, plus ``source``, ``num``, ``classnames``, ``templates``). Tasks and sources
that declare nothing accept any key, with a warning. A malformed YAML file is reported with its file and line.
"""

from __future__ import annotations

import pytest

import visionfm.toyworld  # noqa: F401  (registers the toyworld source)
from visionfm.eval.suite import load_suite, parse_suite, shipped_suites

DATASETS = {
    "train": {"source": "toyworld", "split": "train", "num": 8},
    "test": {"source": "toyworld", "split": "test", "num": 8},
}


def test_shipped_suites_pass_the_schema():
    for name in shipped_suites():
        load_suite(name)


def test_unknown_task_key_is_rejected_with_the_closest_name():
    raw = {"datasets": DATASETS, "tasks": [{"task": "knn", "train": "train", "test": "test", "temprature": 0.1}]}
    with pytest.raises(ValueError, match=r"tasks\[0\] \(knn\).*'temprature' \(did you mean 'temperature'"):
        parse_suite(raw)


def test_unknown_dataset_key_is_rejected_with_the_closest_name():
    raw = {"datasets": {**DATASETS, "test": {"source": "toyworld", "splt": "test"}},
           "tasks": [{"task": "knn", "train": "train", "test": "test"}]}  # fmt: skip
    with pytest.raises(ValueError, match=r"dataset 'test'.*'splt' \(did you mean 'split'"):
        parse_suite(raw)


def test_override_typo_is_rejected(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        "datasets:\n  train: {source: toyworld, split: train}\n  test: {source: toyworld, split: test}\n"
        "tasks:\n  - {task: knn, train: train, test: test}\n"
    )
    assert load_suite(f, {"set": ["datasets.test.num=5"]}).datasets["test"]["num"] == 5
    with pytest.raises(ValueError, match=r"'nmu' \(did you mean 'num'"):
        load_suite(f, {"set": ["datasets.test.nmu=5"]})


def test_malformed_suite_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("datasets:\n  a: {source: toyworld\ntasks: []\n")
    with pytest.raises(ValueError, match=r"bad.yaml:\d+:\d+: not valid YAML"):
        load_suite(f)
