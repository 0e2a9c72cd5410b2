"""Each plot kind writes a non-empty image; bad input writes nothing."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling import fit as F
from scaling import store
from scaling.laws import get_law
from scaling.plot import main

ROOT = Path(__file__).resolve().parents[1]
TRUTH = dict(A=482.01, B=2085.43, E=1.82, alpha=0.3478, beta=0.3658)


@pytest.fixture(scope="module")
def store_and_fit(tmp_path_factory):
    """An isoFLOP store generated from Besiroglu et al.'s fit: 3 budgets x 6 sizes."""
    d = tmp_path_factory.mktemp("plot")
    law = get_law("chinchilla")
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(3e7, 3e9, 6):
            tokens = c / (6 * n)
            store.write_run(d / "store", dict(run_id=f"r{c:.0e}-{n:.0f}", params=n, tokens=tokens,
                                              unique_tokens=tokens, loss=float(law.predict(TRUTH, n, tokens))))
    fit = F.fit(store.read_runs(d / "store"), want_profiles=False)
    fit.save(d / "fit.json")
    return d


@pytest.mark.parametrize("argv", [
    ["isoflop", "{d}/store", "--fit", "{d}/fit.json", "--out", "{d}/iso.png"],
    ["isoflop", "{d}/store", "--out", "{d}/iso_nofit.svg"],
    ["residuals", "{d}/store", "--fit", "{d}/fit.json", "--out", "{d}/res.png"],
    ["return-on-repetition", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--out", "{d}/ror.png"],
    ["contour", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--flops", "1e22", "--unique-tokens", "25e9",
     "--out", "{d}/contour.png"],
    ["backtest", "{d}/store", "--out", "{d}/backtest.png"],
])
def test_each_plot_kind_writes_an_image(store_and_fit, argv):
    argv = [a.format(d=store_and_fit) for a in argv]
    assert main(argv) == 0
    out = Path(argv[-1])
    assert out.stat().st_size > 5000



@pytest.mark.parametrize("argv", [
    ["bogus", "--out", "x.png"],
    ["return-on-repetition", "--fit", str(ROOT / "fits/hoffmann2022.json"), "--out", "x.png"],
    ["isoflop", "missing-dir", "--out", "x.png"],
    ["residuals", "missing-dir", "--out", "x.png"],
    ["backtest", "missing-dir", "--out", "x.png"],
    ["contour", "--fit", str(ROOT / "fits/muennighoff2023_c4.json"), "--flops", "-1", "--unique-tokens", "1e9",
     "--out", "x.png"],
])
def test_bad_input_is_one_error_line_and_no_file(tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "scaling.plot", *argv], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
