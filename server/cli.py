"""`kvsplice` command line: complete, models, serve, bench."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsplice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list or prepare packaged models")
    args = parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
