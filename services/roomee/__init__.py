"""Roomee Platform: one package, one CLI (``roomee``), many targets."""

__version__ = "0.1.0"
