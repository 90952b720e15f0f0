"""Benchmarks, the synthetic model zoo and the evaluation harness (not imported by the packages)."""
