"""Launching grids: finished runs are skipped, bad data stops everything before training, and the
real entry point trains a CPU grid into a store (when the trainer is available)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from scaling.accounting import parse_budgets
from scaling.cli import UsageError, run_cli
from scaling.store import completed_run_ids, read_runs, write_run
from runners.grid import isoflop
from runners.grid import isounique
from runners.grid import plan
from runners.train.launch import LAUNCHERS, launch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_trainer(monkeypatch):
    """A stand-in ``runners.train.trainer`` whose ``train_runs`` writes a row per run (``failed``
    for run ids in ``fail``) and records what it was asked to train and with which options."""
    calls, fail, options = [], set(), []

    def train_runs(specs, store, opts=None, engine=None, *, claim=True, skip_done=False):
        rows = []
        for spec in specs:
            calls.append(spec.run_id)
            options.append(opts)
            row = {**spec.to_dict(), "status": "failed" if spec.run_id in fail else "ok", "loss": 1.0}
            write_run(store, row)
            rows.append(row)
        return rows

    module = types.ModuleType("runners.train.trainer")
    module.train_runs = train_runs
    monkeypatch.setitem(sys.modules, "runners.train.trainer", module)
    stacked = types.ModuleType("runners.train.batched")       # tiny runs go to the stacked engine
    stacked.train_group = lambda specs, store, opts=None: train_runs(specs, store, opts, "stacked", skip_done=True)
    stacked.groups = lambda specs, k: [[s] for s in specs]     # never grouped: one unit per run
    monkeypatch.setitem(sys.modules, "runners.train.batched", stacked)
    return types.SimpleNamespace(calls=calls, fail=fail, options=options)


#: the stand-in replaces ``train_runs`` only: stacked groups and worker processes would train for real
ONE_AT_A_TIME = ("--batch-runs", "1", "--workers", "1")


def _run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(main, argv)
    return code, out.getvalue(), err.getvalue()


def smoke_grid():
    (b,) = parse_budgets("smoke")
    return plan.isoflop_grid(b)


# --- the launcher ----------------------------------------------------------------------------

def test_launch_trains_missing_runs_and_skips_finished_ones(tmp_path, fake_trainer):
    grid = smoke_grid()
    write_run(tmp_path, {**grid[0].to_dict(), "status": "ok"})
    write_run(tmp_path, {**grid[1].to_dict(), "status": "failed"})  # failed runs are retried
    fake_trainer.fail.add(grid[2].run_id)
    summary = launch(grid, tmp_path, progress=False, batch_runs=1, workers=1)
    assert summary.skipped == [grid[0].run_id]
    assert summary.failed == [grid[2].run_id]
    assert len(summary.trained) == len(grid) - 2 and not summary.ok
    assert fake_trainer.calls == [s.run_id for s in grid[1:]]
    # rerun: only the failed run is tried again
    fake_trainer.fail.clear()
    again = launch(grid, tmp_path, progress=False, batch_runs=1, workers=1)
    assert again.trained == [grid[2].run_id] and len(again.skipped) == len(grid) - 1
    assert completed_run_ids(tmp_path) == {s.run_id for s in grid}


def test_launch_limit_defers_the_rest(tmp_path, fake_trainer):
    grid = smoke_grid()
    summary = launch(grid, tmp_path, progress=False, limit=2, batch_runs=1, workers=1)
    assert summary.trained == [s.run_id for s in grid[:2]]
    assert summary.deferred == [s.run_id for s in grid[2:]]


@pytest.mark.parametrize("name", ["nope"])
def test_unknown_launchers_are_usage_errors(tmp_path, name):
    with pytest.raises(UsageError, match=name):
        launch(smoke_grid(), tmp_path, launcher=name)
    assert {"local", "deepspeed", "slurm"} <= set(LAUNCHERS)


# --- the CLIs with a stand-in trainer ----------------------------------------------------------

def test_isoflop_cli_launches_the_grid_then_skips_it(tmp_path, fake_trainer):
    pytest.importorskip("runners.data")
    store = tmp_path / "store"
    code, out, err = _run(isoflop.main, ["--budget", "smoke", "--store", str(store), "--quiet", "--json", *ONE_AT_A_TIME])
    assert code == 0, err
    grid = smoke_grid()
    assert json.loads(out)["trained"] == [s.run_id for s in grid]
    code, out, _ = _run(isoflop.main, ["--budget", "smoke", "--store", str(store), "--quiet", "--json", *ONE_AT_A_TIME])
    assert code == 0 and json.loads(out)["skipped"] == [s.run_id for s in grid]
    assert len(fake_trainer.calls) == len(grid)
    code, out, _ = _run(isoflop.main, ["--budget", "smoke", "--store", str(store), "--dry-run", "--json"])
    assert {r["status"] for r in json.loads(out)} == {"done"}


def test_isounique_cli_launches(tmp_path, fake_trainer):
    pytest.importorskip("runners.data")
    code, out, err = _run(isounique.main, ["--unique", "20K", "--sizes", "t24,t32", "--epochs", "1,4",
                                           "--store", str(tmp_path), "--quiet"])
    assert code == 0, err
    assert "trained 4" in out
    assert len(read_runs(tmp_path)) == 4


@pytest.mark.parametrize("argv", [
    ["--unique", "5M"],                            # more unique text than the embedded corpus has
    ["--unique", "5M", "--code-fraction", "0.3"],  # ... in a text/code mix (text runs out first)
    ["--unique", "30M", "--code-fraction", "1"],   # ... of code only
])
def test_unique_data_larger_than_the_corpus_stops_before_training(tmp_path, fake_trainer, argv):
    pytest.importorskip("runners.data")
    code, _, err = _run(isounique.main, [*argv, "--sizes", "t24", "--epochs", "1,2", "--store", str(tmp_path), "--quiet"])
    assert code == 1          # a DataError (scaling.errors): the data, not the flags
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "only" in lines[0] or "available" in lines[0]  # says how much there is
    assert fake_trainer.calls == [] and not list(tmp_path.glob("*.parquet"))


def test_unreadable_data_file_is_a_data_error(tmp_path, fake_trainer):
    pytest.importorskip("runners.data")
    bad = tmp_path / "corpus.jsonl"
    bad.write_text("this is not json\n")
    code, _, err = _run(isoflop.main, ["--budget", "smoke", "--data", str(bad), "--store", str(tmp_path / "s")])
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert fake_trainer.calls == []


# --- end to end: the real trainer --------------------------------------------------------------

def test_smoke_grid_trains_for_real_and_reruns_skip_everything(tmp_path):
    """``python -m runners.isoflop --budget smoke`` on this CPU, then the same command again."""
    pytest.importorskip("torch")
    pytest.importorskip("runners.data")
    pytest.importorskip("runners.train.trainer")
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--store", str(store), "--json", "--quiet"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert len(summary["trained"]) >= 3 and not summary["failed"]
    runs = read_runs(store)
    assert (runs["status"] == "ok").sum() >= 3
    assert set(summary["trained"]) <= set(runs["run_id"])
    # tiny CPU runs train on the stacked engine, K measured (--batch-runs auto): the optimum's two
    # repetition levels (same shape and tokens) together or apart, the others alone
    assert set(runs["engine"]) == {"stacked"}
    assert sorted(runs["batched_with"].astype(int)) in ([1] * 6, [1, 1, 1, 1, 2, 2])
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["trained"] == [] and sorted(again["skipped"]) == sorted(summary["trained"])
    # ... and the store is fitted: the 5 single-epoch runs, alpha tied to beta (4 free parameters)
    fit = subprocess.run([sys.executable, "-m", "scaling.fit", str(store), "--law", "chinchilla",
                          "--tie", "alpha=beta", "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-2000:]
    result = json.loads(fit.stdout)
    assert result["n_points"] == 5 and result["params"]["alpha"] == result["params"]["beta"]
    assert any("repeat data" in w for w in result["warnings"])
