"""The plugin surface: what a task hook or method plugin imports (settings declarations, method
config classes, the method and metric registries), with stable import paths.
"""
