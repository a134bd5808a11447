"""Name every installed distribution whose version differs from the lock file, and the ones the lock lacks.

Run with the interpreter of the environment to check (``make test-latest`` runs it in ``.venv-latest``):

    python tools/lock_drift.py requirements.lock

It only reports; the exit code is 0 unless the lock cannot be read. A failing drift run prints this list
again at the end, so the package that moved is named next to the failure.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a pip-compile lock."""
    pins = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path}: no 'name==version' lines; is it a lock file?")
    return pins


def installed() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[_canonical(name)] = dist.version
    return found


def drift(lock: dict[str, str], env: dict[str, str], ignore: set[str]) -> list[str]:
    """One line per difference, sorted: changed versions first, then packages the lock does not have."""
    changed = [
        f"{name} {env[name]} (lock: {lock[name]})"
        for name in sorted(lock)
        if name in env and env[name] != lock[name] and name not in ignore
    ]
    missing_in_lock = [
        f"{name} {env[name]} (not in the lock)" for name in sorted(env) if name not in lock.keys() | ignore
    ]
    return changed + missing_in_lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="the lock file (requirements.lock)")
    parser.add_argument("--title", default="differs from the lock", help="heading printed above the list")
    args = parser.parse_args(argv)
    try:
        lock = read_lock(args.lock)
    except (OSError, ValueError) as exc:
        print(f"lock_drift: {exc}", file=sys.stderr)
        return 2
    # The project itself and the installers are not part of the lock.
    lines = drift(lock, installed(), ignore={"bmojo-neuron", "pip", "setuptools", "wheel"})
    print(f"== {len(lines)} installed package(s) {args.title}:")
    for line in lines:
        print(f"   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
