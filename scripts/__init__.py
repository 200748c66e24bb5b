"""Thin command-line entry points (the ``talkface`` command and benchmarks)."""
