"""Console scripts (``scaling-fit``, ``scaling-predict``, ...): the same ``main`` as ``python -m``,
behind the same error handling (``scaling.cli.run_cli``). Modules are imported when a script runs."""

from __future__ import annotations

import importlib


def entry(module: str):
    """A console-script callable running ``module.main`` as ``python -m module`` would."""
    def run() -> int:
        from scaling.cli import run_cli
        return run_cli(importlib.import_module(module).main)
    run.__name__ = module.rsplit(".", 1)[-1].replace("__main__", "datasets")
    return run


fit = entry("scaling.fit")
predict = entry("scaling.predict")
plot = entry("scaling.plot")
store = entry("scaling.store")
backtest = entry("scaling.backtest")
mixture = entry("scaling.mixture")
downstream = entry("scaling.downstream")
design = entry("scaling.design")
datasets = entry("scaling.datasets.__main__")
