"""The NKI lint: each kind of violation, planted in a small kernel, is caught; the real kernels pass."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nki_kernels.lint import lint_paths, lint_source
from nki_kernels.lint.api_table import ISA_FUNCTIONS, LANGUAGE_FUNCTIONS, SOURCES

ROOT = Path(__file__).resolve().parents[2]
HEADER = "from nki_kernels._nki import nisa, nki, nl\n\n\n"
CLEAN_BODY = """
@nki.jit
def k(x, D):
    out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
    t = nl.ndarray((128, 4), nl.float32)
    a, b = 1, 2
    for i in range(0, 4, -1):
        nisa.memset(dst=t, value=0.0)
    if D is not None:
        nisa.dma_copy(dst=t, src=x.ap([[4, 128], [1, 4]], offset=0), dge_mode=nisa.dge_mode.swdge)
    assert a < b, "message"
    return out
"""


def rules(src: str) -> list[str]:
    return [v.rule for v in lint_source(HEADER + textwrap.dedent(src))]


def test_clean_kernel_passes():
    assert rules(CLEAN_BODY) == []


@pytest.mark.parametrize(
    "line, rule",
    [
        ("raise ValueError('bad')", "NKI100"),
        ("try:\n        pass\n    except Exception:\n        pass", "NKI100"),
        ("t2 = [i for i in range(3)]", "NKI100"),
        ("t2 = {k: 1 for k in ('a',)}", "NKI100"),
        ("t2 = sum(i for i in range(3))", "NKI100"),
        ("f = lambda v: v", "NKI100"),
        ("t2 = {'a': 1}", "NKI100"),
        ("s = f'{a}'", "NKI100"),
        ("while a:\n        a = 0", "NKI100"),
        ("with open('f') as fh:\n        pass", "NKI100"),
        ("for i, j in ((1, 2),):\n        pass", "NKI102"),
        ("t[0], t[1] = a, b", "NKI103"),
        ("c = x is t", "NKI104"),
        ("c = x is not t", "NKI104"),
        ("for i in reversed(range(3)):\n        pass", "NKI105"),
        ("n = sum((1, 2))", "NKI105"),
        ("nisa.nc_matmul(dst=t, stationary=t, moving=t, acumulate=False)", "NKI203"),
        ("nisa.nc_matmul(dst=t, stationary=t)", "NKI204"),
        ("nisa.tensor_copy(t, t, nisa.engine.vector, 'n', 1)", "NKI202"),
        ("nisa.not_an_instruction(dst=t)", "NKI200"),
        ("nl.not_a_name", "NKI200"),
        ("m = nisa.dge_mode.fastest", "NKI200"),
        ("v = x.ap([[1, 1]], offst=0)", "NKI203"),
    ],
)
def test_each_planted_violation_is_caught(line, rule):
    body = CLEAN_BODY.replace('    assert a < b, "message"', "    " + line)
    assert rule in rules(body), (line, rules(body))


def test_is_none_and_helpers_and_nested_body_are_allowed():
    src = """
    def helper(x):
        return x is None or x is not None

    @nki.jit
    def k(x):
        def body(i):
            nisa.memset(dst=x, value=0.0)
        nl.fori_loop(0, 4, body)
        return helper(x)
    """
    assert rules(src) == []


def test_table_entries_cite_a_documented_version():
    for table in (ISA_FUNCTIONS, LANGUAGE_FUNCTIONS):
        for sig in table.values():
            assert sig.source in SOURCES
    assert ISA_FUNCTIONS["nc_matmul"].params[:3] == ("dst", "stationary", "moving")
    assert dict(ISA_FUNCTIONS["nc_matmul"].optional)["accumulate"] == "None"


def test_real_kernels_pass():
    assert lint_paths([ROOT / "nki_kernels" / "kernels"]) == []


def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(HEADER + "def k(x):\n    raise ValueError('x')\n")
    cmd = [sys.executable, "-m", "nki_kernels.lint"]
    ok = subprocess.run([*cmd, str(ROOT / "nki_kernels" / "kernels")], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    fail = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert fail.returncode == 1 and "NKI100" in fail.stdout
