"""An eval-suite run that SIGKILLs itself after chunk K (used by test_faults.py in a subprocess).

Usage: python eval_fault_prog.py MODEL_DIR OUT_DIR KILL_AFTER_CHUNK (0: never)
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from visionfm.eval.runner import Runner
from visionfm.eval.suite import parse_suite

SUITE = {
    "name": "faults",
    "datasets": {
        "train": {"source": "toyworld", "split": "train", "num": 40, "seed": 3, "label": "shape"},
        "test": {"source": "toyworld", "split": "test", "num": 24, "seed": 3, "label": "shape"},
    },
    "tasks": [
        {"name": "zs", "task": "zero_shot_classification", "dataset": "test", "templates": ["a {}."]},
        {"name": "knn", "task": "knn", "train": "train", "test": "test", "k": 5},
        {"name": "probe", "task": "linear_probe", "train": "train", "test": "test"},
    ],
}


def main() -> None:
    torch.set_num_threads(1)
    model, out, kill = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def after_chunk(n: int) -> None:
        if kill and n == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    Runner(parse_suite(SUITE), model, out, batch_size=4, chunk_size=8, after_chunk=after_chunk).run()


if __name__ == "__main__":
    main()
