"""Every CLI answers bad input with the whole contract: a non-zero exit (2 for usage, 1 for data),
exactly one ``error:`` line on stderr, no traceback, and nothing half-written. Table-driven,
in-process (``run_cli(main, argv)``, what ``python -m`` runs), so ~100 cases cost seconds.

Placeholders in argv: STORE (3 good runs), TORN (only a torn run file), EMPTY (an empty dir),
FILE (a plain file), ADIR (a directory named like a file), CSV_* (import tables), FIT_* (fit files), H (the hoffmann2022 preset),
C4 (muennighoff2023_c4), PROC (a path under /proc, never writable), OUT (a path that must stay absent).
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from scaling import store
from scaling.cli import run_cli

DS = "dataset:epoch-chinchilla"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-input")
    for i in range(3):
        store.write_run(d / "store", {"run_id": f"r{i}", "params": 1e6 * (i + 1), "tokens": 2e7, "loss": 3.0 - 0.1 * i})
    store.read_runs(d / "store")                      # its index exists, so reads change nothing
    (d / "adir.json").mkdir()
    (d / "torn").mkdir()
    (d / "torn" / "x.parquet").write_bytes(b"PAR1 torn")
    (d / "empty").mkdir()
    (d / "file.txt").write_text("not a directory\n")
    (d / "nonnumeric.csv").write_text("params,tokens,loss\n1e6,2e7,3.0\n2e6,2e7,abc\n")
    (d / "inf.csv").write_text("params,tokens,loss\n1e6,2e7,3.0\ninf,2e7,2.9\n")
    (d / "negative.csv").write_text("params,tokens,loss\n1e6,2e7,3.0\n-2e6,2e7,2.9\n")
    (d / "nanloss.csv").write_text("params,tokens,loss\n1e6,2e7,\n2e6,2e7,\n")
    (d / "zeroloss.csv").write_text("params,tokens,loss\n1e6,2e7,3.0\n2e6,2e7,0\n")
    (d / "equal.csv").write_text("params,tokens,loss\n" + "".join(f"{n},{t},3.0\n" for n in (1e6, 2e6, 4e6) for t in (2e7, 4e7)))
    (d / "same.csv").write_text("params,tokens,loss\n" + "1e6,2e7,3.0\n1e6,2e7,2.9\n" * 3)
    # run ids that would write outside the store, over its own files, or where readers never look
    for name, rid in (("escape", "../../escaped"), ("subdir", "sub/dir"), ("schema", "_schema"), ("hidden", ".tmp-x"),
                      ("long", "x" * 300), ("dup", None), ("late", None)):
        rows = {"dup": "ok1,1e6,2e7,3.0\nok1,2e6,2e7,2.9", "late": "good,1e6,2e7,3.0\n../bad,2e6,2e7,2.9"}.get(
            name, f"{rid},1e6,2e7,3.0")
        (d / f"ids_{name}.csv").write_text(f"run_id,params,tokens,loss\n{rows}\n")
    (d / "fit_null.json").write_text('{"law": "chinchilla", "params": {"A": 1, "B": 2, "E": null, "alpha": 0.3, "beta": 0.3}}')
    (d / "fit_nan.json").write_text('{"law": "chinchilla", "params": {"A": 1, "B": 2, "E": 1, "alpha": NaN, "beta": 0.3}}')
    (d / "fit_missing.json").write_text('{"law": "chinchilla", "params": {"A": 1, "B": 2}}')
    (d / "fit_law.json").write_text('{"law": "kaplan", "params": {"A": 1}}')
    (d / "fit_nolaw.json").write_text('{"law": null, "params": {"A": 1}}')
    (d / "fit_types.json").write_text('{"law": "chinchilla", "params": {"A": "big", "B": 2, "E": 1, "alpha": 0.3, "beta": 0.3}}')
    (d / "fit_list.json").write_text('[1, 2, 3]')
    (d / "fit_binary.json").write_bytes(b"\x00\x01\x02\xff")
    # fit files whose values are finite but make the law degenerate, or whose shapes are wrong
    good = '"A": 406.4, "B": 410.7, "E": 1.69'
    (d / "fit_negalpha.json").write_text('{"law": "chinchilla", "params": {%s, "alpha": -0.3, "beta": 0.28}}' % good)
    (d / "fit_zeroa.json").write_text('{"law": "chinchilla", "params": {"A": 0, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28}}')
    (d / "fit_hugeint.json").write_text('{"law": "chinchilla", "params": {"A": 1%s, "B": 410.7, "E": 1.69, "alpha": 0.34, '
                                        '"beta": 0.28}}' % ("0" * 400))
    (d / "fit_settings.json").write_text('{"law": "chinchilla", "params": {%s, "alpha": 0.34, "beta": 0.28}, '
                                         '"settings": [1, 2]}' % good)
    (d / "fit_ragged.json").write_text('{"law": "chinchilla", "params": {%s, "alpha": 0.34, "beta": 0.28}, "settings": '
                                       '{"bootstrap": {"names": ["A", "B", "E", "alpha", "beta"], "draws": [[1, 2, 3, 0.3, 0.3], '
                                       '[1, 2]]}}}' % good)
    (d / "fit_rdzero.json").write_text('{"law": "data-constrained", "params": {%s, "alpha": 0.34, "beta": 0.28, '
                                       '"rd_star": 0, "rn_star": 5.3}}' % good)
    (d / "fit_deep.json").write_text("[" * 100000 + "]" * 100000)
    (d / "mix_binary.json").write_bytes(b"\xff\xfe\x00binary")
    (d / "mix_ragged.json").write_text('{"law": "mixture", "kind": "direct", "domains": ["a", "b"], "loss_domains": ["a"], '
                                       '"params": {"a": {"c": 1.0, "k": 1.0, "t": [0.5]}}}')
    (d / "backtest_bad.json").write_text('{"law": "chinchilla", "mape": 1.0, "runs": [{"loss": "x", "predicted": 2.0}]}')
    (d / "optimum_bad.json").write_text('{"mixture": {"a": 1.5, "b": -0.5}, "loss": 2.0}')
    (d / "loop1").symlink_to(d / "loop2")
    (d / "loop2").symlink_to(d / "loop1")
    (d / "dangling").symlink_to(d / "nowhere")
    (d / "deep_corpus.json").write_text("[" * 100000 + "]" * 100000)
    (d / "prior_onecol.csv").write_text("domain\ncode\n")
    # stop 36's fuzzing: what crashed with a traceback or was taken silently
    (d / "flops_text.csv").write_text("params,tokens,flops,loss\n1e6,2e7,1.2e14,3.0\n2e6,2e7,abc,2.9\n4e6,2e7,4.8e14,2.8\n")
    band = '{"flops": 1e12, "params": 3e4, "ci": [2e4, 4e4], "predictive": [1e4, 9e4]}'
    (d / "a2_no_line.json").write_text(
        '{"approach": 2, "budget": 1e12, "minimum": {"params": 3e4}, "predicted": {"params": 2.8e4}, '
        '"percentage_error": -7.0, "budgets": [{"flops": 1e11, "params": 1e4, "held_out": false}, '
        '{"flops": 1e12, "params": 3e4, "held_out": true}], "band": [%s]}' % band)
    (d / "plan_no_mixture.json").write_text(
        '{"quantity": "mixture", "target": {"params": 1e6, "tokens": 1e8}, "current_interval_linearised": [1, 2], '
        '"expected_interval": [1, 2], "prediction": 1.5, "runs": []}')
    store.write_run(d / "cstore", {"run_id": "c0", "params": 1e6, "tokens": 2e7, "loss": 3.0})
    import pandas as pd
    pd.DataFrame({"run_id": ["c1"], "params": ["2e6"], "tokens": [2e7], "loss": [2.9]}).to_parquet(d / "cstore" / "c1.parquet")
    from scaling.sources import read_table
    mixes = read_table("dataset:example-mixtures")
    mixes.loc[mixes.index[2], "params"] = -1.0
    mixes.to_csv(d / "mix_negparams.csv", index=False)
    gadre = read_table("dataset:gadre2024")
    gadre = gadre[gadre["dataset"] == "c4_original"].copy()
    gadre.loc[gadre.index[3], "eval.avg17_subset.chance"] = 2.0
    gadre.to_csv(d / "gadre_chance2.csv", index=False)
    gadre.loc[gadre.index[3], "eval.avg17_subset.chance"] = 0.25
    gadre.loc[gadre.index[3], "loss"] = -1.0
    gadre.to_csv(d / "gadre_negloss.csv", index=False)
    gadre.loc[gadre.index[3], "loss"] = 3.0
    gadre["eval.avg17_subset.err"] = gadre["eval.avg17_subset.err"].astype(object)
    gadre.loc[gadre.index[3], "eval.avg17_subset.err"] = "abc"
    gadre.to_csv(d / "gadre_errtext.csv", index=False)
    from scaling.mixture import main as mixture_main
    assert run_cli(mixture_main, ["fit", "dataset:example-mixtures", "--model", "law", "--bootstrap", "0",
                                  "--out", str(d / "mix_fit.json")]) == 0
    # saved models whose files were damaged: m0's config.json, m1's weights
    from runners.models.files import model_dir, save_model
    from runners.models.gpt import GPT, GPTConfig
    from runners.grid.spec import RunSpec
    spec = RunSpec(shape="s8", d_model=8, ffw_size=32, n_heads=1, n_layers=1, vocab_size=256, seq_len=128,
                   tokens=1000, unique_tokens=1000)
    for rid in ("m0", "m1"):
        store.write_run(d / "mstore", {"run_id": rid, "params": spec.params, "tokens": 1000, "loss": 3.0})
        save_model(GPT(GPTConfig.from_spec(spec)), spec, model_dir(d / "mstore", rid))
    (model_dir(d / "mstore", "m0") / "config.json").write_text('{"format": "scaling-toolkit/gpt-1", "mod')
    (model_dir(d / "mstore", "m1") / "model.safetensors").write_bytes(b"not safetensors")
    (d / "plan_cf_text.csv").write_text("params,tokens,code_fraction\n2e4,1e6,half\n")
    (d / "mixplan_inf.csv").write_text("params,tokens,mix.text,mix.code\n20000,1000000.0,inf,0.5\n")
    (d / "dom_null.jsonl").write_text("".join(json.dumps({"text": "word " * 400, "dom": v}) + "\n"
                                              for v in ("a", None, "b")))
    # saved models whose config was edited: no heads, negative width, terabytes, no tokenizer
    for rid, edit in (("m2", {"n_heads": 0}), ("m3", {"d_model": -8}), ("m4", {"d_model": 10 ** 9}),
                      ("m5", {"dropout": float("nan")}), ("m6", None), ("m7", "bpe:99999999999999")):
        store.write_run(d / "mstore", {"run_id": rid, "params": spec.params, "tokens": 1000, "loss": 3.0})
        where = save_model(GPT(GPTConfig.from_spec(spec)), spec, model_dir(d / "mstore", rid))
        config = json.loads((where / "config.json").read_text())
        if edit is None:
            config.pop("tokenizer")
        elif isinstance(edit, str):                      # a vocabulary the BPE trainer would abort on
            config["tokenizer"] = edit
        else:
            config["model"].update(edit)
        (where / "config.json").write_text(json.dumps(config))
    return d


def _argv(argv, d: Path):
    table = {"STORE": d / "store", "MSTORE": d / "mstore", "TORN": d / "torn", "EMPTY": d / "empty", "FILE": d / "file.txt",
             "CSV_NONNUMERIC": d / "nonnumeric.csv", "CSV_INF": d / "inf.csv", "CSV_NEG": d / "negative.csv",
             "CSV_NANLOSS": d / "nanloss.csv", "CSV_ZEROLOSS": d / "zeroloss.csv", "CSV_EQUAL": d / "equal.csv", "CSV_SAME": d / "same.csv", "H": "hoffmann2022", "C4": "muennighoff2023_c4",
             "PROC": "/proc/no/such/dir/x", "OUT": d / "must-not-exist", "ADIR": d / "adir.json"}
    for key in ("null", "nan", "missing", "law", "nolaw", "types", "list", "binary", "negalpha", "zeroa", "hugeint",
                "settings", "ragged", "rdzero", "deep"):
        table[f"FIT_{key.upper()}"] = d / f"fit_{key}.json"
    for name in ("mix_binary", "mix_ragged", "backtest_bad", "optimum_bad", "deep_corpus", "mix_fit"):
        table[name.upper()] = d / f"{name}.json"
    table["PRIOR_ONECOL"] = d / "prior_onecol.csv"
    for name in ("flops_text.csv", "a2_no_line.json", "plan_no_mixture.json", "mix_negparams.csv", "gadre_chance2.csv",
                 "gadre_negloss.csv", "gadre_errtext.csv"):
        table[name.split(".")[0].upper()] = d / name
    table["CSTORE"] = d / "cstore"
    for name in ("plan_cf_text.csv", "mixplan_inf.csv", "dom_null.jsonl"):
        table[name.split(".")[0].upper()] = d / name
    table["LINKLOOP"], table["DANGLING"] = d / "loop1", d / "dangling"
    for key in ("escape", "subdir", "schema", "hidden", "long", "dup", "late"):
        table[f"IDS_{key.upper()}"] = d / f"ids_{key}.csv"
    out = []
    for a in argv:
        for k, v in sorted(table.items(), key=lambda kv: -len(kv[0])):
            if k in a:
                a = a.replace(k, str(v))
        out.append(a)
    return out


CASES = [
    # scaling.fit
    ("scaling.fit", ["no-such-dir"]), ("scaling.fit", []), ("scaling.fit", ["dataset:nope"]),
    ("scaling.fit", [DS, "--law", "bogus"]), ("scaling.fit", [DS, "--fix", "A"]), ("scaling.fit", [DS, "--fix", "A=inf"]),
    ("scaling.fit", [DS, "--fix", "Q=1"]), ("scaling.fit", [DS, "--start", "E=nan"]), ("scaling.fit", [DS, "--seed", "-1"]),
    ("scaling.fit", [DS, "--bootstrap", "-5"]), ("scaling.fit", [DS, "--bootstrap", "x"]),
    ("scaling.fit", [DS, "--tie", "alpha=beta", "--untie"]), ("scaling.fit", [DS, "--variant", "nope"]),
    ("scaling.fit", [DS, "--approach", "4"]), ("scaling.fit", [DS, "--column", "params"]),
    ("scaling.fit", [DS, "--where", "nocol=1"]), ("scaling.fit", [DS, "--out", "PROC/fit.json"]),
    ("scaling.fit", [DS, "--out", "ADIR"]), ("scaling.fit", [DS, "--out", "FILE/fit.json"]),
    ("scaling.fit", [DS, "--base", "OUT.json"]), ("scaling.fit", [DS, "--base", "FIT_NULL"]),
    ("scaling.fit", [DS, "--store", "STORE"]), ("scaling.fit", [DS, "--min-progress", "2"]),
    ("scaling.fit", ["TORN"]), ("scaling.fit", ["EMPTY"]), ("scaling.fit", ["CSV_NONNUMERIC"]),
    ("scaling.fit", ["CSV_NANLOSS"]), ("scaling.fit", ["FILE"]), ("scaling.fit", [DS, "--approach", "1"]),
    # scaling.predict
    ("scaling.predict", ["allocate", "--fit", "no-such-fit", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_NULL", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_NAN", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_MISSING", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_LAW", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_NOLAW", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_TYPES", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_LIST", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "FIT_BINARY", "--flops", "1e22"]),
    ("scaling.predict", ["allocate", "--fit", "H", "--flops", "inf"]),
    ("scaling.predict", ["allocate", "--fit", "H", "--flops", "-1"]),
    ("scaling.predict", ["allocate", "--fit", "H", "--flops", "1e22,,1e23"]),
    ("scaling.predict", ["allocate", "--fit", "H"]),
    ("scaling.predict", ["repetition", "--fit", "H", "--unique-tokens", "1e9"]),
    ("scaling.predict", ["repetition", "--fit", "C4", "--unique-tokens", "-1"]),
    ("scaling.predict", ["repetition", "--fit", "C4", "--unique-tokens", "1e9", "--epochs", "1,nan"]),
    ("scaling.predict", ["loss", "--fit", "H", "--params", "abc", "--tokens", "1e9"]),
    ("scaling.predict", ["loss", "--fit", "H", "--params", "1e9", "--tokens", "0"]),
    ("scaling.predict", ["bogus"]),
    # scaling.plot
    ("scaling.plot", ["bogus", "--out", "OUT.png"]), ("scaling.plot", ["isoflop", "no-such-dir", "--out", "OUT.png"]),
    ("scaling.plot", ["contour", "--fit", "C4", "--flops", "-1", "--unique-tokens", "1e9", "--out", "OUT.png"]),
    ("scaling.plot", ["return-on-repetition", "--fit", "H", "--out", "OUT.png"]),
    ("scaling.plot", ["isoflop", "STORE", "--out", "OUT.txt"]), ("scaling.plot", ["isoflop", "STORE", "--out", "PROC/x.png"]),
    ("scaling.plot", ["mixture", "--fit", "OUT.json", "--params", "1M", "--tokens", "1M", "--out", "OUT.png"]),
    ("scaling.plot", ["residuals", "STORE", "--fit", "FIT_NAN", "--out", "OUT.png"]),
    ("scaling.plot", ["isoflop", "TORN", "--out", "OUT.png"]),
    # scaling.store
    ("scaling.store", ["show", "no-such-dir"]), ("scaling.store", ["show"]), ("scaling.store", ["import", "OUT.csv", "OUT"]),
    ("scaling.store", ["import", "CSV_NONNUMERIC", "OUT"]), ("scaling.store", ["import", "CSV_INF", "OUT"]),
    ("scaling.store", ["import", "CSV_NEG", "OUT"]), ("scaling.store", ["import", "CSV_NANLOSS", "OUT"]),
    ("scaling.store", ["import", "CSV_ZEROLOSS", "OUT"]),
    ("scaling.store", ["import", "CSV_INF", "PROC"]), ("scaling.store", ["check", "no-such-dir"]), ("scaling.store", ["bogus"]),
    *(("scaling.store", ["import", f"IDS_{k}", where]) for k in ("ESCAPE", "SUBDIR", "SCHEMA", "HIDDEN", "LONG", "DUP", "LATE")
      for where in ("OUT", "STORE")),
    # scaling.backtest
    ("scaling.backtest", ["no-such-dir"]), ("scaling.backtest", [DS, "--bootstrap", "-3"]),
    ("scaling.backtest", [DS, "--holdout", "bogus"]), ("scaling.backtest", [DS, "--seed", "-1"]), ("scaling.backtest", ["TORN"]),
    # scaling.mixture
    ("scaling.mixture", ["fit", "no-such-dir"]), ("scaling.mixture", ["fit", "STORE", "--bootstrap", "-1"]),
    ("scaling.mixture", ["predict", "--fit", "OUT.json", "--mixture", "a=1"]),
    ("scaling.mixture", ["optimize", "--fit", "OUT.json", "--params", "1M", "--tokens", "1M"]),
    ("scaling.mixture", ["fit", "STORE"]),
    # fit files that are valid JSON with finite numbers but make the law degenerate (issue 23)
    *(("scaling.predict", ["allocate", "--fit", f"FIT_{k}", "--flops", "1e22"])
      for k in ("NEGALPHA", "ZEROA", "HUGEINT", "SETTINGS", "RAGGED", "DEEP")),
    ("scaling.predict", ["allocate", "--fit", "FIT_RDZERO", "--flops", "1e22", "--unique-tokens", "1e9"]),
    ("scaling.predict", ["loss", "--fit", "FIT_NEGALPHA", "--params", "1e9", "--tokens", "2e10"]),
    ("scaling.mixture", ["predict", "--fit", "MIX_BINARY", "--mixtures", "STORE"]),
    ("scaling.mixture", ["predict", "--fit", "MIX_RAGGED", "--mixtures", "STORE"]),
    ("scaling.mixture", ["predict", "--fit", "FIT_NEGALPHA", "--mixtures", "STORE"]),
    ("scaling.plot", ["backtest", "--result", "BACKTEST_BAD", "--out", "OUT.png"]),
    ("scaling.plot", ["backtest", "--result", "FIT_DEEP", "--out", "OUT.png"]),
    ("scaling.downstream", ["predict", "--fit", "FIT_NEGALPHA", "--params", "1e9", "--tokens", "1e10"]),
    # numbers: no 1_000, no zero-token plans, bounded resources, constraints that keep the law a law
    ("scaling.fit", ["CSV_EQUAL"]), ("scaling.fit", ["CSV_SAME"]),
    ("scaling.fit", [DS, "--tie", "alpha=alpha"]), ("scaling.fit", [DS, "--tie", "E=A"]),
    ("scaling.fit", [DS, "--fix", "alpha=-0.3"]), ("scaling.fit", [DS, "--fix", "alpha=1_0"]),
    ("scaling.fit", [DS, "--bootstrap", "1000000000000"]), ("scaling.fit", [DS, "--target-params", "1e9"]),
    ("runners.isoflop", ["--budget", "1_000", "--dry-run"]), ("runners.isoflop", ["--budget", "1e-300", "--dry-run"]),
    ("runners.isoflop", ["--budget", "1", "--dry-run"]), ("runners.isoflop", ["--budget", "smoke", "--workers", "1_000", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--workers", "100000", "--dry-run"]),
    ("runners.isounique", ["--unique", "1M", "--epochs", "1e-9", "--dry-run"]),
    ("scaling.plot", ["contour", "--fit", "C4", "--flops", "inf", "--unique-tokens", "1e9", "--out", "OUT.png"]),
    ("scaling.plot", ["contour", "--fit", "C4", "--flops", "1e300", "--unique-tokens", "1e9", "--out", "OUT.png"]),
    ("scaling.plot", ["contour", "--fit", "C4", "--flops", "1e22", "--unique-tokens", "1e-300", "--out", "OUT.png"]),
    ("runners.mixgrid", ["--n-mixtures", "1000000000000", "--dry-run"]),
    ("runners.compare", ["--datasets", "text", "--ratio", "1e12"]),
    ("runners.evaluate", ["STORE", "--tasks", "corpus_cloze", "--batch-size", "100000000"]),
    # values torch would reject, refused when the command line is read
    ("runners.generate", ["r0", "STORE", "--temperature", "nan"]), ("runners.generate", ["r0", "STORE", "--temperature", "1e-300"]),
    ("runners.generate", ["r0", "STORE", "--device", "bogus"]), ("runners.generate", ["r0", "STORE", "--seed", str(2 ** 63)]),
    ("runners.generate", ["r0", "STORE", "--max-new-tokens", "1000000000"]),
    ("runners.evaluate", ["STORE", "--tasks", "corpus_cloze", "--device", "bogus"]),
    ("runners.compare", ["--datasets", "text", "--ratio", "20", "--device", "tpu"]),
    # scaling.downstream
    ("scaling.downstream", ["fit", "STORE", "--task", "corpus_cloze"]),           # no eval.* column
    ("scaling.downstream", ["fit", "no-such-dir", "--task", "x"]), ("scaling.downstream", ["fit", "--task", "x"]),
    ("scaling.downstream", ["fit", DS, "--task", "x", "--form", "bogus"]),
    ("scaling.downstream", ["fit", "dataset:gadre2024", "--task", "avg17_subset", "--max-params", "1"]),
    ("scaling.downstream", ["fit", "dataset:gadre2024", "--task", "avg17_subset", "--bootstrap", "-1"]),
    ("scaling.downstream", ["fit", "dataset:gadre2024", "--task", "avg17_subset", "--out", "PROC/x.json"]),
    ("scaling.downstream", ["predict", "--fit", "H", "--params", "1e9", "--tokens", "1e10"]),
    ("scaling.downstream", ["predict", "--fit", "FIT_BINARY", "--params", "1e9", "--tokens", "1e10"]),
    ("scaling.downstream", ["predict", "--fit", "OUT.json", "--params", "1e9", "--tokens", "1e10"]),
    ("scaling.plot", ["downstream", "STORE", "--fit", "H", "--out", "OUT.png"]),
    # scaling.datasets
    ("scaling.datasets.__main__", ["show", "nope"]), ("scaling.datasets.__main__", ["bogus"]),
    ("scaling.datasets.__main__", ["export", "epoch-chinchilla", "--out", "PROC/x.csv"]),
    ("scaling.datasets.__main__", ["export", "nope", "--out", "OUT.csv"]),
    ("scaling.plot", ["backtest", "STORE", "--out", "OUT.png"]),           # plots never fit: needs --result
    ("scaling.plot", ["backtest", "--result", "FIT_LIST", "--out", "OUT.png"]),
    ("scaling.plot", ["backtest", "--result", "FIT_BINARY", "--out", "OUT.png"]),
    # runners.isoflop
    ("runners.isoflop", ["--budget", "nope", "--dry-run"]), ("runners.isoflop", ["--budget", "smoke,,tiny", "--dry-run"]),
    ("runners.isoflop", ["--budget", "-1e10", "--dry-run"]), ("runners.isoflop", ["--budget", "nan", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--seeds", "-1", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--seeds", "0,,1", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--epochs", "inf", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--code-fraction", "1.5", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--filter", "bogus", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--device", "bogus", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--workers", "0", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--batch-runs", "x", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--data", "OUT.jsonl", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "STORE", "--store", "EMPTY", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--store", "FILE", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "PROC"]),
    ("runners.isoflop", ["--budget", "smoke", "--flops-convention", "bogus", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--mix", "text=0.5,code=0.5", "--code-fraction", "0.5", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--mix", "text=0.7,code=0.7", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--limit", "-1"]),
    ("runners.isoflop", ["--budget", "smoke", "TORN", "--store", "STORE"]),
    ("runners.isoflop", ["--budget", "smoke", "--arch", "transformer", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--arch", "no.such.module:factory", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--activation", "swelu", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--arch", "mamba", "--activation", "relu", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--eval-every", "25", "--dry-run"]),             # no --eval
    ("runners.isoflop", ["--budget", "smoke", "--eval-tokens", "0", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--eval-tokens", "100", "--dry-run"]),            # < one context
    ("runners.isoflop", ["--budget", "smoke", "--eval", "corpus_cloze", "--eval-every", "0", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--eval", "corpus_cloze", "--eval-every", "-5", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--eval", "corpus_cloze", "--eval-limit", "-1", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--eval", "corpus_cloze", "--eval-every", "25", "--launcher",
                         "deepspeed", "--dry-run"]),
    # runners.isounique
    ("runners.isounique", ["--unique", "0", "--dry-run"]), ("runners.isounique", ["--unique", "1M", "--sizes", "nope", "--dry-run"]),
    ("runners.isounique", ["--unique", "1M,,2M", "--dry-run"]), ("runners.isounique", ["--unique", "1M", "--epochs", "-1", "--dry-run"]),
    ("runners.isounique", ["--unique", "inf", "--dry-run"]),
    # runners.mixgrid
    ("runners.mixgrid", ["--n-mixtures", "0", "--dry-run"]), ("runners.mixgrid", ["--n-mixtures", "4", "--shape", "nope", "--dry-run"]),
    ("runners.mixgrid", ["--n-mixtures", "4", "--mix-seed", "-1", "--dry-run"]),
    ("runners.mixgrid", ["--n-mixtures", "4", "--prior", "bogus", "--dry-run"]),
    # runners.evaluate / export / generate
    ("runners.evaluate", ["no-such-dir", "--tasks", "corpus_cloze"]), ("runners.evaluate", ["STORE", "--tasks", ""]),
    ("runners.export", ["nope", "STORE", "--out", "OUT"]), ("runners.export", ["r0", "STORE", "--out", "PROC"]),
    ("runners.generate", ["nope", "STORE", "--prompt", "x"]), ("runners.generate", ["r0", "STORE", "--seed", "-1"]),
    ("runners.generate", ["m0", "MSTORE", "--prompt", "x"]), ("runners.generate", ["m1", "MSTORE", "--prompt", "x"]),
    ("runners.export", ["m0", "MSTORE", "--out", "OUT"]), ("runners.export", ["m1", "MSTORE", "--out", "OUT"]),
    # runners.compare / merge / diversity
    ("runners.compare", ["--datasets", "text,code", "--ratio", "-1"]),
    ("runners.compare", ["--datasets", "text,code", "--ratio", "20", "--shape", "nope"]),
    ("runners.compare", ["--datasets", "text,code", "--ratio", "20", "--out", "PROC"]),
    ("runners.compare", ["--datasets", "text", "--ratio", "20", "--arch", "gpt,gpt"]),
    ("runners.compare", ["--datasets", "text", "--ratio", "20", "--arch", "gpt,rnn"]),
    ("runners.merge", ["validate"]), ("runners.diversity", ["--datasets", "OUT.jsonl"]),
    ("runners.merge", ["merge", "--models", "OUT/a,OUT/b", "--weights", "1e400,0", "--out", "OUT"]),
    # issue 23, item 7: what used to crash, or to pass a dry run that the real run refuses
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--data", "DEEP_CORPUS"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--arch", "math:sqrt"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--mix", "bogus=0.5,text=0.5"]),
    ("scaling.mixture", ["optimize", "--fit", "MIX_FIT", "--prior", "PRIOR_ONECOL", "--params", "1e8", "--tokens", "1e9"]),
    ("scaling.mixture", ["predict", "--fit", "MIX_FIT", "--mixtures", "dataset:example-mixtures", "--params", "1e6",
                         "--tokens", "1e8", "--out", "OUT.xlsx"]),
    ("scaling.datasets.__main__", ["export", "epoch-chinchilla", "--out", "OUT.xlsx"]),
    ("scaling.plot", ["residuals", DS, "--fit", "C4", "--out", "OUT.png"]),
    # scaling.design (issue 25): no bootstrap, no target, a number that is not one, a broken fit
    ("scaling.design", [DS, "--fit", "H", "--target-flops", "1e25", "--budget", "1e22"]),
    ("scaling.design", [DS, "--fit", "H", "--budget", "1e22"]),
    ("scaling.design", [DS, "--fit", "H", "--target-flops", "inf", "--budget", "1e22"]),
    ("scaling.design", [DS, "--fit", "FIT_NAN", "--target-flops", "1e25", "--budget", "1e22"]),
    ("scaling.design", [DS, "--fit", "H", "--target-flops", "1e25", "--budget", "1e22", "--k", "0"]),
    ("scaling.plot", ["design", "--out", "OUT.png"]), ("scaling.plot", ["design", "--result", "BACKTEST_BAD", "--out", "OUT.png"]),
    # issue 23, item 4: links that lead nowhere, as a store or an output (a write would replace the link)
    ("scaling.store", ["import", "IDS_DUP", "LINKLOOP"]), ("scaling.store", ["import", "IDS_DUP", "DANGLING"]),
    ("runners.isoflop", ["--budget", "smoke", "--store", "LINKLOOP", "--limit", "1", "--quiet"]),
    ("runners.isoflop", ["--budget", "smoke", "--store", "DANGLING", "--limit", "1", "--quiet"]),
    ("scaling.fit", [DS, "--out", "LINKLOOP"]), ("scaling.fit", [DS, "--out", "DANGLING/fit.json"]),
    ("scaling.store", ["check", "LINKLOOP"]), ("scaling.store", ["compact", "DANGLING"]),
    ("runners.diversity", ["--datasets", "text", "--seed", "-1"]),
    # stop 36's fuzzing: tracebacks, half-results and silently taken bad data
    ("scaling.predict", ["allocate", "--fit", "C4", "--flops", "1e22", "--unique-tokens", "1e-300"]),
    ("scaling.predict", ["allocate", "--fit", "H", "--flops", "1e-300"]),
    ("scaling.plot", ["return-on-repetition", "--fit", "C4", "--params", "1e-300", "--out", "OUT.png"]),
    ("scaling.plot", ["isoflop", "FLOPS_TEXT", "--out", "OUT.png"]),
    ("scaling.plot", ["backtest", "--result", "A2_NO_LINE", "--out", "OUT.png"]),
    ("scaling.plot", ["design", DS, "--result", "PLAN_NO_MIXTURE", "--out", "OUT.png"]),
    ("scaling.store", ["compact", "CSTORE"]), ("scaling.store", ["show", ""]), ("scaling.store", ["compact", ""]),
    ("scaling.fit", [""]),
    ("scaling.mixture", ["optimize", "--fit", "MIX_FIT", "--params", "1e5", "--tokens", "3e5", "--rd-star", "1e400",
                         "--out", "OUT.json"]),
    ("scaling.mixture", ["evaluate", "MIX_NEGPARAMS", "--fit", "MIX_FIT"]),
    ("scaling.mixture", ["predict", "--fit", "MIX_FIT", "--mixtures", "dataset:example-mixtures", "--params", "1e5",
                         "--tokens", "1e-300"]),
    *(("runners.generate", [rid, "MSTORE", "--prompt", "x"]) for rid in ("m2", "m3", "m4", "m5", "m6", "m7")),
    ("runners.export", ["m2", "MSTORE", "--out", "OUT"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--tokenizer", "bpe:99999999999999"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--tokenizer", "bpe:1_000"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--n-sizes", "100000"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--limit", "1_0"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--seeds", "0..100000000"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--seeds", "99999999999999999999"]),
    ("runners.isoflop", ["--budget", "1e40", "--dry-run"]),
    ("runners.isounique", ["--unique", "1M", "--sizes", "t24", "--epochs", "1e300", "--dry-run"]),
    ("runners.isoflop", ["--plan", "PLAN_CF_TEXT", "--dry-run"]),
    ("runners.isoflop", ["--plan", "PLAN_CF_TEXT", "--mix", "text=0.5,code=0.5", "--dry-run"]),
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--seeds", "a..3"]),
    ("runners.mixgrid", ["--plan", "MIXPLAN_INF", "--dry-run"]),
    ("runners.isoflop", ["--plan", "FIT_NULL", "--dry-run"]),       # a JSON object is not a table of runs
    ("runners.isoflop", ["--budget", "smoke", "--dry-run", "--data", "DOM_NULL", "--domain-column", "dom"]),
    ("runners.compare", ["--datasets", "text", "--ratio", "1", "--shape", "s8", "--batches", "0", "--store", ""]),
    ("runners.merge", ["run", "--shape", "t24", "--seed-steps", "2", "--steps", "2", "--unique-tokens", "4k",
                       "--mixtures", "0,1", "--out", "FILE"]),
    *(("scaling.downstream", ["fit", f"GADRE_{k}", "--task", "avg17_subset", "--metric", "err", "--via", "loss",
                              "--form", "sigmoid", "--bootstrap", "0", "--out", "OUT.json"])
      for k in ("CHANCE2", "NEGLOSS", "ERRTEXT")),
]


@pytest.mark.parametrize("module, argv", CASES, ids=[f"{m.split('.')[-1]}:{' '.join(a)[:60]}" for m, a in CASES])
def test_bad_input_gets_one_error_line_a_nonzero_exit_and_writes_nothing(module, argv, files, capsys):
    main = importlib.import_module(module).main
    args = _argv(argv, files)
    before = sorted(p.name for p in (files / "store").iterdir())
    code = run_cli(main, args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), (code, err)
    assert "Traceback" not in err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert not any(Path(str(files / "must-not-exist") + s).exists() for s in ("", ".png", ".json", ".csv", ".txt"))
    assert sorted(p.name for p in (files / "store").iterdir()) == before      # the good store untouched
    assert (files / "loop1").is_symlink() and (files / "dangling").is_symlink()  # links never replaced


def test_there_are_at_least_80_cases_over_every_cli():
    assert len(CASES) >= 80
    assert {m for m, _ in CASES} >= {"scaling.fit", "scaling.predict", "scaling.plot", "scaling.store",
                                      "scaling.backtest", "scaling.mixture", "scaling.datasets.__main__",
                                      "scaling.downstream",
                                      "runners.isoflop", "runners.isounique", "runners.mixgrid", "runners.evaluate",
                                      "runners.export", "runners.generate", "runners.compare", "runners.merge",
                                      "runners.diversity"}


@pytest.mark.parametrize("module, argv, code", [
    ("scaling.fit", [DS, "--law", "bogus"], 2),                 # usage: a flag's value
    ("scaling.fit", ["no-such-dir"], 1),                        # data: nothing to read
    ("scaling.fit", ["CSV_NONNUMERIC"], 1),                     # data: invalid values
    ("scaling.predict", ["allocate", "--fit", "FIT_NAN", "--flops", "1e22"], 1),   # data: a broken fit file
    ("scaling.store", ["import", "CSV_INF", "OUT"], 1),         # data: nothing imported
    ("runners.isoflop", ["--budget", "nope", "--dry-run"], 2),
    # mixture, merge, compare and diversity: data errors exit 1 too
    ("scaling.mixture", ["fit", "STORE"], 1),                   # runs without mixture columns
    ("scaling.mixture", ["optimize", "--fit", "MIX_FIT", "--prior", "PRIOR_ONECOL", "--params", "1e8", "--tokens", "1e9"], 1),
    ("runners.merge", ["merge", "--models", "OUT/a,OUT/b", "--weights", "0.5,0.5", "--out", "OUT"], 1),
    ("runners.merge", ["merge", "--models", "OUT/a,OUT/b", "--weights", "1e400,0", "--out", "OUT"], 2),
    ("runners.diversity", ["--datasets", "OUT.jsonl"], 1),
    ("runners.compare", ["--datasets", "OUT.jsonl", "--ratio", "20"], 1),
    ("scaling.plot", ["residuals", DS, "--fit", "C4", "--out", "OUT.png"], 1),
])
def test_exit_codes_say_the_kind_of_error(module, argv, code, files, capsys):
    assert run_cli(importlib.import_module(module).main, _argv(argv, files)) == code
    assert capsys.readouterr().err.startswith("error:")


def test_a_fit_that_cannot_converge_exits_1_and_ctrl_c_exits_130(capsys):
    from scaling.errors import FitError

    def fails(argv):
        raise FitError("the fit failed from every start")

    def interrupted(argv):
        raise KeyboardInterrupt
    assert run_cli(fails, []) == 1 and run_cli(interrupted, []) == 130
    assert capsys.readouterr().err.splitlines() == ["error: the fit failed from every start", "error: interrupted"]


def test_a_dry_run_warns_of_what_only_this_machine_lacks(capsys):
    """A plan may be for a cluster: a tokenizer not cached here is a warning, and the plan is printed;
    a mix naming a domain the corpus lacks is refused whatever the machine (as the real run refuses it)."""
    from runners.isoflop import main
    assert run_cli(main, ["--budget", "smoke", "--dry-run", "--tokenizer", "no-such-tokenizer"]) == 0
    out, err = capsys.readouterr()
    assert "total" in out and err.startswith("warning: a run here would stop: cannot load tokenizer 'no-such-tokenizer'")
    assert run_cli(main, ["--budget", "smoke", "--dry-run", "--mix", "code=0.5,wiki=0.5"]) == 1
    assert "unknown domain(s) wiki in the mix" in capsys.readouterr().err


def test_an_os_error_nobody_anticipated_is_one_line_naming_the_path(capsys, monkeypatch):
    """A read-only or vanished path deep in a command (untestable as root, where CI runs): one line,
    the path and the reason, exit 1; SCALING_DEBUG=1 keeps the traceback for whoever debugs it."""
    def denied(argv):
        raise PermissionError(13, "Permission denied", "/data/store/r1.parquet")
    monkeypatch.delenv("SCALING_DEBUG", raising=False)
    assert run_cli(denied, []) == 1
    assert capsys.readouterr().err == "error: /data/store/r1.parquet: permission denied\n"
    monkeypatch.setenv("SCALING_DEBUG", "1")
    with pytest.raises(PermissionError):
        run_cli(denied, [])


def test_the_library_names_its_parameter_and_the_command_its_flag(capsys):
    """One error, two audiences: ``prepare(..., exclude_top=-1)`` says ``exclude_top``; the command
    that took ``--exclude-top -1`` says ``--exclude-top``."""
    import pandas as pd
    from scaling.errors import BadValue
    from scaling.fit import main, prepare
    table = pd.DataFrame({"params": [1e6, 2e6, 4e6], "tokens": [2e7, 4e7, 8e7], "loss": [3.0, 2.9, 2.8]})
    with pytest.raises(BadValue) as info:
        prepare(table, "chinchilla", exclude_top=-1)
    assert str(info.value) == "exclude_top must be >= 0"
    assert run_cli(main, [DS, "--exclude-top", "-1"]) == 2
    assert capsys.readouterr().err == "error: --exclude-top must be >= 0\n"


def test_a_schema_error_names_the_files_key_not_pydantics_union_tags(files, tmp_path, capsys):
    """A union-typed field (a plan's target: a number or a mixture) reported its path with pydantic's
    member tags (``target.function-after[functools.partial(<function greater_than_validator at 0x...>``)."""
    plan = tmp_path / "plan.json"
    plan.write_text('{"quantity": "loss", "target": {"params": 1e6, "tokens": 1e8, "flops": NaN}, '
                    '"current_interval_linearised": [1, 2], "expected_interval": [1, 2], "prediction": 1.5, "runs": []}')
    from scaling.plot import main as plot_main
    assert run_cli(plot_main, ["design", DS, "--result", str(plan), "--out", str(tmp_path / "p.png")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {plan}: target.flops: must be a finite number"
