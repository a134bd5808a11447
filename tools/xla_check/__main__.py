"""``python -m tools.xla_check``: the gate for the Trainium path, on PyTorch/XLA's CPU device.

Trainium runs PyTorch through XLA: the ops of a step are traced lazily, compiled into one graph and run
when the step is marked (``torch_xla.sync()``). A model that recompiles every step, reads tensors on the
host inside the step or falls back to CPU ops is unusable there, and none of that shows in eager tests.
PyTorch/XLA 2.9 (the last release Neuron trains with) runs the same lazy-tensor path on the CPU
(``PJRT_DEVICE=CPU``), so this checks it for real, from ``torch_xla.debug.metrics``:

1. ``no-recompile``: after the warm-up steps, no step compiles a graph;
2. ``one-graph``: after the warm-up steps, each step executes exactly one graph;
3. ``no-host-transfer``: no step copies data from the device to the host;
4. ``no-fallback``: no ``aten::*`` op falls back to the CPU (except :data:`FALLBACK_ALLOWED`);
5. ``matches-eager``: the XLA run gives the eager CPU run's losses / logits (same seed, same torch).

for two workloads (:mod:`.steps`): ``train``, 8 optimizer steps of a hybrid with every layer
type, and ``decode``, a prefill at one bucket then single-token steps with the cache as explicit tensors.
Then the training entry point itself runs on XLA (:mod:`.trainer_runs`): the HF Trainer's
XLA path with checkpoints, ZeRO-1 against AdamW, and ZeRO-1 stopped and resumed (rules
``trainer-route``, ``clipping-binds``, ``zero1-matches-adamw``, ``zero1-no-all-reduce``,
``zero1-resume-exact``).
It prints a short report and exits 1 on any violation, naming the rule and where to look. Run it with
``make xla-check`` (which builds ``.venv-xla`` with torch 2.9 + torch-xla 2.9).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from bmojo_neuron import ops
from tools.xla_check import steps, trainer_runs

TRAIN_STEPS = 8
# Step 1 compiles the graph that also creates the optimizer state; step 2 the steady-state graph, which
# takes that state as inputs. From step 3 on nothing may compile.
TRAIN_WARMUP = 2
# The first decode step compiles the decode graph (the prefill graph is compiled before it); the next 16
# may not compile.
DECODE_WARMUP, DECODE_CHECKED = 1, 16

# fp32 on both sides; XLA fuses and orders reductions differently from eager, and 8 AdamW steps carry
# that rounding forward. Measured: 1.4e-6 (losses), 1.3e-7 (logits). The bugs this caught moved the loss
# by 1e-3 to 1e-1 within 3 steps (untied embeddings: 1e-1 on a gradient; wrong SSM dt/A gradients: 4e-3).
LOSS_ATOL = 1e-4
LOGITS_ATOL = 1e-4

# aten op -> why it may fall back to the CPU. Empty: every op of both steps lowers to XLA.
FALLBACK_ALLOWED: dict[str, str] = {}

WHERE_TO_LOOK = {
    "no-recompile": "a shape, dtype or Python scalar that changes between steps (data-dependent shapes, "
    "Python ints read from tensors, a growing cache). Rerun with PT_XLA_DEBUG_LEVEL=2 for each "
    "compilation's cause and Python frame.",
    "one-graph": "a step cut in several graphs: a host read in the middle of the step (.item(), print, "
    "`if tensor:`) or an explicit sync. Rerun with PT_XLA_DEBUG_LEVEL=2: the execution analysis names the "
    "Python frame that triggered each graph.",
    "no-host-transfer": "a device-to-host copy inside the step: .item(), .tolist(), .cpu(), int(t), "
    "print(t), data-dependent Python control flow. The main test suite's guard "
    "(tests/training/test_no_host_sync.py, tools/xla_check/host_sync.py) names the op on the CPU.",
    "no-fallback": "an aten op with no XLA lowering, run on the CPU (a device round trip per call; "
    "aten::_local_scalar_dense is .item()). Replace "
    "it with ops that lower, or add it to FALLBACK_ALLOWED in tools/xla_check/__main__.py with the reason.",
    "matches-eager": "an op that computes differently under XLA. Compare per layer with the eager CPU model "
    "(tools/xla_check/steps.py builds both from one seed).",
    "trainer-route": "python -m training.train --device xla failed or saved an incomplete checkpoint; rerun the "
    "arguments of tools/xla_check/trainer_runs.py by hand with PJRT_DEVICE=CPU.",
    "clipping-binds": "the tiny run's gradients are below max_grad_norm, so the ZeRO-1 comparison would not test "
    "clipping: lower MAX_GRAD_NORM in tools/xla_check/trainer_runs.py.",
    "zero1-matches-adamw": "BMojoTrainer's XLA ZeRO-1 path (training/trainer.py: _clip_grad_norm, _get_grad_norm) "
    "or training/zero1.py:sharded_xla: clipping, learning rate or weight decay reach the sharded step differently.",
    "zero1-no-all-reduce": "accelerate all-reduced the gradients before the ZeRO-1 step (double traffic): "
    "BMojoTrainer._get_grad_norm must mark them synced; or the AdamW run no longer all-reduces once per step.",
    "zero1-resume-exact": "the optimizer shard file (BMojoTrainer._save_xla_shards / _load_optimizer_and_scheduler) "
    "does not hold or restore the whole state (moments, step, master weights), or the scheduler.",
}


# ----------------------------------------------------------------------------------------------- metrics


@dataclass
class Snapshot:
    """Cumulative XLA metrics at one point of the run (a step's numbers are differences of two)."""

    compiles: int
    executions: int
    to_host: int
    fallbacks: dict[str, int]
    time: float

    def __sub__(self, before: Snapshot) -> Snapshot:
        fallbacks = {k: v - before.fallbacks.get(k, 0) for k, v in self.fallbacks.items()}
        return Snapshot(
            self.compiles - before.compiles,
            self.executions - before.executions,
            self.to_host - before.to_host,
            {k: v for k, v in fallbacks.items() if v},
            self.time - before.time,
        )


def _samples(met, name: str) -> int:
    """Number of samples of a metric (0 before its first sample: it does not exist yet)."""
    data = met.metric_data(name)
    return 0 if data is None else int(data[0])


def snapshot() -> Snapshot:
    import torch_xla.core.xla_model as xm
    import torch_xla.debug.metrics as met

    xm.wait_device_ops()  # execution is asynchronous: wait, so that the time covers the step's work
    return Snapshot(
        compiles=_samples(met, "CompileTime"),
        executions=_samples(met, "ExecuteTime"),
        to_host=_samples(met, "TransferFromDeviceTime"),
        fallbacks={name: met.counter_value(name) for name in met.executed_fallback_ops()},
        time=time.perf_counter(),
    )


@dataclass
class Violation:
    rule: str
    where: str
    detail: str


def check_steps(phase: str, deltas: list[Snapshot], warmup: int) -> list[Violation]:
    """Rules 1-4 on per-step metric differences; ``deltas[i]`` is step ``i + 1``."""
    found = []
    for i, d in enumerate(deltas, start=1):
        where = f"{phase} step {i}"
        if i > warmup and d.compiles:
            found.append(Violation("no-recompile", where, f"{d.compiles} compilation(s) after {warmup} warm-up steps"))
        if i > warmup and d.executions != 1:
            found.append(Violation("one-graph", where, f"{d.executions} graphs executed (expected 1)"))
        if d.to_host:
            found.append(Violation("no-host-transfer", where, f"{d.to_host} device-to-host transfer(s)"))
        for op, n in d.fallbacks.items():
            if op not in FALLBACK_ALLOWED:
                found.append(Violation("no-fallback", where, f"{op} ran on the CPU {n} time(s)"))
    return found


# ----------------------------------------------------------------------------------------------- workloads


@dataclass
class PhaseResult:
    name: str
    deltas: list[Snapshot]
    warmup: int
    max_diff: float
    tolerance: float
    what: str  # what was compared with the eager run
    violations: list[Violation]


def probe(device) -> list[Violation]:
    """The metrics this check reads exist and move: a deliberate compile and host read must show.

    Guards against a torch-xla version that renamed them, which would make every rule pass vacuously.
    """
    import torch_xla

    before = snapshot()
    x = torch.arange(4.0, device=device) * 3
    torch_xla.sync()
    x.sum().item()  # one device-to-host transfer
    d = snapshot() - before
    if d.compiles < 1 or d.to_host < 1:
        return [
            Violation(
                "no-host-transfer",
                "probe",
                f"a deliberate compile and .item() gave compiles={d.compiles}, to_host={d.to_host}: the metric "
                "names (CompileTime, ExecuteTime, TransferFromDeviceTime) changed in this torch-xla",
            )
        ]
    return []


def run_train(device, inject: str | None = None) -> PhaseResult:
    import torch_xla

    cpu_model = steps.build_model(steps.TRAIN_LAYERS)
    xla_model = steps.to_device(copy.deepcopy(cpu_model), device)  # same initial weights
    xla_opt = steps.make_optimizer(xla_model)  # after the move, as the HF Trainer requires on XLA
    batches = steps.make_batches(TRAIN_STEPS, cpu_model.config.vocab_size)
    if inject == "host-sync":  # a host read in the middle of the model, on the XLA model only

        def read_on_host(module, inputs, output) -> None:
            output[0].sum().item()

        xla_model.model.layers[2].register_forward_hook(read_on_host)
    elif inject == "recompile":  # a new sequence length every step, on both sides
        batches = [{k: v[:, : steps.SEQ - i] for k, v in b.items()} for i, b in enumerate(batches)]

    losses, snaps = [], [snapshot()]
    for batch in batches:
        on_device = {k: v.to(device) for k, v in batch.items()}  # host-to-device only: allowed
        losses.append(steps.train_step(xla_model, xla_opt, on_device))
        torch_xla.sync()  # the step boundary: one graph per step (the Trainer's data loader does this)
        snaps.append(snapshot())
    deltas = [b - a for a, b in zip(snaps, snaps[1:])]
    xla_losses = torch.stack(losses).cpu()  # read once, after the measured steps

    cpu_opt = steps.make_optimizer(cpu_model)
    cpu_losses = torch.stack([steps.train_step(cpu_model, cpu_opt, b) for b in batches])
    diff = (xla_losses - cpu_losses).abs()
    violations = check_steps("train", deltas, TRAIN_WARMUP)
    if not bool(diff.max() <= LOSS_ATOL):
        violations.append(
            Violation(
                "matches-eager",
                "train",
                f"losses differ by up to {diff.max():.2e} (> {LOSS_ATOL:g}); xla {xla_losses.tolist()} vs "
                f"eager {cpu_losses.tolist()}",
            )
        )
    what = f"loss at steps 1-{TRAIN_STEPS} (step {TRAIN_STEPS}: xla {xla_losses[-1]:.6f}, eager {cpu_losses[-1]:.6f})"
    return PhaseResult("train", deltas, TRAIN_WARMUP, float(diff.max()), LOSS_ATOL, what, violations)


def run_decode(device) -> PhaseResult:
    import torch_xla

    cpu_model = steps.build_model(steps.DECODE_LAYERS, seed=1).eval()
    xla_model = steps.to_device(copy.deepcopy(cpu_model), device)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cpu_model.config.vocab_size, (steps.BATCH, steps.PROMPT), generator=gen)
    n_steps = DECODE_WARMUP + DECODE_CHECKED

    snaps = [snapshot()]

    def mark_step(_: int) -> None:
        torch_xla.sync()
        snaps.append(snapshot())

    xla_logits = steps.greedy_decode(xla_model, prompt.to(device), n_steps, mark_step)
    deltas = [b - a for a, b in zip(snaps[1:], snaps[2:])]  # decode steps only (snaps[1] is after prefill)
    xla_logits = torch.stack(xla_logits).cpu()
    cpu_logits = torch.stack(steps.greedy_decode(cpu_model, prompt, n_steps))
    diff = (xla_logits - cpu_logits).abs().max()
    same_tokens = bool((xla_logits.argmax(-1) == cpu_logits.argmax(-1)).all())

    violations = check_steps("decode", deltas, DECODE_WARMUP)
    if deltas and deltas[0].compiles > 1:
        violations.append(Violation("no-recompile", "decode step 1", f"{deltas[0].compiles} compilations (expected 1)"))
    if not (bool(diff <= LOGITS_ATOL) and same_tokens):
        violations.append(
            Violation(
                "matches-eager",
                "decode",
                f"logits differ by up to {diff:.2e} (> {LOGITS_ATOL:g}) or greedy tokens differ ({same_tokens=})",
            )
        )
    what = f"logits of {n_steps} StaticBMojo.decode steps after a {steps.PROMPT}-token prefill (same tokens: {same_tokens})"
    return PhaseResult("decode", deltas, DECODE_WARMUP, float(diff), LOGITS_ATOL, what, violations)


# ----------------------------------------------------------------------------------------------- report


def report(result: PhaseResult) -> None:
    d, w = result.deltas, result.warmup
    steady = d[w:]
    per_step = statistics.median(s.time for s in steady) if steady else float("nan")
    fallbacks = sorted({op for s in d for op in s.fallbacks})
    print(f"{result.name}: {len(d)} steps ({w} warm-up)")
    print(f"  compilations per step:   {[s.compiles for s in d]}")
    print(f"  graphs executed per step: {[s.executions for s in d]}")
    print(f"  device-to-host transfers: {sum(s.to_host for s in d)}")
    print(f"  aten fallbacks:           {fallbacks or 'none'}")
    print(f"  seconds per step:         {per_step:.3f} after warm-up (warm-up: {[round(s.time, 2) for s in d[:w]]})")
    print(f"  vs eager CPU:             max |diff| {result.max_diff:.2e} <= {result.tolerance:g}: {result.what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.xla_check", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--inject",
        choices=("host-sync", "recompile"),
        help="break the training step on purpose (a .item() inside the model, or a new shape every step) "
        "to see the check fail",
    )
    args = parser.parse_args(argv)
    if os.environ.get("PJRT_DEVICE") is None:
        os.environ["PJRT_DEVICE"] = "CPU"  # before torch_xla initialises its runtime
    try:
        import torch_xla
    except ImportError as e:
        print(f"xla-check: torch_xla does not import ({e}); run `make xla-check`, which builds .venv-xla")
        return 2
    import torch_xla.debug.metrics as met

    device = torch_xla.device()
    impls = {op: ops.resolve(op, torch.empty(0, device=device)).__name__ for op in ("ssd_scan", "bmojo_attention")}
    print(
        f"xla-check: torch {torch.__version__}, torch_xla {torch_xla.__version__}, "
        f"PJRT_DEVICE={os.environ['PJRT_DEVICE']}, device {device}, kernels {ops.kernel_mode()} -> {impls}"
    )
    met.clear_all()
    violations = probe(device)
    results = [run_train(device, args.inject), run_decode(device)]
    for result in results:
        report(result)
        violations += result.violations
    print("trainer: python -m training.train --device xla (tiny MQAR, 3 runs)")
    for check in trainer_runs.run_checks():
        print(f"  {check.rule}: {'ok' if check.ok else 'FAILED'}: {check.detail}")
        if not check.ok:
            violations.append(Violation(check.rule, "trainer", check.detail))
    if violations:
        print(f"\nxla-check: FAILED, {len(violations)} violation(s):")
        for rule, hint in WHERE_TO_LOOK.items():
            broken = [v for v in violations if v.rule == rule]
            if broken:
                print(f"  rule {rule}:")
                for v in broken[:6]:
                    print(f"    {v.where}: {v.detail}")
                if len(broken) > 6:
                    print(f"    ... and {len(broken) - 6} more")
                print(f"    where to look: {hint}")
        print("\n" + met.short_metrics_report())
        return 1
    print(
        "xla-check: OK (no recompiles after warm-up, one graph per step, no host transfers, no fallbacks; "
        "the Trainer route trains, checkpoints, and resumes with ZeRO-1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
