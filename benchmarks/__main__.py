"""``python -m benchmarks``: the speed suite (see :mod:`benchmarks.suite`)."""

from .suite import main

main()
