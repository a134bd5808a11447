"""``bmojo-nki-lint PATH...`` (or ``python -m nki_kernels.lint``): exit 1 and list the violations, or print a one-line OK."""

from __future__ import annotations

import argparse
import sys

from .checker import lint_paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bmojo-nki-lint", description=__doc__)
    ap.add_argument("paths", nargs="+", help="kernel modules or directories")
    args = ap.parse_args(argv)
    violations = lint_paths(args.paths)
    for v in violations:
        print(v)
    if violations:
        print(f"nki lint: {len(violations)} violation(s)", file=sys.stderr)
        return 1
    print(f"nki lint: OK ({', '.join(args.paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
