"""The tutorial's autograd walkthrough, for its expression or any other: nodes, graph, check.

Builds plain data (records); the CLI renders it as rich panels or one JSON document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gdfit.errors import ExpressionError
from gdfit.expr.language import evaluate, function_of, parse
from gdfit.words import plural

DEFAULT_EXPR = "sum((x + 2) * (x - 2))"
DEFAULT_X = [[1.0, 2.0], [3.0, 4.0]]
FD_STEP = 1e-6
MAX_CHECK_ELEMENTS = 1_000
MAX_X_ELEMENTS = 10_000
STEEP = 1e6  # a slope beyond this (for x of moderate size) means a pole, not a kink or rounding


@dataclass
class GraphNode:
    """One backward function; `label` names the tensor it produced (x1, y, or the leaf x)."""

    id: int
    name: str
    label: str | None
    children: list[GraphNode] = field(default_factory=list)


@dataclass
class Walkthrough:
    expr: str
    x: torch.Tensor
    nodes: list[dict[str, Any]]
    y: float
    y_grad_fn: str
    grad: torch.Tensor
    graph: GraphNode
    check: dict[str, Any]


def backward_graph(y: torch.Tensor, labels: dict[int, str]) -> GraphNode:
    """Walk y.grad_fn.next_functions down to the leaves (AccumulateGrad)."""
    seen: dict[int, GraphNode] = {}

    def visit(fn) -> GraphNode:
        key = id(fn)
        if key in seen:  # a shared subgraph (x feeds both x1 and x2): the same node again
            return GraphNode(key, seen[key].name, seen[key].label)
        label = labels.get(key)
        if label is None and hasattr(fn, "variable"):
            label = "x"
        node = GraphNode(key, _short(fn.name()), label)
        seen[key] = node
        node.children = [visit(child) for child, _ in fn.next_functions if child is not None]
        return node

    return visit(y.grad_fn)


def _short(name: str) -> str:
    return name.rsplit("::", 1)[-1]


def finite_difference_grad(fn, x: torch.Tensor, h: float = FD_STEP) -> torch.Tensor:
    """Central differences in float64, one element at a time."""
    base = x.detach().to(torch.float64).clone()
    grad = torch.zeros_like(base)
    flat, out = base.view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            saved = float(flat[i])
            flat[i] = saved + h
            up = float(fn(base))
            flat[i] = saved - h
            down = float(fn(base))
            flat[i] = saved
            out[i] = (up - down) / (2 * h)
    return grad


def walkthrough(x_values: Any = None, expr: str | None = None) -> Walkthrough:
    """Evaluate `expr` at x, backpropagate, draw the graph and check the gradient."""
    text = DEFAULT_EXPR if expr is None else expr
    tree = parse(text)
    x = _make_x(DEFAULT_X if x_values is None else x_values)
    y, nodes = evaluate(tree, x)
    if not isinstance(y, torch.Tensor) or not y.requires_grad:
        raise ExpressionError("the expression does not depend on x, so there is no gradient to show", key="--expr")
    if y.dim() != 0:
        raise ExpressionError(
            f"the expression gives a tensor of shape {list(y.shape)}, not a scalar: backward() needs a scalar, "
            f"so wrap it in sum(...) or mean(...), e.g. sum({text})",
            key="--expr",
        )
    labels = {id(node.value.grad_fn): node.name for node in nodes}
    labels[id(y.grad_fn)] = "y"
    graph = backward_graph(y, labels)
    y.backward()
    grad = x.grad.detach().clone()
    check = gradient_check(tree, x, grad, closed_form=expr is None, y=float(y.detach()))
    return Walkthrough(
        expr=text,
        x=x.detach().clone(),
        nodes=[
            {
                "name": "y" if node.value is y else node.name,
                "operation": node.operation,
                "value": node.value.detach().clone(),
                "grad_fn": node.value.grad_fn.name(),
                "repr": repr(node.value),  # the live tensor, printed as the tutorial shows it
            }
            for node in nodes
        ],
        y=float(y.detach()),
        y_grad_fn=y.grad_fn.name(),
        grad=grad,
        graph=graph,
        check=check,
    )


def _make_x(values: Any) -> torch.Tensor:
    from gdfit.config import _inline_tensor

    try:
        _inline_tensor(values)
    except ValueError as err:
        raise ExpressionError(f"x: {err}", key="--x") from None
    x = torch.tensor(values, dtype=torch.float32)
    if not torch.isfinite(x).all():  # finite in YAML, beyond float32 here: 1e39 would become inf
        worst = max(abs(v) for v in torch.tensor(values, dtype=torch.float64).flatten().tolist())
        raise ExpressionError(f"value {worst:g} is beyond the range of float32 "
                              f"(largest {torch.finfo(torch.float32).max:g})", key="--x")
    if x.numel() > MAX_X_ELEMENTS:
        raise ExpressionError(f"x has {plural(x.numel(), 'element')}; at most {MAX_X_ELEMENTS}", key="--x")
    return x.requires_grad_(True)


def gradient_check(tree, x: torch.Tensor, grad: torch.Tensor, closed_form: bool, y: float = 0.0) -> dict[str, Any]:
    """Autograd against central finite differences (and 2x for the tutorial's expression). A
    failed check carries `reason`: one line on why (non-finite values, a pole, a kink)."""
    check: dict[str, Any] = {"method": f"central finite differences in float64, h = {FD_STEP:g}"}
    undefined = _non_finite(x, y, grad)
    if x.numel() > MAX_CHECK_ELEMENTS:
        check.update(max_abs_error=None, passed=None if undefined is None else False,
                     note=f"skipped: more than {MAX_CHECK_ELEMENTS} elements")
        if undefined is not None:
            check["reason"] = undefined
        return check
    fn = function_of(tree)
    numeric = finite_difference_grad(fn, x)
    error = float((numeric - grad.to(torch.float64)).abs().max())
    scale = float(numeric.abs().max()) if numeric.numel() else 0.0
    tolerance = 1e-4 * max(1.0, scale)  # float32 autograd against float64 differences
    check.update(max_abs_error=error, tolerance=tolerance, passed=math.isfinite(error) and error <= tolerance)
    if closed_form:
        exact = 2 * x.detach().to(torch.float64)
        closed_error = float((exact - grad.to(torch.float64)).abs().max())
        check["closed_form"] = {"formula": "2x", "max_abs_error": closed_error, "passed": closed_error <= 1e-6}
        check["passed"] = check["passed"] and closed_error <= 1e-6
    if undefined is not None:
        check.update(passed=False, reason=undefined)
    elif not check["passed"]:
        check["reason"] = _why_differ(fn, x, grad, numeric, tolerance)
    return check


def _at(x: torch.Tensor, flat: int) -> str:
    """`x[0, 1] = 1e-07`: an element of x by its index, for a reason."""
    index = ", ".join(str(int(i)) for i in torch.unravel_index(torch.tensor(flat), x.shape)) if x.dim() else ""
    return f"x[{index}] = {float(x.detach().reshape(-1)[flat]):.6g}" if index else f"x = {float(x.detach()):.6g}"


def _non_finite(x: torch.Tensor, y: float, grad: torch.Tensor) -> str | None:
    """Why y or x.grad is not a number, or None when both are finite: never a pass."""
    if math.isnan(y):
        return "y is nan: the expression is undefined at this x (log or sqrt of a negative number, 0/0, inf - inf)"
    if math.isinf(y):
        return "y is infinite: a pole at this x (such as 1/x or log(x) at 0), or a value beyond float32"
    bad = (~torch.isfinite(grad)).reshape(-1).nonzero()
    if bad.numel():
        first = int(bad[0])
        return (f"x.grad is {float(grad.reshape(-1)[first]):g} at {_at(x, first)}: the derivative is undefined "
                "there (such as sqrt(x) or 1/x at 0)")
    return None


def _why_differ(fn, x: torch.Tensor, grad: torch.Tensor, numeric: torch.Tensor, tolerance: float) -> str:
    """One line on why autograd and central differences disagree, at the worst element."""
    gap = (numeric - grad.to(torch.float64)).abs().reshape(-1)
    worst = int(torch.nan_to_num(gap, nan=math.inf).argmax())
    where, auto, central = _at(x, worst), float(grad.reshape(-1)[worst]), float(numeric.reshape(-1)[worst])
    if not math.isfinite(central):
        return f"finite differences are not finite at {where}: a pole or the edge of the domain lies within h = {FD_STEP:g}"
    left, right = _one_sided(fn, x, worst)
    if max(abs(auto), abs(central), abs(left), abs(right)) > STEEP:
        return (f"a pole or a very steep change near {where}: autograd gives {auto:.3g}, finite differences "
                f"{central:.3g}, and neither is reliable there")
    if abs(left - right) > 2 * tolerance:
        return (f"a kink at or within h = {FD_STEP:g} of {where} (as relu or abs have at 0): the slope is {left:.3g} "
                f"on the left and {right:.3g} on the right; autograd takes {auto:.3g}, central differences {central:.3g}")
    return (f"autograd ({auto:.6g}) and finite differences ({central:.6g}) differ by {gap[worst]:.3g} at {where}, "
            f"more than the tolerance {tolerance:.3g}: float32 rounding of large or steep values")


def _one_sided(fn, x: torch.Tensor, flat: int, h: float = FD_STEP) -> tuple[float, float]:
    """The left and right difference quotients of fn at one element of x, in float64."""
    base = x.detach().to(torch.float64).clone()
    with torch.no_grad():
        middle = float(fn(base))
        saved = float(base.view(-1)[flat])
        base.view(-1)[flat] = saved - h
        down = float(fn(base))
        base.view(-1)[flat] = saved + h
        up = float(fn(base))
    return (middle - down) / h, (up - middle) / h


def to_dot(graph: GraphNode) -> str:
    """The backward graph as Graphviz DOT text (render with `dot -Tsvg graph.dot`)."""
    lines = ["digraph backward {", '  rankdir="BT";', '  node [shape=box, fontname="monospace"];']
    numbers: dict[int, int] = {}  # object ids -> n0, n1, ... in visiting order
    edges: set[tuple[int, int]] = set()

    def emit(node: GraphNode) -> int:
        if node.id not in numbers:
            numbers[node.id] = len(numbers)
            label = node.name + (f"\\n({node.label})" if node.label else "")
            lines.append(f'  n{numbers[node.id]} [label="{label}"];')
        for child in node.children:
            child_number = emit(child)
            if (child_number, numbers[node.id]) not in edges:
                edges.add((child_number, numbers[node.id]))
                lines.append(f"  n{child_number} -> n{numbers[node.id]};")
        return numbers[node.id]

    emit(graph)
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_to_dict(node: GraphNode) -> dict[str, Any]:
    return {"grad_fn": node.name, "tensor": node.label, "next": [graph_to_dict(c) for c in node.children]}
