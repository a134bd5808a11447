"""The documents point at files that exist, and the code cites the specification in the repository.

A clone has no ``shared/`` folder: a citation of ``DESIGN.md`` or ``NKI_REFERENCE.md`` sends a reader nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "nki_kernels" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE_CITATIONS = re.compile(r"DESIGN\.md|NKI_REFERENCE|AUDIT-2026|shared/nki")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```|`[^`\n]*`", "", page.read_text(), flags=re.S)  # code is not a link: `kernel[2](x)`
    links = [m.group(1) for m in LINK.finditer(text)]
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for link in _relative_links(page):
            target = (page.parent / link).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {link}")
    assert not broken, broken


def test_the_readme_links_every_docs_page():
    index = (ROOT / "docs" / "README.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md" and f"({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"


def test_code_cites_no_specification_outside_the_repository():
    found = []
    for folder in ("bmojo_neuron", "nki_kernels", "training", "inference", "benchmarks", "tests", "tools"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".md") or path.resolve() == Path(__file__).resolve():
                continue
            rel = path.relative_to(ROOT).as_posix()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE_CITATIONS.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, found
