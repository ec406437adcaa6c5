"""Data loading utilities for visionfm."""
