"""The package version (one place, read by ``fastrnn.__version__`` and the saved files' marker)."""
__version__ = "0.1.0"
