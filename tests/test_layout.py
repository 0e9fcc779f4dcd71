"""The package's layers: every import in gdfit/ points down the order the design page draws."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# top to bottom, as docs/design.md draws them; "base" is gdfit's own top-level modules
ORDER = ["cli", "api", "sweeps", "pictures", "render", "engine", "curves", "fitting", "expr", "files", "config", "base"]
FACE = {"gdfit", "gdfit.__main__"}  # the package face and the entry point stand above every layer


def modules() -> dict[str, set[str]]:
    """Each gdfit module and the gdfit modules it imports (anywhere in its body)."""
    found = {}
    for path in (ROOT / "gdfit").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gdfit"):
                for alias in node.names:  # `from gdfit import records` imports the module gdfit.records
                    sub = f"{node.module}.{alias.name}"
                    if any((ROOT / Path(*sub.split("."))).with_suffix(suffix).exists() or
                           (ROOT / Path(*sub.split("."))).is_dir() for suffix in (".py",)):
                        imported.add(sub)
                    elif not (node.module == "gdfit" and alias.name == "__version__"):  # the version lives in the face
                        imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("gdfit"))
        found[name] = imported
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "gdfit" / parts[1]).is_dir()):
        return parts[1]
    return "base"


def test_imports_point_down_the_layers():
    upward = []
    for module, imported in modules().items():
        if module in FACE:
            continue
        for target in imported:
            if target in FACE:
                upward.append(f"{module} imports the package face {target}")
            elif ORDER.index(layer(target)) < ORDER.index(layer(module)):
                upward.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert upward == []


def test_no_module_imports_itself_back():
    graph = {m: {t for t in imported if t in modules_set and t != m} for m, imported in modules().items()}
    seen: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        seen[node] = 1
        for nxt in graph[node]:
            if seen.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in seen and (cycle := visit(nxt, path + [node])):
                return cycle
        seen[node] = 2
        return None

    for start in graph:
        if start not in seen:
            assert visit(start, []) is None


modules_set = set(modules())


def test_the_design_page_draws_the_same_order():
    page = (ROOT / "docs" / "design.md").read_text()
    diagram = page.split("```text", 1)[1].split("```", 1)[0]
    drawn = [line.split()[0] for line in diagram.splitlines()[3:] if line.strip()]
    assert drawn == ORDER
    assert all(layer(m) in ORDER for m in modules_set - FACE)  # every package has its place
