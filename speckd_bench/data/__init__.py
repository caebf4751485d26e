"""Tasks and their rows: task files and plugin discovery, rows from a mirror or the hub, prompts and
targets, token batches.
"""
