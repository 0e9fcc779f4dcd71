"""The files a run reads, by their SHA-256: stored with a checkpoint or a sweep folder, so that a
resume refuses inputs that changed since (a target, a data column, a model's inputs, an init file)
instead of mixing two problems in one result."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

from gdfit.errors import InputFileError
from gdfit.files.paths import Use

CHUNK = 1 << 20


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, read a mebibyte at a time; None when it cannot be read (the
    reader that needs it says why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    except (OSError, ValueError):
        return None
    return digest.hexdigest()


def input_digests(uses: Iterable[Use]) -> dict[str, str]:
    """{config key: SHA-256} of every input file that can be read."""
    found = {}
    for use in uses:
        digest = file_digest(use.path)
        if digest is not None:
            found[use.key] = digest
    return found


def refuse_changed(saved: dict[str, Any], now: dict[str, str], uses: Iterable[Use], source: str, key: str) -> None:
    """Refuse (exit 2) a resume whose input files are not the ones the saved state was made from: a
    file both sides read whose SHA-256 differs. A key only one side has is a config of another
    problem (the config comparison names it), or a file that cannot be read now (its reader says why)."""
    paths = {use.key: use.path for use in uses}
    changed = [name for name in sorted(set(saved) & set(now)) if saved[name] != now[name]]
    if changed:
        described = ", ".join(f"{name} ({paths.get(name, '?')})" for name in changed)
        raise InputFileError(f"cannot resume: the input file{'s' if len(changed) > 1 else ''} {described} "
                             f"changed since it was saved (SHA-256 differs)", source=source, key=key,
                             hint="restore the files the run started from, or start a new run")
