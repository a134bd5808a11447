"""tools/lock_drift.py: what `make test-latest` prints about packages that differ from the lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools import lock_drift

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def test_reads_every_pin_of_the_real_lock():
    pins = lock_drift.read_lock(LOCK)
    assert pins["transformers"] and pins["torch"].startswith("2.13.0")
    assert "huggingface-hub" in pins  # names are canonicalised (huggingface_hub -> huggingface-hub)


def test_names_changed_and_unlocked_packages():
    lock = {"transformers": "5.24.0", "torch": "2.13.0+cpu", "tqdm": "4.67.0"}
    env = {"transformers": "5.25.1", "torch": "2.13.0+cpu", "tqdm": "4.67.0", "newdep": "1.0", "pip": "26"}
    lines = lock_drift.drift(lock, env, ignore={"pip"})
    assert lines == ["transformers 5.25.1 (lock: 5.24.0)", "newdep 1.0 (not in the lock)"]


def test_this_environment_has_the_locked_versions():
    """The main .venv is installed from the lock: no locked package may have another version (packages a
    developer added on top are only listed)."""
    out = subprocess.run([sys.executable, str(LOCK.parent / "tools" / "lock_drift.py"), str(LOCK)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.startswith("== ")
    assert "(lock:" not in out.stdout, out.stdout


def test_a_file_without_pins_is_refused(tmp_path):
    bad = tmp_path / "lock.txt"
    bad.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="no 'name==version' lines"):
        lock_drift.read_lock(bad)
