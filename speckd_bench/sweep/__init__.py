"""Grids of runs: expansion, where each point stands, and the executors that run them."""
