"""The notebooks execute against a store (synthetic here, generated from the C4 fit with noise)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from scaling import store  # noqa: E402
from scaling.laws import get_law  # noqa: E402
from scaling.predict import chinchilla_allocation  # noqa: E402
from scaling.results import FitResult  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
C4 = FitResult.load(ROOT / "fits" / "muennighoff2023_c4.json").params


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """An isoFLOP store at 3 budgets (6 sizes at full data, the optimum at 4, 10, 25 epochs)."""
    d = tmp_path_factory.mktemp("results")
    law, rng = get_law("data-constrained"), np.random.default_rng(0)
    for c in (1e18, 1e19, 1e20):
        n_opt = chinchilla_allocation(C4, c)["params"]
        for i, n in enumerate(n_opt * np.geomspace(0.25, 4, 6)):
            tokens = c / (6 * n)
            for epochs in ((1, 4, 10, 25) if i == 2 else (1,)):
                u = tokens / epochs
                loss = float(law.predict(C4, n, tokens, u)) * np.exp(rng.normal(0, 0.005))
                store.write_run(d, dict(run_id=f"{c:.0e}-{i}-{epochs}", params=n, tokens=tokens, unique_tokens=u,
                                        loss=loss))
    return d


@pytest.mark.parametrize("name, images_at_least, says", [
    ("isoflop.ipynb", 1, "MAPE"),        # a user's store (the fresh-clone test below runs all three)
])
def test_notebook_executes(name, images_at_least, says, results, tmp_path, monkeypatch):
    shutil.copy(ROOT / "notebooks" / name, tmp_path / name)
    nb = nbformat.read(tmp_path / name, as_version=4)
    monkeypatch.setenv("SCALING_RESULTS", str(results))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= images_at_least
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert says in text


@pytest.mark.parametrize("name, also_says", [
    ("isoflop.ipynb", "MAPE"),
    ("return_on_repetition.ipynb", "data-constrained: N=7.03e+09"),   # the paper's allocation
    ("mixtures.ipynb", "code share"),
    ("downstream.ipynb", "step 2 at the observed loss"),
])
def test_notebook_runs_on_a_fresh_clone_without_a_store(name, also_says, tmp_path, monkeypatch):
    """In a clean directory with no store, each notebook says so in one line and runs on the
    example runs shipped in scaling.datasets (this project's own CPU runs)."""
    shutil.copy(ROOT / "notebooks" / name, tmp_path / name)
    nb = nbformat.read(tmp_path / name, as_version=4)
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path / "no-store"))
    monkeypatch.setenv("SCALING_MIX_RESULTS", str(tmp_path / "no-store"))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0] if errors else None
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert text.count("using the shipped example") == 1
    assert also_says in text
