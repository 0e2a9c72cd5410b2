"""The report of a proxy experiment: scores, trained losses, agreement; written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class ProxyReport:
    """Proxy scores, trained scores and their rank agreement: a value that saves, loads and prints."""

    config: dict
    domains: list
    target: dict
    proxy: pd.DataFrame
    trained: pd.DataFrame | None = None
    agreement: dict | None = None
    timings: dict = field(default_factory=dict)
    citation: str = ("Na et al. 2024, Scalable Data Ablation Approximations for Language Models "
                     "through Modular Training and Merging")

    def table(self) -> pd.DataFrame:
        """Long table, one row per (mixture, source) with the store's ``loss.<d>``/``mix.<d>``."""
        frames = [self.proxy.assign(source="proxy")]
        if self.trained is not None:
            frames.append(self.trained.assign(source="trained"))
        table = pd.concat(frames, ignore_index=True)
        first = ["source", "mixture", "code_share"] + [f"mix.{d}" for d in self.domains]
        first += [f"loss.{d}" for d in self.domains] + ["loss", "target_loss"]
        return table[first + [c for c in table.columns if c not in first]]

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "domains": self.domains, "target": self.target,
                           "proxy": self.proxy.to_dict("records"),
                           "trained": None if self.trained is None else self.trained.to_dict("records"),
                           "agreement": self.agreement, "timings": self.timings, "citation": self.citation},
                          indent=1, default=plain)

    @classmethod
    def from_json(cls, text: str) -> "ProxyReport":
        d = json.loads(text)
        return cls(config=d["config"], domains=d["domains"], target=d["target"], proxy=pd.DataFrame(d["proxy"]),
                   trained=None if d["trained"] is None else pd.DataFrame(d["trained"]),
                   agreement=d["agreement"], timings=d.get("timings", {}), citation=d.get("citation", cls.citation))

    def summary(self) -> str:
        metrics = [f"loss.{d}" for d in self.domains] + ["loss", "target_loss"]
        lines = [f"merging proxy (Na et al. 2024): {len(self.proxy)} mixture(s), target "
                 + ", ".join(f"{d}={w:g}" for d, w in self.target.items())]
        trained = None if self.trained is None else self.trained.set_index("mixture")
        width = 12 if trained is None else 21
        key_w = max(10, *(len(str(k)) for k in self.proxy["mixture"]))
        head = f"{'mixture' if key_w > 10 else 'code share':>{key_w}}  " + "  ".join(f"{m:>{width}}" for m in metrics)
        what = "proxy" if trained is None else "proxy / trained"
        lines += [head, f"{'':>{key_w}}  " + "  ".join(f"{what:>{width}}" for _ in metrics)]
        for _, row in self.proxy.iterrows():
            s = row["mixture"]
            cells = []
            for m in metrics:
                cell = f"{row[m]:.4f}"
                if trained is not None:
                    cell += f" / {trained.loc[s, m]:.4f}" if s in trained.index else " / -"
                cells.append(cell)
            lines.append(f"{s:>{key_w}}  " + "  ".join(f"{c:>{width}}" for c in cells))
        if self.agreement:
            lines += ["", f"{'metric':<12} {'spearman':>9} {'kendall':>9} {'decision':>9} {'gap':>8} "
                          f"{'best(proxy)':>12} {'best(trained)':>14}"]
            for m, st in self.agreement.items():
                lines.append(f"{m:<12} {st['spearman']:>9.3f} {st['kendall']:>9.3f} "
                             f"{st['decision_accuracy']:>9.3f} {st['mean_gap']:>+8.4f} "
                             f"{str(label_of(st['proxy_best'])):>12} {str(label_of(st['trained_best'])):>14}")
        if self.timings:
            lines += ["", "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())]
        return "\n".join(lines)

    def save(self, out) -> None:
        """``table.csv`` and ``report.json`` in ``out``, each written whole."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "table.csv", self.table().to_csv(index=False))
        _write_atomic(out / "report.json", self.to_json())


def label_of(best) -> str:
    return f"{best:g}" if isinstance(best, float) else str(best)


def plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_atomic(path: Path, text: str) -> None:
    from scaling.store import atomic_write_text
    atomic_write_text(path, text)
