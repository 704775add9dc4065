"""Benchmarks: `python -m bench` (or `make bench`) runs them and rewrites docs/benchmarks.md."""
