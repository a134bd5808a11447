"""NKI lint: ``python -m nki_kernels.lint nki_kernels/kernels`` (see :mod:`.checker`)."""

from .checker import Violation, lint_paths, lint_source

__all__ = ["Violation", "lint_paths", "lint_source"]
