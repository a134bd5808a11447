"""The command-line tools answer at once: arguments are parsed before torch, transformers, datasets or the
model are imported; every option is documented with its default; every program the help names is installed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIS = ["training.train", "inference.generate", "inference.export"]
HEAVY = ("torch", "transformers", "datasets", "bmojo_neuron.modeling_bmojo")
# The bound is generous: on an idle machine --help takes well under 2 s; this one is shared with other jobs.
BOUND_S = 6.0


def _python(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return out, time.perf_counter() - start


def test_parsers_and_option_tables_import_nothing_heavy():
    code = (
        "import sys, training.train, training.config, inference.generate, inference.export\n"
        "for m in (training.config, inference.generate, inference.export): m.build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}))"
    )
    out, _ = _python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"imported at parse time: {out.stdout}"


@pytest.mark.parametrize("module", CLIS)
def test_help_and_usage_errors_answer_quickly(module):
    out, seconds = _python("-m", module, "--help")
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    assert seconds < BOUND_S, f"{module} --help took {seconds:.1f} s"
    out, seconds = _python("-m", module, "--no-such-option")
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr
    assert seconds < BOUND_S, f"{module} usage error took {seconds:.1f} s"


def test_bad_training_value_is_a_quick_one_line_error():
    out, seconds = _python("-m", "training.train", "--lr", "inf")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "train.lr" in out.stderr
    assert seconds < BOUND_S


@pytest.mark.slow  # a dry run imports everything: ~30 s on a loaded 2-core machine
def test_loading_line_comes_first(tmp_path):
    """A long start says what it is doing at once (here a dry run, which imports everything)."""
    args = "--task mqar --mqar-train-examples 64 --mqar-eval-examples 8 --dry-run --no-tqdm".split()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.train", *args, "--output-dir", str(tmp_path / "run")],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first_lines, seconds = [], None
    for line in proc.stderr:
        first_lines.append(line)
        if "loading" in line:
            seconds = time.perf_counter() - start
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, "".join(first_lines) + rest
    assert seconds is not None and seconds < BOUND_S, first_lines
    assert any(f"run folder: {tmp_path / 'run'}" in line for line in first_lines)


def test_every_option_has_help_with_its_default_and_a_readable_metavar():
    from training.config import build_parser

    parser = build_parser()
    usage = parser.format_usage()
    for section in ("MODEL.", "DATA.", "MQAR.", "TRAIN."):
        assert section not in usage, f"internal name in the usage: {usage}"
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help"
        if action.nargs != 0 and not action.required and action.default != []:  # valued options: their default
            assert "default" in action.help, f"{action.option_strings}: {action.help}"


def test_console_scripts_cover_every_program_named_in_the_help():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    import importlib

    from inference import export, generate
    from training import config

    for parser in (config.build_parser(), generate.build_parser(), export.build_parser()):
        assert parser.prog in scripts, f"{parser.prog} is named in a usage line but not installed"
        module, _, function = scripts[parser.prog].partition(":")
        assert callable(getattr(importlib.import_module(module), function))
