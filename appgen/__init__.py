"""The ``appgen`` command line."""
