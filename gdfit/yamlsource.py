"""Safe, bounded YAML reading that remembers where every key came from.

PyYAML's safe loader never builds Python objects, but it still expands aliases and recurses
once per nesting level. We compose the node graph (cheap: aliases stay shared), then convert it
ourselves under a budget of scalars and a depth limit, so that hostile documents fail fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re

import yaml

from gdfit.errors import ConfigError

MAX_BYTES = 2_000_000  # inline data beyond this belongs in {file: ...}
MAX_SCALARS = 100_000  # counted after alias expansion, so alias bombs stop here
MAX_DEPTH = 32

Path_ = tuple[str | int, ...]

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a number, as YAML 1.2 and every user expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


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
        raise ConfigError(f"invalid YAML: {err.problem or err.context}", source=source, line=line, column=col) from None
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
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
        )
    return doc


def type_name(value: Any) -> str:
    """A user-facing name for a YAML value's type."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Converter:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.scalars = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> ConfigError:
        mark = node.start_mark
        return ConfigError(message, source=self.doc.source, line=mark.line + 1, column=mark.column + 1, hint=hint)

    def convert(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"YAML nested more than {MAX_DEPTH} levels deep")
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed")
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        if node.tag != "tag:yaml.org,2002:map":
            raise self.fail(node, f"YAML tag {node.tag!r} is not allowed")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "YAML merge keys (<<) are not supported")
            if not isinstance(key, str):
                raise self.fail(key_node, f"keys must be plain names, got {type_name(key)}")
            if key in out:
                raise self.fail(key_node, f"key {key!r} appears twice")
            self.doc.positions[path + (key,)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            out[key] = self.convert(value_node, path + (key,), depth + 1)
        return out

    def scalar(self, node: yaml.Node) -> Any:
        self.scalars += 1
        if self.scalars > MAX_SCALARS:
            raise self.fail(
                node,
                f"document holds more than {MAX_SCALARS:,} values (after expanding aliases)",
                hint="put large matrices in a file and use `target: {file: data.npy}`",
            )
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(node, f"YAML tag {node.tag!r} is not allowed (only plain values, lists and mappings)")
        try:
            return self.constructor.construct_object(node)
        except (ValueError, yaml.YAMLError) as err:
            raise self.fail(node, f"cannot read value {node.value[:40]!r}: {err}") from None
