"""``python -m scaling.store``: import, show, check, compact."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scaling.cli import ArgumentParser, UsageError, add_store_argument
from scaling import columns as cols
from scaling.store.check import QUARANTINE, check, quarantine
from scaling.store.runs import compact, read_runs
from scaling.store.side import read_checkpoint_evals
from scaling.store.tables import import_table, summarise


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m scaling.store", description="Import into and inspect a results store.",
        epilog="example:\n  python -m scaling.store import runs.csv results/ "
               "--column params='Model Size' --column flops='Training FLOP'\n"
               "  python -m scaling.store show results/ --json\n"
               "  python -m scaling.store show results/ --checkpoints\n"
               "  python -m scaling.store check results/ --repair\n"
               "  python -m scaling.store compact results/")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CSV or Parquet table, one run per row")
    imp.add_argument("file")
    add_store_argument(imp, positional=False, default="results")
    imp.add_argument("--column", action="append", default=[], metavar="CANON=THEIRS")
    show = sub.add_parser("show", help="summarise a store")
    add_store_argument(show, positional=True, help="store directory")
    show.add_argument("--json", action="store_true")
    show.add_argument("--checkpoints", action="store_true",
                      help="the runs' scored checkpoints (evaluation along training: --eval-every) instead of the runs")
    chk = sub.add_parser("check", help="list unreadable run files (torn, empty, foreign) and type conflicts")
    add_store_argument(chk, positional=True, help="store directory")
    chk.add_argument("--json", action="store_true")
    chk.add_argument("--repair", action="store_true",
                     help="move the unreadable files into _quarantine/ (kept, out of every reader's way)")
    cmp = sub.add_parser("compact", help="merge run files and side files into one segment file (fast reads at 10k+ runs)")
    add_store_argument(cmp, positional=True, help="store directory")
    cmp.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "import":
        from scaling.cli import check_writable
        check_writable(args.store, "store")          # a file, a link loop or a read-only place: one line, first
        n = import_table(args.file, args.store, cols.parse_mapping(args.column))
        print(f"imported {n} new run(s) into {args.store}")
        return 0
    args.store = args.source
    if not Path(args.store).is_dir():
        raise UsageError(f"store {args.store!r} is not a directory")
    if args.command == "compact":
        report = compact(args.store)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"{args.store}: {report['runs']} run(s) in {report['segment']} (absorbed {report['run_files']} run "
                  f"file(s), {report['segments']} segment(s), {report['updates']} side file(s))")
        return 0
    if args.command == "check":
        report = check(args.store)
        if args.repair and report["bad"]:
            report["quarantined"] = quarantine(args.store, [b["file"] for b in report["bad"]])
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"{args.store}: {report['files']} file(s) ({report['run_files']} run file(s), {report['segments']} "
                  f"segment(s), {report['updates']} side file(s)), {report['readable']} readable")
            for b in report["bad"]:
                print(f"  {b['file']}: {b['problem']}")
            for c in report["conflicts"]:
                print(f"  column {c['column']}: conflicting types " + "; ".join(f"{t} in {', '.join(v)}" for t, v in c["types"].items()))
            if report.get("quarantined"):
                print(f"  moved {len(report['quarantined'])} file(s) into {Path(args.store) / QUARANTINE}/")
            if not report["bad"] and not report["conflicts"]:
                print("  all run files readable, one schema")
        left = [b for b in report["bad"] if b["file"] not in set(report.get("quarantined", []))]
        return 1 if left or report["conflicts"] else 0
    if args.checkpoints:
        table = read_checkpoint_evals(args.store)
        if args.json:
            print(json.dumps(json.loads(table.to_json(orient="records")), indent=1))
            return 0
        print(f"{len(table)} scored checkpoint(s) of {table['run_id'].nunique() if len(table) else 0} run(s) in {args.store}")
        if len(table):
            shown = [c for c in table.columns if c in ("run_id", "step", "tokens", "params", "loss")
                     or (c.startswith("eval.") and c.endswith((".acc", ".bpb")))]
            with pd.option_context("display.width", 160, "display.max_rows", 200):
                print(table[shown].to_string(index=False))
        return 0
    runs = read_runs(args.store)
    if args.json:
        print(json.dumps(json.loads(runs.to_json(orient="records")), indent=1))
        return 0
    s = summarise(runs)
    print(f"{s['runs']} run(s) in {args.store}: " + ", ".join(f"{k}={v}" for k, v in s["status"].items()))
    show = [c for c in ("run_id", "params", "tokens", "unique_tokens", "flops", "loss", "status") if c in runs]
    if len(runs):
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            print(runs[show].to_string(index=False))
    return 0
