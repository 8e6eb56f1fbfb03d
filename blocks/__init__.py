"""Prefect blocks: thin adapters between the tasks and the infrastructure.

Each block can be saved in Prefect (``appgen setup``) or built from the settings
(``blocks.defaults``); the tasks only see the interfaces defined here.
"""
