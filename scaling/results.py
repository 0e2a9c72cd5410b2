"""``FitResult``: a fit as a value (statsmodels-style Results) that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scaling.errors import DataError

FIT_KEYS = ("law", "params", "objective", "n_points", "r2", "ci", "warnings", "settings",
            "data_sha256", "version")


class JsonFile:
    """``to_json`` and an atomic ``save`` for a result object that has ``to_dict``."""

    def to_json(self, indent=1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path) -> None:
        """Write atomically: a fit file is never half-written."""
        from scaling.store import atomic_write_bytes
        text = self.to_json()
        atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def resolve_fit_path(path) -> Path:
    """``path`` itself when it exists, else the shipped preset of that name (``NAME``, ``NAME.json``
    or ``fits/NAME.json``, so the README's examples work from any directory), else ``path``."""
    p = Path(path)
    if p.exists() or p.parent not in (Path("."), Path("fits")):
        return p
    import fits
    return fits.path(p.name) or p


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap of a fit: ``n`` resamples of the runs (``failed`` of them did not converge),
    ``draws`` [n, k] of the parameters ``names``."""

    n: int
    seed: int | None
    names: tuple[str, ...]
    failed: int
    draws: np.ndarray

    @classmethod
    def from_dict(cls, d: dict | None) -> "Bootstrap | None":
        if not d or not d.get("draws"):
            return None
        return cls(n=int(d.get("n", len(d["draws"]))), seed=d.get("seed"), names=tuple(d.get("names") or ()),
                   failed=int(d.get("failed") or 0), draws=np.asarray(d["draws"], dtype=float))


@dataclass(frozen=True)
class VariantChoice:
    """Which Approach 3 variant the fit chose (``scaling.fit.variants``), by what, and each
    candidate's scores (``backtest_mape``, ``target_halfwidth``, ``score``)."""

    chosen: str
    reason: str = ""
    criterion: str = ""
    candidates: dict = field(default_factory=dict)
    folds: tuple = ()
    target: dict | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "VariantChoice | None":
        if not d or not d.get("chosen"):
            return None
        return cls(chosen=d["chosen"], reason=d.get("reason", ""), criterion=d.get("criterion", ""),
                   candidates=dict(d.get("candidates") or {}), folds=tuple(d.get("folds") or ()), target=d.get("target"))


@dataclass(frozen=True)
class Diagnostics:
    """What the fit says about itself: residuals of log-loss (mean, std, median_abs, max_abs), the
    profile of each parameter (objective at x1/3 ... x3), distinct optima found."""

    residuals: dict = field(default_factory=dict)
    profiles: dict = field(default_factory=dict)
    optima: object = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "Diagnostics | None":
        if not d:
            return None
        return cls(residuals=dict(d.get("residuals") or {}), profiles=dict(d.get("profiles") or {}),
                   optima=d.get("optima"))


@dataclass(frozen=True)
class FitSettings:
    """A fit's ``settings`` (how it was made) as typed fields; what no field names stays in ``extra``
    (the file keeps the plain dict, so files of every version load)."""

    objective: str = ""
    delta: float | None = None
    procedure: str = ""
    starts: int | None = None
    fixed: dict = field(default_factory=dict)
    tie: tuple = ()
    exclude_top: int = 0
    start: dict = field(default_factory=dict)
    notes: tuple = ()
    flops_convention: str | None = None
    seconds: float | None = None
    variant: VariantChoice | None = None
    diagnostics: Diagnostics | None = None
    bootstrap: Bootstrap | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "FitSettings":
        d = dict(d or {})
        plain_keys = ("objective", "delta", "procedure", "starts", "fixed", "exclude_top", "start",
                      "flops_convention", "seconds")
        kw = {k: d.pop(k) for k in plain_keys if k in d and d[k] is not None}
        kw["tie"] = tuple(d.pop("tie", None) or ())
        kw["notes"] = tuple(d.pop("notes", None) or ())
        kw["variant"] = VariantChoice.from_dict(d.pop("variant", None))
        kw["diagnostics"] = Diagnostics.from_dict(d.pop("diagnostics", None))
        kw["bootstrap"] = Bootstrap.from_dict(d.pop("bootstrap", None))
        return cls(**kw, extra=d)


@dataclass
class FitResult(JsonFile):
    law: str
    params: dict[str, float]
    objective: float | None
    n_points: int
    r2: float | None
    ci: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    data_sha256: str | None = None
    version: str = ""

    def to_dict(self) -> dict:
        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict, path="fit file") -> "FitResult":
        """Validated whole against the scaling-fit schema (``scaling.schemas``): a known law, every
        parameter it needs present, finite and of the right sign, bootstrap draws rectangular."""
        from scaling.schemas import validate
        validate(d, "scaling-fit", path)
        return cls(**{k: d.get(k, default) for k, default in
                      (("law", None), ("params", None), ("objective", None), ("n_points", 0), ("r2", None),
                       ("ci", {}), ("warnings", []), ("settings", {}), ("data_sha256", None), ("version", ""))})

    @classmethod
    def load(cls, path) -> "FitResult":
        """Read a fit file; a name that is no file but a preset's (``hoffmann2022``) reads the preset."""
        from scaling.schemas import read_json
        path = resolve_fit_path(path)
        if not Path(path).exists():
            import fits
            raise DataError(f"{path}: no such fit file (presets by name: {', '.join(fits.names())})")
        return cls.from_dict(read_json(path), path)

    # --- statsmodels-style Results: predict, conf_int ---------------------------------------
    def predict(self, params, tokens, unique_tokens=None) -> np.ndarray:
        """The law's loss at (N, D[, U_D]) (lists or scalars, broadcast): what
        ``python -m scaling.predict loss`` prints as ``loss``. A data-constrained fit takes
        ``unique_tokens`` (default: every token unique)."""
        from scaling.laws import get_law
        arrays = [np.atleast_1d(np.asarray(x, float)) for x in (params, tokens, unique_tokens) if x is not None]
        n, d, *u = np.broadcast_arrays(*arrays)
        if any((a <= 0).any() for a in (n, d, *u)):
            raise ValueError("params, tokens and unique_tokens must be positive")
        law = get_law(self.law)
        if self.law == "data-constrained":
            return law.predict(self.params, n, d, u[0] if u else d)
        if unique_tokens is not None:
            raise ValueError(f"unique_tokens needs a data-constrained fit; this fit's law is {self.law}")
        return law.predict(self.params, n, d)

    def conf_int(self, alpha: float = 0.05):
        """Percentile intervals of the parameters from the bootstrap draws: a DataFrame indexed by
        parameter, columns ``lower`` and ``upper`` (the stored 95% ones for a fit without draws,
        NaN with a warning when it has neither)."""
        from scaling.intervals import conf_int_frame
        names, boot, draws = list(self.params), self.fit_settings.bootstrap, None
        if boot is not None and set(names) <= set(boot.names or names):
            order = list(boot.names or names)
            draws = boot.draws[:, [order.index(n) for n in names]]
        return conf_int_frame(names, draws, alpha, self.ci, f"the {self.law} fit")

    @property
    def fit_settings(self) -> FitSettings:
        """``settings`` as typed dataclasses: ``.variant.chosen``, ``.bootstrap.draws``,
        ``.diagnostics.residuals``, ... (``scaling.results.FitSettings``)."""
        return FitSettings.from_dict(self.settings)

    @property
    def bootstrap_draws(self) -> np.ndarray | None:
        """[B, k] bootstrap draws of ``params`` (in ``settings.bootstrap.names`` order), if stored."""
        boot = self.settings.get("bootstrap") or {}
        draws = boot.get("draws")
        return None if not draws else np.asarray(draws, dtype=float)

    def summary(self) -> str:
        """The table the CLI prints."""
        lines = [f"law: {self.law}    points: {self.n_points}    objective: {format_number(self.objective)}"
                 f"    R^2 (loss): {format_number(self.r2)}"]
        fixed = set((self.settings.get("fixed") or {}).keys())
        stage1 = set(((self.settings.get("stage1") or {}).get("params") or {}).keys())
        lines.append(f"{'parameter':<10} {'estimate':>14} {'95% CI':>32}  note")
        for name, value in self.params.items():
            ci = self.ci.get(name)
            ci_text = f"[{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
            note = "fixed" if name in fixed else "stage 1" if name in stage1 else ""
            lines.append(f"{name:<10} {format_number(value):>14} {ci_text:>32}  {note}")
        choice = self.settings.get("law_choice") or {}
        if choice.get("chosen"):
            lines.append(f"law: {choice['reason']}")
        variant = self.settings.get("variant") or {}
        if variant.get("chosen"):
            lines.append(f"variant: {variant['chosen']} ({variant.get('reason', '')})")
        resid = (self.settings.get("diagnostics") or {}).get("residuals")
        if resid:
            lines.append("residuals (log-loss): " + ", ".join(f"{k} {format_number(v)}" for k, v in resid.items()))
        oof = (self.settings.get("diagnostics") or {}).get("out_of_fold") or {}
        if oof.get("n"):
            # what a run beyond the data has done (scaling.intervals.predictive_sd takes the larger sd)
            lines.append(f"out of fold (log-loss, {oof['n']} runs {float(oof.get('decades', float('nan'))):.2g} decade "
                         f"beyond their fold's fit): rms {format_number(oof['rms'])}, mean {format_number(oof['mean'])}")
            far = oof.get("farther") or {}
            if far.get("n"):
                lines.append(f"two folds out (log-loss, {far['n']} runs {float(far['decades']):.2g} decade beyond): "
                             f"rms {format_number(far['rms'])}, mean {format_number(far['mean'])}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


def format_number(v) -> str:
    """Six significant digits, scientific outside [1e-3, 1e5): how fit tables print numbers."""
    if v is None:
        return "-"
    v = float(v)
    return f"{v:.6g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.6e}"


def plain(v):
    """NumPy scalars and arrays, and non-finite floats, as JSON-safe Python values."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return plain(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
