"""Golden files (cutadapt's habit): the texts people read — the fit summary on the Epoch data, the
``2b8`` dry run, ``scaling.store show`` and a mixture fit's summary — are diffed whole against
``tests/golden/``, so a changed column, a lost line or a reworded note fails here.

Numbers are compared to 3 significant figures (both sides rounded the same way), so that the last
digits an optimiser or a BLAS build moves on another CPU do not fail the test, while a number that
changes its meaning does. The dry run's "time here" is machine-dependent: the test pins it
(``SCALING_FLOPS_PER_S``, ``SCALING_PER_TOKEN_S``).

To refresh the files on purpose, after checking the new output is right:

    SCALING_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py -p no:cacheprovider
    git diff tests/golden/
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from scaling.cli import run_cli

GOLDEN = Path(__file__).resolve().parent / "golden"
NUMBER = re.compile(r"(?<![\w.])[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")


def rounded(text: str) -> str:
    """Every number in ``text`` at 3 significant figures (ids, names and words untouched)."""
    def fix(m):
        try:
            v = float(m.group(0))
        except ValueError:
            return m.group(0)
        return f"{v:.3g}"
    return "\n".join(NUMBER.sub(fix, line.rstrip()) for line in text.strip().splitlines())


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SCALING_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text.rstrip() + "\n")
        return
    assert path.exists(), f"no golden file {path}: run with SCALING_UPDATE_GOLDEN=1 to write it"
    want, got = rounded(path.read_text()), rounded(text)
    if want != got:
        diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), f"golden/{name}", "now", lineterm=""))
        pytest.fail(f"output differs from tests/golden/{name} (numbers at 3 significant figures):\n{diff}\n"
                    f"if the change is meant: SCALING_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py")


def _stdout(capsys, main, argv) -> str:
    capsys.readouterr()
    assert run_cli(main, argv) == 0
    return capsys.readouterr().out


def test_the_fit_summary_on_the_epoch_data(capsys):
    from scaling.fit import main
    check_golden("fit_epoch.txt", _stdout(capsys, main, ["dataset:epoch-chinchilla"]))


def test_the_2b8_dry_run(capsys, monkeypatch):
    from runners.isoflop import main
    monkeypatch.setenv("SCALING_FLOPS_PER_S", "1e10")
    monkeypatch.setenv("SCALING_PER_TOKEN_S", "1e-5")
    check_golden("isoflop_2b8_dry_run.txt", _stdout(capsys, main, ["--budget", "2b8", "--dry-run"]))


def test_store_show(capsys, tmp_path):
    from scaling import store
    for i in range(3):
        store.write_run(tmp_path / "s", {"run_id": f"r{i}", "params": 1e6 * (i + 1), "tokens": 2e7,
                                         "loss": 3.0 - 0.1 * i, "shape": "t32", "status": "ok"})
    store.write_run(tmp_path / "s", {"run_id": "r3", "params": 4e6, "tokens": 2e7, "loss": float("nan"),
                                     "shape": "t32", "status": "failed"})
    text = _stdout(capsys, store.main, ["show", str(tmp_path / "s")])
    check_golden("store_show.txt", text.replace(str(tmp_path / "s"), "STORE"))


def test_a_mixture_fit_summary(capsys):
    from scaling.mixture import main
    check_golden("mixture_summary.txt", _stdout(capsys, main, ["fit", "dataset:example-mixtures", "--model", "law",
                                                               "--bootstrap", "0"]))


def test_the_comparison_ignores_last_digits_but_not_meaning():
    assert rounded("loss 2.91234 at 1.000e+06") == rounded("loss 2.91201 at 1e6")
    assert rounded("loss 2.91") != rounded("loss 2.95")
    assert rounded("run r12 of t32") == "run r12 of t32"                  # names with digits are kept
