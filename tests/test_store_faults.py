"""Store faults and shared files: torn, zero-byte and foreign run files are skipped with one warning
(and their runs retrained); ``scaling.store check`` lists them; a write with conflicting types is
refused whole; writes read one schema file, not every run's; files get the user's umask;
checkpoints load weights-only and a stale one is set aside."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scaling import store


def runs(n):
    return [{"run_id": f"r{i}", "params": 1e6 * (i + 1), "tokens": 2e7, "loss": 3.0 - 0.01 * i} for i in range(n)]


def faulty_store(tmp_path: Path) -> Path:
    d = tmp_path / "s"
    for r in runs(4):
        store.write_run(d, r)
    (d / "r1.parquet").write_bytes((d / "r1.parquet").read_bytes()[:100])   # torn
    (d / "zero.parquet").write_bytes(b"")                                     # zero bytes
    (d / "foreign.parquet").write_bytes(b"not parquet at all")                # foreign
    import pandas as pd
    pd.DataFrame({"x": [1, 2]}).to_parquet(d / "table.parquet")              # Parquet, not a run
    return d


def test_readers_skip_bad_files_with_one_warning_each_and_keep_every_intact_run(tmp_path, capsys):
    d = faulty_store(tmp_path)
    store._warned.clear()
    got = store.read_runs(d)
    assert sorted(got["run_id"]) == ["r0", "r2", "r3"]
    assert store.read_run(d, "r1") is None
    store.read_runs(d)                                 # a second read warns no more
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("warning: skipping ") for line in err)
    assert {Path(line.split()[2].rstrip(":")).name for line in err} == {"r1.parquet", "zero.parquet",
                                                                      "foreign.parquet", "table.parquet"}


def test_the_run_of_a_torn_file_is_retrained_and_its_file_replaced(tmp_path):
    from runners.train import launch
    from runners.grid.plan import isounique_grid
    d = faulty_store(tmp_path)
    specs = isounique_grid(1e5, shapes=["t24"], epochs=[1, 2])
    for s in specs:
        store.write_run(d, {"run_id": s.run_id, "params": s.params, "tokens": s.tokens, "loss": 2.0})
    victim = specs[0].run_id
    (d / f"{victim}.parquet").write_bytes(b"\0" * 10)
    assert [s.run_id for s in launch.todo(specs, d)] == [victim]
    store.write_run(d, {"run_id": victim, "params": 1.0, "tokens": 1.0, "loss": 2.5})   # what training does
    assert launch.todo(specs, d) == []


def test_check_lists_every_bad_file_and_exits_1_and_a_clean_store_exits_0(tmp_path, capsys):
    d = faulty_store(tmp_path)
    assert store.main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    for name in ("r1.parquet", "zero.parquet", "foreign.parquet", "table.parquet"):
        assert name in out
    report = store.check(d)
    assert report["files"] == 7 and report["readable"] == 3 and len(report["bad"]) == 4
    clean = tmp_path / "clean"
    for r in runs(3):
        store.write_run(clean, r)
    assert store.main(["check", str(clean)]) == 0
    assert "all run files readable, one schema" in capsys.readouterr().out


def test_a_run_whose_types_conflict_with_the_store_is_refused_and_nothing_written(tmp_path):
    d = tmp_path / "s"
    for r in runs(2):
        store.write_run(d, {**r, "eval.acc": 0.5})
    with pytest.raises(store.UsageError, match="eval.acc"):
        store.write_run(d, {"run_id": "bad", "params": 1.0, "tokens": 1.0, "loss": 1.0, "eval.acc": "high"})
    assert not (d / "bad.parquet").exists()
    assert len(store.read_runs(d)) == 2


def test_a_write_reads_one_schema_file_not_every_runs(tmp_path, monkeypatch):
    d = tmp_path / "s"
    for r in runs(30):
        store.write_run(d, r)
    calls = {"schema": 0, "table": 0}
    real_schema, real_table = pq.read_schema, pq.read_table
    monkeypatch.setattr(pq, "read_schema", lambda *a, **k: (calls.__setitem__("schema", calls["schema"] + 1), real_schema(*a, **k))[1])
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: (calls.__setitem__("table", calls["table"] + 1), real_table(*a, **k))[1])
    store.write_run(d, {"run_id": "r30", "params": 1.0, "tokens": 1.0, "loss": 1.0})
    assert calls == {"schema": 1, "table": 0}
    store.write_run(d, {"run_id": "r31", "params": 1.0, "tokens": 1.0, "loss": 1.0, "eval.new": 0.1})
    assert calls["table"] == 31                        # a new column: the others take it, once
    import pandas as pd
    assert pd.read_parquet(d)["eval.new"].notna().sum() == 1 and len(pd.read_parquet(d)) == 32


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    from scaling.results import FitResult
    old = os.umask(umask)
    try:
        run = store.write_run(tmp_path / "s", runs(1)[0])
        fit_file = tmp_path / "fit.json"
        FitResult.load("hoffmann2022").save(fit_file)
        assert run.stat().st_mode & 0o777 == mode
        assert fit_file.stat().st_mode & 0o777 == mode
        assert (tmp_path / "s" / store.SCHEMA_FILE).stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EVIL_MARKER"]),))


def test_a_pickle_placed_as_a_checkpoint_does_not_run_and_is_set_aside(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from runners.train import engines
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "ckpt.pt"
    torch.save({"run_id": "x", "steps": 10, "batch_size": 4, "payload": _Evil()}, path)
    assert engines.load_checkpoint(path, "x", 10, 4) is None
    assert not marker.exists()
    assert not path.exists() and path.with_name("ckpt.pt.set-aside").exists()
    # the toolkit's own checkpoints still load
    good = tmp_path / "good.pt"
    engines.save_checkpoint(good, {"run_id": "x", "steps": 10, "batch_size": 4, "model": {"w": torch.ones(2)},
                                 "curve": [(0, 512, 5.5, 1e-3)], "ema": 5.5, "wall_time_s": 1.0, "step": 3})
    assert engines.load_checkpoint(good, "x", 10, 4)["step"] == 3


@pytest.mark.slow
def test_a_checkpoint_that_no_longer_matches_the_model_is_set_aside_and_the_run_restarts(tmp_path):
    torch = pytest.importorskip("torch")
    from runners.train import engines, trainer as train
    from runners.grid.spec import RunSpec
    from scaling.accounting import shape
    s = shape("t24")
    spec = RunSpec("t24", s.d_model, s.ffw_size, s.attention_heads, s.n_layers, 256, 128, 20_000, 20_000)
    d = tmp_path / "s"
    _, _, hp, batches = train.prepare_data(spec, tmp_path / "cache")
    path = engines.checkpoint_path(d, spec.run_id)
    engines.save_checkpoint(path, {"run_id": spec.run_id, "steps": batches.steps, "batch_size": hp.batch_size,
                                 "model": {"wte.weight": torch.zeros(3, 3)}, "optimizer": {}, "step": 5,
                                 "curve": [], "ema": None, "wall_time_s": 0.0})
    row = train.train_run(spec, d, progress=False, cache_dir=tmp_path / "cache")
    assert row["status"] == "ok" and row["resumed_from_step"] in (0, None)
    assert path.with_name(path.name + ".set-aside").exists()


@pytest.mark.slow
def test_two_grids_started_at_once_on_one_store_train_each_run_once(tmp_path):
    """Each launcher claims a run before training it (an flock the kernel drops when the holder
    exits): two at once split the grid, and between them every run is trained exactly once."""
    import json
    import subprocess
    import sys
    d = tmp_path / "shared"
    argv = [sys.executable, "-m", "runners.isounique", "--unique", "40K", "--sizes", "t24", "--epochs", "1,2,3,4",
            str(d), "--workers", "1", "--batch-runs", "1", "--quiet", "--json"]
    env = dict(os.environ)
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    summaries = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    trained = [r for s in summaries for r in s["trained"]]
    assert len(trained) == len(set(trained)) == 4          # nobody trained a run twice
    assert sorted(trained) == sorted(set(summaries[0]["trained"]) | set(summaries[0]["elsewhere"]))
    assert len(store.read_runs(d)) == 4


def test_launchers_on_one_machine_share_its_threads(tmp_path):
    """Two launchers of 2 torch threads each on 2 cores spin against each other (one grid: 7 s
    alone, 50-136 s as one of a pair): each registers itself and trains with its share of the
    threads among the live launchers; a dead launcher's file is cleared and its share returns."""
    import subprocess
    import sys
    import torch
    from runners.train.launch import live_launchers, sharing_cores
    before = torch.get_num_threads()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        for name in (str(other.pid), str(dead.pid), "notes.txt"):
            (tmp_path / name).touch()
        torch.set_num_threads(2)
        with sharing_cores(tmp_path) as share:
            assert live_launchers(tmp_path) == 2                    # this one and the other
            assert not (tmp_path / str(dead.pid)).exists()
            assert share() == 1 and torch.get_num_threads() == 1
            other.kill()
            other.wait()
            assert share() == 2 and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2 and not (tmp_path / str(os.getpid())).exists()
    finally:
        other.kill()
        torch.set_num_threads(before)


def test_read_runs_serves_unchanged_files_from_the_index_and_sees_every_change(tmp_path, monkeypatch):
    import pandas as pd
    d = tmp_path / "s"
    for r in runs(20):
        store.write_run(d, r)
    first = store.read_runs(d)
    assert (d / store.INDEX_FILE).exists()
    store.update_run(d, "r3", loss=9.5)
    (d / "r7.parquet").unlink()
    store.write_run(d, {"run_id": "r99", "params": 1.0, "tokens": 1.0, "loss": 1.0})
    opened = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, *a, **k: (opened.append(Path(p).name), real(p, *a, **k))[1])
    got = store.read_runs(d).set_index("run_id")
    # the index, the new run, and the side file of r3 with its own index: not the 18 others
    assert sorted(opened) == sorted([store.INDEX_FILE, "r99.parquet", "_index.parquet", "r3.parquet"])
    assert got.loc["r3", "loss"] == 9.5 and "r7" not in got.index and len(got) == 20
    monkeypatch.setattr(pq, "read_table", real)
    (d / store.INDEX_FILE).unlink()                     # derived data: the same frame without it
    pd.testing.assert_frame_equal(store.read_runs(d).set_index("run_id"), got)
    assert list(first["run_id"]) == sorted(first["run_id"])


def test_check_repair_moves_the_bad_files_into_quarantine(tmp_path, capsys):
    d = faulty_store(tmp_path)
    assert store.main(["check", str(d), "--repair"]) == 0
    assert "moved 4 file(s)" in capsys.readouterr().out
    assert sorted(p.name.split(".parquet")[0] for p in (d / store.QUARANTINE).iterdir()) == ["foreign", "r1", "table", "zero"]
    assert store.main(["check", str(d)]) == 0 and sorted(store.read_runs(d)["run_id"]) == ["r0", "r2", "r3"]


def test_four_concurrent_imports_of_one_table_each_report_what_they_really_wrote(tmp_path):
    """The check-then-write of ``store import`` runs under the store's lock: four imports of one
    400-row table at once end with 400 runs, and their "imported N new" add up to 400."""
    import re
    import subprocess
    import sys
    csv = tmp_path / "runs.csv"
    csv.write_text("params,tokens,loss\n" + "".join(f"{1e6 + i},{2e7},{3.0 - i * 1e-4}\n" for i in range(400)))
    d = tmp_path / "s"
    argv = [sys.executable, "-m", "scaling.store", "import", str(csv), str(d)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    counts = [int(re.search(r"imported (\d+) new", o[0]).group(1)) for o in outs]
    assert sum(counts) == 400 and len(store.read_runs(d)) == 400


def test_entries_that_are_not_regular_files_are_skipped_listed_and_moved(tmp_path, capsys):
    """A link loop, a dangling link, a FIFO and a directory named like run files: readers skip each
    with one warning (a FIFO would otherwise block the read, a loop abort it), ``check`` lists them,
    ``check --repair`` moves them into _quarantine/, and writes go on."""
    s = tmp_path / "s"
    for i in range(3):
        store.write_run(s, {"run_id": f"r{i}", "params": 1e6 * (i + 1), "tokens": 2e7, "loss": 3.0 - 0.1 * i})
    os.symlink("loop.parquet", s / "loop.parquet")
    os.symlink("nowhere.parquet", s / "dangling.parquet")
    os.mkfifo(s / "fifo.parquet")
    (s / "dir.parquet").mkdir()
    assert sorted(store.read_runs(s)["run_id"]) == ["r0", "r1", "r2"]
    err = capsys.readouterr().err
    for name, what in (("loop", "a symbolic link loop"), ("dangling", "a dangling symbolic link"),
                       ("fifo", "a FIFO"), ("dir", "a directory")):
        assert err.count(f"{name}.parquet: {what}") == 1, err
    report = store.check(s)
    assert sorted(b["file"] for b in report["bad"]) == ["dangling.parquet", "dir.parquet", "fifo.parquet", "loop.parquet"]
    assert report["readable"] == 3 and report["files"] == 7
    store.write_run(s, {"run_id": "r3", "params": 4e6, "tokens": 2e7, "loss": 2.7})
    assert store.quarantine(s, [b["file"] for b in report["bad"]]) == [b["file"] for b in report["bad"]]
    assert store.check(s)["bad"] == [] and len(store.read_runs(s)) == 4
    assert len(list((s / store.QUARANTINE).iterdir())) == 4
