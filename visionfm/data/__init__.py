"""Data loading utilities for visionfm."""

from . import ovseg  # noqa: F401 - registers the "ovseg" dataset source (the 8 open-vocabulary segmentation benchmarks)
