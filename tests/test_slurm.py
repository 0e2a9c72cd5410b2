"""The Slurm launcher through submitit, run with submitit's local executor (same code path:
pickled jobs, one array, results read back), and its bad inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")
pytest.importorskip("torch")

from scaling.store import read_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
    env = {**os.environ, "SCALING_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "runners.isoflop", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_submitit_local_executor_trains_runs_into_the_store(tmp_path):
    store = tmp_path / "store"
    args = ["--budget", "smoke", "--store", str(store), "--launcher", "slurm", "--submitit-cluster", "local",
            "--gpus-per-node", "0", "--time", "00:10:00", "--limit", "1", "--json", "--quiet"]
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert len(summary["submitted"]) == 1 and len(summary["trained"]) == 1 and not summary["failed"]
    runs = read_runs(store)
    assert sorted(runs["run_id"]) == sorted(summary["trained"]) and (runs["status"] == "ok").all()
    assert (store / "_slurm").is_dir()                      # submitit's job folders
    again = json.loads(_run(args, tmp_path).stdout.strip().splitlines()[-1])
    assert sorted(again["skipped"]) == sorted(summary["trained"])
    assert len(again["trained"]) == 1 and again["trained"] != summary["trained"]   # the next missing run


def _in_process(args, capsys):
    """What ``python -m runners.isoflop`` runs, in this process (no interpreter start)."""
    from types import SimpleNamespace

    from runners.grid import isoflop
    from scaling.cli import run_cli
    code = run_cli(isoflop.main, args)
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def test_dry_run_says_what_would_be_submitted(tmp_path, capsys):
    out = _in_process(["--budget", "smoke", "--store", str(tmp_path / "s"), "--launcher", "slurm", "--partition", "gpu",
                "--nodes", "2", "--gpus-per-node", "8", "--time", "12:00:00", "--dry-run"], capsys)
    assert out.returncode == 0
    assert "would submit 6 run(s)" in out.stdout and "partition gpu" in out.stdout and "2 node(s) x 8 GPU(s)" in out.stdout


@pytest.mark.parametrize("args", [
    ["--partition", "gpu"],                                   # slurm option without --launcher slurm
    ["--launcher", "slurm", "--time", "soon"],
    ["--launcher", "slurm", "--nodes", "0"],
])
def test_bad_slurm_options_are_one_error_line(args, tmp_path, capsys):
    out = _in_process(["--budget", "smoke", "--store", str(tmp_path / "s"), "--dry-run", *args], capsys)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
