"""Baseline method plugins: each module registers its methods on import (see speckd_bench.methods)."""
