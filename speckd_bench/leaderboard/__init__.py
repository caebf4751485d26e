"""Records -> sections -> rows: grouping over training seeds, statistics against a baseline and the
rendered tables.
"""
