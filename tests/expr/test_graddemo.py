"""grad-demo: the tutorial's numbers, any expression against hand-written torch, hostile input."""

from __future__ import annotations

import ast
import builtins
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.errors import ExpressionError
from gdfit.expr.language import FUNCTIONS, parse
from gdfit.expr.graddemo import to_dot, walkthrough

X = [[0.5, -1.0], [2.0, 3.0]]


def test_default_reproduces_the_tutorial():
    w = walkthrough()
    assert w.y == 14.0
    assert torch.equal(w.grad, torch.tensor([[2.0, 4.0], [6.0, 8.0]]))
    assert [(n["name"], n["operation"], n["grad_fn"]) for n in w.nodes] == [
        ("x1", "x + 2", "AddBackward0"),
        ("x2", "x - 2", "SubBackward0"),
        ("x3", "x1 * x2", "MulBackward0"),
        ("y", "sum(x3)", "SumBackward0"),
    ]
    assert torch.equal(w.nodes[2]["value"], torch.tensor([[-3.0, 0.0], [5.0, 12.0]]))
    assert w.check["passed"] and w.check["closed_form"]["max_abs_error"] == 0.0


def test_human_output_shows_live_grad_fn_names(cli):
    result = cli("grad-demo")
    assert result.exit_status == 0
    for name in ("AddBackward0", "SubBackward0", "MulBackward0", "SumBackward0", "AccumulateGrad", "2x"):
        assert name in result.stdout
    assert "tensor(14., grad_fn=<SumBackward0>)" in result.stdout


def test_json_document(cli):
    doc = cli("grad-demo", "--json").json
    assert doc["y"] == 14.0 and doc["grad"] == [[2.0, 4.0], [6.0, 8.0]]
    assert doc["x"] == [[1.0, 2.0], [3.0, 4.0]]
    assert [n["grad_fn"] for n in doc["nodes"]] == ["AddBackward0", "SubBackward0", "MulBackward0", "SumBackward0"]
    assert doc["check"]["passed"] is True and doc["check"]["method"].startswith("central finite differences")
    assert doc["graph"]["grad_fn"] == "SumBackward0"


def test_mean_of_cubes_gives_three_x_squared_over_four(cli):
    doc = cli("grad-demo", "--expr", "mean(x**3)", "--x", "[[1,2],[3,4]]", "--json").json
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.allclose(torch.tensor(doc["grad"]), 3 * x**2 / 4)


HAND_WRITTEN = {
    "mean(x**3)": lambda x: (x**3).mean(),
    "sum(tanh(x) * x)": lambda x: (torch.tanh(x) * x).sum(),
    "sum(exp(-x) / (1 + x*x))": lambda x: (torch.exp(-x) / (1 + x * x)).sum(),
    "mean(sigmoid(2*x - 1))": lambda x: torch.sigmoid(2 * x - 1).mean(),
    "sum(relu(x) ** 2)": lambda x: (torch.relu(x) ** 2).sum(),
    "sum(square(sin(x)) + square(cos(x)))": lambda x: (torch.square(torch.sin(x)) + torch.square(torch.cos(x))).sum(),
    "sum(abs(x - 1))": lambda x: (x - 1).abs().sum(),
    "mean(sqrt(x*x + 1))": lambda x: torch.sqrt(x * x + 1).mean(),
    "sum(log(1 + exp(x)))": lambda x: torch.log(1 + torch.exp(x)).sum(),
    "-sum(x) / 3 + 2 ** mean(x)": lambda x: -x.sum() / 3 + 2 ** x.mean(),
    "sum(x) * mean(x)": lambda x: x.sum() * x.mean(),
    "sum(+x - -x)": lambda x: (x + x).sum(),
}


@pytest.mark.parametrize("expr", list(HAND_WRITTEN))
def test_expressions_match_hand_written_torch(expr):
    w = walkthrough(X, expr)
    x = torch.tensor(X, requires_grad=True)
    y = HAND_WRITTEN[expr](x)
    y.backward()
    assert w.y == pytest.approx(float(y.detach()), rel=1e-6)
    assert torch.allclose(w.grad, x.grad, rtol=1e-6, atol=1e-7)
    assert w.check["passed"], w.check


def test_nodes_name_each_x_dependent_subexpression():
    w = walkthrough(X, "sum(tanh(x) * x)")
    assert [(n["name"], n["operation"]) for n in w.nodes] == [("x1", "tanh(x)"), ("x2", "x1 * x"), ("y", "sum(x2)")]


def test_non_scalar_result_explains_backward_needs_a_scalar(cli):
    result = cli("grad-demo", "--expr", "x * 2")
    assert result.exit_status == 2
    assert "backward() needs a scalar" in result.stderr and "sum(...) or mean(...)" in result.stderr


def test_dot_output(cli, tmp_path):
    path = tmp_path / "g.dot"
    assert cli("grad-demo", "--dot", str(path)).exit_status == 0
    text = path.read_text()
    assert text.startswith("digraph backward {") and text.rstrip().endswith("}")
    assert text.count("AccumulateGrad") == 1  # x is one leaf feeding two nodes
    assert text.count("->") == 5


def test_dot_matches_the_graph():
    w = walkthrough()
    assert "SumBackward0\\n(y)" in to_dot(w.graph)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('touch /tmp/gdfit-pwned')",
        "x.__class__",
        "x[0]",
        "[x for x in x]",
        "lambda: 0",
        "open('/etc/passwd')",
        "eval('1')",
        "y + 1",
        "sum(x, dim=0)",
        "'text'",
        "True * x",
        "x if x else x",
        "x @ x",
        "x // 2",
        "x < 2",
        "(x := 3)",
        "f'{x}'",
        "(" * 300 + "x" + ")" * 300,
        "x" + " + x" * 400,
        "",
    ],
)
def test_hostile_expressions_are_refused(cli, expr, tmp_path):
    result = cli("grad-demo", "--expr", expr)
    assert result.exit_status == 2
    assert result.stderr.startswith("gdfit: error: --expr")
    assert "Traceback" not in result.stderr
    import os

    assert not os.path.exists("/tmp/gdfit-pwned")


def _balanced_sum(leaves: int) -> str:
    """`x+x+(x+x)...` with `leaves` x's: 2 * leaves - 1 parts, only about log2(leaves) levels deep."""

    def tree(k):
        return ast.Name("x", ast.Load()) if k == 1 else ast.BinOp(tree(k // 2), ast.Add(), tree(k - k // 2))

    return ast.unparse(tree(leaves)).replace(" ", "")


# The README's limits: 400 characters, 40 levels of nesting, 200 parts. Each pair is (at the limit,
# accepted, with y on the default x [[1, 2], [3, 4]]) and (one over, refused with its message).
AT_LIMIT = {
    "characters": ("mean(x) * 1." + "0" * 388, 2.5),
    "nesting": ("sum(" + "-" * 39 + "x)", -10.0),  # x sits 40 levels below sum
    "parts": (f"sum({_balanced_sum(100)})", 1000.0),  # sum, 99 additions, 100 x's
}
OVER_LIMIT = {
    "characters": ("mean(x) * 1." + "0" * 389, "expression is 401 characters; at most 400 are allowed"),
    "nesting": ("sum(" + "-" * 40 + "x)", "expression is nested more than 40 levels deep"),
    "parts": (f"sum(-({_balanced_sum(100)}))", "expression has 201 parts; at most 200 are allowed"),
}


@pytest.mark.parametrize("limit", list(AT_LIMIT))
def test_an_expression_at_each_limit_is_accepted(cli, limit):
    expr, y = AT_LIMIT[limit]
    assert len(expr) <= 400
    result = cli("grad-demo", "--expr", expr, "--json")
    assert result.exit_status == 0, result.stderr
    assert result.json["y"] == y


@pytest.mark.parametrize("limit", list(OVER_LIMIT))
def test_one_past_each_limit_is_refused(cli, limit):
    expr, message = OVER_LIMIT[limit]
    result = cli("grad-demo", "--expr", expr)
    assert result.exit_status == 2
    assert result.stderr == f"gdfit: error: --expr: {message}\n"


@contextmanager
def no_eval():
    """Fail loudly if eval, exec or compile (beyond ast.parse's parse-only mode) runs inside."""
    real_compile = builtins.compile
    saved = builtins.eval, builtins.exec, builtins.compile

    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec/compile called on user text")

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        if flags & ast.PyCF_ONLY_AST:
            return real_compile(source, filename, mode, flags, *args, **kwargs)
        forbidden()

    builtins.eval, builtins.exec, builtins.compile = forbidden, forbidden, parse_only
    try:
        yield
    finally:
        builtins.eval, builtins.exec, builtins.compile = saved


def test_gdfit_never_calls_eval_exec_or_compile():
    from pathlib import Path

    import gdfit

    for path in Path(gdfit.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile"), path


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=120))
def test_random_strings_parse_or_fail_cleanly(text):
    try:
        tree = parse(text)
    except ExpressionError:
        return
    _assert_whitelisted(tree)


def _assert_whitelisted(tree):
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Load,
               ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd,
               ast.Compare, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
    for node in ast.walk(tree):
        assert isinstance(node, allowed), type(node)
        if isinstance(node, ast.Name):
            assert node.id in ("x", "pi") or node.id in FUNCTIONS  # pi: the language's one named constant


names = st.sampled_from(["x", "y", "os", "__import__", "open", "sum", "mean", "exp", "eval"])
leaves = st.one_of(
    names.map(lambda n: ast.Name(n, ast.Load())),
    st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), st.text(max_size=3), st.booleans()).map(ast.Constant),
)


def _extend(children):
    ops = st.sampled_from([ast.Add(), ast.Sub(), ast.Mult(), ast.Div(), ast.Pow(), ast.FloorDiv(), ast.MatMult()])
    return st.one_of(
        st.builds(ast.BinOp, children, ops, children),
        st.builds(ast.UnaryOp, st.sampled_from([ast.USub(), ast.UAdd(), ast.Not(), ast.Invert()]), children),
        st.builds(lambda f, a: ast.Call(ast.Name(f, ast.Load()), [a], []), names, children),
        st.builds(lambda v: ast.Attribute(v, "grad", ast.Load()), children),
        st.builds(lambda v: ast.Subscript(v, ast.Constant(0), ast.Load()), children),
        st.builds(lambda v: ast.Lambda(ast.arguments([], [], None, [], [], None, []), v), children),
    )


@settings(max_examples=300, deadline=None)
@given(tree=st.recursive(leaves, _extend, max_leaves=12))
def test_random_asts_evaluate_safely_or_are_refused(tree):
    text = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    try:
        with no_eval():
            w = walkthrough(X, text)
    except ExpressionError:
        return
    _assert_whitelisted(ast.parse(text, mode="eval"))
    assert w.grad.shape == (2, 2)


@pytest.mark.parametrize(
    "expr,words",
    [
        ("x.grad", "attribute access (x.grad) is not allowed"),
        ("x[0]", "indexing (x[0]) is not allowed"),
        ("x == 2", "the comparison 'x == 2' is not allowed"),
        ("x < 2 < x", "chained comparisons (a < b < c) are not allowed"),
        ("x // 2", "the operator // is not allowed"),
        ("x @ x", "the operator @ is not allowed"),
        ("~x", "the operator ~ is not allowed"),
        ("x if x else x", "if-else (x if x else x) is not allowed"),
        ("[x for x in x]", "comprehensions ([x for x in x]) are not allowed"),
        ("(x := 3)", "assignment (:=) (x := 3) is not allowed"),
    ],
)
def test_refusals_name_the_syntax_in_words_not_python_class_names(cli, expr, words):
    stderr = cli("grad-demo", "--expr", expr).stderr
    assert stderr.startswith(f"gdfit: error: --expr: {words}; the language has")
    for jargon in ("Attribute", "Subscript", "Compare", "BinOp", "UnaryOp", "IfExp", "ListComp", "NamedExpr"):
        assert jargon not in stderr


@pytest.mark.parametrize(
    "expr,x,reason",
    [
        ("sum(relu(x))", "[[0, 1]]", "a kink at or within h = 1e-06 of x[0, 0] = 0 (as relu or abs have at 0): "
                                     "the slope is 0 on the left and 1 on the right"),
        ("sum(abs(x))", "[[1e-7, 2]]", "a kink at or within h = 1e-06 of x[0, 0] = 1e-07"),
        ("sum(1/x)", "[[1e-7, 2]]", "a pole or a very steep change near x[0, 0] = 1e-07"),
        ("sum(log(x))", "[[1e-7, 2]]", "finite differences are not finite at x[0, 0] = 1e-07"),
        ("sum(1/x)", "[[0, 2]]", "y is infinite"),
        ("sum(log(x))", "[[-1, 2]]", "y is nan"),
        ("sum(sqrt(x))", "[[0, 2]]", "x.grad is inf at x[0, 0] = 0"),
    ],
)
def test_a_failed_check_says_why_and_exits_1(cli, expr, x, reason):
    result = cli("grad-demo", "--expr", expr, "--x", x, "--json")
    assert result.exit_status == 1
    check = result.json["check"]
    assert check["passed"] is False and check["reason"].startswith(reason)
    assert result.stderr == f"gdfit: gradient check failed: {check['reason']}\n"
    human = cli("grad-demo", "--expr", expr, "--x", x)
    assert human.exit_status == 1 and "FAIL" in human.stdout
    assert "why the check failed: " + reason.split(" (")[0] in " ".join(human.stdout.split())


def test_non_finite_values_fail_even_when_the_check_is_skipped():
    x = [[0.0] + [1.0] * 1099]  # more elements than the check compares
    w = walkthrough(x, "sum(sqrt(x))")
    assert w.check["passed"] is False and w.check["reason"].startswith("x.grad is inf")
    assert walkthrough([[1.0] * 1100], "sum(sqrt(x))").check["passed"] is None  # skipped, not failed


def test_a_passing_check_has_no_reason_and_exits_0(cli):
    result = cli("grad-demo", "--expr", "sum(relu(x))", "--x", "[[-1, 1]]", "--json")
    assert result.exit_status == 0 and "reason" not in result.json["check"]
