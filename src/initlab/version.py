"""initlab's version, in one place: the package metadata (pyproject.toml reads it from here) and ``initlab.__version__``."""

__version__ = "0.1.0"
