"""The documentation site builds with `mkdocs build --strict`, and every page's examples run.

Any page under docs/ takes part, whoever writes it. In a page:

- a fenced block tagged `sh` runs: each command in it (lines joined at a trailing `\\`, split at
  `&&`) must be a `gdfit ...` command; it runs through the real CLI, in a scratch folder laid out
  like the repository root (a copy of `configs/`, empty `docs/` and `sweeps/`), so that files the
  examples write land there, and the commands of one page share it. A command must exit 0, 1
  (stopped by a limit) or 3 (diverged), or what a trailing `# exit N` comment says;
- a fenced block tagged `python` runs, in the same kind of folder; the blocks of one page share
  their variables, as a reader going down the page would;
- every other tag (`text`, `yaml`, `bash`, `console`, `py`, ...) is illustrative and not run:
  `bash` for shell that is not a gdfit command (installing, pipes into jq), `py` for Python that
  needs what a test does not have (a cluster, the NIST data).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<tag>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
COMMAND_SECONDS = 120  # one example command; the pages' examples are chosen to take a second or two
EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def fenced(page: Path, tag: str) -> list[tuple[int, str]]:
    """(line, body) of each block of `page` fenced with ```tag."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group("body")) for m in FENCE.finditer(text)
            if m.group("tag") == tag]


def pages_with(tag: str) -> list[Path]:
    return [page for page in pages() if fenced(page, tag)]


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def commands(body: str) -> list[tuple[list[str], set[int]]]:
    """Each command of an `sh` block as arguments, with the exit statuses it may end with."""
    joined = re.sub(r"\\\n\s*", " ", body)
    found = []
    for line in joined.splitlines():
        expected = {int(m.group(1))} if (m := EXIT.search(line)) else {0, 1, 3}
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append((words[:cut], expected))
            words = words[cut + 1:]
    return found


@contextmanager
def time_limit(seconds: int, what: str):
    def expire(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder laid out like the repository root, as the working directory."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("docs", "sweeps"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path


def test_the_site_builds_strict(tmp_path):
    """Broken links, missing pages, a page left out of the nav and docstring errors all fail."""
    for tool in ("mkdocs", "material", "mkdocstrings_handlers.python"):  # the `docs` extra
        pytest.importorskip(tool)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = tmp_path / "site"
    assert (built / "index.html").is_file()
    cli = (built / "reference/cli/index.html").read_text()
    for command in ("gdfit run", "gdfit sweep", "--max-iters", "--output"):  # generated from the Typer app
        assert command in cli
    from gdfit.config.schema import schema_rows

    config = (built / "reference/config/index.html").read_text()
    assert all(f"<code>{row['key']}</code>" in config for row in schema_rows())  # every key, from the models
    api = (built / "reference/api/index.html").read_text()
    assert "Run a config to its end and return the result." in api  # fit's docstring


@pytest.mark.parametrize("page", pages_with("sh"), ids=page_id)
def test_shell_examples_run(page, scratch):
    for line, body in fenced(page, "sh"):
        for words, expected in commands(body):
            where = f"{page_id(page)}:{line}: {shlex.join(words)}"
            assert words and words[0] == "gdfit", \
                f"{where}: a ```sh block holds gdfit commands only; fence other shell as ```bash"
            with time_limit(COMMAND_SECONDS, where):
                result = run_cli(*words[1:])
            assert result.exit_status in expected, f"{where}: exit {result.exit_status}\n{result.stderr[-2000:]}"
            assert "Traceback" not in result.stderr, where


@pytest.mark.parametrize("page", pages_with("python"), ids=page_id)
def test_python_examples_run(page, scratch):
    namespace: dict = {"__name__": "__docs__"}
    for line, body in fenced(page, "python"):
        where = f"{page_id(page)}:{line}"
        with time_limit(COMMAND_SECONDS, where):
            exec(compile(body, where, "exec"), namespace)  # noqa: S102 (the docs' own examples)


def test_the_example_collector_reads_blocks_and_commands():
    """The collector itself, on text where the answer is known."""
    body = "gdfit run configs/seed.yaml --every 0   # a comment\n" \
           "gdfit sweep configs/seed.yaml \\\n    --grid seed=0..1 && gdfit plot a.json -o a.png\n" \
           "gdfit run bad.yaml  # exit 2\n"
    assert commands(body) == [
        (["gdfit", "run", "configs/seed.yaml", "--every", "0"], {0, 1, 3}),
        (["gdfit", "sweep", "configs/seed.yaml", "--grid", "seed=0..1"], {0, 1, 3}),
        (["gdfit", "plot", "a.json", "-o", "a.png"], {0, 1, 3}),
        (["gdfit", "run", "bad.yaml"], {2}),
    ]
    assert len(pages_with("sh")) >= 5 and len(pages_with("python")) >= 2  # the site's own pages have examples
