"""Offline batch runs that attribute whole datasets into a SimLens store (``python -m precompute --help``)."""
