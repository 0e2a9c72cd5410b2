"""FLOP and parameter conventions (Kaplan et al. 2020 Table 1; Hoffmann et al. 2022 App. F; Porian
et al. 2024 Table 1) against counts done by hand for one shape, and their use by plans and fits."""

import numpy as np
import pandas as pd
import pytest

from scaling import accounting as A
from scaling import columns as cols
from scaling.cli import UsageError

# t32 at the byte vocabulary: d = 32, ffw = 128, 2 layers, V = 256, T = 128
T32 = dict(d_model=32, ffw_size=128, n_layers=2, vocab=256, seq_len=128)


def test_conventions_match_hand_counts_of_a_known_shape():
    # per layer: attention 4*32^2 + 4*32 = 4224; MLP 2*128*32 + 128 + 32 = 8352; norms 64 -> 12640
    per_layer = 4224 + 8352 + 64
    n_all = 2 * per_layer + 256 * 32 + 256 + 128 * 32          # embeddings V d, output bias V, positions S d
    assert A.param_count(32, 128, 2, 256, 128) == n_all == 37824
    n_ne = n_all - 256 * 32 - 128 * 32
    assert A.nonembedding_param_count(32, 128, 2, 256, 128) == n_ne == 25536
    assert A.flops_per_token("6N", **T32) == 6 * 37824
    assert A.flops_per_token("6N_ne", **T32) == 6 * 25536
    assert A.flops_per_token("6N_ne+head", **T32) == 6 * (25536 + 256 * 32)
    # attention: QK^T and attention x V, 2 T d each forward per layer, x3 for training -> 12 L T d
    assert A.flops_per_token("6N_ne+head+attn", **T32) == 6 * (25536 + 256 * 32) + 12 * 2 * 128 * 32
    # at this size attention is a third of the full count and embeddings a third of N
    assert 12 * 2 * 128 * 32 / A.flops_per_token("6N_ne+head+attn", **T32) == pytest.approx(0.327, abs=1e-3)


def test_paper_scale_conventions():
    """At 1B parameters (Chinchilla's 1018M shape, T = 2048) embeddings are 10% of N, the tied head
    puts back all but the position table (within 0.4% of 6N), and attention adds 17%."""
    s = A.shape("1018M")
    kw = dict(d_model=s.d_model, ffw_size=s.ffw_size, n_layers=s.n_layers, vocab=50257, seq_len=2048)
    full = A.flops_per_token("6N", **kw)
    assert A.flops_per_token("6N_ne", **kw) / full == pytest.approx(0.904, abs=1e-3)
    assert A.flops_per_token("6N_ne+head", **kw) / full == pytest.approx(0.996, abs=1e-3)
    assert A.flops_per_token("6N_ne+head+attn", **kw) / full == pytest.approx(1.168, abs=1e-3)


def test_unknown_convention_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown FLOP convention"):
        A.flops_per_token("7N", **T32)


def test_convention_columns_and_with_convention():
    row = dict(d_model=32, ffw_size=128, n_layers=2, vocab_size=256, seq_len=128)
    c = A.convention_columns(row, 1e6)
    assert c["params_nonembedding"] == 25536 and c["flops.6N_ne"] == 6 * 25536 * 1e6
    t = pd.DataFrame([{**row, "params": 37824.0, "tokens": 1e6, "loss": 3.0}])
    k = cols.with_convention(t, "6N_ne")
    assert k["flops"].iloc[0] == 6 * 25536 * 1e6 and k["params"].iloc[0] == pytest.approx(25536)
    assert k["params_all"].iloc[0] == 37824
    with pytest.raises(UsageError, match="no flops.6N_ne column"):
        cols.with_convention(t[["params", "tokens", "loss"]], "6N_ne")
    assert cols.with_convention(t[["params", "tokens", "loss"]], "6N")["flops"].iloc[0] == 6 * 37824 * 1e6


def test_isoflop_grid_spends_the_budget_in_its_convention():
    from runners.grid.plan import isoflop_grid
    budget = A.parse_budgets("1e11")[0]
    for conv in A.FLOP_CONVENTIONS:
        for spec in isoflop_grid(budget, flops_convention=conv):
            if spec.epochs == 1:
                kw = spec.shape_kwargs
                assert A.training_flops(conv, spec.tokens, **kw) == pytest.approx(1e11, rel=1e-4)
                d = spec.to_dict()
                assert d["flops"] == pytest.approx(d[f"flops.{conv}"]) and d["flops_convention"] == conv
    default = isoflop_grid(budget)
    assert all(s.flops == pytest.approx(6 * s.params * s.tokens) for s in default)


def test_a_mapped_column_replaces_the_one_of_that_name_and_its_planned_convention():
    """``--column params=params_nonembedding`` on a store (which has ``params``) used to end in a
    traceback (two ``params`` columns); the mapping wins, and the FLOP convention the runs were
    planned in no longer re-derives the replaced size."""
    row = dict(d_model=32, ffw_size=128, n_layers=2, vocab_size=256, seq_len=128)
    t = pd.DataFrame([{**row, "params": 37824.0, "params_nonembedding": 25536.0, "tokens": 1e6, "loss": 3.0,
                       "flops_convention": "6N_ne+head+attn"}])
    m = cols.canonicalise(t, {"params": "params_nonembedding"})
    assert list(m.columns).count("params") == 1 and m["params"].iloc[0] == 25536
    k, convention = cols.in_convention(m)
    assert convention is None and k["params"].iloc[0] == 25536
    assert cols.in_convention(cols.canonicalise(t))[1] == "6N_ne+head+attn"      # unmapped: as planned


def test_runs_scored_on_different_validation_windows_are_said_once():
    """Rows written before ``eval_tokens_cap`` was recorded were scored on 65,536 tokens per domain;
    a store that mixes them with newer rows holds two measurements in one ``loss`` column: the fit
    and the mixture fit say so in one note, and --where keeps one window."""
    from scaling.columns import validation_windows, where
    from scaling.fit import fit
    from scaling.laws import get_law
    from scaling.mixture.runs import read_mixtures
    law = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.33, "beta": 0.33}
    rows = [{"params": n, "tokens": r * n, "mix.code": 0.25 + 0.25 * (i % 3), "status": "ok",
             "loss": float(get_law("chinchilla").predict(law, n, r * n))}
            for n in np.geomspace(1e7, 1e9, 5) for i, r in enumerate((10, 20, 40))]
    t = pd.DataFrame(rows)
    t["mix.text"] = 1 - t["mix.code"]
    t["loss.code"] = t["loss"]
    assert validation_windows(t) is None                           # no such column: external data
    t["eval_tokens_cap"] = 262144.0
    assert validation_windows(t) is None                           # one window
    t.loc[:5, "eval_tokens_cap"] = np.nan                          # 6 rows from an older store
    note = validation_windows(t)
    assert "6 on 65,536 (6 written before the window was recorded)" in note and "9 on 262,144" in note
    assert "--where eval_tokens_cap=262144" in note
    r = fit(t, "chinchilla", variant="tied", want_profiles=False)
    assert sum("validation windows" in w for w in r.warnings) == 1
    assert sum("validation windows" in n for n in read_mixtures(t).notes) == 1
    kept = where(t, ["eval_tokens_cap=262144"])
    assert len(kept) == 9 and validation_windows(kept) is None
