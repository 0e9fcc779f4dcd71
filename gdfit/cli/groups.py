"""`gdfit run` of a config with `data.group`: one fit per group, the results as a table.

The job reads and checks everything before it fits or writes anything: a bad table exits 2 with
nothing written. With `--output-dir DIR` each finished batch of groups is journaled there
(sweeps/journal.py), and `gdfit run --resume DIR` fits only the groups it lacks.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdfit import records
from gdfit.cli.common import check_backend
from gdfit.config import Resolved
from gdfit.errors import ExitCode, InputFileError, OutputError, UsageError
from gdfit.sweeps.groups import UNFITTED as _UNFITTED

RESULT_SUFFIXES = (".csv", ".parquet", ".json")


@dataclass(frozen=True)
class GroupOptions:
    json_mode: bool = False
    output: Path | None = None  # the results table: .csv, .parquet or .json
    output_dir: Path | None = None  # the journal folder
    resume: Path | None = None  # a journal folder to finish
    backend: str = "local"
    address: str | None = None


def is_grouped(resolved: Resolved) -> bool:
    data = resolved.config.data
    return data is not None and data.group is not None


def refuse_flags(flags: dict[str, Any]) -> None:
    """Options of one run that mean nothing for many fits."""
    for flag, value in flags.items():
        if value is not None and value is not False:
            raise UsageError(f"{flag} applies to one fit, not to many fits (data.group)", key=flag,
                             hint="write the results with --output results.csv and draw them with gdfit plot")


def run_groups(resolved: Resolved, options: GroupOptions) -> int:
    """Fit every group (or those a resumed folder lacks); returns the exit status."""
    from gdfit.files.locks import hold_all
    from gdfit.sweeps import journal as journals
    from gdfit.sweeps.groups import from_journal, load_job

    if options.resume is not None and options.output_dir is not None:
        raise UsageError("--resume DIR goes on in DIR: leave out --output-dir", key="--output-dir")
    _check_output(options)
    _check_paths(resolved, options)
    # one writer per journal folder and results table: a resume of a folder whose job still runs
    # is refused with the running process's PID, not run twice
    with hold_all([(options.resume, "--resume", True), (options.output, "--output", False)]) as locks:
        journal = None
        if options.resume is not None:
            journal = journals.load(options.resume, kind="groups")
            _same_config(journal, resolved)
        elif options.output_dir is not None and (options.output_dir / journals.CONFIG_FILE).exists():
            raise OutputError("already holds a many-fits job", source=str(options.output_dir), key="--output-dir",
                              hint=f"continue it with `gdfit run CONFIG --resume {options.output_dir}`, or choose "
                                   "another folder")
        check_backend(options.backend, options.address)
        job = load_job(resolved)
        digest = _digest(resolved)
        folder = options.resume or options.output_dir
        if journal is not None:
            if journal.config.get("data") != digest or journal.total != job.total:
                raise InputFileError("the data file has changed since the job started", source=digest["file"],
                                     key="data.file", hint=f"start a new job instead of resuming {folder}")
        elif folder is not None:
            config = resolved.config.model_dump(mode="json", exclude_unset=True)  # validates again as it is
            # the folder's lock is taken first, before the folder is checked and written
            journals.create(folder, config, resolved.source, resolved.base_dir, {}, {"data": digest}, 0, job.total,
                            locks, kind="groups", key="--output-dir")
        earlier = from_journal(journal.done) if journal is not None else None
        return _run(job, earlier, folder, options)


def _check_output(options: GroupOptions) -> None:
    """Before anything runs: the results table's type, folder and (for .parquet) pyarrow."""
    if options.output is None:
        return
    from gdfit.files.writing import check_writable

    if options.output.suffix.lower() not in RESULT_SUFFIXES:
        raise OutputError(f"the results table must end in {', '.join(RESULT_SUFFIXES)}", source=str(options.output),
                          key="--output")
    check_writable(options.output)
    if options.output.suffix.lower() == ".parquet":
        from gdfit.files.tables import require_pyarrow

        require_pyarrow("writing .parquet")


def _check_paths(resolved: Resolved, options: GroupOptions) -> None:
    """No output may replace an input or another output (the results table, a CSV's .json sidecar,
    the journal folder's files), as for one fit."""
    from gdfit.files.paths import SWEEP_FOLDER_FILES, config_inputs, reads, refuse_clashes, writes
    from gdfit.render.groups_view import sidecar

    output = options.output
    folder_key = "--resume" if options.resume is not None else "--output-dir"
    uses = [*reads("CONFIG", resolved.source),
            *config_inputs(resolved.config.model_dump(mode="json"), resolved.base_dir),
            *writes("--output", output),
            *writes("--output", sidecar(output) if output is not None and output.suffix.lower() == ".csv" else None),
            *writes(folder_key, options.resume or options.output_dir, SWEEP_FOLDER_FILES)]
    refuse_clashes(uses)


def _same_config(journal, given: Resolved) -> None:
    """A resumed job goes on with the config it started with, key by key."""
    from gdfit.sweeps.journal import refuse_differences

    refuse_differences(journal, given.config.model_dump(mode="json", exclude_unset=True), {}, kind="groups")


def _digest(resolved: Resolved) -> dict[str, Any]:
    """The data file by size and content, so that a resume fits the same data."""
    path = resolved.resolve_path(resolved.config.data.file)
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return {"file": str(path.resolve()), "bytes": path.stat().st_size, "sha256": hasher.hexdigest()}


def _run(job, earlier, folder: Path | None, options: GroupOptions) -> int:
    from contextlib import nullcontext

    from gdfit.engine.interrupts import StopRequest, pause_point
    from gdfit.files.devices import describe
    from gdfit.render.groups_view import end_event, parameter_summary, results_columns, write_results
    from gdfit.sweeps.groups import GroupResults, execute, job_device, journal_lines, merge, unreached
    from gdfit.sweeps.journal import Appender, write_summary

    spec, table = job.spec, job.table
    renderer = _renderer(options)
    parts: list[GroupResults] = [earlier] if earlier is not None else []
    done_before = frozenset(earlier.indices) if earlier is not None else frozenset()
    config = spec.config
    renderer.start({"event": "start", "config": config.model_dump(mode="json"), "source": table.source,
                    "groups": job.total, "fitted": sum(len(b) for b in job.batches),
                    "batches": len(job.batches), "batch_size": max((len(b) for b in job.batches), default=0),
                    "device": describe(job_device(config)), "dtype": config.dtype,
                    "resumed": len(done_before)})
    appender = Appender(folder) if folder is not None else nullcontext()
    finished, fitted = len(done_before), 0
    started = time.perf_counter()
    try:
        with StopRequest() as stop, appender:
            for item in execute(job, stop, done_before, options.backend, options.address):
                if isinstance(item, int):
                    renderer.progress(finished + item, job.total)
                    continue
                parts.append(item)
                finished += len(item)
                fitted += sum(s not in _UNFITTED for s in item.status)
                if folder is not None:
                    appender.write(journal_lines(item, lambda g: table.labels[g]))
                pause_point("groups")  # tests: a kill between two journaled batches
                renderer.groups(table.labels, spec.order, item)
                renderer.progress(finished, job.total)
            interrupted = stop()
    except BaseException:
        renderer.abort()
        raise
    elapsed = time.perf_counter() - started
    if interrupted:  # the groups not reached stopped too: each its row and event (not journaled)
        left = unreached(job, [g for part in parts for g in part.indices])
        if len(left):
            renderer.groups(table.labels, spec.order, left)
            parts.append(left)
    results = merge(parts)
    by_status = Counter(results.status)
    event = end_event(dict(by_status), job.total, elapsed, fitted)
    summary = {"params": parameter_summary(spec.order, results)}
    renderer.end(event, summary)
    document = {"config": config.model_dump(mode="json"), "source": spec.resolved.source,
                "data": str(spec.resolved.resolve_path(config.data.file)), "end": event, "summary": summary}
    if options.output is not None:
        write_results(options.output, results_columns(table.labels, spec.order, results), document)
    if folder is not None and not interrupted and len(results) == job.total:
        write_summary(folder, document)
    if interrupted:
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK if by_status.get(records.CONVERGED, 0) == job.total else ExitCode.NOT_CONVERGED)


def _renderer(options: GroupOptions):
    from gdfit.render.groups_view import GroupHuman, GroupJsonLines

    if options.json_mode:
        return GroupJsonLines(sys.stdout)
    return GroupHuman()
