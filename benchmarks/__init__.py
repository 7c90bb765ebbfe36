"""Benchmark harness: the backend directly, the builtin engine and reference proxies side by side.

Run with `make bench` (or `python -m benchmarks.run --help`). See the README's Benchmarks section.
"""
