"""A finished run's weights exported elsewhere: the store's ``_models/<run_id>/`` directory
(``runners.models.files``: ``model.safetensors`` + ``config.json``, Hugging Face's layout), copied
with the run's row so that it can be read without the store.

    python -m runners.export RUN_ID results --out exported/
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from runners.models.files import CONFIG_FILE, MODEL_FILE, load_run_model, model_dir, resolve_run_id
from scaling.cli import ArgumentParser, UsageError, run_cli, add_store_argument


def export(store, run_id: str, out) -> Path:
    """Copy a run's weights and config to ``out`` (a new or empty directory), atomically."""
    run_id = resolve_run_id(store, run_id)
    model, _ = load_run_model(store, run_id)  # validates the files before anything is written
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty directory")
    if out.exists():
        out.rmdir()
    src = model_dir(store, run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        for name in (MODEL_FILE, CONFIG_FILE):
            shutil.copy2(src / name, tmp / name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runners.export",
                       description="Export a finished run's weights (safetensors) and config (JSON).",
                       epilog="example: python -m runners.export 3f2a9c01 results --out exported/3f2a9c01",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", help="run id (or a unique prefix) in the store")
    add_store_argument(p, positional=False, default="results")
    p.add_argument("--out", required=True, help="new directory to write model.safetensors + config.json into")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = export(args.store, args.run_id, args.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
