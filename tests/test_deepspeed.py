"""``--launcher deepspeed``: real processes started by the deepspeed launcher on the CPU
accelerator (gloo), the run's data and loss curve equal to a local run's, kill -9 and resume, one
store row per run, and its bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from runners.grid import isoflop  # noqa: E402
from runners.grid import isounique
from runners.train.distributed import DeepSpeedOptions, batch_split  # noqa: E402
from runners.train.launch import launch  # noqa: E402
from runners.grid.plan import isoflop_grid  # noqa: E402
from runners.train.trainer import train_run  # noqa: E402
from scaling.accounting import parse_budgets  # noqa: E402
from scaling.cli import UsageError, run_cli  # noqa: E402
from scaling.store import read_curve, read_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = isoflop_grid(parse_budgets("smoke")[0])


#: one t64 run (174K parameters) of 20K tokens, 2 epochs of 10K: 40 steps of 4 sequences
PLAN = ["--sizes", "t64", "--unique", "10K", "--epochs", "2"]


def _isounique(args):
    """The CLI as a subprocess. The data cache is the environment's (``$SCALING_CACHE``, content
    addressed): a fresh one would rebuild the embedded corpus, 5 s of this test's budget."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-m", "runners.isounique", *PLAN, *args], dict(cwd=ROOT, env=env)


#: ZeRO stages the kill-and-resume test runs. Each costs ~25 s of CPU per launch on 2 cores,
#: mostly five Python processes importing torch and deepspeed, so only stage 0 by default;
#: ``SCALING_TEST_ZERO_STAGES=0,1,2,3`` runs them all (all pass on CPU with deepspeed 0.19.8; stage
#: 3 partitions the weights themselves, so its checkpoint holds shards and the stored model is
#: gathered from them).
ZERO_STAGES = [int(z) for z in os.environ.get("SCALING_TEST_ZERO_STAGES", "0").split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("zero", ZERO_STAGES)
def test_killed_run_on_two_processes_resumes_and_is_stored_once(tmp_path, zero):
    store = tmp_path / "store"
    args = ["--store", str(store), "--launcher", "deepspeed", "--nproc-per-node", "2", "--zero", str(zero),
            "--quiet", "--json", "--checkpoint-every", "0.3"]
    cmd, kw = _isounique(args)
    spec = isounique.build_plan(isounique.build_parser().parse_args([*PLAN, "--store", str(store)]))[0]
    # kill -9 the whole process group (CLI, deepspeed runner, its launcher, both ranks) once a
    # checkpoint is complete: run.json names a tag only after every rank has saved its shard
    proc = subprocess.Popen(cmd, **kw, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    meta = store / "_checkpoints" / spec.run_id / "run.json"
    deadline = time.time() + 180
    while not meta.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-1500:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not list(store.glob("*.parquet"))                 # killed before it finished

    rerun = subprocess.run(cmd, **kw, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["trained"] == [spec.run_id]
    runs = read_runs(store)
    assert runs["run_id"].tolist() == [spec.run_id] and runs["status"].tolist() == ["ok"]
    row = runs.iloc[0]
    assert (row["launcher"], row["world_size"], row["zero_stage"]) == ("deepspeed", 2, zero)
    assert row["resumed_from_step"] > 0 and row["steps"] == row["total_steps"] == 40
    assert (store / "_models" / spec.run_id / "model.safetensors").exists()
    assert not (store / "_checkpoints" / spec.run_id).exists()

    curve = read_curve(store, spec.run_id)
    assert curve["step"].tolist() == list(range(40))          # each step once across the kill
    # byte-level loss starts near ln(256) = 5.5 nats and falls below 4 within these 40 steps
    assert curve["train_loss"].iloc[:5].mean() - curve["train_loss"].iloc[-5:].mean() > 1.0
    # each rank takes rows rank::world of the local run's global batch, with the same initial
    # weights, LR schedule and clipping: the local run's losses up to float32 reduction order
    # (1e-6 observed over these 40 steps, for every ZeRO stage; over hundreds of steps Adam's
    # normalised updates of near-zero gradients let such differences grow to ~0.1 nats)
    local = train_run(spec, tmp_path / "local", progress=False)
    local_curve = read_curve(tmp_path / "local", spec.run_id)
    assert np.abs(curve["train_loss"].to_numpy() - local_curve["train_loss"].to_numpy()).max() < 1e-3
    assert row["loss"] == pytest.approx(local["loss"], abs=1e-3)  # validation of the gathered weights

    again = subprocess.run(cmd, **kw, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == [spec.run_id]
    assert read_runs(store)["created_at"].tolist() == runs["created_at"].tolist()


def _main(argv, capsys):
    code = run_cli(isoflop.main, argv)
    return code, capsys.readouterr()


def test_dry_run_prints_the_deepspeed_command_of_each_run(tmp_path, capsys):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n")
    code, out = _main(["--budget", "smoke", "--store", str(tmp_path / "s"), "--launcher", "deepspeed",
                       "--nproc-per-node", "2", "--zero", "2", "--nodes", "2", "--hostfile", str(hostfile),
                       "--dry-run"], capsys)
    assert code == 0, out.err
    commands = [line for line in out.out.splitlines() if "deepspeed.launcher.runner" in line]
    assert len(commands) == len(SMOKE)
    assert all("--num_nodes 2 --num_gpus 2" in c and "--module runners.train.distributed" in c and "--zero 2" in c
               for c in commands)
    assert all(s.run_id in c for s, c in zip(SMOKE, commands))
    code, out = _main(["--budget", "smoke", "--store", str(tmp_path / "s"), "--launcher", "deepspeed",
                       "--nproc-per-node", "2", "--dry-run", "--json"], capsys)
    records = json.loads(out.out)
    assert all(r["launch_command"][2:4] == ["deepspeed.launcher.runner", "--num_nodes"] for r in records)


@pytest.mark.parametrize("args, message", [
    (["--launcher", "deepspeed", "--zero", "4"], "invalid choice: 4"),
    (["--zero", "1"], "--zero only apply with --launcher deepspeed"),
    (["--nproc-per-node", "2"], "--nproc-per-node only apply with --launcher deepspeed"),
    (["--launcher", "deepspeed", "--nproc-per-node", "0"], "must be >= 1"),
    (["--launcher", "deepspeed", "--nproc-per-node", "3"], "does not split evenly over 3 processes"),
    (["--launcher", "deepspeed", "--nodes", "2"], "needs --hostfile"),
    (["--nodes", "2"], "only apply with --launcher slurm or deepspeed"),
])
def test_bad_deepspeed_options_are_one_error_line(args, message, tmp_path, capsys):
    code, out = _main(["--budget", "smoke", "--store", str(tmp_path / "s"), "--dry-run", *args], capsys)
    assert code == 2 and out.err.startswith("error: ") and out.err.count("\n") == 1
    assert message in out.err


def test_deepspeed_not_importable_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)      # import deepspeed -> ImportError
    code, out = _main(["--budget", "smoke", "--store", str(tmp_path / "s"), "--launcher", "deepspeed"], capsys)
    assert code == 2 and out.err.startswith("error: --launcher deepspeed needs deepspeed")
    assert out.err.count("\n") == 1
    with pytest.raises(UsageError, match="needs deepspeed"):
        launch(SMOKE[:1], tmp_path / "s", launcher="deepspeed", progress=False)


@pytest.mark.parametrize("option", [{"dtype": "bf16"}, {"compile": True}, {"cache_dir": "/tmp/x"}])
def test_options_deepspeed_cannot_honour_are_refused_not_dropped(tmp_path, option):
    with pytest.raises(UsageError, match="does not take"):
        launch(SMOKE[:1], tmp_path / "s", launcher="deepspeed", progress=False, **option)
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*.parquet"))


def test_the_global_batch_is_hparams_whatever_the_world_size():
    assert batch_split(8, 2) == (4, 1)
    assert batch_split(8, 2, micro_batch=2) == (2, 2)      # gradient accumulation makes up the rest
    assert batch_split(8, 8) == (1, 1)
    with pytest.raises(UsageError):
        batch_split(4, 8)
    with pytest.raises(UsageError):
        DeepSpeedOptions(zero_stage=4)
