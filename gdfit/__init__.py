"""gdfit: gradient-descent fitting from the command line."""

__version__ = "0.1.0"
