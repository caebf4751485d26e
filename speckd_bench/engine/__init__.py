"""One run: the recipe (named stages), the Trainer, the warm start, the run folder and its
checkpoints, the teacher's cache, pre-flight checks and trackers.
"""
