"""Kill -9 in the middle of a grid, rerun: finished runs are skipped, the interrupted one resumes
from its checkpoint, and the store has each run exactly once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from scaling.accounting import parse_budgets  # noqa: E402
from runners.grid.plan import isoflop_grid  # noqa: E402
from scaling.store import run_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_killed_grid_resumes_and_stores_each_run_once(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "SCALING_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "runners.isoflop", "--budget", "smoke", "--store", str(store),
           "--quiet", "--checkpoint-every", "0.2", "--eval-tokens", "16384"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = store / "_checkpoints"
    deadline = time.time() + 300
    # wait until one run is finished and another has left a checkpoint mid-way
    while time.time() < deadline:
        # finished runs, and checkpoints of unfinished ones; .tmp-* files are writes in flight
        done = {p.stem for p in run_files(store)}
        mid_way = {p.name.split(".")[0] for p in ckpts.iterdir() if not p.name.startswith(".")} if ckpts.is_dir() else set()
        if done and mid_way - done:
            break
        if proc.poll() is not None:
            pytest.fail(f"grid ended before it could be killed: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("no finished run and checkpoint appeared in time")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # its worker processes die with it (PR_SET_PDEATHSIG): no orphan trains on holding a claim
    grid = isoflop_grid(parse_budgets("smoke")[0])
    deadline = time.time() + 10
    while any(not _free(store, s.run_id) for s in grid) and time.time() < deadline:
        time.sleep(0.1)
    assert all(_free(store, s.run_id) for s in grid), "a worker of the killed grid still holds a run"
    finished_before = {p.stem for p in run_files(store)}
    created_before = pd.read_parquet(store).set_index("run_id")["created_at"]
    # a run killed after its row was written and before its checkpoint was removed is finished
    # (its leftover checkpoint goes at the next launch); the others were interrupted mid-way
    interrupted = {p.name.split(".")[0] for p in ckpts.iterdir() if not p.name.startswith(".")} - finished_before
    assert interrupted

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = pd.read_parquet(store)
    assert sorted(runs["run_id"]) == sorted(s.run_id for s in grid)       # each run exactly once
    assert (runs["status"] == "ok").all()
    by_id = runs.set_index("run_id")
    for run_id in finished_before:                     # skipped, not retrained
        assert by_id.loc[run_id, "created_at"] == created_before[run_id]
    resumed = [r for r in interrupted if by_id.loc[r, "resumed_from_step"] > 0]
    assert resumed, f"the interrupted run started again from scratch: {rerun.stderr[-2000:]}"
    left = sorted(p.name for p in ckpts.iterdir())
    assert not left, (left, rerun.stderr[-2000:])                             # checkpoints are removed once a run is stored


def test_a_run_that_crashes_stops_the_grid_with_one_line_and_leaves_no_store(tmp_path, monkeypatch, capsys):
    """An ``--arch`` plugin whose forward raises: one ``error:`` line naming the run, exit 1, no
    traceback, and neither the store directory nor a claim file left behind (the next launch retries)."""
    from scaling.cli import run_cli
    from runners.isoflop import main
    (tmp_path / "crashing_arch.py").write_text(
        "from runners.models.gpt import GPT\n"
        "class Crashing(GPT):\n"
        "    def forward(self, *args, **kwargs):\n"
        "        raise RuntimeError('boom in forward')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SCALING_DEBUG", raising=False)
    store = tmp_path / "store"
    code = run_cli(main, ["--budget", "smoke", "--store", str(store), "--arch", "crashing_arch:Crashing",
                          "--limit", "1", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: run ") and "failed: RuntimeError: boom in forward" in err
    assert not store.exists()


def _free(store, run_id: str) -> bool:
    from scaling.store import claim_run
    with claim_run(store, run_id) as mine:
        return bool(mine)
