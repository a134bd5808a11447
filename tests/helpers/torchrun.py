"""Launch a test program under ``torchrun`` with 2 CPU processes (gloo), as the distributed tests do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(script: Path, *args: str, timeout: float = 300) -> None:
    """Run ``script`` with ``args`` on 2 ranks (one thread each) from the repository root; fail with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port()), str(script), *args]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
