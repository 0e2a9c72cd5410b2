"""The results store: one Parquet file per run, written atomically, keyed by run_id.

Properties from the store's contract (scaling/store/, and the pyarrow / Delta Lake habit in
the project's style notes): ``pandas.read_parquet(DIR)`` sees every run and no side data; a write is
idempotent by run_id; a writer killed mid-write never leaves a torn ``<run_id>.parquet``. The import
check uses the Besiroglu et al. 2024 replication data (245 points read off Chinchilla's Fig. 4,
reference: Besiroglu et al. 2024), where tokens = FLOP / (6 * model size).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scaling.store import read_run, read_runs, update_run, write_curve, write_run

ROOT = Path(__file__).resolve().parents[1]
CHINCHILLA_CSV = ROOT / "scaling" / "datasets" / "data" / "epoch_chinchilla.csv.gz"   # scaling.datasets
CHINCHILLA_ROWS = 245     # Besiroglu et al. 2024: 245 points extracted from Hoffmann et al. Fig. 4
COLUMNS = ["--column", "params=Model Size", "--column", "flops=Training FLOP"]


def store_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "scaling.store", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def runs_of(n=3):
    return [{"run_id": f"run-{i}", "params": 1e7 * (i + 1), "tokens": 2e8 * (i + 1), "loss": 4.0 - 0.1 * i}
            for i in range(n)]


def visible_parquet_files(store: Path):
    return sorted(p for p in store.glob("*.parquet") if not p.name.startswith((".", "_")))


# ------------------------------------------------------------------------------------------
# Writing and reading
# ------------------------------------------------------------------------------------------
def test_read_parquet_of_the_directory_returns_every_run_and_no_side_data(tmp_path):
    for row in runs_of(3):
        write_run(tmp_path, row)
    write_curve(tmp_path, "run-0", pd.DataFrame({"step": [1, 2], "loss": [9.0, 8.0]}))
    (tmp_path / "_checkpoints").mkdir()
    (tmp_path / "_checkpoints" / "run-0.parquet").write_bytes(b"not parquet: a checkpoint blob")
    (tmp_path / ".tmp-abandoned.parquet").write_bytes(b"PAR1 half a file")

    runs = pd.read_parquet(tmp_path)
    assert sorted(runs["run_id"]) == ["run-0", "run-1", "run-2"]
    assert runs.set_index("run_id").loc["run-2", "loss"] == pytest.approx(3.8)
    assert (runs["status"] == "ok").all()
    # flops are filled in from the one accounting rule, C = 6 N D
    assert runs.set_index("run_id").loc["run-1", "flops"] == pytest.approx(6 * 2e7 * 4e8)


def test_read_runs_ignores_side_directories_and_hidden_temporary_files(tmp_path):
    for row in runs_of(3):
        write_run(tmp_path, row)
    write_curve(tmp_path, "run-0", pd.DataFrame({"step": [1, 2], "loss": [9.0, 8.0]}))
    (tmp_path / ".tmp-abandoned.parquet").write_bytes(b"PAR1 half a file")

    runs = read_runs(tmp_path)
    assert sorted(runs["run_id"]) == ["run-0", "run-1", "run-2"]


def test_writing_the_same_run_id_twice_replaces_the_run(tmp_path):
    write_run(tmp_path, {"run_id": "r", "params": 1e7, "tokens": 2e8, "loss": 4.0})
    write_run(tmp_path, {"run_id": "r", "params": 1e7, "tokens": 2e8, "loss": 3.5, "status": "diverged"})

    runs = read_runs(tmp_path)
    assert len(runs) == 1
    assert runs.loc[0, "loss"] == 3.5 and runs.loc[0, "status"] == "diverged"
    assert len(pd.read_parquet(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("_")) == ["r.parquet"]   # no temporary file left behind


def test_update_run_adds_an_eval_column_and_keeps_the_rest(tmp_path):
    for row in runs_of(2):
        write_run(tmp_path, row)
    before = read_run(tmp_path, "run-1")

    update_run(tmp_path, "run-1", **{"eval.corpus_cloze.acc": 0.412})

    after = read_run(tmp_path, "run-1")
    assert after["eval.corpus_cloze.acc"] == 0.412
    assert {k: after[k] for k in before} == before
    runs = read_runs(tmp_path).set_index("run_id")
    assert runs.loc["run-1", "eval.corpus_cloze.acc"] == 0.412
    assert np.isnan(runs.loc["run-0", "eval.corpus_cloze.acc"])    # other runs just lack it
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("_")) == ["run-0.parquet", "run-1.parquet"]


def test_an_eval_column_added_later_is_visible_to_read_parquet_of_the_directory_after_compact(tmp_path):
    """``pandas.read_parquet(DIR)`` returns all runs; an eval added to one run (here the
    alphabetically later one) lives in its side file, which ``compact`` folds into the segment:
    then the directory read has it, on the right run, and every run once."""
    from scaling.store import compact
    for row in runs_of(2):
        write_run(tmp_path, row)
    update_run(tmp_path, "run-1", **{"eval.corpus_cloze.acc": 0.412})
    assert "eval.corpus_cloze.acc" not in pd.read_parquet(tmp_path).columns    # side file: hidden
    compact(tmp_path)
    runs = pd.read_parquet(tmp_path).set_index("run_id")
    assert runs.loc["run-1", "eval.corpus_cloze.acc"] == 0.412 and len(runs) == 2


def test_update_of_a_missing_run_is_a_usage_error(tmp_path):
    from scaling.cli import UsageError
    with pytest.raises(UsageError, match="not in store"):
        update_run(tmp_path, "nope", loss=1.0)


# ------------------------------------------------------------------------------------------
# Atomicity: a writer killed with SIGKILL mid-write
# ------------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, sys
    from scaling.store import write_run
    blob = os.urandom(12_000_000).hex()        # 24 MB of incompressible text: each write takes a while
    i = 0
    while True:
        write_run(sys.argv[1], {"run_id": "big", "iteration": i, "blob": blob, "loss": 2.0})
        i += 1
""")
BLOB_CHARS = 24_000_000


def _kill_writer_mid_write(store: Path, attempt_timeout=60.0) -> bool:
    """Start the looping writer, SIGKILL it as soon as a temporary file is being written; True when
    the kill left a temporary file behind (i.e. it landed mid-write)."""
    before = {p.name for p in store.glob(".tmp-*")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store)], cwd=ROOT)
    try:
        deadline = time.monotonic() + attempt_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if {p.name for p in store.glob(".tmp-*")} - before and (store / "big.parquet").exists():
                time.sleep(0.05)       # a little way into the write
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the writer process died on its own"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return bool({p.name for p in store.glob(".tmp-*")} - before)


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory):
    """A store whose writer was killed mid-write (retrying until a kill really landed mid-write,
    so the properties below are not checked vacuously)."""
    store = tmp_path_factory.mktemp("killed-store")
    landed = any(_kill_writer_mid_write(store) for _ in range(5))
    assert landed, "no SIGKILL landed during a write in 5 attempts: the test did not exercise atomicity"
    return store


def test_a_killed_writer_leaves_no_torn_run_file(killed_store):
    for path in visible_parquet_files(killed_store):
        table = pq.read_table(path)                   # raises on a truncated file
        assert table.num_rows == 1
        assert len(table.column("blob")[0].as_py()) == BLOB_CHARS
    leftovers = [p.name for p in killed_store.iterdir() if p.name != "big.parquet" and not p.name.startswith("_")]
    assert leftovers and all(name.startswith(".tmp-") for name in leftovers)
    assert pd.read_parquet(killed_store, columns=["run_id", "iteration"])["run_id"].tolist() == ["big"]


def test_read_runs_ignores_what_a_killed_writer_left(killed_store):
    runs = read_runs(killed_store)
    assert runs["run_id"].tolist() == ["big"]


# ------------------------------------------------------------------------------------------
# The store CLI
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chinchilla_copy(tmp_path_factory):
    d = tmp_path_factory.mktemp("chinchilla-data")
    csv = d / "chinchilla_svg_extracted.csv"
    pd.read_csv(CHINCHILLA_CSV).to_csv(csv, index=False)
    pq_path = d / "chinchilla_svg_extracted.parquet"
    pd.read_csv(csv).to_parquet(pq_path, index=False)
    return csv, pq_path


@pytest.fixture(scope="module")
def imported_store(chinchilla_copy, tmp_path_factory):
    csv, _ = chinchilla_copy
    store = tmp_path_factory.mktemp("store-csv")
    res = store_cli("import", csv, "--store", store, *COLUMNS)
    assert res.returncode == 0, res.stderr
    assert f"imported {CHINCHILLA_ROWS} new run(s)" in res.stdout
    return store


def test_importing_the_chinchilla_csv_gives_245_runs_with_tokens_derived_from_flops(chinchilla_copy,
                                                                                    imported_store):
    csv, _ = chinchilla_copy
    runs = read_runs(imported_store)
    assert len(runs) == CHINCHILLA_ROWS
    assert runs["run_id"].is_unique
    assert (runs["status"] == "ok").all()
    np.testing.assert_allclose(runs["tokens"], runs["flops"] / (6 * runs["params"]), rtol=1e-12)
    source = pd.read_csv(csv)
    np.testing.assert_allclose(np.sort(runs["loss"]), np.sort(source["loss"]), rtol=0)
    np.testing.assert_allclose(np.sort(runs["params"]), np.sort(source["Model Size"]), rtol=0)


def test_reimporting_the_same_file_adds_nothing(chinchilla_copy, imported_store):
    csv, _ = chinchilla_copy
    res = store_cli("import", csv, "--store", imported_store, *COLUMNS)
    assert res.returncode == 0, res.stderr
    assert "imported 0 new run(s)" in res.stdout
    assert len(read_runs(imported_store)) == CHINCHILLA_ROWS


def test_importing_the_chinchilla_parquet_gives_245_runs(chinchilla_copy, tmp_path):
    _, pq_path = chinchilla_copy
    res = store_cli("import", pq_path, "--store", tmp_path, *COLUMNS)
    assert res.returncode == 0, res.stderr
    runs = read_runs(tmp_path)
    assert len(runs) == CHINCHILLA_ROWS
    np.testing.assert_allclose(runs["tokens"], runs["flops"] / (6 * runs["params"]), rtol=1e-12)
    again = store_cli("import", pq_path, "--store", tmp_path, *COLUMNS)
    assert "imported 0 new run(s)" in again.stdout
    assert len(read_runs(tmp_path)) == CHINCHILLA_ROWS


def test_show_json_lists_the_runs(imported_store):
    res = store_cli("show", imported_store, "--json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert len(records) == CHINCHILLA_ROWS
    assert {"run_id", "params", "tokens", "flops", "loss", "status"} <= set(records[0])
    assert sorted(r["run_id"] for r in records) == sorted(read_runs(imported_store)["run_id"])


def test_show_prints_a_summary(imported_store):
    res = store_cli("show", imported_store)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{CHINCHILLA_ROWS} run(s) in ")


@pytest.mark.parametrize("args", [
    pytest.param(["import", "{tmp}/missing.csv", "--store", "{tmp}/s"], id="missing-file"),
    pytest.param(["import", "{csv}", "--store", "{tmp}/s", "--column", "params"], id="column-without-equals"),
    pytest.param(["import", "{csv}", "--store", "{tmp}/s", "--column", "=Model Size"], id="column-without-name"),
    pytest.param(["import", "{csv}", "--store", "{tmp}/s", "--column", "params=No Such Column"],
                 id="column-not-in-file"),
    pytest.param(["show", "{tmp}/no-store"], id="show-missing-store"),
])
def test_bad_store_cli_input_is_one_error_line_and_exit_2(args, chinchilla_copy, tmp_path):
    csv, _ = chinchilla_copy
    argv = [a.format(tmp=tmp_path, csv=csv) for a in args]
    res = store_cli(*argv)
    assert res.returncode in (1, 2)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_table_files_are_written_in_the_format_their_name_says(tmp_path):
    """``--out x.json`` is JSON, not CSV under a JSON name; a suffix with no writer is refused unwritten."""
    from scaling.store import write_table_file
    frame = pd.DataFrame({"run_id": ["a", "b"], "loss": [3.25, 2.5]})
    for name, read in (("t.csv", pd.read_csv), ("t.parquet", pd.read_parquet), ("t.json", pd.read_json),
                       ("t.jsonl", lambda p: pd.read_json(p, lines=True))):
        write_table_file(frame, tmp_path / name)
        pd.testing.assert_frame_equal(read(tmp_path / name), frame)
    assert json.loads((tmp_path / "t.json").read_text())[1] == {"run_id": "b", "loss": 2.5}
    from scaling.cli import UsageError
    with pytest.raises(UsageError, match="cannot write a table as .xlsx"):
        write_table_file(frame, tmp_path / "t.xlsx")
    assert not (tmp_path / "t.xlsx").exists()


def test_absorbed_updates_are_ordinary_columns_for_pandas(tmp_path):
    """Side-file columns (evaluations) folded into the run's own file or its segment: pandas, reading
    the directory itself, sees them on the right runs, every run once, and the toolkit's reader the same."""
    from scaling import store
    d = tmp_path / "s"
    for i in range(3):
        write_run(d, {"run_id": f"r{i}", "params": 1e6 * (i + 1), "tokens": 2e7, "loss": 3.0 - 0.1 * i})
    store.compact(d)                                                # r0-r2 in a segment
    write_run(d, {"run_id": "r3", "params": 4e6, "tokens": 2e7, "loss": 2.6})   # r3 in its own file
    store.update_run(d, "r1", **{"eval.task.acc": 0.25})
    store.update_run(d, "r3", **{"eval.task.acc": 0.5, "eval.task.bpb": 1.5})
    before = read_runs(d).set_index("run_id").sort_index()
    assert "eval.task.acc" not in pd.read_parquet(d).columns        # side files: invisible to pandas
    assert store.absorb_updates(d) == 2 and not store.update_files(d)
    plain = pd.read_parquet(d).set_index("run_id").sort_index()
    assert sorted(plain.index) == ["r0", "r1", "r2", "r3"]
    assert plain.loc["r1", "eval.task.acc"] == 0.25 and plain.loc["r3", "eval.task.bpb"] == 1.5
    assert np.isnan(plain.loc["r0", "eval.task.acc"])
    after = read_runs(d).set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(after[before.columns], before, check_dtype=False)
    assert store.absorb_updates(d) == 0                              # nothing left to fold
