"""seqtool: train, use and inspect sequence models from the command line."""

__version__ = "0.1.0"
