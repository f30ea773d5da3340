"""oneoff: run a twelve-factor app's one-off admin processes securely."""

from oneoff._version import __version__

__all__ = ["__version__"]
