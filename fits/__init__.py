"""Fit files (JSON) shipped with the package, among them presets that reproduce published fits.

``--fit NAME`` works wherever a fit file is read: ``hoffmann2022`` (Hoffmann et al. 2022, Approach 3),
``besiroglu2024`` (Besiroglu et al. 2024, the Epoch replication), ``muennighoff2023_c4`` (Muennighoff et
al. 2023, the data-constrained law on C4). This is a package (not only a folder) so that a non-editable
``pip install .`` carries the presets.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def names() -> list[str]:
    """The presets' names (file stems)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def path(name: str) -> Path | None:
    """The preset file called ``name`` (with or without ``.json``), or None."""
    stem = name[:-5] if name.endswith(".json") else name
    if stem not in names():
        return None
    return Path(str(resources.files(__name__) / f"{stem}.json"))
