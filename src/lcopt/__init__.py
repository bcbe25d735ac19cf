"""lcopt: long-context inference optimizations, measured."""

__version__ = "0.1.0"
