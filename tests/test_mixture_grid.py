"""A real CPU code-fraction grid at two sizes, end to end: train (runners.isounique) -> store
(mix.<domain>, loss.<domain> columns) -> scaling.mixture fit / optimize / transfer -> the
mixtures notebook executed on that store."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from scaling.store import read_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARES = (0.0, 0.5, 1.0)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    store = tmp_path_factory.mktemp("mixgrid")
    proc = _cli("runners.isounique", "--unique", "100K", "--sizes", "t24,t32", "--epochs", "1",
                "--code-fraction", ",".join(map(str, SHARES)), "--store", store, "--quiet", "--eval-tokens", 65536)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store


def test_grid_rows_carry_the_mixture_and_per_domain_losses(grid):
    runs = read_runs(grid)
    assert len(runs) == 2 * len(SHARES) and (runs["status"] == "ok").all()
    assert np.allclose(runs["mix.code"], runs["code_fraction"])
    assert np.allclose(runs["mix.text"] + runs["mix.code"], 1.0)
    # more code in training lowers the code loss, at each size (at 100K tokens these models have
    # learned little beyond byte frequencies, so the text loss moves by only ~0.02 nats either way)
    for _, g in runs.groupby("shape"):
        g = g.sort_values("mix.code")
        assert (np.diff(g["loss.code"]) < 0).all()


def test_fit_optimize_transfer_on_the_grid(grid, tmp_path):
    out = tmp_path / "mix.json"
    fit = _cli("scaling.mixture", "fit", grid, "--domains", "text,code", "--out", out)
    assert fit.returncode == 0, fit.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["law"] == "mixture" and saved["kind"] == "nested" and saved["domains"] == ["text", "code"]
    runs = read_runs(grid)
    big = runs["params"].max()
    opt = _cli("scaling.mixture", "optimize", "--fit", out, "--params", 10 * big, "--tokens", 6e5, "--json")
    assert opt.returncode == 0, opt.stderr[-3000:]
    res = json.loads(opt.stdout)
    assert abs(sum(res["mixture"].values()) - 1) < 1e-9 and set(res["losses"]) == {"text", "code"}
    assert all(0.0 <= v <= 1.0 for v in res["mixture"].values())
    # the fitted law at the target, evaluated at the optimum, is no worse than at the pure mixtures
    from scaling.mixture import MixtureFit, predict_losses
    losses = predict_losses(MixtureFit.load(out), 10 * big, 6e5, [[1, 0], [0, 1]])
    assert res["loss"] <= min((losses["text"] + losses["code"]) / 2) + 1e-9
    tr = _cli("scaling.mixture", "transfer", grid, "--small-params", runs["params"].min(), "--large-params", big,
              "--json", "--bootstrap", 200)
    assert tr.returncode == 0, tr.stderr[-3000:]
    t = json.loads(tr.stdout)
    assert t["n_mixtures"] == len(SHARES)
    # code loss falls with the code share at both sizes: that ranking transfers exactly
    assert t["domains"]["code"]["spearman"] == pytest.approx(1.0)
    assert t["domains"]["code"]["decision_accuracy"] == pytest.approx(1.0)
    for st in list(t["domains"].values()) + [t["overall"]]:
        assert -1 <= st["kendall"] <= 1 and 0 <= st["decision_accuracy"] <= 1


def test_mixtures_notebook_executes_on_the_grid(grid, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    shutil.copy(ROOT / "notebooks" / "mixtures.ipynb", tmp_path / "mixtures.ipynb")
    nb = nbformat.read(tmp_path / "mixtures.ipynb", as_version=4)
    monkeypatch.setenv("SCALING_MIX_RESULTS", str(grid))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "10x model, 10x tokens: N=" in text and "spearman" in text
