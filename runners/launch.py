"""Execute a list of ``RunSpec``s against a store, skipping runs already finished.

The launcher knows specs and a store, nothing about grids: any plan can be launched, and rerunning
the same command trains only what is missing (runs whose store row is not ``ok``; ``train_run``
resumes from a run's checkpoint when one exists).

Launchers are looked up by name in ``LAUNCHERS``; to add one (``deepspeed``, ``slurm``), write a
function ``(specs, store, *, progress, **opts) -> LaunchSummary`` and register it there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from scaling.cli import UsageError
from scaling.store import completed_run_ids
from runners.spec import RunSpec


@dataclass
class LaunchSummary:
    """What a launch did, by run_id."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: runs not attempted because of ``limit``
    deferred: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def summary(self) -> str:
        parts = [f"trained {len(self.trained)}", f"skipped {len(self.skipped)} (already ok)",
                 f"failed {len(self.failed)}"]
        if self.deferred:
            parts.append(f"not started {len(self.deferred)} (--limit)")
        text = ", ".join(parts)
        if self.failed:
            text += "\nfailed runs: " + " ".join(self.failed)
        return text


def todo(specs: Sequence[RunSpec], store) -> list[RunSpec]:
    """The specs whose run is not yet ``ok`` in the store, in order."""
    done = completed_run_ids(store)
    return [s for s in specs if s.run_id not in done]


def launch_local(specs: Sequence[RunSpec], store, *, progress: bool = True, limit: int | None = None,
                 **train_opts) -> LaunchSummary:
    """Train the missing runs one after another in this process (``runners.train.train_run``)."""
    from runners.train import train_run  # lazy: torch is needed only when something is trained

    summary = LaunchSummary()
    done = completed_run_ids(store)
    summary.skipped = [s.run_id for s in specs if s.run_id in done]
    pending = [s for s in specs if s.run_id not in done]
    if limit is not None:
        summary.deferred = [s.run_id for s in pending[limit:]]
        pending = pending[:limit]
    bar = _progress(pending, progress)
    for spec in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{spec.shape} {spec.epochs:.3g} ep {spec.run_id}")
        row = train_run(spec, store, progress=progress, **train_opts) or {}
        (summary.trained if row.get("status", "ok") == "ok" else summary.failed).append(spec.run_id)
    return summary


def _progress(items, enabled: bool):
    if not enabled or not items:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional for the launcher
        return items
    return tqdm(items, desc="grid", unit="run", position=0, leave=True)


def _not_implemented(name: str) -> Callable[..., LaunchSummary]:
    def launcher(specs, store, **opts) -> LaunchSummary:
        raise UsageError(f"launcher {name} is not implemented yet (use --launcher local)")
    launcher.__name__ = f"launch_{name}"
    return launcher


#: name -> launcher; ``deepspeed`` and ``slurm`` are placeholders to be filled in.
LAUNCHERS: dict[str, Callable[..., LaunchSummary]] = {
    "local": launch_local,
    "deepspeed": _not_implemented("deepspeed"),
    "slurm": _not_implemented("slurm"),
}


def launch(specs: Sequence[RunSpec], store, launcher: str = "local", **opts) -> LaunchSummary:
    """Run every spec not already ``ok`` in ``store`` with the named launcher; options
    (``device``, ``dtype``, ``compile``, ``max_steps``, ``cache_dir``, ``progress``, ``limit``) are
    passed through to it."""
    try:
        fn = LAUNCHERS[launcher]
    except KeyError:
        raise UsageError(f"unknown launcher {launcher!r} (known: {', '.join(LAUNCHERS)})") from None
    return fn(list(specs), store, **opts)
