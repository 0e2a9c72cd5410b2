"""Scaling laws, one per module; ``get_law(name)`` by name."""

from scaling.cli import UsageError
from scaling.laws.chinchilla import Chinchilla
from scaling.laws.data_constrained import DataConstrained
from scaling.laws.kaplan import Kaplan

LAWS = {"chinchilla": Chinchilla, "data-constrained": DataConstrained, "kaplan": Kaplan}


def get_law(name: str):
    try:
        return LAWS[name]()
    except KeyError:
        raise UsageError(f"unknown law {name!r} (known: {', '.join(LAWS)})") from None
