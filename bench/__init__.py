"""Benchmarks: scripts that measure a real labelloop server (``python bench/<name>.py``)."""
