"""The package version (read by the run records without importing the whole package)."""

__version__ = "0.2.0"
