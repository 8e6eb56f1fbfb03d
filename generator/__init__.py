"""The program that runs inside the generator container: ``python -m generator``.

It runs a coding agent in an app directory and exits; non-zero, with the reason on
stderr, when the agent fails. Standard library only: it never imports Prefect or the
orchestrator, and it is given no credentials beyond its agent's own key.
"""
