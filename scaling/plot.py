"""Plots from a store and a fit (matplotlib, Agg; nothing is shown, files are written atomically).

    python -m scaling.plot isoflop results/ --fit fit.json --out isoflop.png
    python -m scaling.plot return-on-repetition --fit fits/muennighoff2023_c4.json --out ror.png
    python -m scaling.plot contour --fit fits/muennighoff2023_c4.json --flops 1e22 --unique-tokens 25e9 --out contour.png
    python -m scaling.plot residuals results/ --fit fit.json --out residuals.png
    python -m scaling.backtest results/ --out backtest.json && python -m scaling.plot backtest --result backtest.json --out backtest.png
    python -m scaling.plot mixture results-mix --fit mix.json --params 1.7e6 --tokens 3e6 --optimum opt.json --out mixture.png
    python -m scaling.plot downstream results/ --fit down.json --params 7e9 --tokens 4e12 --out downstream.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scaling import columns as cols
from scaling.sources import read_table
from scaling.accounting import parse_size, tokens_for
from scaling.fit.approach2 import budget_groups
from scaling.cli import FLOPS, TOKENS, ArgumentParser, UsageError, run_cli, add_store_argument
from scaling.errors import DataError
from scaling.laws import get_law
from scaling.results import FitResult

KINDS = ("isoflop", "return-on-repetition", "contour", "residuals", "backtest", "mixture", "downstream", "design")


def new_figure():
    """pyplot on the file-only Agg backend: plots are written to files, never shown."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out) -> None:
    """Write ``fig`` to ``out`` (.png, .svg or .pdf) atomically."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--out must end in .png, .svg or .pdf, got {out.name!r}")
    from scaling.store import atomic_write_bytes
    fig.tight_layout()
    atomic_write_bytes(out, lambda tmp: fig.savefig(tmp, format=out.suffix[1:], dpi=130))


def _ok_runs(source, convention: str | None = None):
    """The finished runs, in ``convention`` (default: the one they were planned in)."""
    table, _ = cols.in_convention(cols.ok_runs(read_table(source), source=str(source)), convention)
    if "flops" in table.columns:
        table["flops"] = cols.numbers_or_missing(table["flops"], "flops", str(source))
    if "flops" not in table.columns or table["flops"].isna().any():
        from scaling.accounting import flops
        table["flops"] = flops(table["params"].values, table["tokens"].values)
    return table


def isoflop(source, fit: FitResult | None, out) -> dict:
    """Loss against parameters for each compute budget (Hoffmann et al. 2022, Fig. 3), with the
    fitted law along each budget (D = C / 6N) and its minimum marked (stars), and, when the fit file
    holds Approach 2 (``scaling.fit --approach 2``), each budget's isoFLOP minimum with its 95%
    interval in N (diamonds and bars). Counted in the fit's FLOP convention (default: the runs').

    Returns what was drawn: ``{"budgets": [{"flops", "params", "loss", "curve_params", "curve_loss",
    "fitted_opt", "approach2_opt", "approach2_ci"}, ...]}`` (golden tests check these arrays)."""
    plt = new_figure()
    convention = (fit.settings.get("flops_convention") if fit is not None else None)
    runs = _ok_runs(source, convention)
    a2 = {}
    for b in ((fit.settings.get("approach2") or {}).get("budgets") or []) if fit is not None else []:
        a2[float(b["flops"])] = b
    drawn = []
    full = runs[runs["tokens"] <= runs.get("unique_tokens", runs["tokens"]) * (1 + 1e-9)] \
        if "unique_tokens" in runs.columns else runs
    group = budget_groups(full["flops"].values)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(group.max() + 1, 1)))
    for g, color in enumerate(colors):
        sel = full[group == g]
        if len(sel) < 2:
            continue
        c = float(np.median(sel["flops"]))
        order = np.argsort(sel["params"].values)
        item = {"flops": c, "params": sel["params"].values[order].tolist(), "loss": sel["loss"].values[order].tolist()}
        ax.scatter(sel["params"], sel["loss"], color=color, zorder=3, label=f"C = {c:.1e} FLOPs")
        near = [f for f in a2 if abs(np.log(f / c)) < 0.2]
        if near:
            b = a2[min(near, key=lambda f: abs(np.log(f / c)))]
            item["approach2_opt"] = [float(b["params_opt"]), float(b["loss_opt"])]
            ci = b.get("params_opt_ci")
            if ci:
                item["approach2_ci"] = [float(ci[0]), float(ci[1])]
                ax.plot(ci, [b["loss_opt"]] * 2, color=color, lw=2.5, alpha=0.6, zorder=2)
            ax.scatter([b["params_opt"]], [b["loss_opt"]], marker="D", s=45, color=color, edgecolor="black", zorder=5)
        if fit is not None:
            law = get_law("kaplan" if fit.law == "kaplan" else "chinchilla")
            p = {k: fit.params[k] for k in law.public_names}
            n_opt = float(law.optimal(p, c)[0])
            lo, hi = sel["params"].min() / 2, sel["params"].max() * 2
            n = np.geomspace(min(lo, n_opt / 1.5), max(hi, n_opt * 1.5), 200)
            curve = law.predict(p, n, tokens_for(c, n))
            ax.plot(n, curve, color=color, lw=1.2)
            l_opt = float(law.predict(p, n_opt, tokens_for(c, n_opt)))
            ax.scatter([n_opt], [l_opt], marker="*", s=140, color=color, edgecolor="black", zorder=4)
            item.update(curve_params=n.tolist(), curve_loss=np.asarray(curve).tolist(), fitted_opt=[n_opt, l_opt])
        drawn.append(item)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N" + (f" (C / 6D, {convention})" if convention else ""))
    ax.set_ylabel("validation loss")
    marks = [m for m, on in (("stars: Approach 3 optima", fit is not None), ("diamonds: Approach 2 minima, 95% CI", bool(a2))) if on]
    ax.set_title("isoFLOP curves" + (f" ({fit.law} fit; {'; '.join(marks)})" if fit else ""), fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2 if group.max() > 6 else 1)
    save_figure(fig, out)
    return {"budgets": drawn}


def return_on_repetition(fit: FitResult, out, unique=(1e8, 4e8, 1.5e9), max_epochs=100.0,
                         params: float | None = None) -> dict:
    """Return on repetition as Muennighoff et al. (2023, Fig. 3) draw it. Left: predicted final loss
    against total training tokens D for several unique-data amounts U_D (repeating each for D / U_D
    epochs) at one model size, beside the line unique data would give (U_D = D), with the 4- and
    40-epoch points marked (up to ~4 epochs repetition is almost as good as new data; by ~40 it
    adds almost nothing). Right: effective data D' / U_D against epochs, which does not depend on
    U_D (one curve), beside D' = D.

    ``params`` (default: the 20-tokens-per-parameter size of the middle U_D, the paper's setting of
    a model sized for its data). Returns the arrays drawn (golden tests check them)."""
    if fit.law != "data-constrained":
        raise UsageError(f"return-on-repetition needs a data-constrained fit, got {fit.law!r}")
    from scaling.laws.data_constrained import effective_data
    law = get_law("data-constrained")
    unique = tuple(float(u) for u in unique)
    n = float(params) if params else sorted(unique)[len(unique) // 2] / 20.0
    plt = new_figure()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    drawn = {"params": n, "curves": [], "marks": []}
    d_all = np.geomspace(min(unique) * 0.5, max(unique) * max_epochs, 300)
    unique_line = law.predict(fit.params, np.full_like(d_all, n), d_all, d_all)
    ax.plot(d_all, unique_line, ls="--", color="gray", label="unique data (U_D = D)")
    drawn["unique_line"] = {"tokens": d_all.tolist(), "loss": np.asarray(unique_line).tolist()}
    for u in unique:
        d = np.geomspace(u, u * max_epochs, 200)
        loss = law.predict(fit.params, np.full_like(d, n), d, np.full_like(d, u))
        line, = ax.plot(d, loss, label=f"U_D = {u:.3g} tokens")
        drawn["curves"].append({"unique": u, "tokens": d.tolist(), "loss": np.asarray(loss).tolist()})
        for ep, marker in ((4, "o"), (40, "s")):
            lm = float(law.predict(fit.params, np.array([n]), np.array([ep * u]), np.array([u]))[0])
            ax.scatter([ep * u], [lm], marker=marker, color=line.get_color(), edgecolor="black", zorder=4, s=36)
            drawn["marks"].append({"unique": u, "epochs": ep, "tokens": ep * u, "loss": lm})
    ax.scatter([], [], marker="o", color="white", edgecolor="black", label="4 epochs")
    ax.scatter([], [], marker="s", color="white", edgecolor="black", label="40 epochs")
    ax.set_xscale("log")
    ax.set_xlabel("total training tokens D")
    ax.set_ylabel(f"predicted final loss (N = {n:.3g})")
    ax.set_title("Final loss when repeating data", fontsize=10)
    ax.legend(fontsize=7)
    epochs = np.geomspace(1, max_epochs, 200)
    u0 = unique[0]
    ratio = effective_data(u0 * epochs, u0, fit.params["rd_star"]) / u0
    ax2.plot(epochs, ratio, label="repeated data (any U_D)")
    ax2.plot(epochs, epochs, ls="--", color="gray", label="unique data (D' = D)")
    for ep, marker in ((4, "o"), (40, "s")):
        ax2.scatter([ep], [float(np.interp(np.log(ep), np.log(epochs), ratio))], marker=marker, color="C0",
                    edgecolor="black", zorder=4)
    drawn["effective"] = {"epochs": epochs.tolist(), "ratio": ratio.tolist()}
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("epochs (D / U_D)")
    ax2.set_ylabel("effective data D' / U_D")
    ax2.set_title(f"Effective data (R_D* = {fit.params['rd_star']:.3g})", fontsize=10)
    ax2.legend(fontsize=8)
    save_figure(fig, out)
    return drawn


def contour(fit: FitResult, flops: float, unique_tokens: float, out) -> dict:
    """Loss over (epochs, parameters) for U_D unique tokens, the isoFLOP line of the budget, and the
    data-constrained and Chinchilla optima on it (Muennighoff et al. 2023, Fig. 1 right)."""
    if fit.law != "data-constrained":
        raise UsageError(f"contour needs a data-constrained fit, got {fit.law!r}")
    from scaling.predict import allocate
    plt = new_figure()
    best = allocate(fit, flops, unique_tokens)
    chin = best["chinchilla"]
    n_mid = best["params"]
    n = np.geomspace(n_mid / 30, n_mid * 30, 160)
    epochs = np.geomspace(0.3, max(300.0, 3 * best["epochs"]), 160)
    N, EP = np.meshgrid(n, epochs)
    loss = get_law("data-constrained").predict(fit.params, N, EP * unique_tokens, unique_tokens)
    fig, ax = plt.subplots(figsize=(7, 5))
    levels = np.quantile(loss, np.linspace(0.0, 0.9, 14))
    cs = ax.contourf(EP, N, loss, levels=np.unique(levels), cmap="viridis_r", extend="max")
    fig.colorbar(cs, ax=ax, label="predicted loss")
    ax.plot(tokens_for(flops, n) / unique_tokens, n, color="white", lw=1.5, label=f"C = {flops:.2g} FLOPs")
    ax.scatter([best["epochs"]], [best["params"]], marker="*", s=220, color="red", edgecolor="black", zorder=5,
               label=f"data-constrained optimum: N={best['params']:.3g}, {best['epochs']:.3g} epochs")
    ax.scatter([chin["tokens"] / unique_tokens], [chin["params"]], marker="o", s=90, color="orange",
               edgecolor="black", zorder=5, label=f"Chinchilla optimum: N={chin['params']:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(epochs[0], epochs[-1])
    ax.set_ylim(n[0], n[-1])
    ax.set_xlabel(f"epochs over U_D = {unique_tokens:.3g} unique tokens")
    ax.set_ylabel("parameters N")
    ax.set_title("Allocation under data constraints")
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, out)
    return {"params": n.tolist(), "epochs": epochs.tolist(), "loss": loss.tolist(),
            "isoflop_epochs": (tokens_for(flops, n) / unique_tokens).tolist(),
            "optimum": [best["epochs"], best["params"]], "chinchilla": [chin["tokens"] / unique_tokens, chin["params"]]}


def residuals(source, fit: FitResult, out) -> dict:
    """Relative residual of each run against its predicted loss, by compute (in the fit's FLOP
    convention). Returns the points drawn."""
    plt = new_figure()
    runs = _ok_runs(source, fit.settings.get("flops_convention"))
    law = get_law(fit.law)
    runs, _ = cols.numeric_columns(runs, [*law.required, "loss"], f"{source} (for a {fit.law} fit)")
    u = runs["unique_tokens"].values if "unique_tokens" in law.required else None
    pred = law.predict(fit.params, runs["params"].values, runs["tokens"].values, u)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(runs["flops"], runs["loss"] / pred - 1, c=np.log10(runs["params"]), cmap="viridis")
    ax.axhline(0, color="gray", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("observed / predicted loss - 1")
    ax.set_title(f"Residuals of the {fit.law} fit (colour: log10 N)")
    save_figure(fig, out)
    return {"flops": runs["flops"].values.tolist(), "residual": (runs["loss"].values / pred - 1).tolist()}


def backtest_plot(result, out) -> dict:
    """Held-out runs of a backtest result (``scaling.backtest``'s dict or its ``--out`` JSON file):
    observed against predicted loss, with 95% predictive intervals; an Approach 2 backtest
    (``--approach 2``) is drawn by ``backtest_approach2_plot``. Draws; never fits."""
    from scaling.schemas import kind_of, read_json, validate
    value = result if isinstance(result, dict) else read_json(result)
    kind = "backtest-approach2" if kind_of(value) == "backtest-approach2" else "backtest"
    result = validate(value, kind, "result" if isinstance(result, dict) else result)
    if kind == "backtest-approach2":
        return backtest_approach2_plot(result, out)
    plt = new_figure()
    runs = result["runs"]
    obs = np.array([r["loss"] for r in runs])
    pred = np.array([r["predicted"] for r in runs])
    fig, ax = plt.subplots(figsize=(6, 5))
    if all("interval" in r for r in runs):
        lo = np.array([r["interval"][0] for r in runs])
        hi = np.array([r["interval"][1] for r in runs])
        ax.errorbar(pred, obs, xerr=[pred - lo, hi - pred], fmt="o", capsize=3, label="held-out run (95% interval)")
    else:
        ax.scatter(pred, obs, label="held-out run")
    span = [min(obs.min(), pred.min()) * 0.98, max(obs.max(), pred.max()) * 1.02]
    ax.plot(span, span, color="gray", ls="--", label="prediction = observation")
    ax.set_xlabel("predicted loss (fit without the held-out runs)")
    ax.set_ylabel("observed loss")
    cover = f", {100 * result['coverage']:.0f}% inside" if "coverage" in result else ""
    ax.set_title(f"Backtest of the {result['law']} law: MAPE {result['mape']:.2g}%{cover}")
    ax.legend(fontsize=8)
    save_figure(fig, out)
    return {"observed": obs.tolist(), "predicted": pred.tolist(), "mape": result["mape"]}


def backtest_approach2_plot(result: dict, out) -> dict:
    """An Approach 2 backtest (``scaling.backtest --approach 2 --out``): the training budgets' isoFLOP
    minima with their 95% intervals, the line through them carried to the held-out budget with its
    95% band (the line's, and the predictive one a new sweep's minimum falls in), against the
    held-out budget's own minimum. Draws; never fits."""
    plt = new_figure()
    fig, ax = plt.subplots(figsize=(7, 5))
    train = [b for b in result["budgets"] if not b["held_out"]]
    c = np.array([b["flops"] for b in train])
    n = np.array([b["params"] for b in train])
    ci = np.array([b["ci"] if b.get("ci") else [b["params"], b["params"]] for b in train])
    ax.errorbar(c, n, yerr=[n - ci[:, 0], ci[:, 1] - n], fmt="o", color="C0", capsize=3,
                label="isoFLOP minima fitted (95% CI)")
    band = result.get("band") or []
    if band:
        bc = np.array([r["flops"] for r in band])
        ax.fill_between(bc, [r["predictive"][0] for r in band], [r["predictive"][1] for r in band],
                        color="C0", alpha=0.12, lw=0, label="95% predictive (a new sweep's minimum)")
        ax.fill_between(bc, [r["ci"][0] for r in band], [r["ci"][1] for r in band], color="C0", alpha=0.25,
                        lw=0, label="95% CI of the line")
        ax.plot(bc, [r["params"] for r in band], color="C0", lw=1.5,
                label=f"line without the held-out budget: N_opt ~ C^{result['params_exponent']['without']:.3f}")
    m = result["minimum"]
    mci = m.get("ci") or [m["params"], m["params"]]
    ax.errorbar([result["budget"]], [m["params"]], yerr=[[m["params"] - mci[0]], [mci[1] - m["params"]]],
                fmt="D", color="C3", capsize=3, ms=8, label="held-out budget's minimum (95% CI)")
    p = result["predicted"]
    ax.scatter([result["budget"]], [p["params"]], marker="*", s=180, color="C1", edgecolor="k", zorder=4,
               label=f"predicted ({result['percentage_error']:+.1f}%)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute budget C (FLOPs)")
    ax.set_ylabel("compute-optimal parameters N_opt")
    verdict = "" if result.get("inside") is None else (
        "\n(inside the 95% predictive interval)" if result["inside"] else "\n(outside the 95% predictive interval)")
    ax.set_title(f"Approach 2 backtest at the held-out {result['budget']:.3g} FLOPs: predicted "
                 f"{result['percentage_error']:+.1f}% off its minimum{verdict}", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    return {"budgets": [[b["flops"], b["params"]] for b in result["budgets"]], "predicted": p["params"],
            "minimum": m["params"]}


def design_plot(result, out, source=None) -> dict:
    """A plan of ``scaling.design`` (its ``--json`` output): left, the runs so far (``source``, grey),
    the proposed runs numbered in the order chosen and the target, in (N, D); right, the target's 95%
    interval now (bootstrap and linearised) and expected after the plan. Draws; never designs."""
    result = _result(result, "design")
    plt = new_figure()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    drawn = {"runs": [[r["params"], r["tokens"]] for r in result["runs"]]}
    if result["quantity"] == "mixture":
        drawn["mixtures"] = _design_mixtures(ax, result)
    elif source is not None:
        runs = _ok_runs(source)
        ax.scatter(runs["params"], runs["tokens"], s=14, color="0.6", label="runs so far")
        drawn["source"] = runs[["params", "tokens"]].to_numpy().tolist()
    # a plan in a FLOP convention: drawn at the N the fit (and the runs so far) are in
    n = np.array([r.get("params_in_convention", r["params"]) for r in result["runs"]])
    d = np.array([r["tokens"] for r in result["runs"]])
    if result["quantity"] == "mixture":
        n = d = np.array([])
    ax.scatter(n, d, marker="*", s=160, color="C1", edgecolor="k", zorder=3, label="proposed (order chosen)")
    labels: dict[tuple, list[str]] = {}
    for i, (x, y) in enumerate(zip(n, d), 1):       # a run proposed twice (a replicate) gets one label "1,2"
        labels.setdefault((float(x), float(y)), []).append(str(i))
    for (x, y), idx in labels.items():
        ax.annotate(",".join(idx), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    t = result["target"]
    if result["quantity"] != "mixture":
        if "params" in t and "tokens" in t:
            ax.scatter([t["params"]], [t["tokens"]], marker="X", s=120, color="C3", label="target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("training tokens D")
        ax.set_title(f"Next runs for the {result['quantity']} at {t.get('flops', float('nan')):.3g} FLOPs")
        ax.legend(fontsize=8)
    bars = [("now (bootstrap)", result.get("current_interval")), ("now (linearised)", result["current_interval_linearised"]),
            ("after the plan (expected)", result["expected_interval"])]
    for i, (label, iv) in enumerate(bars):
        if iv:
            bx.plot(iv, [i, i], lw=6, solid_capstyle="butt", color=("C0", "C0", "C2")[i], alpha=0.8)
    bx.axvline(result["prediction"], color="k", lw=1, ls="--")
    bx.set_yticks(range(len(bars)), [b[0] for b in bars])
    bx.set_xlabel("loss of the best mixture (95% interval)" if result["quantity"] == "mixture"
                  else f"{result['quantity']} at the target (95% interval)")
    bx.set_ylim(-0.6, len(bars) - 0.4)
    fig.tight_layout()
    save_figure(fig, out)
    drawn["intervals"] = [b[1] for b in bars]
    return drawn


def _design_mixtures(ax, result) -> list[dict]:
    """A mixture plan's left panel: the best mixture now and each proposed run's mixture, as
    stacked bars of the components' shares (the runs in the order chosen)."""
    t = result["target"]
    domains = list(t["mixture"])
    rows = [("best now", t["mixture"])] + [(f"run {i}", {d: r.get(f"mix.{d}", 0.0) for d in domains})
                                           for i, r in enumerate(result["runs"], 1)]
    left = np.zeros(len(rows))
    for j, d in enumerate(domains):
        share = np.array([m.get(d, 0.0) for _, m in rows])
        ax.barh(range(len(rows)), share, left=left, color=f"C{j % 10}", label=d, height=0.7)
        left += share
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the training tokens")
    ax.set_title(f"Next mixtures at N={t['params']:.3g}, D={t['tokens']:.3g}")
    ax.legend(fontsize=7, ncol=min(len(domains), 4), loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return [{"name": name, **m} for name, m in rows]


def mixture_plot(fit, params: float, tokens: float, out, source=None, optimum=None) -> dict:
    """A two-component mixture fit (``scaling.mixture``) at (N, D): predicted loss per domain and
    their equal-weight mean against the second component's share; with ``optimum`` (what
    ``scaling.mixture optimize`` returns, or its ``--out`` JSON file, at this N and D) the optimum
    and its 95% interval marked; with ``source``, the runs trained at that scale (within 5%) as
    points. Draws; never optimises."""
    from scaling.mixture import predict_losses

    opt = _load_optimum(optimum, params, tokens) if optimum is not None else None

    if len(fit.domains) != 2:
        raise UsageError(f"mixture plots draw two-component fits; this one has {len(fit.domains)} "
                         f"({', '.join(fit.domains)})")
    first, second = fit.domains
    share = np.linspace(0.0, 1.0, 201)
    pred = predict_losses(fit, params, tokens, np.stack([1 - share, share], axis=1))
    plt = new_figure()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for d, y in pred.items():
        line, = ax.plot(share, y, label=f"loss.{d} (predicted)")
        if source is not None:
            runs = cols.ok_runs(read_table(source), source=str(source))
            near = runs[(abs(runs["params"] / params - 1) <= 0.05) & (abs(runs["tokens"] / tokens - 1) <= 0.05)]
            if f"mix.{second}" in near and f"loss.{d}" in near:
                ax.scatter(near[f"mix.{second}"], near[f"loss.{d}"], color=line.get_color(), zorder=3)
    ax.plot(share, np.mean(list(pred.values()), axis=0), "k--", label="mean of the domains")
    best = ci = None
    if opt is not None:
        best = float(opt["mixture"][second])
        ax.axvline(best, color="gray", lw=1, label=f"optimum {second} share {best:.2f}")
        ci = (opt.get("ci") or {}).get("mixture", {}).get(second)
        if ci:
            ax.axvspan(ci[0], ci[1], color="gray", alpha=0.15, label="95% interval")
    ax.set_xlabel(f"share of {second} (mix.{second}; the rest {first})")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Mixing law at N={params:.3g}, D={tokens:.3g}")
    ax.legend(fontsize=8)
    save_figure(fig, out)
    return {"share": share.tolist(), "losses": {d: np.asarray(y).tolist() for d, y in pred.items()},
            "mean": np.mean(list(pred.values()), axis=0).tolist(), "optimum": best, "ci": ci}


def downstream_plot(source, fit, out, params: float | None = None, tokens: float | None = None) -> dict:
    """The two steps of a downstream fit (``scaling.downstream``) beside each other. Left: the
    intermediate at each run's final point against training compute (6ND), the fitted law along
    each model size, and the target with its interval. Right: the metric against the intermediate at
    every checkpoint (raw, and as fitted: after the skip and the moving average), the fitted curve,
    the chance level and the target with its intervals. Draws; never fits. Returns the arrays drawn."""
    from scaling.downstream import read_checkpoints, step2_points, task_data
    from scaling.downstream.data import final_rows

    table = cols.canonicalise(read_checkpoints(source), cols.parse_mapping(fit.settings.get("column") or []))
    data = task_data(cols.where(table, fit.settings.get("where") or []), fit.task, fit.metric, str(source))
    limit = fit.settings.get("max_params")
    if fit.via_column not in data.table.columns:
        raise DataError(f"{source} has no column {fit.via_column}, the fit's intermediate")
    finals = final_rows(data.table)
    finals = finals[np.isfinite(pd_numeric(finals[fit.via_column])) & (finals["tokens"] > 0)]
    points = step2_points(data, fit.via_column)
    compute = 6.0 * finals["params"].to_numpy(float) * finals["tokens"].to_numpy(float)
    x_final = pd_numeric(finals[fit.via_column])
    target = None
    if params is not None and tokens is not None:
        target = fit.predict(params, tokens)
    plt = new_figure()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes = np.sort(finals["params"].unique())
    cmap = plt.get_cmap("viridis")
    colour = {n: cmap(i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}
    curves = {}
    for n in sizes:
        d = finals.loc[finals["params"] == n, "tokens"].to_numpy(float)
        grid = np.geomspace(d.min() / 1.5, d.max() * 1.5, 60)
        curves[float(n)] = {"compute": (6 * n * grid).tolist(), "intermediate": fit.intermediate(n, grid).tolist()}
        ax1.plot(6 * n * grid, curves[float(n)]["intermediate"], color=colour[n], lw=1)
        sel = (finals["params"] == n).to_numpy()
        fitted = limit is None or n <= limit
        ax1.scatter(compute[sel], x_final[sel], s=22, zorder=3, label=f"N={n:.3g}" + ("" if fitted else " (not fitted)"),
                    **({"color": colour[n]} if fitted else {"facecolors": "none", "edgecolors": colour[n]}))
    if target is not None:
        tc = 6.0 * np.asarray(target["params"]) * np.asarray(target["tokens"])
        tx = np.asarray(target["intermediate"])
        err = None
        if target["intermediate_interval"]:
            ci = np.asarray(target["intermediate_interval"])
            err = [tx - ci[:, 0], ci[:, 1] - tx]
        ax1.errorbar(tc, tx, yerr=err, fmt="*", color="crimson", ms=12, capsize=4, label="target (95% interval)")
    ax1.set_xscale("log")
    ax1.set_xlabel("training compute 6ND (FLOPs)")
    ax1.set_ylabel(f"{fit.via} ({fit.via_column})")
    ax1.set_title(f"Step 1: {fit.via} at each run's final point, law per size")
    ax1.legend(fontsize=7)
    raw_x = pd_numeric(data.table[fit.via_column])
    raw_m = data.table[data.metric_column].to_numpy(float)
    ax2.scatter(raw_x, raw_m, s=6, color="0.75", label="checkpoints (raw)")
    shown_metric = data.metric_of(points["s"].to_numpy(float))
    for n in sizes:
        sel = (points["params"] == n).to_numpy()
        fitted = limit is None or n <= limit
        ax2.scatter(points["x"].to_numpy(float)[sel], shown_metric[sel], s=12 if fitted else 30,
                    **({"color": colour[n]} if fitted else {"facecolors": "none", "edgecolors": colour[n]}))
    lo_x = min(np.nanmin(raw_x), *(target["intermediate"] if target else []))
    hi_x = max(np.nanmax(raw_x), *(target["intermediate"] if target else []))
    grid_x = np.linspace(lo_x - 0.05 * (hi_x - lo_x), hi_x + 0.05 * (hi_x - lo_x), 200)
    curve = fit.metric_at(grid_x)
    ax2.plot(grid_x, curve, color="black", lw=1.5, label=f"{fit.form} fit")
    chance = None
    if fit.chance is not None:
        chance = 1.0 - fit.chance if fit.lower_is_better else fit.chance
        ax2.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:.3g})")
    if target is not None:
        tx, tm = np.asarray(target["intermediate"]), np.asarray(target["prediction"])
        xerr = yerr = None
        if target["interval"]:
            ci = np.asarray(target["interval"])
            yerr = [tm - ci[:, 0], ci[:, 1] - tm]
            cx = np.asarray(target["intermediate_interval"])
            xerr = [tx - cx[:, 0], cx[:, 1] - tx]
        ax2.errorbar(tx, tm, xerr=xerr, yerr=yerr, fmt="*", color="crimson", ms=12, capsize=4,
                     label="target (95% interval)")
    ax2.set_xlabel(f"{fit.via} ({fit.via_column})")
    ax2.set_ylabel(f"{fit.task} {fit.metric}")
    ax2.set_title(f"Step 2: {fit.metric} against {fit.via} ({fit.form})")
    ax2.legend(fontsize=7)
    save_figure(fig, out)
    return {"step1": {"compute": compute.tolist(), "intermediate": x_final.tolist(), "curves": curves},
            "step2": {"x": points["x"].tolist(), "metric": shown_metric.tolist(), "curve_x": grid_x.tolist(),
                      "curve": np.asarray(curve).tolist(), "chance": chance},
            "target": target}


def pd_numeric(values) -> np.ndarray:
    import pandas as pd
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def _result(value, kind: str) -> dict:
    """A result a plot draws: the dict itself, or the JSON file a command wrote, validated against
    its schema (``scaling.schemas``); an unreadable or foreign file is one DataError line."""
    from scaling.schemas import load, validate
    return validate(value, kind, "result") if isinstance(value, dict) else load(value, kind)


def _load_optimum(optimum, params: float, tokens: float) -> dict:
    """An optimum dict, or its JSON file, checked to be at (N, D) within 1%."""
    optimum = _result(optimum, "optimum")
    for key, want in (("params", params), ("tokens", tokens)):
        got = optimum.get(key)
        if isinstance(got, (int, float)) and abs(got / want - 1) > 0.01:
            raise DataError(f"the optimum is at {key} {got:.3g}, the plot at {want:.3g}")
    return optimum


def _parser():
    p = ArgumentParser(
        prog="python -m scaling.plot", description="Plots of runs and fits.",
        epilog="examples:\n  python -m scaling.plot isoflop results/ --fit fit.json --out isoflop.png\n"
               "  python -m scaling.plot return-on-repetition --fit fits/muennighoff2023_c4.json --out ror.png\n"
               "  python -m scaling.plot contour --fit fits/muennighoff2023_c4.json --flops 1e22 --unique-tokens 25e9 --out c.png\n"
               "  python -m scaling.plot downstream results/ --fit down.json --params 7e9 --tokens 4e12 --out down.png\n"
               "  python -m scaling.plot design results/ --result plan.json --out design.png")
    p.add_argument("kind", help=f"one of {', '.join(KINDS)}")
    add_store_argument(p, positional=True, required=False, help="store directory, CSV or Parquet (isoflop, residuals)")
    p.add_argument("--fit", help="fit file (JSON)")
    p.add_argument("--flops", type=FLOPS, help="contour: the compute budget")
    p.add_argument("--unique-tokens", type=TOKENS, help="contour: unique tokens available")
    p.add_argument("--result", metavar="RESULT.json", help="backtest: the result of python -m scaling.backtest --out; "
                                                            "design: the plan of python -m scaling.design --json")
    p.add_argument("--optimum", metavar="OPT.json",
                   help="mixture: the optimum to mark (python -m scaling.mixture optimize ... --out OPT.json)")
    p.add_argument("--params", help="mixture, downstream: model size N of the target, e.g. 174K or 1.7e6; "
                        "return-on-repetition: the model size of the loss panel (default: 20 tokens per parameter "
                        "of the middle U_D)")
    p.add_argument("--tokens", help="mixture, downstream: training tokens D of the target, e.g. 300K")
    p.add_argument("--out", required=True, help="output .png/.svg/.pdf")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.kind not in KINDS:
        raise UsageError(f"unknown plot kind {args.kind!r} (known: {', '.join(KINDS)})")
    if args.kind == "mixture":
        from scaling.mixture import MixtureFit
        if not args.fit:
            raise UsageError("mixture needs --fit MIX.json (from python -m scaling.mixture fit)")
        if not (args.params and args.tokens):
            raise UsageError("mixture needs positive --params and --tokens")
        mixture_plot(MixtureFit.load(args.fit), parse_size(args.params), parse_size(args.tokens), args.out,
                     args.source, optimum=args.optimum)
        print(f"wrote {args.out}")
        return 0
    if args.kind == "downstream":
        from scaling.downstream import DownstreamFit
        if not args.fit:
            raise UsageError("downstream needs --fit DOWN.json (from python -m scaling.downstream fit ... --out)")
        if not args.source:
            raise UsageError("downstream needs a SOURCE (the store or table the fit was made from)")
        if bool(args.params) != bool(args.tokens):
            raise UsageError("downstream: give both --params and --tokens for a target, or neither")
        target = (parse_size(args.params), parse_size(args.tokens)) if args.params else (None, None)
        downstream_plot(args.source, DownstreamFit.load(args.fit), args.out, *target)
        print(f"wrote {args.out}")
        return 0
    if args.kind == "design":
        if not args.result:
            raise UsageError("design draws a plan: python -m scaling.design SOURCE --fit FIT ... --json > plan.json, "
                             "then --result plan.json")
        design_plot(args.result, args.out, args.source)
        print(f"wrote {args.out}")
        return 0
    fit = FitResult.load(args.fit) if args.fit else None
    if args.kind == "backtest" and not args.result:
        raise UsageError("backtest draws a backtest result: python -m scaling.backtest SOURCE --out backtest.json, "
                         "then --result backtest.json (plots never fit)")
    if args.kind in ("isoflop", "residuals") and not args.source:
        raise UsageError(f"{args.kind} needs a SOURCE (store directory, CSV or Parquet)")
    if args.kind in ("return-on-repetition", "contour", "residuals") and fit is None:
        raise UsageError(f"{args.kind} needs --fit FIT.json")
    if args.kind == "isoflop":
        isoflop(args.source, fit, args.out)
    elif args.kind == "return-on-repetition":
        return_on_repetition(fit, args.out, params=parse_size(args.params) if args.params else None)
    elif args.kind == "contour":
        if not (args.flops and args.flops > 0 and args.unique_tokens and args.unique_tokens > 0):
            raise UsageError("contour needs positive --flops and --unique-tokens")
        contour(fit, args.flops, args.unique_tokens, args.out)
    elif args.kind == "backtest":
        backtest_plot(args.result, args.out)
    else:
        residuals(args.source, fit, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
