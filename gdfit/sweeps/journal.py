"""A sweep folder: what the sweep was started with, one line per finished run, and the summary.

    config.json    the merged config mapping, where it came from, the grid, the first run's resolved config
    runs.jsonl     one run event per finished run, with its index in the grid; appended, flushed and
                   fsynced as each batch ends, so a killed sweep loses at most the batch it was running
    summary.json   the --output document, written when every run has finished

A last line cut short by a kill is ignored (and cut off before the next append), so its run runs again.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gdfit import records
from gdfit.errors import ConfigError, InputFileError, OutputError
from gdfit.files.writing import write_atomic
from gdfit.render.jsonl import dumps

CONFIG_FILE, RUNS_FILE, SUMMARY_FILE = "config.json", "runs.jsonl", "summary.json"
FORMAT = 1


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
           config: dict[str, Any], x_limit: int, total: int, kind: str = "sweep", key: str = "--output") -> None:
    """A new sweep folder with its config.json and an empty runs.jsonl; refuses one in use. A
    many-fits job (`kind` "groups") journals its groups the same way."""
    if (folder / CONFIG_FILE).exists():
        raise OutputError("already holds a " + ("sweep" if kind == "sweep" else "many-fits job"), source=str(folder), key=key,
                          hint=f"continue it with `{RESUME[kind]} {folder}`, or choose another folder")
    if folder.exists() and not folder.is_dir():
        raise OutputError("is a file, not a sweep folder (a name ending in .json writes one document)",
                          source=str(folder), key=key)
    from gdfit.files.paths import SWEEP_FOLDER_FILES

    foreign = [name for name in SWEEP_FOLDER_FILES if (folder / name).exists()]
    if foreign:  # a journal's files without its config: not ours to replace
        raise OutputError(f"already holds {foreign[0]}, but no {CONFIG_FILE}: it is not a folder gdfit can go on "
                          "with, and its files would be replaced", source=str(folder), key=key,
                          hint="choose an empty or a new folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the folder: {err.strerror or err}", source=str(folder),
                          key=key) from None
    saved = {"format": FORMAT, "source": source, "base_dir": str(Path(base_dir).resolve()), "raw": raw,
             "grid": grid, "runs": total, "x_limit": x_limit, "config": config, "kind": kind}
    write_atomic(folder / RUNS_FILE, "")
    write_atomic(folder / CONFIG_FILE, dumps(saved) + "\n")


def load(folder: Path, kind: str = "sweep") -> Journal:
    """Read a sweep folder (or a many-fits job's, `kind` "groups"); a last line cut short is left out."""
    if not (folder / CONFIG_FILE).is_file():
        raise InputFileError(f"not a sweep folder (no {CONFIG_FILE})", source=str(folder))
    saved = _read_json(folder / CONFIG_FILE)
    found = saved.get("kind", "sweep") if isinstance(saved, dict) else "sweep"
    if found != kind:
        raise InputFileError(f"is the folder of a {'many-fits job' if found == 'groups' else 'sweep'}",
                             source=str(folder), hint=f"continue it with `{RESUME.get(found, RESUME['sweep'])} {folder}`")
    from gdfit.sweeps.lines import BadLine, check_grid, read_line

    try:
        journal = Journal(folder, saved["raw"], saved["source"], Path(saved["base_dir"]), saved["grid"],
                          saved["config"], int(saved["x_limit"]), saved["runs"], {}, kind)
        if kind == "sweep":
            check_grid(saved["grid"], saved["runs"], str(folder))
    except KeyError as err:
        raise InputFileError(f"{CONFIG_FILE} lacks the field {err}", source=str(folder)) from None
    except (TypeError, ValueError):
        raise InputFileError(f"{CONFIG_FILE} is not the folder description gdfit writes", source=str(folder)) from None
    read = read_line if kind == "sweep" else _group_line
    for number, line in enumerate(_complete_lines(folder / RUNS_FILE), start=1):
        try:
            index, event = read(json.loads(line), journal.grid, journal.total)
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
        _cut_partial_line(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def add(self, indices: list[int], results: list[records.RunRecord]) -> None:
        """Write the finished runs of one batch; runs cut short by Ctrl-C are left to a resume."""
        self.write("".join(line(i, r) for i, r in zip(indices, results) if r.status != records.INTERRUPTED))

    def write(self, text: str) -> None:
        """Append finished lines (whole lines), flushed and fsynced."""
        try:
            self._handle.write(text)
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
            found.append(f"config {key}: the journal has {_brief(saved.get(key, '(unset)'))}, "
                         f"now {_brief(given.get(key, '(unset)'))}")
    for key in list(journal.grid) + [k for k in grid if k not in journal.grid]:
        if journal.grid.get(key) != grid.get(key):
            found.append(f"grid {key}: the journal has {_brief(journal.grid.get(key, '(not swept)'))}, "
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
