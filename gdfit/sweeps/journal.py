"""A sweep folder: what the sweep was started with, one line per finished run, and the summary.

    config.json    the merged config mapping, where it came from, the grid, the first run's resolved config
    runs.jsonl     one run event per finished run, with its index in the grid; appended, flushed and
                   fsynced as each batch ends, so a killed sweep loses at most the batch it was running
    summary.json   the --output document, written when every run has finished

A last line cut short by a kill is ignored (and cut off before the next append), so its run runs again.

Integrity: config.json holds a random folder `id`; each journal line ends in `"sha256"`, the SHA-256
of the folder key (the SHA-256 of config.json as written) and the line before that field. A line
whose digest does not match (a flipped bit, a line of another folder, a config.json edited after
runs were journaled) is refused with the line's number: the folder was changed outside gdfit.
Folders of format 1 (before digests) are read as they were, their lines checked for plausibility only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gdfit import records
from gdfit.errors import ConfigError, InputFileError, OutputError
from gdfit.files.writing import write_atomic
from gdfit.render.jsonl import dumps

CONFIG_FILE, RUNS_FILE, SUMMARY_FILE = "config.json", "runs.jsonl", "summary.json"
FORMAT = 2  # 2: a folder id in config.json and a digest on every journal line; 1: neither
KINDS = ("sweep", "groups")
DIGEST_FIELD = "sha256"
_SIGNED = re.compile(r',"sha256":"([0-9a-f]{64})"}$')


def is_folder(path: Path) -> bool:
    """`--output` names a sweep folder unless it ends in `.json` (then it is the one document)."""
    return path.suffix.lower() != ".json"


@dataclass(frozen=True)
class Journal:
    """A sweep folder as read back: enough to rebuild every run, and the runs already finished."""

    folder: Path
    raw: dict[str, Any]  # the merged config mapping (file < --set < flags), before the grid
    source: str
    base_dir: Path
    grid: dict[str, list[Any]]
    config: dict[str, Any]  # the first run's resolved config
    x_limit: int
    total: int
    done: dict[int, Any]  # grid index -> finished run (a RunRecord; a many-fits folder's: the group event)
    kind: str = "sweep"  # or "groups": a many-fits job (`gdfit run` with data.group), one line per group
    key: str | None = None  # what each line's digest is keyed to (None: a format-1 folder, unsigned)
    left_out: list[str] = field(default_factory=list)  # journal lines not trusted: repeats, bad lines

    @property
    def missing(self) -> int:
        return self.total - len(self.done)

    def summary(self) -> dict[str, Any] | None:
        path = self.folder / SUMMARY_FILE
        return _read_json(path) if path.is_file() else None

    def finished_summary(self) -> dict[str, Any] | None:
        """The summary of a sweep whose every run is journaled: its figures (elapsed_s) stand, since
        a resume or a --show that runs nothing has nothing to add to them."""
        return self.summary() if not self.missing else None


RESUME = {"sweep": "gdfit sweep --resume", "groups": "gdfit run CONFIG --resume"}


def create(folder: Path, raw: dict[str, Any], source: str, base_dir: Path, grid: dict[str, list[Any]],
           config: dict[str, Any], x_limit: int, total: int, locks: ExitStack, kind: str = "sweep",
           key: str = "--output") -> None:
    """A new sweep folder with its config.json and an empty runs.jsonl; refuses one in use. The
    folder's lock is taken first and stays held in `locks` (for the sweep's whole run): of two gdfit
    processes that start into one new folder, one writes it and the other is refused with its PID.
    A many-fits job (`kind` "groups") journals its groups the same way."""
    import secrets

    from gdfit.files.locks import hold, lock_path

    if folder.exists() and not folder.is_dir():
        raise OutputError("is a file, not a sweep folder (a name ending in .json writes one document)",
                          source=str(folder), key=key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the folder: {err.strerror or err}", source=str(folder),
                          key=key) from None
    lock_file = lock_path(folder, folder=True)
    had_lock = lock_file.exists()
    locks.enter_context(hold(folder, key, folder=True))
    try:
        _refuse_taken(folder, kind, key)
    except OutputError:
        if not had_lock:  # a refused folder is left as it was found
            lock_file.unlink(missing_ok=True)
        raise
    saved = {"format": FORMAT, "id": secrets.token_hex(16), "source": source,
             "base_dir": str(Path(base_dir).resolve()), "raw": raw, "grid": grid, "runs": total,
             "x_limit": x_limit, "config": config, "kind": kind}
    write_atomic(folder / RUNS_FILE, "")
    write_atomic(folder / CONFIG_FILE, dumps(saved) + "\n")


def _refuse_taken(folder: Path, kind: str, key: str) -> None:
    """A folder that holds a journal, or a journal's files without its config, is not a new one."""
    from gdfit.files.paths import SWEEP_FOLDER_FILES

    if (folder / CONFIG_FILE).exists():
        raise OutputError("already holds a " + ("sweep" if kind == "sweep" else "many-fits job"), source=str(folder), key=key,
                          hint=f"continue it with `{RESUME[kind]} {folder}`, or choose another folder")
    foreign = [name for name in SWEEP_FOLDER_FILES if (folder / name).exists()]
    if foreign:  # a journal's files without its config: not ours to replace
        raise OutputError(f"already holds {foreign[0]}, but no {CONFIG_FILE}: it is not a folder gdfit can go on "
                          "with, and its files would be replaced", source=str(folder), key=key,
                          hint="choose an empty or a new folder")


def load(folder: Path, kind: str = "sweep") -> Journal:
    """Read a sweep folder (or a many-fits job's, `kind` "groups"); a last line cut short is left
    out. A config.json or a signed line that is not what gdfit wrote is refused (exit 2)."""
    if not folder.exists():
        raise InputFileError("does not exist", source=str(folder))
    if not folder.is_dir():
        raise InputFileError(f"is a file, not a {'sweep' if kind == 'sweep' else 'many-fits'} folder", source=str(folder))
    if not (folder / CONFIG_FILE).is_file():
        raise InputFileError(f"not a sweep folder (no {CONFIG_FILE})", source=str(folder))
    saved = _read_json(folder / CONFIG_FILE)
    found = _check_saved(saved, str(folder / CONFIG_FILE))
    if found != kind:
        raise InputFileError(f"is the folder of a {'many-fits job' if found == 'groups' else 'sweep'}",
                             source=str(folder), hint=f"continue it with `{RESUME[found]} {folder}`")
    from gdfit.sweeps.lines import BadLine, check_grid, read_line

    if kind == "sweep":
        check_grid(saved["grid"], saved["runs"], str(folder))
    journal = Journal(folder, saved["raw"], saved["source"], Path(saved["base_dir"]), saved["grid"],
                      saved["config"], saved["x_limit"], saved["runs"], {}, kind, folder_key(folder, saved))
    max_iters = saved["config"].get("max_iters")
    for number, text in enumerate(_complete_lines(folder / RUNS_FILE), start=1):
        if journal.key is not None:
            text = _verified(text, journal.key, number, folder)
        try:
            if kind == "sweep":
                index, event = read_line(json.loads(text), journal.grid, journal.total, max_iters)
            else:
                index, event = _group_line(json.loads(text), journal.grid, journal.total)
        except BadLine as err:
            journal.left_out.append(f"line {number}: {err}")
            continue
        except ValueError:
            journal.left_out.append(f"line {number}: not JSON")
            continue
        if index in journal.done:
            journal.left_out.append(f"line {number}: run {index} again")
            continue
        journal.done[index] = run_record(event) if kind == "sweep" else event
    return journal


# config.json's fields and the JSON types gdfit writes them as
_SAVED_FIELDS = {"format": (int,), "source": (str,), "base_dir": (str,), "raw": (dict,), "grid": (dict,),
                 "runs": (int,), "x_limit": (int,), "config": (dict,)}
_TYPE_WORDS = {int: "a whole number", str: "text", dict: "a mapping"}


def _check_saved(saved: Any, path: str) -> str:
    """The kind of a config.json that has every field gdfit writes, of its type; InputFileError
    (exit 2) names the first field that is missing or of another type."""
    def refuse(problem: str) -> InputFileError:
        return InputFileError(f"is not the folder description gdfit writes: {problem}", source=path)

    if not isinstance(saved, dict):
        raise refuse(f"a JSON {type(saved).__name__}, not a mapping")
    found = saved.get("kind", "sweep")
    if found not in KINDS:
        raise refuse(f"kind {_brief(found)} is not sweep or groups")
    for name, types in _SAVED_FIELDS.items():
        if name not in saved:
            raise refuse(f"it lacks the field {name!r}")
        value = saved[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise refuse(f"{name} is {_brief(value)}, not {_TYPE_WORDS[types[0]]}")
    if not 1 <= saved["format"] <= FORMAT:
        raise InputFileError(f"has format {saved['format']}; this gdfit reads formats 1 to {FORMAT}", source=path,
                             hint="a newer gdfit wrote it: resume it with that gdfit" if saved["format"] > FORMAT else None)
    if saved["format"] >= 2 and "id" not in saved:
        raise refuse("it lacks the field 'id' (the folder id)")
    if saved["format"] >= 2 and not isinstance(saved["id"], str):
        raise refuse(f"id is {_brief(saved['id'])}, not text")
    if saved["x_limit"] < 0 or saved["runs"] < 0:
        raise refuse("x_limit and runs are whole numbers >= 0")
    return found


def folder_key(folder: Path, saved: dict[str, Any] | None = None) -> str | None:
    """What the folder's line digests are keyed to: the SHA-256 of config.json as written (which
    holds the folder's random id), so a line of another folder, or of this one before its config
    was edited, does not match. None for a format-1 folder, whose lines carry no digest."""
    if saved is None:
        saved = _read_json(folder / CONFIG_FILE)
    if not isinstance(saved, dict) or saved.get("format", 1) < 2:
        return None
    from gdfit.reading import JOURNAL_FILE_BYTES, read_file

    return hashlib.sha256(read_file(folder / CONFIG_FILE, JOURNAL_FILE_BYTES)).hexdigest()


def _digest(key: str, body: str) -> str:
    return hashlib.sha256(f"{key}\n{body}".encode()).hexdigest()


def sign(text: str, key: str | None) -> str:
    """Whole journal lines with each line's digest as its last field (unchanged when `key` is None)."""
    if key is None or not text:
        return text
    return "".join(f'{body[:-1]},"{DIGEST_FIELD}":"{_digest(key, body)}"}}\n' for body in text.splitlines())


def _verified(text: str, key: str, number: int, folder: Path) -> str:
    """A signed line as it was before it was signed; InputFileError when its digest is missing or
    does not match."""
    text = text.rstrip("\r\n")
    found = _SIGNED.search(text)
    body = text[: found.start()] + "}" if found else None
    if found is None or found.group(1) != _digest(key, body):
        problem = "has no digest" if found is None else "does not match its digest"
        raise InputFileError(f"{problem}: the sweep folder was changed outside gdfit (a line edited, damaged or "
                             f"copied from another folder, or {CONFIG_FILE} edited)",
                             source=str(folder / RUNS_FILE), line=number, hint="restore the folder's files, or start the sweep again in a new folder")
    return body


def line(index: int, record: records.RunRecord) -> str:
    """One journal line: the run event with the run's grid index. JSON has no infinities or NaN, so a
    non-finite loss is also kept as text, to come back exactly."""
    from gdfit.render.sweep_view import run_event

    event = {"index": index, **run_event(record)}
    if isinstance(record.loss, float) and not math.isfinite(record.loss):
        event["loss_text"] = repr(record.loss)
    return dumps(event) + "\n"


def run_record(event: dict[str, Any]) -> records.RunRecord:
    """A RunRecord from a journal line; `x` comes back as nested lists or the summary."""
    loss = float(event["loss_text"]) if "loss_text" in event else event["loss"]
    x = event.get("x_summary", event.get("x"))
    return records.RunRecord(event["params"], event["status"], event["iters"], loss, x,
                             holdout_rmse=event.get("holdout_rmse"))


class Appender:
    """Appends finished runs to runs.jsonl; each batch is flushed and fsynced before the next runs."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RUNS_FILE
        self.key = folder_key(folder)
        _cut_partial_line(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def add(self, indices: list[int], results: list[records.RunRecord]) -> None:
        """Write the finished runs of one batch; runs cut short by Ctrl-C are left to a resume."""
        self.write("".join(line(i, r) for i, r in zip(indices, results) if r.status != records.INTERRUPTED))

    def write(self, text: str) -> None:
        """Append finished lines (whole lines), each with its digest, flushed and fsynced."""
        try:
            self._handle.write(sign(text, self.key))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as err:
            raise OutputError(f"cannot write: {err.strerror or err}", source=str(self.path)) from None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_summary(folder: Path, document: dict[str, Any]) -> None:
    write_atomic(folder / SUMMARY_FILE, dumps(document) + "\n", key="--output")


def differences(journal: Journal, raw: dict[str, Any], grid: dict[str, list[Any]]) -> list[str]:
    """What differs between the journal's config and grid and the ones given now, key by key."""
    found = []
    saved, given = _flatten(journal.raw), _flatten(raw)
    for key in sorted(set(saved) | set(given)):
        if key.split(".")[0] != "sweep" and saved.get(key, "(unset)") != given.get(key, "(unset)"):
            found.append(f"config {key} differs: the journal has {_brief(saved.get(key, '(unset)'))}, "
                         f"now {_brief(given.get(key, '(unset)'))}")
    for key in list(journal.grid) + [k for k in grid if k not in journal.grid]:
        if journal.grid.get(key) != grid.get(key):
            found.append(f"grid {key} differs: the journal has {_brief(journal.grid.get(key, '(not swept)'))}, "
                         f"now {_brief(grid.get(key, '(not swept)'))}")
    return found


def refuse_differences(journal: Journal, raw: dict[str, Any], grid: dict[str, list[Any]], kind: str = "sweep") -> None:
    found = differences(journal, _round_trip(raw), _round_trip(grid))
    if found:
        if kind == "sweep":
            what, hint = "sweep", "resume without CONFIG, --grid and --set, or start a new --output folder"
        else:
            what, hint = "many-fits job", "resume with the config the job started with, or start a new --output-dir"
        raise ConfigError(f"belongs to a different {what}: " + "; ".join(found), source=str(journal.folder),
                          key="--resume", hint=hint)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _brief(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) and value.startswith("(") else dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _round_trip(value: Any) -> Any:
    """As it would read back from the journal (tuples become lists)."""
    return json.loads(dumps(value))


def _read_json(path: Path) -> Any:
    from gdfit.reading import JOURNAL_FILE_BYTES, TooLarge, read_file

    try:
        return json.loads(read_file(path, JOURNAL_FILE_BYTES).decode("utf-8"))
    except TooLarge as err:
        raise InputFileError(f"the file {err.describe()}", source=str(path)) from None
    except OSError as err:
        raise InputFileError(f"cannot read: {err.strerror or err}", source=str(path)) from None
    except (ValueError, RecursionError) as err:
        raise InputFileError(f"not JSON: {err}", source=str(path)) from None


def _complete_lines(path: Path) -> Iterator[str]:
    """The journal's whole lines, one at a time (a run line is small; the file may be large)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as err:
        raise InputFileError(f"cannot read: {err.strerror or err}", source=str(path)) from None
    from gdfit.reading import JOURNAL_LINE_BYTES

    with handle:
        while raw := handle.readline(JOURNAL_LINE_BYTES + 1):
            if len(raw) > JOURNAL_LINE_BYTES:
                raise InputFileError(f"holds a line longer than the {JOURNAL_LINE_BYTES:,} bytes a run line may have",
                                     source=str(path))
            if raw.endswith(b"\n") and raw.strip():  # after the last newline: cut short
                yield raw.decode("utf-8", errors="replace")


def _cut_partial_line(path: Path) -> None:
    """Drop what follows the last newline, so the next line starts on a line of its own. Reads
    backwards from the end, a block at a time, never the whole journal."""
    try:
        with open(path, "rb+") as handle:
            end = handle.seek(0, os.SEEK_END)
            position = end
            while position > 0:
                start = max(0, position - 65536)
                handle.seek(start)
                block = handle.read(position - start)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    position = start + newline + 1
                    break
                position = start
            if position < end:
                handle.truncate(position)
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputError(f"cannot write: {err.strerror or err}", source=str(path)) from None


def _group_line(event: Any, grid: Any, total: int) -> tuple[int, dict[str, Any]]:
    """(index, event) of a many-fits folder's group line; BadLine says what is wrong with any other."""
    from gdfit.sweeps.lines import BadLine

    if not isinstance(event, dict) or "group" not in event or "status" not in event:
        raise BadLine("not a group record")
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < total:
        raise BadLine(f"group index {index!r} is not one of the job's {total}")
    return index, event
