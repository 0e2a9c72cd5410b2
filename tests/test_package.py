"""A package that stands on its own: nothing read outside the repository, presets and datasets
served by a non-editable install (the wheel's own files), console scripts, one store argument."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scaling.results import FitResult

REPO = Path(__file__).resolve().parents[1]


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    for name in out.stdout.split():
        path = REPO / name
        if path.suffix in {".py", ".md", ".toml", ".ipynb", ".sh", ".cfg", ".txt", ".yaml"} or path.name == "run":
            yield name, path.read_text(errors="replace")


def test_no_tracked_file_points_outside_the_repository():
    pattern = re.compile(r"\.\./shared|/home/[a-z]|" + "/" + "work/|" + "/" + "root/")  # split: not to match itself
    hits = [f"{name}:{i + 1}" for name, text in _tracked_text_files()
            for i, line in enumerate(text.splitlines()) if pattern.search(line)]
    assert hits == []


def test_presets_load_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit = FitResult.load("hoffmann2022")
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.01)
    assert FitResult.load("fits/muennighoff2023_c4.json").law == "data-constrained"
    with pytest.raises(Exception, match="presets by name: besiroglu2024, hoffmann2022"):
        FitResult.load("no-such-fit")


def test_the_wheel_serves_presets_and_datasets(tmp_path):
    """Build the wheel from the tracked files alone (a fresh clone: no build/ left over; no network,
    no isolation), unpack it, and run the CLIs from its files only, outside the repository: what a
    non-editable ``pip install .`` gives a user."""
    clone = tmp_path / "clone"
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(clone)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("scaling_toolkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fits/hoffmann2022.json" in names
    assert "scaling/datasets/data/epoch_chinchilla.csv.gz" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    entry_points = (site / next(n for n in names if n.endswith("entry_points.txt"))).read_text()
    assert "scaling-fit = scaling.scripts:fit" in entry_points
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = tmp_path / "elsewhere"
    run.mkdir()
    alloc = subprocess.run([sys.executable, "-m", "scaling.predict", "allocate", "--fit", "hoffmann2022",
                            "--flops", "1e22"], capture_output=True, text=True, cwd=run, env=env)
    assert alloc.returncode == 0, alloc.stderr
    assert 5e9 < json.loads(alloc.stdout)["params"] < 6e9
    where = subprocess.run([sys.executable, "-c", "import scaling; print(scaling.__file__)"],
                           capture_output=True, text=True, cwd=run, env=env)
    assert where.stdout.startswith(str(site))
    show = subprocess.run([sys.executable, "-m", "scaling.datasets", "show", "epoch-chinchilla"],
                          capture_output=True, text=True, cwd=run, env=env)
    assert show.returncode == 0 and "245" in show.stdout


def _script(name: str) -> str | None:
    """A console script where this interpreter installs them (a virtualenv's bin need not be on PATH)."""
    import sysconfig
    here = Path(sysconfig.get_path("scripts")) / name
    return str(here) if here.exists() else shutil.which(name)


def test_console_scripts_are_installed_and_run():
    exe = _script("scaling-predict")
    assert exe, "scaling-predict is not installed: pip install -e ."
    out = subprocess.run([exe, "allocate", "--fit", "hoffmann2022", "--flops", "1e22"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["tokens"] > 1e11
    bad = subprocess.run([_script("scaling-fit"), "--no-such-flag"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    down = subprocess.run([_script("scaling-downstream"), "--help"], capture_output=True, text=True)
    assert down.returncode == 0 and down.stdout.splitlines()[-1].strip().startswith("python -m scaling.downstream")


@pytest.mark.parametrize("argv", [["show", "STORE"], ["show", "--store", "STORE"]])
def test_store_show_takes_the_store_either_way(tmp_path, argv):
    from scaling import store
    (tmp_path / "s").mkdir()
    argv = [str(tmp_path / "s") if a == "STORE" else a for a in argv]
    assert store.main(argv) == 0


def test_grid_clis_take_the_store_either_way_and_refuse_two(tmp_path, capsys):
    from runners.grid import isoflop
    from scaling.cli import run_cli
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(isoflop.main, ["--budget", "smoke", a, "--dry-run", "--json"]) == 0
    positional = json.loads(capsys.readouterr().out)
    assert run_cli(isoflop.main, ["--budget", "smoke", "--store", a, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == positional
    assert run_cli(isoflop.main, ["--budget", "smoke", a, "--store", b, "--dry-run"]) == 2
    assert "two stores given" in capsys.readouterr().err


def test_fit_takes_the_source_either_way(capsys):
    from scaling import fit
    from scaling.cli import run_cli
    argv = ["--no-profiles", "--variant", "free", "--json"]
    assert run_cli(fit.main, ["dataset:epoch-chinchilla", *argv]) == 0
    one = json.loads(capsys.readouterr().out)
    assert run_cli(fit.main, ["--store", "dataset:epoch-chinchilla", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == one["params"]
