"""Reproducible speed and memory comparisons of xai_widgets with its peers, as ratios to
floors measured in the same process (``make bench``; see benchmarks/README.md)."""
