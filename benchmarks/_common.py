"""Helpers shared by the benchmarks: the environment a result came from, and writing results to disk."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent.parent
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken optional packages
        return "not installed"
    return getattr(mod, "__version__", "unknown")


def environment_info() -> dict:
    """Versions, git commit and machine description to store next to every result."""
    dirty = _git("status", "--porcelain")
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty != "unknown" else "unknown",
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "ml_dtypes": _version("ml_dtypes"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
    }


def write_results(name: str, rows: list[dict], meta: dict) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` (meta + rows) and ``results/<name>.md`` (meta list + table)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = [f"# {name}", ""] + [f"- **{k}**: {v}" for k, v in meta.items()] + [""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
