"""Safe, bounded YAML reading that remembers where every key came from.

PyYAML's safe loader never builds Python objects, but it still expands aliases and recurses
once per nesting level. We compose the node graph (cheap: aliases stay shared), then convert it
ourselves under a budget of nodes and a depth limit, so that hostile documents fail fast.

Plain values are read as YAML 1.2's core schema reads them, not as PyYAML's YAML 1.1: `010` is 10
(not 8), `1:30`, `1_000`, `0b11`, `yes`, `no`, `on` and `off` stay text (so a number or a name
check reports them), `0o17` and `0x1f` are octal and hex, and `1e-5` is a number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from gdfit.errors import ConfigError
from gdfit.reading import CONFIG_BYTES

MAX_BYTES = CONFIG_BYTES  # inline data beyond this belongs in {file: ...}
MAX_NODES = 100_000  # every key, value, list and mapping, counted after alias expansion
MAX_DEPTH = 32
MAX_DIGITS = 4_000  # Python refuses to read longer integers; no config needs them

Path_ = tuple[str | int, ...]

_NULL, _BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float"))
_CORE_SCHEMA = [  # YAML 1.2.2, section 10.3.2 (the core schema's tag resolution)
    (_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), list("~nN") + [""]),
    (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    (_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    (_FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789")),
]


class _Loader(yaml.SafeLoader):
    """SafeLoader that resolves plain scalars by YAML 1.2's core schema (no merge keys, no 1.1 forms)."""

    yaml_implicit_resolvers: dict = {}


for _tag, _pattern, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(_tag, _pattern, _first)

_PLAIN_TAGS = {"tag:yaml.org,2002:str", _NULL, _BOOL, _INT, _FLOAT}

# PyYAML's wording for common slips, in the user's words.
_PLAIN_PROBLEMS = [
    ("found character '\\t' that cannot start any token", "a tab here: YAML indents with spaces only"),
    ("that cannot start any token", "a character that cannot start a value here; put the value in quotes"),
    ("but found another document", "more than one YAML document (a `---` or `...` line); a config is one document"),
    ("found undefined alias", "an alias (*name) with no anchor (&name) before it"),
    ("mapping values are not allowed here", "a `key: value` where it cannot be (check the indentation, or quote "
                                            "a value that holds `: `)"),
]


def _construct_plain(tag: str, text: str) -> Any:
    """The value of a plain scalar already resolved by the core schema."""
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _INT:
        digits = text.lstrip("+-")
        if len(digits) > MAX_DIGITS:
            raise ValueError(f"an integer of {len(digits):,} digits; at most {MAX_DIGITS:,}")
        sign = -1 if text.startswith("-") else 1
        if digits.startswith(("0o", "0x")):
            return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
        return sign * int(digits, 10)
    if tag == _FLOAT:
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered == ".nan":
            return math.nan
        return float(text)
    return text


@dataclass
class Document:
    """A parsed YAML mapping plus the 1-based line:column of each key path."""

    data: Any
    source: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path_) -> tuple[int | None, int | None]:
        """Position of the longest known prefix of `path` (the value if known, else its key)."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.positions:
                return self.positions[path[:cut]]
        return None, None


def load_yaml(text: str, source: str, *, require_mapping: bool = True) -> Document:
    """Parse `text` safely and bounded; errors name `source` and the line:column."""
    if len(text) > MAX_BYTES:
        raise ConfigError(
            f"document is {len(text):,} characters, more than the {MAX_BYTES:,} allowed inline",
            source=source,
            hint="put large matrices in a file and use `target: {file: data.npy}`",
        )
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError(f"invalid YAML: {_plain_problem(err)}", source=source, line=line, column=col) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}", source=source) from None
    except RecursionError:
        raise ConfigError(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", source=source) from None
    doc = Document(data=None, source=source)
    if node is None:
        if require_mapping:
            raise ConfigError("the config is empty; it needs at least `target:`", source=source)
        return doc
    converter = _Converter(doc)
    doc.data = converter.convert(node, (), 0)
    if require_mapping and not isinstance(doc.data, dict):
        raise ConfigError(
            f"the config must be a mapping of keys (like `target: ...`), got {type_name(doc.data)}",
            source=source,
            hint=("this looks like a data file: name it in a config, as `data: {file: PATH}`"
                  if str(source).lower().endswith(DATA_SUFFIXES) else None),
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
        )
    return doc


def _plain_problem(err: yaml.MarkedYAMLError) -> str:
    text = " ".join(str(part) for part in (err.context, err.problem) if part)
    for fragment, plain in _PLAIN_PROBLEMS:
        if fragment in text:
            return plain
    return str(err.problem or err.context)


TEXT_SHOWN = 60  # characters of a text value that a message quotes
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".npy", ".npz", ".parquet", ".pt")


def type_name(value: Any) -> str:
    """A user-facing name for a YAML value's type."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        if len(value) > TEXT_SHOWN:  # a data file given as the config: an excerpt, not the whole file
            return f"the text {value[:TEXT_SHOWN]!r}... ({len(value):,} characters)"
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Converter:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.nodes = 0

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> ConfigError:
        mark = node.start_mark
        return ConfigError(message, source=self.doc.source, line=mark.line + 1, column=mark.column + 1, hint=hint)

    def count(self, node: yaml.Node) -> None:
        """Every key, value, list and mapping counts, so aliases of empty lists cannot blow up either."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                node,
                f"document holds more than {MAX_NODES:,} values (after expanding aliases)",
                hint="put large matrices in a file and use `target: {file: data.npy}`",
            )

    def convert(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"YAML nested more than {MAX_DEPTH} levels deep")
        self.count(node)
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.fail(node, f"the tag {node.tag!r} is not allowed (only plain values, lists and mappings)")
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        if node.tag != "tag:yaml.org,2002:map":
            raise self.fail(node, f"the tag {node.tag!r} is not allowed (only plain values, lists and mappings)")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and key_node.style is None:
                raise self.fail(key_node, "merge keys (<<) are not supported; write the keys out")
            self.count(key_node)
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise self.fail(key_node, f"keys must be plain names, got {type_name(key)}")
            if key in out:
                raise self.fail(key_node, f"key {key!r} appears twice")
            self.doc.positions[path + (key,)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            out[key] = self.convert(value_node, path + (key,), depth + 1)
        return out

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag not in _PLAIN_TAGS:
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.fail(node, f"the tag {shown!r} is not allowed (only plain values, lists and mappings)")
        try:
            return _construct_plain(node.tag, node.value)
        except ValueError as err:
            raise self.fail(node, f"cannot read value {node.value[:40]!r}: {err}") from None
