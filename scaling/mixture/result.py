"""The mixture fit as a value (statsmodels-style Results): saved, loaded, compared, printed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from scaling.intervals import interval
from scaling.laws.mixture import SCALING_FORMS  # noqa: F401  (re-exported: the nested fit's per-mixture laws)
from scaling.results import JsonFile, format_number, plain


@dataclass
class MixtureFit(JsonFile):
    """A mixing-law fit (own object; ``scaling.results.FitResult`` describes one scaling law).
    ``params``: {loss domain: {c, k, t}} with t in ``domains`` order (sum 0); for a nested fit they
    are the law at ``settings.reference`` (the largest run's scale), refitted at each target."""

    kind: str
    domains: list[str]
    loss_domains: list[str]
    params: dict
    objective: dict
    n_points: int
    n_mixtures: int
    r2: dict
    mixtures: list = field(default_factory=list)
    scaling_law: str | None = None
    range: dict = field(default_factory=dict)
    ci: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    data_sha256: str | None = None
    version: str = ""
    law: str = "mixture"
    #: per loss domain: the predictor used (``scaling.mixture.models``), its stored state, and every
    #: candidate's cross-validated scores
    model: dict = field(default_factory=dict)
    predictors: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from scaling.mixture.models import public
        d = asdict(self)
        d["predictors"] = public(self.predictors)
        return {"law": d.pop("law"), **{k: plain(v) for k, v in d.items()}}

    @classmethod
    def load(cls, path) -> "MixtureFit":
        """Read and validate a mixture fit file (``scaling.schemas``: kinds, shapes, signs)."""
        from scaling.schemas import load
        d = load(path, "mixture-fit")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})

    # --- statsmodels-style Results: predict, conf_int ---------------------------------------
    def predict(self, mixtures, params: float | None = None, tokens: float | None = None):
        """Predicted losses of ``mixtures`` (a table with ``mix.<domain>`` columns, or proportions
        [n, k] in ``domains`` order): a DataFrame with ``pred.<d>``, ``pred.<d>.lo``, ``pred.<d>.hi``
        per loss domain, as ``python -m scaling.mixture predict`` writes. Fits across scales (nested,
        joint) need the target's ``params`` and ``tokens``."""
        import pandas as pd
        from scaling.mixture.predict import predict_frame
        if not isinstance(mixtures, pd.DataFrame):
            r = np.atleast_2d(np.asarray(mixtures, float))
            if r.shape[1] != len(self.domains):
                raise ValueError(f"proportions need {len(self.domains)} columns ({', '.join(self.domains)}), got {r.shape[1]}")
            mixtures = pd.DataFrame(r, columns=[f"mix.{d}" for d in self.domains])
        return predict_frame(self, mixtures, params, tokens, source="mixtures")

    def _flat(self) -> tuple[list[str], dict]:
        """Parameter names as ``<loss domain>.<name>`` and the stored 95% intervals by those names."""
        names, stored = [], {}
        for d in self.loss_domains:
            p, ci = self.params.get(d) or {}, self.ci.get(d) or {}
            for key, value in p.items():
                if isinstance(value, dict):
                    subs = [(f"{key}.{j}", value[j], (ci.get(key) or {}).get(j) if isinstance(ci.get(key), dict) else None)
                            for j in value]
                elif isinstance(value, list):
                    subs = [(f"{key}.{self.domains[j]}", v, (ci.get(key) or [None] * len(value))[j])
                            for j, v in enumerate(value)]
                else:
                    subs = [(key, value, ci.get(key))]
                for name, _, iv in subs:
                    names.append(f"{d}.{name}")
                    if iv is not None:
                        stored[f"{d}.{name}"] = iv
        return names, stored

    def conf_int(self, alpha: float = 0.05):
        """The mixing (or joint) law's parameters per loss domain, ``<domain>.<name>``, with their
        95% bootstrap intervals as stored: a DataFrame indexed by parameter, columns ``lower`` and
        ``upper`` (NaN with a warning for a fit made without ``--bootstrap``; intervals at another
        ``alpha`` are not kept in a mixture fit file)."""
        from scaling.intervals import conf_int_frame
        names, stored = self._flat()
        if abs(alpha - 0.05) > 1e-12:
            raise ValueError("a mixture fit keeps its 95% intervals only (alpha=0.05); refit with --bootstrap "
                             "and read settings.bootstrap for others")
        return conf_int_frame(names, None, alpha, stored, "this mixture fit")

    @property
    def boot(self) -> dict | None:
        b = self.settings.get("bootstrap") or {}
        return b if b.get("n") else None

    def summary(self) -> str:
        if self.kind == "joint":
            return self._joint_summary()
        head = (f"law: mixture (Ye et al. 2024), {self.kind}"
                + (f" over per-mixture {self.scaling_law} laws" if self.kind == "nested" else "")
                + f"    runs: {self.n_points}    mixtures: {self.n_mixtures}")
        lines = [head, f"components: {', '.join(self.domains)}    normalisation: sum_j t_ij = 0"]
        ref = self.settings.get("reference")
        if ref:
            lines.append(f"mixing law shown at the largest run's scale: "
                         f"N={format_number(ref['params'])}, D={format_number(ref['tokens'])}")
        tn = [f"t.{d}" for d in self.domains]
        lines.append(f"{'domain':<10} {'c':>10} {'k':>10} " + " ".join(f"{n:>10}" for n in tn) + f" {'R^2':>8}")
        for d in self.loss_domains:
            p = self.params[d]
            lines.append(f"{d:<10} {format_number(p['c']):>10} {format_number(p['k']):>10} "
                         + " ".join(f"{format_number(v):>10}" for v in p["t"]) + f" {format_number(self.r2.get(d)):>8}")
            ci = self.ci.get(d)
            if ci:
                cells = zip(("c", "k", *tn), (ci["c"], ci["k"], *ci["t"]))
                lines.append("  95% CI: " + ", ".join(f"{n} [{format_number(a)}, {format_number(b)}]" for n, (a, b) in cells))
        if self.cv:
            names = sorted({n for c in self.cv.values() for n in c}, key=lambda n: list(self.cv[next(iter(self.cv))]).index(n)
                           if n in self.cv[next(iter(self.cv))] else 99)
            lines.append(f"predictors by {self.settings.get('cv_folds', '?')}-fold cross-validation over mixtures "
                         f"(Spearman / MAE of out-of-fold predictions; * = used):")
            lines.append(f"{'domain':<12} " + " ".join(f"{n:>20}" for n in names))
            lines[-1] = lines[-1].rstrip()
            for d in self.loss_domains:
                cells = []
                for n in names:
                    c = self.cv.get(d, {}).get(n)
                    mark = "*" if self.model.get(d) == n else " "
                    cells.append(f"{c['spearman']:.3f}/{c['mae']:.3g}{mark}" if c and c["spearman"] is not None
                                 and np.isfinite(c["spearman"]) else "-")
                lines.append(f"{d:<12} " + " ".join(f"{c:>20}" for c in cells))
        choice = self.settings.get("kind_choice")
        if choice:
            lines.append(f"kind: {choice['chosen']} ({choice['reason']})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _joint_summary(self) -> str:
        """The joint law's table: per loss domain E, A, alpha, B, beta, then C and gamma by component."""
        lines = [f"law: mixture-scale, joint (Shukor et al. 2025, additive)    runs: {self.n_points}    "
                 f"mixtures: {self.n_mixtures}",
                 "L_i(N, D, h) = E + A/N^alpha + B/D^beta + 1/sum_j C_j h_j^gamma_j, fitted on every run and checkpoint",
                 f"{'domain':<10} {'E':>10} {'A':>10} {'alpha':>8} {'B':>10} {'beta':>8} {'R^2':>8}"]
        for d in self.loss_domains:
            p = self.params[d]
            lines.append(f"{d:<10} {format_number(p['E']):>10} {format_number(p['A']):>10} {format_number(p['alpha']):>8} "
                         f"{format_number(p['B']):>10} {format_number(p['beta']):>8} {format_number(self.r2.get(d)):>8}")
            lines.append("  C: " + ", ".join(f"{j} {format_number(v)}" for j, v in p["C"].items()))
            lines.append("  gamma: " + ", ".join(f"{j} {format_number(v)}" for j, v in p["gamma"].items()))
        choice = self.settings.get("kind_choice")
        if choice:
            lines.append(f"kind: {choice['chosen']} ({choice['reason']})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _interval(v):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)] if v.ndim == 1 else v[np.isfinite(v).all(axis=tuple(range(1, v.ndim)))]
    if not len(v):
        return None
    return np.stack(interval(v, axis=0), axis=-1).tolist()
