"""No output may overwrite another input or output: every path a command reads and writes, compared
by the file it names (symlinks followed, hard links seen through st_dev/st_ino), before anything runs.

A command lists what it reads (CONFIG, the files its config names, a checkpoint or sweep folder to
resume) and what it writes (--output, --save, --checkpoint, --plot, a TensorBoard or sweep folder);
`refuse_clashes` raises an OutputError (exit 2) for the first pair that names one file, unless the
pair is one the command means (--resume and --checkpoint the same file: the run goes on saving
where it started). No output may lie inside a folder that holds a sweep's or many-fits job's journal
(config.json and runs.jsonl), whether or not that job runs now: it could replace the journal's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from gdfit.errors import OutputError

# the files a sweep folder holds (gdfit.sweeps.journal and the inputs' digests beside them)
SWEEP_FOLDER_FILES = ("config.json", "runs.jsonl", "summary.json", "inputs.json")
JOURNAL_MARKS = SWEEP_FOLDER_FILES[:2]  # a folder that holds both is a journal folder


@dataclass(frozen=True)
class Use:
    """One path a command reads or writes, and the flag or config key that named it."""

    key: str
    path: Path
    writes: bool
    parts: tuple[str, ...] = field(default=())  # a folder output: the files in it that gdfit writes


def reads(key: str, path: Path | str | None) -> list[Use]:
    return [] if path is None or str(path) in ("-", "<stdin>") else [Use(key, Path(path), False)]


def writes(key: str, path: Path | str | None, parts: tuple[str, ...] = ()) -> list[Use]:
    return [] if path is None else [Use(key, Path(path), True, parts)]


def config_inputs(config: Any, base_dir: Path, prefix: str = "") -> list[Use]:
    """Every `{file: PATH}` in a config mapping (target, init, data, model.inputs, mask, ...), as
    read uses named by their dotted key; relative paths are relative to the config's folder."""
    found: list[Use] = []
    if isinstance(config, dict):
        name = config.get("file")
        if isinstance(name, str) and name:
            path = Path(name).expanduser()
            found.append(Use(f"{prefix}file", path if path.is_absolute() else Path(base_dir) / path, False))
        for key, value in config.items():
            if key != "file":
                found.extend(config_inputs(value, base_dir, f"{prefix}{key}."))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found.extend(config_inputs(value, base_dir, f"{prefix}{i}."))
    return found


def identity(path: Path) -> tuple:
    """What a path names: the (device, inode) of an existing file, else its resolved absolute path."""
    real = os.path.realpath(path)
    try:
        status = os.stat(real)
    except (OSError, ValueError):
        return ("path", real)
    return ("inode", status.st_dev, status.st_ino)


def _expanded(use: Use) -> list[tuple[Use, Path]]:
    """A use and, for a folder output, each file in it that gdfit writes."""
    return [(use, use.path)] + [(use, use.path / part) for part in use.parts]


def refuse_clashes(uses: Iterable[Use], allowed: Iterable[frozenset[str]] = ()) -> None:
    """Refuse (exit 2) two uses of one file where at least one writes it, before anything runs."""
    allowed = set(allowed)
    seen: dict[tuple, tuple[Use, Path]] = {}
    for use in uses:
        if use.writes:
            refuse_inside_journal(use)
        for current, path in _expanded(use):
            key = identity(path)
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = (current, path)
                continue
            first = earlier[0]
            if not (first.writes or current.writes) or first.key == current.key \
                    or frozenset((first.key, current.key)) in allowed:
                continue
            raise OutputError(_clash(first, current, path), source=str(current.path))


def journal_folder_around(path: Path, itself: bool = True) -> Path | None:
    """The nearest folder that holds a journal and contains `path` (or is it, when `itself`)."""
    real = Path(os.path.realpath(path))
    for folder in ([real] if itself else []) + list(real.parents):
        if all((folder / name).is_file() for name in JOURNAL_MARKS) and _gdfit_config(folder / JOURNAL_MARKS[0]):
            return folder
    return None


def _gdfit_config(path: Path) -> bool:
    """Whether a config.json beside a runs.jsonl is a journal's (gdfit's fields `format` and `grid`),
    not another tool's. One that cannot be read or parsed counts as gdfit's: a damaged journal is
    still not to be written over."""
    import json

    from gdfit.reading import JOURNAL_FILE_BYTES, TooLarge, read_file

    try:
        saved = json.loads(read_file(path, JOURNAL_FILE_BYTES).decode("utf-8"))
    except (TooLarge, OSError, ValueError, RecursionError):  # unreadable, not UTF-8 or not JSON: kept safe
        return True
    return not isinstance(saved, dict) or ("format" in saved and "grid" in saved)


def refuse_inside_journal(use: Use) -> None:
    """An output inside a journal folder is refused: it could replace config.json, runs.jsonl or
    summary.json. A journal folder output (one with `parts`) is that folder, and may be one."""
    folder = journal_folder_around(use.path, itself=not use.parts)
    if folder is not None:
        where = "is a folder that holds" if folder == Path(os.path.realpath(use.path)) else f"is inside {folder}, which holds"
        raise OutputError(f"{where} the journal of a sweep or many-fits job ({' and '.join(JOURNAL_MARKS)}), "
                          f"and {use.key} could replace its files",
                          source=str(use.path), key=use.key, hint="choose a path outside that folder")


def _clash(first: Use, second: Use, path: Path) -> str:
    def role(use: Use) -> str:
        return "writes" if use.writes else "reads"

    how = ("one output would replace the other" if first.writes and second.writes
           else "the output would replace an input the run reads")
    return (f"{first.key} and {second.key} name the same file ({path}): {first.key} {role(first)} it and "
            f"{second.key} {role(second)} it, so {how}; choose another path")


def missing_reason(path: Path) -> str:
    """Why a path names no file, in words: a symlink loop or a dangling symlink is not "no such
    file" to the person who sees the link right there."""
    import errno

    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop (too many levels of symbolic links)"
        if os.path.islink(path):
            return f"is a symlink to {os.readlink(path)!r}, which does not exist"
    return "no such file"
