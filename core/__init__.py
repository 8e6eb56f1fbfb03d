"""Shared types, settings and errors: the one home every other package imports from.

Nothing here imports Prefect, the blocks, the tasks or the flows.
"""
