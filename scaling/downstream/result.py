"""``DownstreamFit``: a two-step downstream law as a value (statsmodels-style Results): ``predict``
with intervals from both steps' bootstrap draws, ``conf_int``, ``summary``, ``save``/``load``.

The chain (Bhagia et al. 2024; Gadre et al. 2024): the intermediate x = E + A/N^alpha + B/D^beta
(``step1``, a ``scaling.fit`` result), then the metric from x (``step2``, ``scaling.laws.downstream``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from scaling.intervals import decades_beyond, interval, predictive_sd
from scaling.laws import get_law
from scaling.laws.downstream import FORMS
from scaling.results import FitResult, JsonFile, format_number, plain

KIND = "downstream"
#: a target whose intermediate lies this many fitted spans of x beyond the step-2 data is flagged
FAR = 0.5


@dataclass
class DownstreamFit(JsonFile):
    task: str
    metric: str
    via: str                       #: bpb | ce | loss | a column
    via_column: str
    form: str                      #: sigmoid | exponential
    lower_is_better: bool          #: the metric is an error rate (fitted as 1 - metric)
    chance: float | None           #: chance accuracy, the sigmoid's floor
    step1: dict                    #: the ``FitResult`` of the intermediate (``scaling.fit``)
    step2: dict                    #: params, residual_sd, n_points, at_bounds, x_range, draws
    n_runs: int
    n_points: int
    selection: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    data_sha256: str | None = None
    version: str = ""
    kind: str = KIND

    # --- values -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict, path="fit file") -> "DownstreamFit":
        """Validated whole against the downstream-fit schema (``scaling.schemas``)."""
        from scaling.schemas import validate
        validate(d, "downstream-fit", path)
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})

    @classmethod
    def load(cls, path) -> "DownstreamFit":
        from scaling.schemas import read_json
        return cls.from_dict(read_json(path), path)

    @property
    def law(self) -> FitResult:
        """Step 1 as a ``FitResult``."""
        return FitResult.from_dict(self.step1)

    # --- prediction ---------------------------------------------------------------------------
    def intermediate(self, params, tokens) -> np.ndarray:
        """Step 1 at (N, D): the predicted intermediate."""
        N, D = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
        return get_law("chinchilla").predict(self.step1["params"], N, D)

    def metric_at(self, x) -> np.ndarray:
        """Step 2: the metric at intermediate ``x``."""
        s = FORMS[self.form].predict(self.step2["params"], x)
        return 1.0 - s if self.lower_is_better else s

    def _draws(self, law: FitResult, N, D, seed: int = 0, scatter=0.0):
        """Joint draws [B, n] of the intermediate, the metric, and the metric of one new model: step
        1's bootstrap draw i chained with step 2's draw i (independent resamples), the last with the
        intermediate off step 1's law (``law``, ``self.law``) by a log-normal ``scatter`` (one sd, or
        one per target); None without bootstrap draws."""
        d1, d2 = law.bootstrap_draws, self.step2.get("draws")
        if d1 is None or not d2:
            return None
        names = law.settings["bootstrap"]["names"]
        A, B, E, alpha, beta = (d1[:, names.index(n)][:, None] for n in ("A", "B", "E", "alpha", "beta"))
        x = E + A / N[None, :] ** alpha + B / D[None, :] ** beta
        d2 = np.asarray(d2, dtype=float)
        b = min(len(x), len(d2))
        rng = np.random.default_rng(seed)
        i1, i2 = rng.permutation(len(x))[:b], rng.permutation(len(d2))[:b]
        x = x[i1]
        form = FORMS[self.form]

        def metric(at):
            return np.stack([form.predict(dict(zip(form.names, d2[j])), at[r]) for r, j in enumerate(i2)])

        s = metric(x)
        return x, s, metric(x * np.exp(rng.normal(0.0, scatter, size=x.shape))) if np.any(scatter) else s

    def predict(self, params, tokens, seed: int = 0) -> dict:
        """Prediction at targets (N, D) (lists or scalars, broadcast): ``prediction``, its 95%
        ``interval`` (both steps' bootstrap), ``observation_interval`` (what one new model would
        score: plus its intermediate's scatter about step 1's law, ``scaling.intervals.predictive_sd``,
        and the scatter of single evaluations about step 2's curve), the ``intermediate`` and its
        interval, and how far each target's intermediate lies beyond the step-2 data
        (``extrapolation``, in spans of x)."""
        N, D = np.broadcast_arrays(np.atleast_1d(np.asarray(params, float)), np.atleast_1d(np.asarray(tokens, float)))
        x = self.intermediate(N, D)
        metric = self.metric_at(x)
        out = {"task": self.task, "metric": self.metric, "via": self.via, "form": self.form,
               "params": N.tolist(), "tokens": D.tolist(), "prediction": metric.tolist(), "interval": None,
               "observation_interval": None, "intermediate": x.tolist(), "intermediate_interval": None}
        law = self.law
        one = predictive_sd(law, decades_beyond(law, N, D))
        drawn = self._draws(law, N, D, seed, scatter=one[0] if one else 0.0)
        if drawn is not None:
            xd, sd, so = drawn
            md = 1.0 - sd if self.lower_is_better else sd
            rng = np.random.default_rng(seed + 1)
            noisy = (1.0 - so if self.lower_is_better else so) + rng.normal(
                0.0, float(self.step2.get("residual_sd") or 0.0), size=so.shape)
            out["interval"] = np.stack(interval(md, axis=0), axis=1).tolist()
            out["observation_interval"] = np.stack(interval(noisy, axis=0), axis=1).tolist()
            out["intermediate_interval"] = np.stack(interval(xd, axis=0), axis=1).tolist()
        lo, hi = self.step2["x_range"]
        span = max(hi - lo, 1e-12)
        beyond = np.where(x < lo, (lo - x) / span, np.where(x > hi, (x - hi) / span, 0.0))
        out["extrapolation"] = beyond.tolist()
        out["warnings"] = [
            f"target N={n:.3g}, D={d:.3g}: its {self.via} {xi:.4g} lies {b:.2g} spans of the fitted range "
            f"[{lo:.4g}, {hi:.4g}] {'below' if xi < lo else 'above'} the step-2 data; the metric is extrapolated"
            for n, d, xi, b in zip(N, D, x, beyond) if b > FAR]
        return out

    def conf_int(self, alpha: float = 0.05):
        """Intervals of every parameter, step 1's (``scaling.fit``'s bootstrap) as ``step1.NAME`` and
        step 2's as ``step2.NAME``: a DataFrame indexed by parameter, columns ``lower``, ``upper``."""
        import pandas as pd
        from scaling.intervals import conf_int_frame
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = self.law.conf_int(alpha)
            names = list(FORMS[self.form].names)
            draws = self.step2.get("draws")
            two = conf_int_frame(names, np.asarray(draws, float) if draws else None, alpha)
        one.index = [f"step1.{n}" for n in one.index]
        two.index = [f"step2.{n}" for n in two.index]
        frame = pd.concat([one, two])
        frame.index.name = "parameter"
        if frame.isna().all().all():
            warnings.warn("this downstream fit has no bootstrap draws: intervals are NaN (fit it with --bootstrap N)",
                          stacklevel=2)
        return frame

    def summary(self) -> str:
        law = FitResult.from_dict(self.step1)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = self.conf_int()
        ci = {k: [lo, hi] for k, lo, hi in zip(frame.index, frame["lower"], frame["upper"]) if np.isfinite([lo, hi]).all()}
        lines = [f"task: {self.task}    metric: {self.metric}{' (an error rate)' if self.lower_is_better else ''}"
                 f"    runs: {self.n_runs}    step-2 points: {self.n_points}",
                 f"step 1: {self.via} ({self.via_column}) = E + A/N^alpha + B/D^beta on each run's final point"
                 f" (variant {(law.settings.get('variant') or {}).get('chosen', '-')}, R^2 {format_number(law.r2)})"]
        for name, value in law.params.items():
            c = ci.get(f"step1.{name}")
            lines.append(f"  {name:<8} {format_number(value):>14}" + (f"   [{format_number(c[0])}, {format_number(c[1])}]" if c else ""))
        formula = ("b + a / (1 + exp(k (x - x0)))" if self.form == "sigmoid" else "1 - epsilon + k exp(-gamma x)")
        lines.append(f"step 2: {'1 - ' if self.lower_is_better else ''}{self.metric} = {formula} ({self.form}; "
                     f"{FORMS[self.form].citation}), residual sd {format_number(self.step2.get('residual_sd'))}, "
                     f"chance {format_number(self.chance)}")
        for name, value in self.step2["params"].items():
            c = ci.get(f"step2.{name}")
            lines.append(f"  {name:<8} {format_number(value):>14}" + (f"   [{format_number(c[0])}, {format_number(c[1])}]" if c else ""))
        if self.selection.get("chosen"):
            lines.append(f"chosen: {self.selection['chosen']} ({self.selection.get('reason', '')})")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)
