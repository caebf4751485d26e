"""Run records: the typed, versioned RunRecord, environment facts, training-log statistics and the
records of a results folder.
"""
