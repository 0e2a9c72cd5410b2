"""A real RegMix-style grid on the CPU: runners.mixgrid trains tiny models on Dirichlet mixtures of
the seven embedded domains, then scaling.mixture fits, predicts, evaluates on mixtures it never saw,
and optimizes (end to end, as a user would)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from runners.grid.mixgrid import draw_mixtures, prior_of
from runners.grid.spec import format_mix, parse_mix
from scaling.cli import UsageError

pytestmark = pytest.mark.slow


def run(module, *args, timeout=900):
    p = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_draws_are_distinct_rounded_and_reproducible():
    prior = prior_of("tokens", {"a": 100, "b": 300, "c": 600})
    assert prior == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
    one, two = draw_mixtures(prior, 20, seed=3), draw_mixtures(prior, 20, seed=3)
    assert one == two and len({format_mix(m) for m in one}) == 20
    for m in one:
        assert sum(m.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(abs(v * 1000 - round(v * 1000)) < 1e-6 for v in m.values())
    assert parse_mix(format_mix(one[0])) == pytest.approx(one[0])
    with pytest.raises(UsageError, match="unknown domain"):
        prior_of("a=0.5,z=0.5", {"a": 1, "b": 1})


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    store = tmp_path_factory.mktemp("mixgrid")
    heldout = tmp_path_factory.mktemp("mixgrid-heldout")
    for where, k, seed in ((store, 12, 0), (heldout, 4, 1)):
        code, out, err = run("runners.mixgrid", "--n-mixtures", k, "--mix-seed", seed, "--shape", "t24",
                             "--tokens", "40K", "--store", where, "--quiet",
                             "--eval-tokens", 65536)
        assert code == 0, err
    return store, heldout


def test_grid_rows_carry_every_domains_mix_and_loss(grid):
    store, _ = grid
    runs = pd.read_parquet(store)
    assert len(runs) == 12 and (runs["status"] == "ok").all()
    domains = ["apidoc", "lib-core", "lib-dev", "lib-net", "lib-sys", "lib-text", "reference"]
    for d in domains:
        assert runs[f"loss.{d}"].notna().all() and runs[f"mix.{d}"].notna().all()
    assert runs[[f"mix.{d}" for d in domains]].sum(axis=1).round(9).eq(1.0).all()
    assert runs["mix"].nunique() == 12
    assert (runs["eval_tokens_cap"] == 65536).all()        # --eval-tokens: the window each row was scored on
    # rerunning trains nothing: the grid is resumable
    code, out, err = run("runners.mixgrid", "--n-mixtures", 12, "--shape", "t24", "--tokens", "40K",
                         "--store", store, "--json", "--quiet")
    assert code == 0 and json.loads(out)["trained"] == [], err


def test_fit_predict_evaluate_optimize_end_to_end(grid, tmp_path):
    store, heldout = grid
    fit = tmp_path / "mix.json"
    code, out, err = run("scaling.mixture", "fit", store, "--domains", "reference,apidoc,lib-core", "--out", fit)
    assert code == 0, err
    f = json.loads(fit.read_text())
    assert len(f["domains"]) == 7 and set(f["model"]) == set(f["loss_domains"]) == {"reference", "apidoc", "lib-core"}
    code, out, err = run("scaling.mixture", "predict", "--fit", fit, "--mixtures", heldout, "--json")
    assert code == 0, err
    pred = pd.DataFrame(json.loads(out))
    assert len(pred) == 4 and (pred["pred.reference.lo"] <= pred["pred.reference.hi"]).all()
    code, out, err = run("scaling.mixture", "evaluate", "--fit", fit, heldout, "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["n_runs"] == 4 and len(ev["domains"]) == 3 and all(v["n"] == 4 for v in ev["domains"].values())
    # a held-out mixture's loss is predicted within 0.3 nats on every domain (losses span 2.7-3.5)
    assert max(v["mae"] for v in ev["domains"].values()) < 0.3
    # no chosen predictor is worse out of fold than the losses' own spread (predicting their mean,
    # in the same folds), on any CPU
    for d, chosen in f["model"].items():
        assert f["cv"][d][chosen]["mae"] <= f["cv"][d]["mean"]["mae"], (d, chosen, f["cv"][d])
    code, out, err = run("scaling.mixture", "optimize", "--fit", fit, "--params", "23824", "--tokens", "40K",
                         "--weights", "reference=1", "--kl-max", "1.0", "--json")
    assert code == 0, err
    opt = json.loads(out)
    assert sum(opt["mixture"].values()) == pytest.approx(1.0) and opt["kl_to_prior"] <= 1.0 + 1e-6


def test_the_mixtures_scaling_design_plans_are_what_mixgrid_trains(grid, tmp_path):
    """A mixture fit with bootstrap -> scaling.design --out plan.csv -> runners.mixgrid --plan: the
    runs trained are the plan's mixtures at the grid's shape and tokens, and join the grid's fit."""
    store, _ = grid
    fit, plan = tmp_path / "mix.json", tmp_path / "plan.csv"
    code, out, err = run("scaling.mixture", "fit", store, "--domains", "reference,apidoc,lib-core", "--kind", "direct",
                         "--model", "law", "--cv-folds", 2, "--bootstrap", 10, "--out", fit)
    assert code == 0, err
    code, out, err = run("scaling.design", store, "--fit", fit, "--budget", 2 * 6 * 23824 * 40_000, "--k", 2,
                         "--out", plan, "--json")
    assert code == 0, err
    proposed = json.loads(out)
    assert proposed["quantity"] == "mixture" and len(proposed["runs"]) == 2
    new = tmp_path / "planned"
    code, out, err = run("runners.mixgrid", "--plan", plan, "--store", new, "--quiet")
    assert code == 0, err
    runs = pd.read_parquet(new)
    assert len(runs) == 2 and (runs["status"] == "ok").all() and set(runs["shape"]) == {"t24"}
    assert set(runs["tokens"]) == {40_000}
    domains = [c for c in pd.read_csv(plan).columns if c.startswith("mix.")]
    got = sorted(tuple(np.round(r, 6)) for r in runs[domains].fillna(0).to_numpy())
    want = sorted(tuple(np.round(r, 6)) for r in pd.read_csv(plan)[domains].to_numpy())
    assert got == want
    code, out, err = run("runners.mixgrid", "--plan", plan, "--n-mixtures", 3, "--store", new)
    assert code != 0 and err.strip().startswith("error: give --n-mixtures K") and len(err.strip().splitlines()) == 1


def test_grid_clis_take_a_domain_labelled_file_and_a_mix(tmp_path):
    """--data FILE --domain-column COL --mix on a grid CLI: the row has mix.<d> and loss.<d> for every
    domain of the file, the mix as given."""
    import random
    import sysconfig
    from pathlib import Path
    rng = random.Random(0)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    text = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)[:3_000_000]
    rows = [{"body": text[i:i + 1500], "src": rng.choice(["alpha", "beta", "gamma"])}
            for i in range(0, len(text), 1500)]        # ~2,000 documents: each domain has held-out ones
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    store = tmp_path / "store"
    code, out, err = run("runners.isounique", "--unique", "60K", "--sizes", "t24", "--epochs", "1", "--data", path,
                         "--text-column", "body", "--domain-column", "src", "--mix", "alpha=0.5,beta=0.3,gamma=0.2",
                         "--store", store, "--quiet")
    assert code == 0, err
    row = pd.read_parquet(store).iloc[0]
    assert row["mix"] == "alpha=0.5,beta=0.3,gamma=0.2" and row["domain_column"] == "src"
    assert (row["mix.alpha"], row["mix.beta"], row["mix.gamma"]) == (0.5, 0.3, 0.2)
    assert all(pd.notna(row[f"loss.{d}"]) for d in ("alpha", "beta", "gamma"))
    code, out, err = run("runners.isounique", "--unique", "60K", "--sizes", "t24", "--epochs", "1", "--data", path,
                         "--text-column", "body", "--domain-column", "src", "--mix", "alpha=0.5,delta=0.5",
                         "--store", tmp_path / "bad")
    assert code != 0 and "unknown domain" in err and len(err.strip().splitlines()) == 1
