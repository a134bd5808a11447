"""torchrun with 2 CPU processes (DDP over gloo): both ranks end with identical weights; with ZeRO-1 the
optimizer state is sharded, the weights are the same as without it, and a consolidated checkpoint resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.torchrun import run_two_processes
from tests.helpers.training import TINY_MODEL, TINY_MQAR


def torchrun(out: Path, *flags: str, steps: int = 4) -> list[dict]:
    """A 2-process run of the tiny MQAR setting into ``out``; returns each rank's final weights record."""
    run_two_processes(
        Path(__file__).with_name("ddp_worker.py"),
        *TINY_MQAR,
        *TINY_MODEL,
        *("--output-dir", str(out), "--max-steps", str(steps), "--save-steps", "2", "--eval-steps", "2"),
        *flags,
    )
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=f"{name} differs")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, torchrun(out)


def test_torchrun_ddp_two_processes(ddp_run):
    out, ranks = ddp_run
    assert all(r["world_size"] == 2 for r in ranks), "the Trainer must see a world of 2 processes"
    assert_same_weights(ranks[0]["weights"], ranks[1]["weights"])
    saved = load_file(out / "model.safetensors")
    for name, value in saved.items():  # (a tied lm_head is not saved twice)
        torch.testing.assert_close(value, ranks[0]["weights"][name.removeprefix("module.")], rtol=0, atol=0)
    # Each rank saved its RNG state into the same (atomic) checkpoint.
    assert {p.name for p in (out / "checkpoint-4").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (out / "checkpoint-4" / "manifest.json").exists()


def test_zero1_matches_ddp_and_resumes(ddp_run, tmp_path):
    ddp_out, ddp_ranks = ddp_run
    out = tmp_path / "zero1"
    ranks = torchrun(out, "--zero1")
    assert_same_weights(ranks[0]["weights"], ranks[1]["weights"])
    # Each rank holds the AdamW moments of its share only; together, of every parameter.
    total = ddp_ranks[0]["parameters_with_state"]
    assert ddp_ranks[0]["optimizer"] == "AdamW" and ranks[0]["optimizer"] == "ZeRO1AdamW"
    shares = [r["parameters_with_state"] for r in ranks]
    assert all(0 < s < total for s in shares) and sum(shares) == total, (shares, total)
    # Same gradients (DDP all-reduce), same AdamW arithmetic per parameter: only the ownership moved.
    assert_same_weights(ranks[0]["weights"], ddp_ranks[0]["weights"], atol=1e-6)

    # The checkpoint holds the consolidated state of every parameter (not rank 0's shard).
    state = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=False)
    ddp_state = torch.load(ddp_out / "checkpoint-4" / "optimizer.pt", weights_only=False)
    assert state["state"].keys() == ddp_state["state"].keys()
    for index, moments in state["state"].items():
        torch.testing.assert_close(moments["exp_avg"], ddp_state["state"][index]["exp_avg"], rtol=0, atol=1e-6)

    # Resuming from step 2 under ZeRO-1 ends where the uninterrupted run ended.
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    again = torchrun(resumed, "--zero1", "--resume")
    assert_same_weights(again[0]["weights"], ranks[0]["weights"], atol=1e-6)
