"""Speed benchmarks: visionfm side by side with its peer libraries. ``python -m benchmarks --help`` runs the suite."""
