"""One schema per kind of file the toolkit reads back, and the one loader every command uses.

Kinds: ``scaling-fit`` (``scaling.fit --out``), ``downstream-fit`` (``scaling.downstream fit --out``),
``mixture-fit`` (``scaling.mixture fit --out``), ``backtest`` (``scaling.backtest --out``) and
``optimum`` (``scaling.mixture optimize --out``). Types, shapes, signs and ranges are declared once,
with pydantic, and checked whole when a file is read: a fit whose exponent is negative, whose
coefficient is zero, whose bootstrap draws are ragged or whose numbers overflow a float is one
``DataError`` naming the field, never a complex number, a ZeroDivisionError or a confident Infinity
further on. ``load(path, kind)`` reads, parses and validates; a file of another kind says which
kind it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, \
    model_validator

from scaling.errors import DataError


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return float(v)


#: a JSON number (not a bool, not text), finite, within a float's range
Number = Annotated[StrictFloat | StrictInt, AfterValidator(lambda v: _finite(float(v)))]
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(ge=0, le=1)]


class _Open(BaseModel):
    """Extra keys are kept (files carry more than any reader needs)."""

    model_config = ConfigDict(extra="allow")


#: the ranges a law's parameters may take, (low, high], low exclusive: coefficients and exponents
#: positive (zero or negative ones make the law degenerate: complex powers, division by zero) and
#: within what any fit of a loss in nats has given, by orders of magnitude (published fits: A, B
#: 10^2-10^4, E 1-2, exponents 0.05-0.8, R_D* 15, R_N* 5): beyond them, the law's powers leave a
#: float's range at ordinary N, D and C and every prediction is Infinity or NaN
COEFFICIENT, FLOOR, EXPONENT, EPOCHS = (1e-12, 1e12), (0.0, 1e4), (1e-3, 10.0), (0.0, 1e12)
LAW_PARAMETERS = {
    "chinchilla": {"A": COEFFICIENT, "B": COEFFICIENT, "E": FLOOR, "alpha": EXPONENT, "beta": EXPONENT},
    "data-constrained": {"A": COEFFICIENT, "B": COEFFICIENT, "E": FLOOR, "alpha": EXPONENT, "beta": EXPONENT,
                         "rd_star": EPOCHS, "rn_star": EPOCHS},
    # Kaplan et al. 2020: N_c 8.8e13, D_c 5.4e13 (their fit); a CPU grid's ~1e5-1e8
    "kaplan": {"N_c": (1e-12, 1e40), "D_c": (1e-12, 1e40), "alpha_N": EXPONENT, "alpha_D": EXPONENT},
}


def _check_params(params: dict, rules: dict, where: str) -> None:
    """Every value a finite number; ``rules``: name -> "number", "positive" or a (low, high] range."""
    missing = [n for n in rules if n not in params]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)} (needs {', '.join(rules)})")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}.{name} must be a number, got {value!r}")
        try:
            v = float(value)
        except OverflowError:
            raise ValueError(f"{where}.{name} is too large for a float") from None
        if not math.isfinite(v):
            raise ValueError(f"{where}.{name} must be a finite number, got {value!r}")
        rule = rules.get(name)
        if rule == "positive" and not v > 0:
            raise ValueError(f"{where}.{name} must be positive, got {value!r}")
        if isinstance(rule, tuple) and not rule[0] < v <= rule[1]:
            low = "positive" if rule[0] == 0 else f"above {rule[0]:g}"
            raise ValueError(f"{where}.{name} must be {low} and at most {rule[1]:g} (a scaling law's range), "
                             f"got {value!r}")


def _check_draws(boot: Any, k: int | None, where: str) -> None:
    """Bootstrap draws, when present: a list of rows of ``k`` finite numbers."""
    if not boot:
        return
    if not isinstance(boot, dict):
        raise ValueError(f"{where} must be an object")
    draws = boot.get("draws")
    if draws is None:
        return
    names = boot.get("names")
    k = len(names) if isinstance(names, list) else k
    if not isinstance(draws, list) or not all(isinstance(r, list) for r in draws):
        raise ValueError(f"{where}.draws must be a list of rows")
    for i, row in enumerate(draws):
        if k is not None and len(row) != k:
            raise ValueError(f"{where}.draws row {i} has {len(row)} values, not {k} (ragged draws)")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)) for x in row):
            raise ValueError(f"{where}.draws row {i} holds a value that is not a finite number")


class ScalingFitFile(_Open):
    law: Literal["chinchilla", "data-constrained", "kaplan"]
    params: dict[str, Any]
    objective: Number | None = None
    n_points: StrictInt = 0
    r2: Number | None = None
    ci: dict[str, list[Number]] = {}
    warnings: list[str] = []
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _laws_parameters(self):
        _check_params(self.params, LAW_PARAMETERS[self.law], "params")
        _check_draws(self.settings.get("bootstrap"), None, "settings.bootstrap")
        return self


class DownstreamFitFile(_Open):
    kind: Literal["downstream"]
    task: str
    metric: str
    via: str
    via_column: str = ""
    form: Literal["sigmoid", "exponential"]
    lower_is_better: bool = False
    chance: Fraction | None = None
    step1: ScalingFitFile
    step2: dict[str, Any]

    @model_validator(mode="after")
    def _step2(self):
        rules = {"sigmoid": {"a": "number", "b": "number", "k": "positive", "x0": "number"},
                 "exponential": {"epsilon": "number", "k": "number", "gamma": "positive"}}[self.form]
        params = self.step2.get("params")
        if not isinstance(params, dict):
            raise ValueError("step2.params must be an object")
        _check_params(params, rules, "step2.params")
        rng = self.step2.get("x_range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                                  for x in rng) and rng[0] <= rng[1]):
            raise ValueError("step2.x_range must be [low, high]")
        if self.step2.get("draws"):
            _check_draws({"draws": self.step2["draws"]}, len(rules), "step2")
        return self


class MixtureFitFile(_Open):
    law: Literal["mixture"]
    kind: Literal["direct", "nested", "joint"]
    domains: list[str] = Field(min_length=2)
    loss_domains: list[str] = Field(min_length=1)
    params: dict[str, dict[str, Any]]
    objective: dict[str, Any]
    n_points: StrictInt = Field(ge=0)
    n_mixtures: StrictInt = Field(ge=0)
    r2: dict[str, Any]
    mixtures: list[dict[str, Any]] = []
    scaling_law: str | None = None
    settings: dict[str, Any] = {}
    #: the fitted runs' range: params, tokens [low, high]; mix by domain [low, high]
    range: dict[str, list[Number] | dict[str, list[Number]]] = {}

    @model_validator(mode="after")
    def _shapes(self):
        for name, names in (("domains", self.domains), ("loss_domains", self.loss_domains)):
            if any(not n.strip() for n in names) or len(set(names)) != len(names):
                raise ValueError(f"{name} must be distinct, non-empty names")
        if self.kind == "nested":
            self._nested_mixtures()
        k = len(self.domains)
        for d in self.loss_domains:
            p = self.params.get(d)
            if p is None:
                raise ValueError(f"params lacks loss domain {d}")
            if self.kind == "joint":
                _check_params({n: p.get(n) for n in ("E", "A", "alpha", "B", "beta")},
                              {n: "positive" for n in ("E", "A", "B")}, f"params.{d}")
                for key, rule in (("C", "positive"), ("gamma", "number")):
                    sub = p.get(key)
                    if not isinstance(sub, dict) or set(sub) != set(self.domains):
                        raise ValueError(f"params.{d}.{key} must give a value for each of {', '.join(self.domains)}")
                    _check_params(sub, {n: rule for n in self.domains}, f"params.{d}.{key}")
            else:
                _check_params({"c": p.get("c"), "k": p.get("k")}, {"c": "number", "k": "number"}, f"params.{d}")
                t = p.get("t")
                if not isinstance(t, list) or len(t) != k:
                    raise ValueError(f"params.{d}.t must list {k} values (one per component)")
                _check_params(dict(enumerate(t)), {}, f"params.{d}.t")
        if self.kind == "nested" and not (self.mixtures and self.scaling_law in ("chinchilla", "compute", "power")):
            raise ValueError("a nested fit needs its per-mixture laws (mixtures, scaling_law)")
        return self


    def _nested_mixtures(self):
        """Each per-mixture entry: its proportions over ``domains`` and its scaling law's
        parameters for every loss domain (``scaling.laws.mixture.SCALING_FORMS``)."""
        from scaling.laws.chinchilla import Chinchilla
        from scaling.laws.mixture import ComputeLaw
        law = {"chinchilla": Chinchilla, "compute": ComputeLaw, "power": ComputeLaw}.get(self.scaling_law)
        names = law.public_names if law else ()
        for i, m in enumerate(self.mixtures):
            mix = m.get("mix")
            if not isinstance(mix, dict) or not set(self.domains) <= set(mix):
                raise ValueError(f"mixtures[{i}].mix must give a proportion for each of {', '.join(self.domains)}")
            _check_params({d: mix[d] for d in self.domains}, {d: (-1e-12, 1.0) for d in self.domains},
                          f"mixtures[{i}].mix")
            scaling = m.get("scaling")
            for d in self.loss_domains:
                law = scaling.get(d) if isinstance(scaling, dict) else None
                params = law.get("params") if isinstance(law, dict) else None
                if not isinstance(params, dict):
                    raise ValueError(f"mixtures[{i}].scaling.{d}.params must be an object")
                _check_params(params, {n: "number" for n in names}, f"mixtures[{i}].scaling.{d}.params")


class Approach2Budget(_Open):
    flops: Positive
    n_points: StrictInt = Field(ge=0)
    params_opt: Positive
    tokens_opt: Positive
    loss_opt: Number
    params_opt_ci: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    tokens_opt_ci: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    log_params_opt_se: NonNegative | None = None


class Approach2File(_Open):
    approach: Literal[2]
    budgets: list[Approach2Budget] = Field(min_length=1)
    estimator: Literal["local-parabola", "interpolate", "parabola"]
    params_exponent: Number
    params_exponent_se: NonNegative
    params_coefficient: Positive
    tokens_exponent: Number
    tokens_exponent_se: NonNegative
    tokens_coefficient: Positive
    params_exponent_ci: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    tokens_exponent_ci: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    resample: Literal["noise", "cases"] = "cases"


class DesignRun(_Open):
    params: Positive
    tokens: Positive
    flops: Positive
    expected_gain: NonNegative


class DesignFile(_Open):
    quantity: Literal["loss", "n_opt", "accuracy", "mixture"]
    #: N, D, C of the target; a mixture target also its weights and best mixture by domain
    target: dict[str, Positive | dict[str, NonNegative]]
    #: an accuracy's linearised interval may reach below 0
    current_interval: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    current_interval_linearised: list[Number] = Field(min_length=2, max_length=2)
    expected_interval: list[Number] = Field(min_length=2, max_length=2)
    prediction: Number
    runs: list[DesignRun]

    @model_validator(mode="after")
    def _a_mixture_plan_has_its_mixture(self):
        if self.quantity == "mixture":
            if not isinstance(self.target.get("mixture"), dict):
                raise ValueError("a mixture plan's target needs its best mixture (target.mixture, by domain)")
            if not all(isinstance(self.target.get(k), float | int) for k in ("params", "tokens")):
                raise ValueError("a mixture plan's target needs its params and tokens")
        return self


class BacktestRun(_Open):
    loss: Number
    predicted: Number
    interval: list[Number] | None = Field(default=None, min_length=2, max_length=2)


class BacktestFile(_Open):
    law: str
    mape: Number
    runs: list[BacktestRun] = Field(min_length=1)


class BacktestApproach2Budget(_Open):
    flops: Positive
    params: Positive
    ci: list[Positive] | None = Field(default=None, min_length=2, max_length=2)
    held_out: bool


class BacktestApproach2Point(_Open):
    params: Positive
    ci: list[Positive] | None = Field(default=None, min_length=2, max_length=2)


class BacktestApproach2Band(_Open):
    flops: Positive
    params: Positive
    ci: list[Positive] = Field(min_length=2, max_length=2)
    predictive: list[Positive] = Field(min_length=2, max_length=2)


class BacktestApproach2File(_Open):
    approach: Literal[2]
    budget: Positive
    minimum: BacktestApproach2Point
    predicted: BacktestApproach2Point
    percentage_error: Number
    budgets: list[BacktestApproach2Budget] = Field(min_length=2)
    band: list[BacktestApproach2Band] = []
    #: the line's exponent fitted without (and with) the held-out budget; the band is drawn with it
    params_exponent: dict[str, Number | list[Number]] | None = None

    @model_validator(mode="after")
    def _band_has_its_line(self):
        if self.band and not (self.params_exponent and isinstance(self.params_exponent.get("without"), float | int)):
            raise ValueError("params_exponent.without (the line the band is drawn from) is missing")
        return self


class OptimumFile(_Open):
    mixture: dict[str, Fraction]
    params: Positive | None = None
    tokens: Positive | None = None


KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "scaling-fit": (ScalingFitFile, "python -m scaling.fit SOURCE --out FILE"),
    "downstream-fit": (DownstreamFitFile, "python -m scaling.downstream fit SOURCE --task TASK --out FILE"),
    "mixture-fit": (MixtureFitFile, "python -m scaling.mixture fit SOURCE --out FILE"),
    "backtest": (BacktestFile, "python -m scaling.backtest SOURCE --out FILE"),
    "backtest-approach2": (BacktestApproach2File, "python -m scaling.backtest SOURCE --approach 2 --out FILE"),
    "optimum": (OptimumFile, "python -m scaling.mixture optimize ... --out FILE"),
    "approach2": (Approach2File, "python -m scaling.fit SOURCE --approach 2 --out FILE"),
    "design": (DesignFile, "python -m scaling.design SOURCE --fit FIT --target-flops C --budget F --json > FILE"),
}


def kind_of(d: Any) -> str | None:
    """Which kind of toolkit file a parsed JSON value looks like, by its keys."""
    if not isinstance(d, dict):
        return None
    if d.get("kind") == "downstream":
        return "downstream-fit"
    if d.get("approach") == 2 and "minimum" in d and "predicted" in d:
        return "backtest-approach2"
    if d.get("approach") == 2:
        return "approach2"
    if "expected_interval" in d and "runs" in d:
        return "design"
    if d.get("law") == "mixture":
        return "mixture-fit"
    if "runs" in d and "mape" in d:
        return "backtest"
    if "law" in d and "params" in d:
        return "scaling-fit"
    if "mixture" in d and "loss" in d:
        return "optimum"
    return None


def read_json(path) -> Any:
    """A JSON file's value; any failure to read or parse it (missing, unreadable, not UTF-8, not
    JSON, nested beyond the parser's depth) is one ``DataError``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a file") from None
    except (OSError, ValueError, RecursionError) as exc:       # UnicodeDecodeError is a ValueError
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path}: {first}") from None


def validate(d: Any, kind: str, path="file") -> dict:
    """``d`` checked against ``kind``'s schema; the first problem as one ``DataError``."""
    schema, how = KINDS[kind]
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a {kind.replace('-', ' ')} (expected a JSON object; {how})")
    seen = kind_of(d)
    if seen is not None and seen != kind:
        raise DataError(f"{path} is a {seen.replace('-', ' ')}, not a {kind.replace('-', ' ')} ({how})")
    try:
        schema.model_validate(d)
    except ValidationError as exc:
        err = exc.errors()[0]
        # a union's member tags (``function-after[...]``, ``dict[str,...]``) are pydantic's, not the file's
        where = ".".join(str(x) for x in err["loc"] if not (isinstance(x, str) and "[" in x))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise DataError(f"{path}: {where + ': ' if where else ''}{msg}") from None
    except (OverflowError, RecursionError) as exc:
        raise DataError(f"{path}: {type(exc).__name__}: a number or nesting beyond what can be read") from None
    return d


def load(path, kind: str) -> dict:
    """Read ``path`` and validate it as ``kind``: the parsed dict, or one ``DataError``."""
    return validate(read_json(path), kind, path)
