"""``python -m scaling.datasets list | show NAME | export NAME --out FILE``."""

from __future__ import annotations

import sys
from scaling.cli import ArgumentParser, UsageError, run_cli
from scaling.datasets import DATASETS, get, load


def _parser():
    p = ArgumentParser(prog="python -m scaling.datasets",
                       description="Public reference data shipped with the package (source and citation each).",
                       epilog="examples:\n  python -m scaling.datasets list\n"
                              "  python -m scaling.datasets show llama3-isoflops\n"
                              "  python -m scaling.datasets export epoch-chinchilla --out chinchilla.csv\n"
                              "  python -m scaling.fit dataset:epoch-chinchilla --column params='Model Size' "
                              "--column flops='Training FLOP' --exclude-top 5 --variant free")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per dataset")
    s = sub.add_parser("show", help="source, citation, licence, columns and the first rows")
    s.add_argument("name")
    e = sub.add_parser("export", help="write the dataset as CSV or Parquet")
    e.add_argument("name")
    e.add_argument("--out", required=True, metavar="FILE.csv|FILE.parquet")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for d in DATASETS.values():
            print(f"{d.name:<24} {d.description}")
        return 0
    d = get(args.name)
    if args.command != "show":
        from scaling.store import table_format
        table_format(args.out)
    table = load(d.name)
    if args.command == "show":
        print(f"{d.name}: {d.description}\nrows: {len(table)}\ncitation: {d.citation}\nsource: {d.source}\n"
              f"licence: {d.licence}\ncolumns: {d.columns}\n")
        print(table.head(8).to_string())
        return 0
    from scaling.store import write_table_file
    out = write_table_file(table, args.out)
    print(f"wrote {len(table)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
