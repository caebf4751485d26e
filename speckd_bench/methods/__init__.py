"""The methods shipped with the engine (SpecKD), rollouts for data policies, and discovery of
built-in and plugin methods.
"""
