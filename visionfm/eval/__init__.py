"""Evaluation: metrics and suites."""
