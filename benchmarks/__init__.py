"""Benchmarks that print numbers: `python -m benchmarks.<name>` from the repository root."""
