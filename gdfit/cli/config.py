"""`gdfit config`: the resolved config, the step-size advice, or every key's reference."""

from __future__ import annotations

from gdfit.errors import GdfitError


def show_config(path: str | None, overrides: list[str], json_mode: bool, schema: bool, advise: bool) -> None:
    if schema:
        from gdfit.config.schema import schema_rows

        _print_schema(schema_rows(), json_mode)
        return
    if path is None:
        raise GdfitError("give a CONFIG path (or - for standard input), or --schema", source="gdfit config")
    from gdfit.config import load_config

    resolved = load_config(path, overrides)
    document = resolved.config.model_dump(mode="json")
    with resolved.locating():
        if resolved.config.data is not None and resolved.config.data.group is not None:
            _as_job(resolved, advise)
        else:
            problem = _as_run(resolved)
            if advise:
                document = {"config": document, "advice": _advice(problem)}
    if json_mode:
        from gdfit.render.jsonl import dumps

        print(dumps(document))
    else:
        import yaml

        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=None).rstrip())


def _as_run(resolved):
    """What `gdfit run` checks before its first update, checked here too (files read, the model
    built, the optimizer made), so that a config this command passes is one `run` accepts."""
    from gdfit.engine.descent import make_stepper, prepare

    problem = prepare(resolved)
    make_stepper(problem, problem.x0.unsqueeze(0))
    return problem


def _as_job(resolved, advise: bool) -> None:
    """A many-fits config: its table read and its groups planned, as `gdfit run` does before
    fitting (every input error there is one here)."""
    from gdfit.errors import UsageError
    from gdfit.sweeps.groups import load_job

    if advise:
        raise UsageError("--advise is for a single fit's step size; a config with data.group is many fits by lm",
                         key="--advise")
    load_job(resolved)


def _advice(problem) -> dict:
    from gdfit.engine.advisor import advise

    return advise(problem.loss, problem.x0, problem.target, problem.model, problem.config.optimizer.name)


def _print_schema(rows: list[dict], json_mode: bool) -> None:
    if json_mode:
        from gdfit.render.jsonl import dumps

        print(dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "default", "valid values", title="gdfit config keys")
    for row in rows:
        table.add_row(row["key"], row["default"], row["values"])
    Console().print(table)
