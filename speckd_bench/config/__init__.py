"""The run configuration: typed sections, presets, YAML and overrides, and which keys change results."""
