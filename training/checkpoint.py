"""Crash-safe checkpoints: a manifest written last, atomic renames, and verification before resuming.

The HF ``Trainer`` writes ``checkpoint-N/`` in place, file by file, so a run killed while saving leaves a
folder that looks like a checkpoint and is not one, and its rotation may already have deleted the
previous good one. Here a checkpoint is written into ``.tmp-checkpoint-N/``; then ``manifest.json``
(every file's size and SHA-256) is written and fsynced; only then is the folder renamed to
``checkpoint-N`` (a rename is atomic on POSIX file systems). A checkpoint is *complete* when its manifest
exists and every file matches it. Resuming takes the newest complete checkpoint and skips the others with
a warning; rotation counts complete checkpoints only, so it never deletes the last good one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, step: int, hashes: bool = True) -> dict:
    """Write ``folder/manifest.json`` listing every file (size, SHA-256 unless ``hashes`` is False).

    Files are fsynced first, so the manifest is never on disk before the data it describes.
    """
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        entry = {"size": path.stat().st_size}
        if hashes:
            entry["sha256"] = _sha256(path)
        files[str(path.relative_to(folder))] = entry
    manifest = {"format": 1, "step": step, "created": time.time(), "files": files}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    _fsync(tmp)
    tmp.rename(folder / MANIFEST)
    return manifest


def verify(folder: Path, hashes: bool = True) -> str | None:
    """``None`` if ``folder`` is a complete checkpoint, else the reason it is not."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (the save did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest: {e}"
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    for name, entry in files.items():
        # A hand-edited or truncated-then-padded manifest must read as "incomplete", not crash the resume.
        inside = not Path(name).is_absolute() and ".." not in Path(name).parts
        if not inside or not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            return f"malformed manifest entry for {name!r}"
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}"
        if hashes and "sha256" in entry and _sha256(path) != entry["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest"
    return None


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` folder, newest first (complete or not)."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_complete(output_dir: Path, hashes: bool = True) -> Path | None:
    """The newest complete checkpoint under ``output_dir``; incomplete ones are skipped with a warning."""
    for _, path in list_checkpoints(output_dir):
        problem = verify(path, hashes)
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


def finalize(tmp_dir: Path, final_dir: Path, step: int, hashes: bool = True) -> None:
    """Write the manifest into ``tmp_dir`` and rename it to ``final_dir``.

    If ``final_dir`` exists (a run resumed from an earlier checkpoint reaches the same step again), it is
    first moved aside and removed only after the new checkpoint is in place.
    """
    write_manifest(tmp_dir, step, hashes)
    displaced = None
    if final_dir.exists():
        displaced = final_dir.with_name(f"{TMP_PREFIX}{step}-replaced-{time.time_ns()}")
        final_dir.rename(displaced)
    tmp_dir.rename(final_dir)
    _fsync(final_dir.parent)
    if displaced is not None:
        shutil.rmtree(displaced, ignore_errors=True)


def rotate(output_dir: Path, keep: int | None, hashes: bool = False) -> None:
    """Delete complete checkpoints beyond the newest ``keep``, and stale temporary folders.

    Incomplete ``checkpoint-N`` folders are left for inspection (resume skips them); they never count
    towards ``keep``, so a corrupt newest checkpoint cannot cause the last good one to be deleted.
    ``hashes`` is off by default here: sizes catch partial writes, and hashing every old checkpoint at
    every save would cost more than the save.
    """
    for path in output_dir.glob(TMP_PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)
    if not keep:
        return
    complete = [path for _, path in list_checkpoints(output_dir) if verify(path, hashes) is None]
    for path in complete[keep:]:
        logger.info("deleting old checkpoint %s (keeping the last %d)", path, keep)
        # Renamed first (atomic), so a kill during the deletion leaves a temporary folder that the next
        # start removes, never a half-deleted checkpoint-N.
        doomed = path.with_name(f"{TMP_PREFIX}{path.name}-deleting")
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


__all__ = [
    "MANIFEST",
    "TMP_PREFIX",
    "finalize",
    "latest_complete",
    "list_checkpoints",
    "rotate",
    "verify",
    "write_manifest",
]
