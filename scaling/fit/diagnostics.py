"""What a fit says about itself: profile curves, ill-determined or bounded parameters, and warnings
counted by kind."""

from __future__ import annotations

import re

import numpy as np

from scaling.laws.base import Law
from scaling.fit.objective import FLAT_PROFILE, HAIR, PROFILE_FACTORS, Problem, local_batch


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------
def _public_scale(law: Law, fit_name: str, z_value: float, factor: float) -> float:
    """Free coordinate moved so that the public parameter is multiplied by ``factor``."""
    return z_value + np.log(factor) if fit_name in law.exp_params else z_value * factor


def profiles(problem: Problem, z_best, f_best) -> dict[str, dict]:
    """For each free parameter: the objective with it held at x1/3 ... x3 of its estimate and the
    others re-optimised (batched, warm-started at the optimum)."""
    lo, hi = problem.bounds()
    rows, meta = [], []
    for j, name in enumerate(problem.free):
        for factor in PROFILE_FACTORS:
            v = _public_scale(problem.law, name.split("=")[0], z_best[j], factor)
            if lo[j] <= v <= hi[j]:
                rows.append(j)
                meta.append((j, factor, v))
    if not meta:
        return {}
    P = len(meta)
    starts = np.repeat(z_best[None, :], P, axis=0)
    plo, phi = np.repeat(lo[None, :], P, axis=0), np.repeat(hi[None, :], P, axis=0)
    for r, (j, _, v) in enumerate(meta):
        starts[r, j] = plo[r, j] = phi[r, j] = v
    _, f = local_batch(problem, starts, plo, phi)
    out: dict[str, dict] = {}
    for (j, factor, _), fr in zip(meta, f):
        entry = out.setdefault(problem.free[j], {"factors": [], "relative_increase": []})
        entry["factors"].append(round(factor, 6))
        entry["relative_increase"].append(float((fr - f_best) / f_best) if f_best > 0 else float(fr - f_best))
    return out


def _public_free_name(law: Law, free_name: str) -> str:
    parts = free_name.split("=")
    return "=".join(law.public_names[law.fit_names.index(p)] for p in parts)


def diagnose(problem: Problem, z_best, f_best, candidates, want_profiles=True):
    law = problem.law
    warnings: list[str] = []
    theta = problem.theta(z_best)[0]
    public = law.to_public(theta)
    # bounds
    lo, hi = problem.bounds()
    for j, name in enumerate(problem.free):
        span = max(abs(hi[j] - lo[j]), 1e-12)
        if min(z_best[j] - lo[j], hi[j] - z_best[j]) <= 1e-6 * span:
            which = "lower" if z_best[j] - lo[j] <= hi[j] - z_best[j] else "upper"
            pname = _public_free_name(law, name)
            warnings.append(f"parameter {pname} sits at its {which} bound ({public[pname.split('=')[0]]:.6g}); "
                            f"the optimum may lie outside the allowed range")
    # coverage
    for col, values in (("model sizes", problem.data.params), ("token counts", problem.data.tokens)):
        distinct = len(np.unique(np.round(np.log(values), 6)))
        if distinct < 3:
            warnings.append(f"only {distinct} distinct {col}: the exponents are poorly constrained")
    # near-equal distinct optima
    optima = []
    for f, z in candidates[1:]:
        if f <= f_best * (1 + HAIR):
            p_other = law.to_public(problem.theta(z)[0])
            differ = [n for n in public if abs(p_other[n] - public[n]) > 0.05 * max(abs(public[n]), 1e-12)]
            if differ:
                optima.append({"objective": float(f), "params": p_other})
                warnings.append(
                    f"a distinct optimum lies within {100 * (f - f_best) / max(f_best, 1e-300):.3g}% of the best objective "
                    f"with different {', '.join(differ)} ("
                    + ", ".join(f"{n} {p_other[n]:.4g} vs {public[n]:.4g}" for n in differ)
                    + "): these parameters are ill-determined by the data")
    prof = profiles(problem, z_best, f_best) if want_profiles else {}
    for name, entry in prof.items():
        flat = [side for side, pick in (("down to x1/3", lambda fct: fct < 1), ("up to x3", lambda fct: fct > 1))
                if (rises := [r for fct, r in zip(entry["factors"], entry["relative_increase"]) if pick(fct)])
                and len(rises) == 2 and max(rises) < FLAT_PROFILE]
        if flat:
            rise = max(r for fct, r in zip(entry["factors"], entry["relative_increase"])
                       if (fct > 1) == (flat[-1] == "up to x3"))
            warnings.append(
                f"parameter {_public_free_name(law, name)} is not identifiable from these data: moving it "
                f"{' or '.join(flat)} of its estimate (others re-optimised) changes the objective by only "
                f"{100 * rise:.2g}%; report its bootstrap interval, not the point")
    return warnings, {"profiles": {_public_free_name(law, k): v for k, v in prof.items()}, "optima": optima}


def warning_kind(message: str) -> tuple[str, tuple[str, ...]]:
    """(kind, parameters) of a ``diagnose`` warning, its numbers dropped, so that many fits'
    warnings can be counted by kind ("ill-determined A or E in 57 of 420 fits")."""
    m = re.match(r"parameter (\S+) sits at its (lower|upper) bound", message)
    if m:
        return f"at its {m[2]} bound", (m[1],)
    m = re.search(r"distinct optimum lies within .* with different (.+?) \(", message)
    if m:
        return "ill-determined (a distinct optimum within 0.1% of the best objective)", tuple(m[1].split(", "))
    m = re.match(r"parameter (\S+) is not identifiable", message)
    if m:
        return "not identifiable (a flat profile)", (m[1],)
    m = re.match(r"only \d+ distinct (model sizes|token counts)", message)
    if m:
        return f"fewer than 3 distinct {m[1]}", ()
    return re.sub(r"[-+]?\d[\d.]*(e[-+]?\d+)?", "#", message), ()


def count_warnings(messages_per_fit, total: int, what: str) -> list[str]:
    """One line per kind of warning over many fits (``messages_per_fit``: one list of ``diagnose``
    messages per fit that warned): how many of ``total`` fits had it, and which parameters."""
    kinds: dict[str, tuple[int, list[str]]] = {}
    for messages in messages_per_fit:
        seen = set()
        for msg in messages:
            kind, names = warning_kind(msg)
            n, union = kinds.get(kind, (0, []))
            union += [x for x in names if x not in union]
            kinds[kind] = (n + (kind not in seen), union)
            seen.add(kind)
    lines = []
    for kind, (n, names) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        who = (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]) + " " if names else ""
        if kind.startswith(("at its", "ill-determined", "not identifiable")):
            head = (f"parameter {who}{kind}" if kind.startswith("at its")
                    else f"{kind.split(' (')[0]} {who}({kind.split(' (', 1)[1]}")
        else:
            head = kind
        lines.append(f"{head.replace('  ', ' ')} in {n} of {total} {what} (--verbose lists them)")
    return lines
