"""Teacher and student loading: built-in names, hub ids, local folders, the GGUF teacher, layer-subset
students and the vocabulary check.
"""
