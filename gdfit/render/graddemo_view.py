"""grad-demo for people (rich panels, a Tree of the backward graph) and for scripts (one JSON)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from gdfit.expr.graddemo import DEFAULT_EXPR, GraphNode, Walkthrough, graph_to_dict

WHY_DEFAULT = (
    "Why 2x: y = sum((x + 2)(x - 2)) = sum(x² - 4), and d/dx (x² - 4) = 2x for every element, "
    "so x.grad is x doubled."
)
WHY_ANY = "x.grad holds dy/dx for every element of x: autograd walks the graph below from y back to x."


def document(w: Walkthrough) -> dict[str, Any]:
    """The --json document: x, nodes, y, grad, check and the backward graph."""
    return {
        "expr": w.expr,
        "x": w.x,
        "nodes": [{k: node[k] for k in ("name", "operation", "value", "grad_fn")} for node in w.nodes],
        "y": w.y,
        "grad": w.grad,
        "check": w.check,
        "graph": graph_to_dict(w.graph),
    }


def _tree(node: GraphNode, tree: Tree | None = None) -> Tree:
    label = Text(node.name, style="bold cyan")
    if node.label:
        label.append(f"  ({node.label})", style="dim")
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.children:
        _tree(child, branch)
    return branch


def render(w: Walkthrough, console: Console) -> None:
    """Print the walkthrough step by step, as the tutorial's AutoGrad section reads."""
    x_repr = repr(w.x.clone().requires_grad_(True))
    steps = [Text("x = torch.tensor(..., requires_grad=True)", style="bold"), Text(x_repr + "\n")]
    for node in w.nodes:
        steps.append(Text(f"{node['name']} = {node['operation']}", style="bold"))
        steps.append(Text(node["repr"] + "\n"))
    steps.append(Text("y.backward()\nx.grad", style="bold"))
    steps.append(Text(repr(w.grad)))
    title = "AutoGrad: the tutorial's walkthrough" if w.expr == DEFAULT_EXPR else f"AutoGrad: y = {w.expr}"
    console.print(Panel(Group(*steps), title=title, expand=False))
    console.print(WHY_DEFAULT if w.expr == DEFAULT_EXPR else WHY_ANY)
    console.print(Panel(_tree(w.graph), title="backward graph (y.grad_fn.next_functions ...)", expand=False))
    console.print(_check_table(w.check))
    if w.check.get("reason"):
        console.print(Text(f"why the check failed: {w.check['reason']}", style="red"))


def _check_table(check: dict[str, Any]) -> Table:
    table = Table("gradient check", "max |error|", "result", title=None)
    table.add_row(check["method"], _fmt(check.get("max_abs_error")), _verdict(check.get("passed")))
    closed = check.get("closed_form")
    if closed:
        table.add_row(f"closed form {closed['formula']}", _fmt(closed["max_abs_error"]), _verdict(closed["passed"]))
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _verdict(passed: bool | None) -> Text:
    if passed is None:
        return Text("skipped", style="yellow")
    return Text("pass", style="bold green") if passed else Text("FAIL", style="bold red")
