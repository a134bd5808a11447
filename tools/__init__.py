"""Repository tools, run from a checkout (not installed): ``lock_drift.py``, ``xla_check/``."""
