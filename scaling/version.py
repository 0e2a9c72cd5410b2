"""The package's version, written into every fit file (a leaf module, so that any module can name
it without importing the package's ``__init__``)."""

__version__ = "0.1.0"
