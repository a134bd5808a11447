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
    # Results and the results page (docs/results.md) are what the suite itself writes as it goes: changes there
    # do not make the measured code differ from the commit.
    dirty = _git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results", ":(exclude)docs/results.md")
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty != "unknown" else "unknown",
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "ml_dtypes": _version("ml_dtypes"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_threads": _torch_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else "unknown",
    }


def _torch_threads() -> int | str:
    try:
        import torch
    except Exception:  # noqa: BLE001
        return "unknown"
    return torch.get_num_threads()


def run_worker(module: str, job: dict, threads: int, timeout: float = 3600) -> dict:
    """Run ``python -m <module> --worker '<job json>'`` with ``threads`` CPU threads in a fresh process (its
    peak memory is its own) and return the JSON dict it prints on its last stdout line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", module, "--worker", json.dumps({**job, "threads": threads})]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                         cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    if out.returncode != 0:
        return {**job, "threads": threads, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory, MB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now, MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


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
    if isinstance(v, list):  # e.g. a learning curve, [{"step": 250, "accuracy": 0.2}, ...] -> "250: 0.2, ..."
        return ", ".join(
            ": ".join(_fmt(x) for x in item.values()) if isinstance(item, dict) else _fmt(item) for item in v
        )
    return f"{v:.4g}" if isinstance(v, float) else str(v)
