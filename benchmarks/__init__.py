"""Benchmarks and measurement scripts (run them as ``python benchmarks/<name>.py``)."""
