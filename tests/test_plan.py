"""Grids as data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", §3-4) and
the grid CLIs' dry-runs and bad-input handling. Nothing here trains."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from scaling import accounting
from scaling.accounting import AccountingError, parse_budgets
from scaling.cli import UsageError, run_cli
from runners.grid import isoflop
from runners.grid import isounique
from runners.grid import plan
from runners.grid.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
B = 1e9


def budget(name):
    (b,) = parse_budgets(name)
    return b


# --- isoFLOP grids ---------------------------------------------------------------------------

def test_2b8_grid_has_exactly_the_papers_unique_levels():
    # Muennighoff et al. 2023 §3: 2b8 levels 55, 28, 18, 14, 11, 9, 4, 1.25 B tokens
    grid = plan.isoflop_grid(budget("2b8"))
    best = plan.optimal_shape(budget("2b8"))
    levels = sorted({s.unique_tokens for s in grid if s.shape == best.name}, reverse=True)
    assert levels == [int(x * B) for x in (55, 28, 18, 14, 11, 9, 4, 1.25)]


def test_4b2_and_8b7_use_their_published_levels():
    for name, published in (("4b2", (84, 42, 28, 21, 17, 12, 6, 1.9)), ("8b7", (178, 88, 58, 44, 35, 25, 13))):
        b = budget(name)
        best = plan.optimal_shape(b)
        got = {s.unique_tokens for s in plan.isoflop_grid(b) if s.shape == best.name}
        # a level above the optimum's D is capped at D (one epoch): 8b7's 178B vs D = 177.98B
        d = round(accounting.tokens_for(b.flops, best.params()))
        assert got == {min(int(round(x * B)), d) for x in published}


@pytest.mark.parametrize("name", ["1b1", "2b8", "4b2", "8b7", "smoke", "tiny", "3e13", "1e21"])
def test_every_run_of_an_isoflop_grid_spends_the_budget(name):
    for b in parse_budgets(name):
        grid = plan.isoflop_grid(b)
        for s in grid:
            # C = 6 N D up to rounding D to whole tokens
            tol = max(1e-6, 1.0 / s.tokens)
            assert abs(s.flops / b.flops - 1) <= tol, (s.shape, s.flops, b.flops)


@pytest.mark.parametrize("name", ["1b1", "2b8", "4b2", "8b7", "smoke", "tiny"])
def test_isoflop_grid_traces_at_least_five_sizes_at_full_data(name):
    for b in parse_budgets(name):
        grid = plan.isoflop_grid(b)
        full = {s.shape for s in grid if s.epochs <= 1.01}
        assert len(full) >= 5
        assert all(s.unique_tokens == s.tokens for s in grid if s.shape != plan.optimal_shape(b).name)


@pytest.mark.parametrize("name, expected", [("1b1", 1.0963e9), ("2b8", 2.81e9), ("4b2", 4.2465e9), ("8b7", 8.67e9)])
def test_chosen_optimum_matches_the_papers_model(name, expected):
    s = plan.optimal_shape(budget(name))
    assert s.params(accounting.PAPER_VOCAB, accounting.PAPER_SEQ_LEN) == pytest.approx(expected, rel=2e-3)


def test_2b8_optimum_is_shape_2980M():
    # Table A9's 2980M at V = 50257, S = 2048 counts 2,808,777,297 parameters
    s = plan.optimal_shape(budget("2b8"))
    assert s.name == "2980M" and s.params(50257, 2048) == 2_808_777_297
    assert {r.params for r in plan.isoflop_grid(budget("2b8")) if r.shape == "2980M"} == {2_808_777_297}


def test_cpu_budgets_use_tiny_shapes_and_bytes():
    for s in plan.isoflop_grid(budget("smoke")):
        assert s.shape in accounting.TINY_SHAPES
        assert (s.vocab_size, s.seq_len, s.tokenizer) == (accounting.CPU_VOCAB, accounting.CPU_SEQ_LEN, "byte")
    assert {s.tokenizer for s in plan.isoflop_grid(budget("2b8"))} == {"gpt2"}


def test_unnamed_budget_levels_are_ratios_of_the_optimums_tokens():
    b = budget("3e13")
    best = plan.optimal_shape(b)
    d = accounting.tokens_for(b.flops, best.params(b.vocab, b.seq_len))
    got = sorted(s.unique_tokens for s in plan.isoflop_grid(b) if s.shape == best.name)
    assert got == sorted(int(round(r * d)) for r in accounting.UNIQUE_RATIOS)


def test_unique_and_epochs_override_the_levels():
    b = budget("2b8")
    grid = plan.isoflop_grid(b, unique=[10 * B, 2 * B])
    # the optimum also keeps its full-data point on the isoFLOP curve
    d = round(accounting.tokens_for(b.flops, accounting.shape("2980M").params()))
    assert {s.unique_tokens for s in grid if s.shape == "2980M"} == {10_000_000_000, 2_000_000_000, d}
    grid = plan.isoflop_grid(b, epochs=[1, 4, 16])
    eps = sorted(s.epochs for s in grid if s.shape == "2980M")  # 1 epoch covers the full-data point
    assert eps == pytest.approx([1, 4, 16], rel=1e-9)


def test_epochs_are_tokens_over_unique():
    for s in plan.isoflop_grid(budget("2b8")) + plan.isounique_grid(1e6):
        assert s.epochs == s.tokens / s.unique_tokens
        assert s.to_dict()["epochs"] == s.tokens / s.unique_tokens


def test_axes_cross_product():
    b = budget("smoke")
    base = plan.isoflop_grid(b)
    grid = plan.isoflop_grid(b, code_fractions=(0.0, 0.5), filters=("none", "dedup"), seeds=(0, 1, 2))
    assert len(grid) == len(base) * 2 * 2 * 3
    assert len({s.run_id for s in grid}) == len(grid)
    u = plan.isounique_grid(1e6, shapes=["t24", "t64"], epochs=[1, 4], code_fractions=(0.0, 0.1), seeds=(0, 1))
    assert len(u) == 2 * 2 * 2 * 2


# --- isoUniqueData grids ---------------------------------------------------------------------

def test_isounique_tokens_are_unique_times_epochs():
    grid = plan.isounique_grid(100e6)
    assert {s.unique_tokens for s in grid} == {100_000_000}
    assert sorted({s.tokens for s in grid}) == [int(100e6 * e) for e in plan.ISOUNIQUE_EPOCHS]
    sizes = sorted({s.params for s in grid})
    # the paper's 100M grid starts at 7M and goes up to about the 40-epoch optimum (~2e8)
    assert sizes[0] == accounting.shape("7M").params() and 1e8 < sizes[-1] < 4e8
    assert all(s.vocab_size == accounting.PAPER_VOCAB for s in grid)


def test_isounique_cpu_scale_uses_tiny_shapes():
    grid = plan.isounique_grid(1e6)
    assert len({s.shape for s in grid}) >= 3
    assert all(s.shape in accounting.TINY_SHAPES and s.vocab_size == 256 for s in grid)


def test_isounique_sizes_by_name():
    grid = plan.isounique_grid(400e6, shapes=["7M", "44M"], epochs=[1, 2])
    assert sorted({s.shape for s in grid}) == ["44M", "7M"]
    with pytest.raises(AccountingError):
        plan.isounique_grid(1e6, shapes=["t99"])


# --- run ids ---------------------------------------------------------------------------------

def test_run_id_is_deterministic_and_distinct():
    a = plan.isoflop_grid(budget("2b8"))
    b = plan.isoflop_grid(budget("2b8"))
    assert [s.run_id for s in a] == [s.run_id for s in b]
    everything = (plan.isoflop_grid(budget("2b8")) + plan.isoflop_grid(budget("1b1"))
                  + plan.isoflop_grid(budget("2b8"), seeds=(1,)) + plan.isoflop_grid(budget("2b8"), filters=("ppl50",))
                  + plan.isounique_grid(100e6) + plan.isounique_grid(1e6))
    assert len({s.run_id for s in everything}) == len(everything)
    s = everything[0]
    assert RunSpec.from_dict(s.to_dict()).run_id == s.run_id


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(code_fractions=(1.5,)), dict(code_fractions=(-0.1,)), dict(filters=("ppl99",)),
    dict(seeds=(-1,)), dict(unique=[0]), dict(unique=[-5e9]), dict(epochs=[0]), dict(epochs=[-2]),
    dict(unique=[1e9], epochs=[2]),
])
def test_bad_axes_raise_usage_errors(kwargs):
    with pytest.raises(UsageError):
        plan.isoflop_grid(budget("2b8"), **kwargs)


@pytest.mark.parametrize("args, kwargs", [((0,), {}), ((-1e6,), {}), ((1e6,), dict(epochs=[0])),
                                          ((1e6,), dict(filters=("nope",))), ((1e6,), dict(shapes=[]))])
def test_bad_isounique_raises_usage_errors(args, kwargs):
    with pytest.raises(UsageError):
        plan.isounique_grid(*args, **kwargs)


def test_estimates_are_positive_and_scale_with_flops():
    grid = plan.isoflop_grid(budget("smoke"))
    small, big = plan.isounique_grid(1e6, shapes=["t24"], epochs=[1, 10])
    assert 0 < plan.estimate_seconds_here(small) < plan.estimate_seconds_here(big)
    assert plan.estimate_seconds_here(small, tokens_per_s_fn=lambda s: 1e4) == pytest.approx(1e6 / 1e4 + plan.RUN_OVERHEAD_S)
    assert plan.a100_gpu_hours(grid[0]) == accounting.a100_gpu_hours(grid[0].flops)


def _timed_rows(machine: str, threads: int, per_token: float, flops_per_s: float, overhead: float, seed: int = 0):
    """Finished runs whose loops took tokens * (per_token + 6N / flops_per_s) seconds (1% noise) and
    ``overhead`` more around them: the columns a run row records for a dry run to calibrate on."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rows = []
    for n in (5e3, 2e4, 8e4, 3e5):
        for d in (5e5, 2e6):
            loop = d * (per_token + 6 * n / flops_per_s) * np.exp(rng.normal(0, 0.01))
            rows.append({"params": n, "tokens": d, "tokens_per_s": d / loop, "wall_time_s": loop,
                         "run_time_s": loop + overhead, "status": "ok", "cpu_model": machine, "threads": threads,
                         "engine": "stacked", "batched_with": 1, "resumed_from_step": 0, "arch": "gpt"})
    return rows


def test_calibrate_recovers_a_machines_throughput_from_its_runs():
    """Seconds per token = a + 6N / F: a, F and the time around the loop come back from runs timed
    so; runs of another CPU, thread count, stacked K > 1 or resumed are not this machine's measure."""
    import pandas as pd
    rows = pd.DataFrame(_timed_rows("cpu A", 1, 3e-6, 9e10, 0.4))
    t = plan.calibrate(rows, "cpu A", 1)
    assert t.flops_per_s == pytest.approx(9e10, rel=0.05) and t.per_token_s == pytest.approx(3e-6, rel=0.1)
    assert t.overhead_s == pytest.approx(0.4, rel=1e-6) and t.runs == 8
    spec = plan.isoflop_grid(budget("smoke"))[0]
    assert plan.estimate_seconds_here(spec, throughput=t) == pytest.approx(
        spec.tokens * (t.per_token_s + 6 * spec.params / t.flops_per_s) + 0.4)
    others = pd.DataFrame(_timed_rows("cpu B", 1, 3e-5, 1e9, 9.0) + _timed_rows("cpu A", 2, 3e-5, 1e9, 9.0)
                          + [{**r, "batched_with": 4} for r in _timed_rows("cpu A", 1, 3e-5, 1e9, 9.0)]
                          + [{**r, "resumed_from_step": 10} for r in _timed_rows("cpu A", 1, 3e-5, 1e9, 9.0)])
    mixed = plan.calibrate(pd.concat([rows, others], ignore_index=True), "cpu A", 1)
    assert mixed.runs == 8 and mixed.flops_per_s == pytest.approx(t.flops_per_s)
    assert plan.calibrate(rows.head(2), "cpu A", 1) is None                  # too few runs
    assert plan.calibrate(rows[rows["params"] == 5e3], "cpu A", 1) is None   # one size
    assert plan.calibrate(rows, "cpu B", 1) is None


# --- CLIs: dry-runs --------------------------------------------------------------------------

def _run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(main, argv)
    return code, out.getvalue(), err.getvalue()


REQUIRED_KEYS = {"run_id", "params", "tokens", "unique_tokens", "epochs", "flops", "code_fraction",
                 "filter", "d_model", "n_layers", "n_heads"}


def test_isoflop_dry_run_json_has_the_canonical_keys(tmp_path):
    code, out, _ = _run(isoflop.main, ["--budget", "2b8", "--store", str(tmp_path / "s"), "--dry-run", "--json"])
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == len(plan.isoflop_grid(budget("2b8")))
    for r in rows:
        assert REQUIRED_KEYS <= set(r)
        assert r["status"] == "todo"
    assert {r["unique_tokens"] for r in rows if r["shape"] == "2980M"} >= {55_000_000_000, 1_250_000_000}


def test_isounique_dry_run_json(tmp_path):
    code, out, _ = _run(isounique.main, ["--unique", "1M", "--sizes", "t24,t64", "--epochs", "1,4",
                                         "--seeds", "0,1", "--store", str(tmp_path), "--dry-run", "--json"])
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 8 and all(REQUIRED_KEYS <= set(r) for r in rows)
    assert {r["epochs"] for r in rows} == {1.0, 4.0}


def test_dry_run_table_shows_costs_status_and_total(tmp_path):
    code, out, _ = _run(isoflop.main, ["--budget", "2b8", "--store", str(tmp_path), "--dry-run"])
    assert code == 0
    lines = out.splitlines()
    for word in ("run_id", "shape", "params", "tokens", "unique", "epochs", "flops", "time here", "A100 h", "status"):
        assert word in lines[0]
    grid = plan.isoflop_grid(budget("2b8"))
    assert sum(l.endswith(" todo") and not l.startswith("total") for l in lines) == len(grid)
    assert any(l.startswith("total") and f"{len(grid)} runs" in l for l in lines)


def test_dry_run_status_reads_the_store(tmp_path):
    from scaling.store import write_run

    grid = plan.isoflop_grid(budget("smoke"))
    write_run(tmp_path, {**grid[0].to_dict(), "status": "ok", "loss": 3.0})
    write_run(tmp_path, {**grid[1].to_dict(), "status": "failed"})
    code, out, _ = _run(isoflop.main, ["--budget", "smoke", "--store", str(tmp_path), "--dry-run", "--json"])
    status = {r["run_id"]: r["status"] for r in json.loads(out)}
    assert status[grid[0].run_id] == "done" and status[grid[1].run_id] == "failed"
    assert sum(v == "todo" for v in status.values()) == len(grid) - 2


def test_dry_run_times_the_plan_with_the_runs_this_machine_trained(tmp_path, monkeypatch):
    """A store holding runs trained here: the dry run's time estimate is fitted to them (and says
    so); a fresh store keeps the constants, and so does a throughput set by hand."""
    from runners.train.cpu_dtype import cpu_model
    from runners.train.launch import cores
    from scaling.store import write_run

    monkeypatch.delenv("SCALING_FLOPS_PER_S", raising=False)
    monkeypatch.delenv("SCALING_PER_TOKEN_S", raising=False)
    grid = plan.isoflop_grid(budget("smoke"))
    for threads in range(1, cores() + 1):         # whichever thread count the launch would use
        for i, r in enumerate(_timed_rows(cpu_model(), threads, 3e-6, 9e10, 0.4)):
            write_run(tmp_path / "s", {**grid[0].to_dict(), **r, "run_id": f"{threads:02d}{i:014d}", "loss": 3.0})
    code, out, _ = _run(isoflop.main, ["--budget", "smoke", "--store", str(tmp_path / "s"), "--dry-run"])
    assert code == 0 and "measured on 8 runs of this store on this machine" in out and "+ 0.4 s/run" in out
    measured = json.loads(_run(isoflop.main, ["--budget", "smoke", "--store", str(tmp_path / "s"), "--dry-run",
                                              "--json"])[1])
    fresh = json.loads(_run(isoflop.main, ["--budget", "smoke", "--store", str(tmp_path / "new"), "--dry-run",
                                           "--json"])[1])
    before = {r["run_id"]: r["est_seconds_here"] for r in fresh}
    for s, r in zip(grid, measured):
        assert r["run_id"] == s.run_id
        assert r["est_seconds_here"] == pytest.approx(s.tokens * (3e-6 + 6 * s.params / 9e10) + 0.4, rel=0.1)
        assert before[s.run_id] == pytest.approx(plan.estimate_seconds_here(s))
    monkeypatch.setenv("SCALING_FLOPS_PER_S", "1e10")
    code, out, _ = _run(isoflop.main, ["--budget", "smoke", "--store", str(tmp_path / "s"), "--dry-run"])
    assert "measured on" not in out and "6N/1e+10 FLOP/s" in out


def test_help_ends_with_an_example():
    for main in (isoflop.main, isounique.main):
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit) as exc:
            main(["--help"])
        assert exc.value.code == 0
        assert "example" in out.getvalue() and "--dry-run" in out.getvalue().split("example")[-1]


# --- CLIs: bad input -------------------------------------------------------------------------

BAD = [
    (isoflop.main, ["--budget", "9x9"]),
    (isoflop.main, ["--budget", "2b8", "--unique", "100X"]),
    (isoflop.main, ["--budget", "2b8", "--unique", "0"]),
    (isoflop.main, ["--budget", "2b8", "--unique", "-5B"]),
    (isoflop.main, ["--budget", "2b8", "--epochs", "0"]),
    (isoflop.main, ["--budget", "2b8", "--epochs", "1,,2"]),
    (isoflop.main, ["--budget", "2b8", "--code-fraction", "1.5"]),
    (isoflop.main, ["--budget", "2b8", "--filter", "ppl99"]),
    (isoflop.main, ["--budget", "2b8", "--seeds", "-1"]),
    (isoflop.main, ["--budget", "smoke", "--data", "/nonexistent/corpus.jsonl"]),
    (isoflop.main, ["--budget", "smoke", "--launcher", "deepspeed", "--zero", "4"]),
    (isoflop.main, ["--budget", "smoke", "--launcher", "deepspeed", "--nproc-per-node", "3"]),
    (isoflop.main, ["--budget", "smoke", "--zero", "1"]),
    (isoflop.main, ["--budget", "smoke", "--launcher", "slurm", "--time", "1:xx"]),
    (isoflop.main, ["--budget", "smoke", "--launcher", "nope"]),
    (isoflop.main, []),
    (isounique.main, []),
    (isounique.main, ["--unique", "100X"]),
    (isounique.main, ["--unique", "1M", "--sizes", "t99"]),
    (isounique.main, ["--unique", "1M", "--epochs", "-1"]),
]


@pytest.mark.parametrize("main, argv", BAD)
@pytest.mark.parametrize("dry", [True, False])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, main, argv, dry):
    store = tmp_path / "store"
    argv = [*argv, "--store", str(store)] + (["--dry-run"] if dry else [])
    code, out, err = _run(main, argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not store.exists() or not any(store.glob("*.parquet"))


def _subprocess(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ("runners.isoflop", "--budget", "9x9"),
    ("runners.isoflop", "--budget", "2b8", "--unique", "100X", "--dry-run"),
    ("runners.isoflop", "--budget", "2b8", "--code-fraction", "2", "--dry-run"),
    ("runners.isounique", "--unique", "1M", "--filter", "bogus"),
])
def test_real_entry_points_exit_2_without_traceback(args):
    proc = _subprocess(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_real_entry_point_dry_run_and_help():
    proc = _subprocess("runners.isoflop", "--budget", "smoke", "--dry-run", "--json", "--store", "/nonexistent-store")
    assert proc.returncode == 0, proc.stderr
    assert REQUIRED_KEYS <= set(json.loads(proc.stdout)[0])
    proc = _subprocess("runners.isounique", "--help")
    assert proc.returncode == 0 and "example" in proc.stdout


def test_the_tiny_preset_replicates_its_widest_sizes_only_when_one_seed_is_asked():
    """The widest sizes of a tiny isoFLOP curve take the fewest steps and part most between seeds:
    with one seed asked for, the preset's two widest sizes at full data also run the next seed; with
    seeds given, the grid is their cross product and nothing more; other presets never replicate."""
    for b in parse_budgets("tiny"):
        grid = plan.isoflop_grid(b)
        widest = sorted({s.shape: s.params for s in grid}.items(), key=lambda kv: kv[1])[-2:]
        again = [s for s in grid if s.seed == 1]
        assert {s.shape for s in again} == {name for name, _ in widest} and len(again) == 2
        twins = {(s.shape, s.tokens) for s in grid if s.seed == 0}
        assert all((s.shape, s.tokens) in twins for s in again)        # the same run, another seed
        assert {s.seed for s in plan.isoflop_grid(b, seeds=(3,)) if s.shape == widest[-1][0]} == {3, 4}
        assert len(plan.isoflop_grid(b, seeds=(0, 1))) == 10
    assert all(s.seed == 0 for b in parse_budgets("smoke") for s in plan.isoflop_grid(b))
