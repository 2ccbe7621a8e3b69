"""Benchmarks and audits run by make targets (bench, bench-load, soak...), side by side."""
