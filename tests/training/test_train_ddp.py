"""torchrun with 2 CPU processes (DDP over gloo): both ranks end with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp_two_processes(tiny_args, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        str(TORCHRUN),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).with_name("ddp_worker.py")),
        *tiny_args,
        "--output-dir",
        str(out),
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--eval-steps",
        "2",
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks), "the Trainer must see a world of 2 processes"
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), f"{name} differs between ranks"
    saved = load_file(out / "model.safetensors")
    for name, value in saved.items():
        torch.testing.assert_close(value, w0[name.removeprefix("module.")], rtol=0, atol=0)
    # Each rank saved its RNG state into the same (atomic) checkpoint.
    assert {p.name for p in (out / "checkpoint-4").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (out / "checkpoint-4" / "manifest.json").exists()
