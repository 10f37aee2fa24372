"""Benchmarks: run by hand (`python -m tests.bench.benchmark`), never collected by pytest."""
