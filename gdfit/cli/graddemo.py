"""`gdfit grad-demo`: the tutorial's autograd walkthrough, as a table, JSON or a DOT graph."""

from __future__ import annotations

from pathlib import Path

from gdfit.cli.common import warn


def grad_demo(x: str | None, expr: str | None, json_mode: bool, dot: Path | None) -> bool:
    """Show the walkthrough; returns False when the gradient check failed (the CLI exits 1)."""
    from gdfit.files.writing import check_writable

    if dot is not None:
        check_writable(dot, key="--dot")
    x_values = _parse_matrix(x) if x is not None else None
    from gdfit.expr.graddemo import to_dot, walkthrough

    result = walkthrough(x_values, expr)
    if json_mode:
        from gdfit.render.graddemo_view import document
        from gdfit.render.jsonl import dumps

        print(dumps(document(result)))
    else:
        from rich.console import Console

        from gdfit.render.graddemo_view import render

        render(result, Console())
    if dot is not None:
        from gdfit.files.writing import write_atomic

        write_atomic(dot, to_dot(result.graph), key="--dot")
    if result.check["passed"] is False:
        if json_mode:  # the table says why on screen; a script's reader gets the reason on stderr too
            warn(f"gradient check failed: {result.check['reason']}")
        return False
    return True


def _parse_matrix(text: str):
    from gdfit.config.yamlsource import load_yaml

    return load_yaml(text, "--x", require_mapping=False).data
