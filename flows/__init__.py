"""The flows: the whole pipeline, readable top to bottom."""
