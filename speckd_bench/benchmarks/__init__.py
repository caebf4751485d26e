"""Benchmarks that time the engine's fast paths against the plain transformers ones, in one process."""
