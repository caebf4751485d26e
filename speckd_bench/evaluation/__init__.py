"""Scoring a model: decoding, text metrics per eval set, fidelity to the teacher, trivial floors,
degeneracy, reference rows and lm-evaluation-harness.
"""
