"""Benchmarks (not timed tests): see docs/benchmarks.md."""
